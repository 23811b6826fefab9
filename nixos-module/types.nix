# Option types of agent.nix and server.nix: the rules agent/config and
# server/config apply when the daemons start, checked when the system is
# evaluated instead, so a bad value fails `nixos-rebuild` with the option's
# name rather than a unit that will not start. Each type's description is
# what the module system prints in its error ("… is not of type `<it>'").
{ lib }:

let
  inherit (builtins) match isString elemAt fromJSON split filter isList stringLength foldl';

  # A type of strings checked by ok, merged like types.str.
  stringType = name: description: ok: lib.mkOptionType {
    inherit name description;
    descriptionClass = "noun";
    check = v: isString v && ok v;
    merge = lib.mergeEqualOption;
  };

  # Hosts: an IP address (IPv6 in brackets) or a host name; none means all
  # addresses (a bind or listen address only).
  ipRE = "[0-9]{1,3}(\\.[0-9]{1,3}){3}|[[][0-9A-Fa-f:.]+[]]";
  hostRE = "${ipRE}|[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?";

  # decimal "007": 7 (fromJSON refuses leading zeros; Go's strconv.Atoi
  # does not).
  decimal = digits: fromJSON (elemAt (match "0*([0-9]+)" digits) 0);

  # parseHostPort hostPattern s: { host; port; } of "host:port" (host
  # matching hostPattern, or none), or null.
  parseHostPort = hostPattern: s:
    let m = match "((${hostPattern})?):([0-9]{1,10})" s;
    in if m == null then null else { host = elemAt m 0; port = decimal (lib.last m); };

  address = { name, what, hostPattern, hostRequired }:
    stringType name "${what} (port 1 to 65535)" (s:
      let a = parseHostPort hostPattern s;
      in a != null && a.port >= 1 && a.port <= 65535 && (!hostRequired || a.host != ""));

  listenAddress = address {
    name = "listenAddress";
    what = ''listen address "host:port" or ":port"'';
    hostPattern = hostRE;
    hostRequired = false;
  };

  # Go duration strings ("90s", "1m30s", "1.5h"), in nanoseconds.
  unitNs = { ns = 1; us = 1000; "µs" = 1000; ms = 1000000; s = 1000000000; m = 60000000000; h = 3600000000000; };
  pow10 = n: if n == 0 then 1 else 10 * pow10 (n - 1);
  durationNs = s:
    let
      parts = split "([0-9]{1,6})(\\.([0-9]{1,9}))?(ns|us|µs|ms|s|m|h)" s;
      terms = filter isList parts;
      rest = filter (p: !(isList p)) parts;
      termNs = t:
        let
          unit = unitNs.${elemAt t 3};
          frac = elemAt t 2;
        in
        decimal (elemAt t 0) * unit
        + (if frac == null then 0 else decimal frac * unit / pow10 (stringLength frac));
    in
    if s == "" || terms == [ ] || lib.any (p: p != "") rest then null
    else foldl' (sum: t: sum + termNs t) 0 terms;
  # http(s)://host[:port][/path]: no credentials, query or fragment; a
  # port from 1 to 65535.
  httpUrl = s:
    let
      m = match "https?://([^/?#@]+)(/[^?#@]*)?" s;
      authority = elemAt m 0;
      hp = parseHostPort hostRE authority;
    in
    m != null && (match hostRE authority != null || (hp != null && hp.host != "" && hp.port >= 1 && hp.port <= 65535));
