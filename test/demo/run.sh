#!/usr/bin/env bash
# make demo: boot a real systemd node, switch it to a release, update it,
# then deploy a broken release and watch the agent revert it by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$PWD/bin
NODE=${SLIPWAY_DEMO_NODE:-demo-1}
WORK=/var/lib/slipway-demo
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
say() { printf '    %s\n' "$*"; }
on_node() { "$BIN/slipway-nodes" exec "$NODE" -- "$@"; }
agent() { on_node /opt/slipway/bin/slipway-agent --log-format console "$@"; }

if [[ $EUID -ne 0 ]]; then echo "demo: error: run as root (it boots systemd-nspawn containers)" >&2; exit 1; fi
for c in systemd-nspawn debootstrap; do
  command -v "$c" >/dev/null || { echo "demo: error: $c missing; run .ci/run or: apt-get install systemd-container debootstrap" >&2; exit 1; }
done

step "Preparing three releases of a small web service in $WORK/releases"
rm -rf "$WORK/releases" && mkdir -p "$WORK/releases"
cp -r test/demo/releases/. "$WORK/releases/"
for r in "$WORK"/releases/*/; do mkdir -p "$r/bin" && cp "$BIN/slipway-testsvc" "$r/bin/web"; done
say "web-v1: first release   web-v2: an update   web-v3-broken: its /health answers 503"

step "Booting node $NODE: a real systemd (Debian bookworm) in systemd-nspawn"
say "the first run builds the node root with debootstrap (~1-2 min); later runs reuse it"
"$BIN/slipway-nodes" down "$NODE" >/dev/null 2>&1 || true
"$BIN/slipway-nodes" up "$NODE" --bind "$BIN:/opt/slipway/bin:ro" --bind "$WORK/releases:/releases:ro"

step "Applying web-v1: stage, switch units over D-Bus, verify health (3s green)"
agent apply /releases/web-v1
say "the service answers: $(on_node /opt/slipway/bin/slipway-testsvc -get http://127.0.0.1:8080/)"

step "Applying web-v2: only what changed restarts"
agent apply /releases/web-v2
say "the service answers: $(on_node /opt/slipway/bin/slipway-testsvc -get http://127.0.0.1:8080/)"

step "Applying web-v3-broken: its health check fails, so the agent reverts to generation 2 by itself"
set +e
agent apply /releases/web-v3-broken
rc=$?
set -e
say "apply exited $rc (3 = failed and reverted)"
say "the service answers: $(on_node /opt/slipway/bin/slipway-testsvc -get http://127.0.0.1:8080/)"

step "slipway-agent status"
agent status
step "slipway-agent generations"
agent generations

step "The node is still running. Look around:"
say "$BIN/slipway-nodes exec $NODE -- /opt/slipway/bin/slipway-agent status"
say "$BIN/slipway-nodes exec $NODE -- /opt/slipway/bin/slipway-agent rollback"
say "$BIN/slipway-nodes exec $NODE -- systemctl status web.service"
say "$BIN/slipway-nodes exec $NODE -- journalctl -u web.service --no-pager"
say "tear it down with: make demo-down"
