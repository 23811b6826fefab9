// Slipway dashboard: live updates. The page's body names its event
// stream (data-events); on every audit event the page is fetched again
// and each element marked data-live is replaced by its new version (at
// most once a second). No other script runs on these pages.
(function () {
  "use strict";
  var body = document.body;
  var src = body.getAttribute("data-events");
  var status = document.getElementById("live-status");
  if (!src || !window.fetch || !window.TextDecoder) { return; }
  var since = Number(new URL(src, location.href).searchParams.get("since")) || 0;
  var pending = false, last = 0, refreshes = 0, backoff = 1000;

  function setStatus(s) {
    if (status) { status.textContent = s; status.className = "live live-" + s; }
  }

  function refresh() {
    pending = false;
    last = Date.now();
    fetch(location.href, { credentials: "same-origin", redirect: "error" })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (el) {
          var fresh = el.id && doc.getElementById(el.id);
          if (fresh) { el.replaceWith(document.importNode(fresh, true)); }
        });
        refreshes++;
        body.setAttribute("data-refreshes", String(refreshes));
      })
      .catch(function () { setStatus("stale"); });
  }

  function schedule() {
    if (pending) { return; }
    pending = true;
    setTimeout(refresh, Math.max(0, 1000 - (Date.now() - last)));
  }

  // onEvent handles one server-sent event block ("id: …\nevent: …\ndata: …").
  function onEvent(block) {
    var seen = false;
    block.split("\n").forEach(function (line) {
      if (line.indexOf("id: ") === 0) { since = Number(line.slice(4)) || since; seen = true; }
    });
    if (seen) { schedule(); }
  }

  function connect() {
    var url = "/ui/events?since=" + since;
    fetch(url, { credentials: "same-origin", redirect: "error", headers: { "Accept": "text/event-stream" } })
      .then(function (r) {
        var type = r.headers.get("Content-Type") || "";
        if (!r.ok || type.indexOf("text/event-stream") !== 0 || !r.body) { throw new Error("no stream: " + r.status); }
        setStatus("live");
        if (backoff > 1000) { schedule(); } // events may have been missed while away
        backoff = 1000;
        var reader = r.body.getReader(), dec = new TextDecoder(), buf = "";
        function pump() {
          return reader.read().then(function (res) {
            if (res.done) { throw new Error("stream ended"); }
            buf += dec.decode(res.value, { stream: true });
            var i;
            while ((i = buf.indexOf("\n\n")) >= 0) { onEvent(buf.slice(0, i)); buf = buf.slice(i + 2); }
            return pump();
          });
        }
        return pump();
      })
      .catch(function () {
        setStatus("offline");
        setTimeout(connect, backoff);
        backoff = Math.min(backoff * 2, 30000);
      });
  }
  connect();
})();
