#!/usr/bin/env bash
# make demo: a coordinator and real systemd nodes. Boots N nodes (default 3)
# with slipway-agent running as a systemd service, starts slipway-server,
# deploys a release, an update, then a broken release that every node
# reverts by itself, and leaves the fleet running to look at.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$PWD/bin
N=${SLIPWAY_DEMO_NODES:-3}
PORT=${SLIPWAY_DEMO_PORT:-7420}
WORK=/var/lib/slipway-demo
RUN=/run/slipway-demo
export SLIPWAY_SERVER=http://127.0.0.1:$PORT
export SLIPWAY_TOKEN_FILE=$WORK/admin.token
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
say() { printf '    %s\n' "$*"; }
slipway() { "$BIN/slipway" "$@"; }
nodes=(); for i in $(seq 1 "$N"); do nodes+=("demo-$i"); done

if [[ $EUID -ne 0 ]]; then echo "demo: error: run as root (it boots systemd-nspawn containers)" >&2; exit 1; fi
"$PWD/test/install-deps.sh" || { echo "demo: error: test/install-deps.sh failed" >&2; exit 1; }

# wait_fleet STATE TIMEOUT: until every node is in STATE, showing progress.
wait_fleet() {
  local want=$1 deadline=$((SECONDS + $2)) got total detail
  while :; do
    read -r got total detail < <(slipway nodes | awk -v want="$want" '
      NR > 1 { total++; if ($3 == want) got++; detail = detail " " $1 ":" $3 }
      END { print got + 0, total + 0, detail }')
    printf '\r    %s/%s nodes %s  (%s)   ' "$got" "$total" "$want" "$detail"
    if [[ $got -eq $total && $total -eq $N ]]; then echo; return 0; fi
    if ((SECONDS > deadline)); then echo; echo "demo: error: nodes not $want after $2s" >&2; return 1; fi
    sleep 1
  done
}

step "Cleaning up an earlier demo"
"$PWD/test/demo/down.sh" >/dev/null 2>&1 || true
mkdir -p "$WORK" "$RUN/sock"

step "Preparing three releases of a small web service in $WORK/releases"
rm -rf "$WORK/releases" && mkdir -p "$WORK/releases"
cp -r test/demo/releases/. "$WORK/releases/"
for r in "$WORK"/releases/*/; do mkdir -p "$r/bin" && cp "$BIN/slipway-testsvc" "$r/bin/web"; done
say "web-v1: first release   web-v2: an update   web-v3-broken: its /health answers 503"

step "Starting slipway-server on 127.0.0.1:$PORT (agents reach it through $RUN/sock/agent.sock)"
if (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then echo "demo: error: port $PORT is in use; set SLIPWAY_DEMO_PORT" >&2; exit 1; fi
umask 077
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/admin.token"
umask 022
cat >"$WORK/server.toml" <<TOML
listen = "127.0.0.1:$PORT"
agent_socket = "$RUN/sock/agent.sock"
state_dir = "$WORK/server"
[[admin_token]]
name = "demo"
role = "admin"
file = "$WORK/admin.token"
TOML
rm -rf "$WORK/server"
nohup "$BIN/slipway-server" --config "$WORK/server.toml" --log-format json >"$RUN/server.log" 2>&1 &
echo $! >"$RUN/server.pid"
for _ in $(seq 50); do slipway status >/dev/null 2>&1 && break; sleep 0.2; done
slipway status >/dev/null || { echo "demo: error: slipway-server did not start; see $RUN/server.log" >&2; exit 1; }
say "admin token in $WORK/admin.token; server log in $RUN/server.log"
say "dashboard: http://127.0.0.1:$PORT/ui/ (log in with the admin token: $(cat "$WORK/admin.token"))"

step "Booting ${N} nodes: real systemd (Debian bookworm) in systemd-nspawn"
say "the first run builds the node root with debootstrap (~1-2 min); later runs reuse it"
"$BIN/slipway-nodes" up "${nodes[@]}" --bind "$BIN:/opt/slipway/bin:ro" --bind "$RUN/sock:/run/slipway-server"

step "Enrolling each node: a one-time join token, and slipway-agent as a systemd service"
for n in "${nodes[@]}"; do
  slipway token create --ttl 1h 2>/dev/null | "$BIN/slipway-nodes" exec "$n" -- sh -c 'mkdir -p /etc/slipway && umask 077 && cat >/etc/slipway/join-token'
  "$BIN/slipway-nodes" exec "$n" -- sh -c 'cat >/etc/systemd/system/slipway-agent.service' <<UNIT
[Unit]
Description=Slipway agent
[Service]
ExecStart=/opt/slipway/bin/slipway-agent run --server unix:///run/slipway-server/agent.sock --label role=web --label demo=yes --join-token-file /etc/slipway/join-token
Restart=always
RestartSec=1s
UNIT
  "$BIN/slipway-nodes" exec "$n" -- systemctl daemon-reload
  "$BIN/slipway-nodes" exec "$n" -- systemctl start slipway-agent.service
  say "$n: agent started"
done
wait_fleet new 60
slipway status

step "slipway deploy web-v1: every node pulls it, switches, verifies health (3s green), and the server confirms"
slipway deploy "$WORK/releases/web-v1" --target role=web
slipway status
say "demo-1 answers: $("$BIN/slipway-nodes" exec demo-1 -- /opt/slipway/bin/slipway-testsvc -get http://127.0.0.1:8080/)"

step "slipway deploy web-v2: a rolling update, one node at a time; only what changed restarts"
slipway deploy "$WORK/releases/web-v2" --target role=web
slipway status

step "slipway deploy web-v3-broken: a canary first; its health check fails there, the canary reverts to web-v2 by itself, and the rollout halts"
set +e
slipway deploy "$WORK/releases/web-v3-broken" --target role=web
rc=$?
set -e
say "slipway deploy exited $rc: the rollout failed, and the other nodes never got the broken release"
slipway status
say "demo-1 still answers: $("$BIN/slipway-nodes" exec demo-1 -- /opt/slipway/bin/slipway-testsvc -get http://127.0.0.1:8080/)"

step "slipway events: the last 25 entries of the audit log"
total=$(slipway events --limit 1000 --json | grep -c '"seq"' || true)
slipway events --since $((total > 25 ? total - 25 : 0))

step "The fleet is still running. Look around:"
say "dashboard: http://127.0.0.1:$PORT/ui/  login token: $(cat "$WORK/admin.token")"
say "  (from another machine: ssh -L $PORT:127.0.0.1:$PORT this-host, then open the same URL)"
say "export SLIPWAY_SERVER=$SLIPWAY_SERVER SLIPWAY_TOKEN_FILE=$SLIPWAY_TOKEN_FILE"
say "$BIN/slipway status                      # the fleet at a glance"
say "$BIN/slipway node show demo-1            # one node, its units and generations"
say "$BIN/slipway rollback demo-1             # send demo-1 back to web-v1"
say "$BIN/slipway-nodes exec demo-1 -- /opt/slipway/bin/slipway-agent status"
say "$BIN/slipway-nodes exec demo-1 -- journalctl -u slipway-agent --no-pager"
say "tear it all down with: make demo-down"