in
rec {
  inherit parseHostPort durationNs;

  # The port of a host:port already checked by one of the address types.
  portOf = s: (parseHostPort hostRE s).port;

  # The host of a host:port already checked by one of the address types.
  hostOf = s: (parseHostPort hostRE s).host;

  # A node name, also a serf member name and an admin token's name
  # (agent/config and server/config: ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$).
  nodeName = lib.types.strMatching "[A-Za-z0-9][A-Za-z0-9._-]{0,62}" // {
    description = "name of 1 to 63 of [A-Za-z0-9._-], starting with a letter or digit";
  };

  # A tailnet host name as WhoIs reports it: one lower-case DNS label.
  dnsLabel = lib.types.strMatching "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?" // {
    description = "lower-case DNS label (1 to 63 of a-z, 0-9 and -, not starting or ending with -)";
  };

  # A Tailscale ACL tag.
  tag = lib.types.strMatching "tag:[A-Za-z0-9][A-Za-z0-9-]*" // {
    description = "Tailscale tag \"tag:name\" (name: letters, digits and -)";
  };

  # A label's value (agent/config: ^[A-Za-z0-9._-]{0,63}$).
  labelValue = lib.types.strMatching "[A-Za-z0-9._-]{0,63}" // {
    description = "label value of at most 63 of [A-Za-z0-9._-]";
  };

  # What agent/config and server/config call an absolute, clean path.
  absolutePath = stringType "absolutePath" "absolute, clean path (starting with /; no trailing /, //, . or .. component)" (s:
    match "/|(/[^/]+)+" s != null && match "(.*/)?\\.\\.?(/.*)?" s == null);

  # Where a daemon listens: "host:port" or ":port" (every address).
  inherit listenAddress;

  # A listen address, or "" to disable the listener.
  listenOrDisabled = stringType "listenAddressOrDisabled"
    ''listen address "host:port" or ":port" (port 1 to 65535), or "" (disabled)''
    (s: s == "" || listenAddress.check s);

  # Where serf binds: an IP address (or none: every address) and a port.
  bindAddress = address {
    name = "bindAddress";
    what = ''bind address "ip:port" or ":port"'';
    hostPattern = ipRE;
    hostRequired = false;
  };

  # Where other serf members reach this one: an IP address and a port.
  advertiseAddress = address {
    name = "advertiseAddress";
    what = ''address "ip:port"'';
    hostPattern = ipRE;
    hostRequired = true;
  };

  # A serf member to join: a host (name or IP address) and a port.
  memberAddress = address {
    name = "memberAddress";
    what = ''address "host:port"'';
    hostPattern = hostRE;
    hostRequired = true;
  };

  # The agent's server: http(s)://host[:port][/prefix] or unix:///path,
  # never with credentials, a query or a fragment.
  serverUrl = stringType "serverUrl" ''URL "http(s)://host[:port]" (no credentials, query or fragment) or "unix:///absolute/path.sock"'' (s:
    if lib.hasPrefix "unix://" s then absolutePath.check (lib.removePrefix "unix://" s)
    else httpUrl s);

  # An etcd client URL: http(s)://host:port, no path (server/config).
  etcdEndpoint = stringType "etcdEndpoint" ''etcd endpoint "http(s)://host:port" (no path, credentials, query or fragment)'' (s:
    let
      m = match "https?://([^/?#@]+)" s;
      hp = if m == null then null else parseHostPort hostRE (elemAt m 0);
    in
    hp != null && hp.host != "" && hp.port >= 1 && hp.port <= 65535);

  # A key prefix in etcd: starts and ends with "/".
  etcdPrefix = stringType "etcdPrefix" ''key prefix starting and ending with "/" (e.g. "/slipway/")'' (s: match "/([^[:space:]]*/)?" s != null);

  # A coordination server (Tailscale's control URL, Headscale's server_url).
  controlUrl = stringType "controlUrl" ''URL "http(s)://host[:port]" (no credentials, query or fragment)'' httpUrl;

  # A Go duration ("90s", "1m30s") from min to max (Go duration strings
  # too; max null: no upper bound).
  duration = min: max: stringType "duration"
    ''Go duration such as "90s" or "1m30s", ${if max == null then "at least ${min}" else "${min} to ${max}"}''
    (s:
      let ns = durationNs s;
      in ns != null && ns >= durationNs min && (max == null || ns <= durationNs max));
}
