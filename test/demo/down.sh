#!/usr/bin/env bash
# make demo-down: stop the demo's nodes and its slipway-server.
set -uo pipefail
cd "$(dirname "$0")/../.."
RUN=/run/slipway-demo
names=$(./bin/slipway-nodes list 2>/dev/null | awk 'NR>1 && $1 ~ /^demo-/ {print $1}')
[[ -n $names ]] && ./bin/slipway-nodes down $names
if [[ -f $RUN/server.pid ]]; then
  kill "$(cat "$RUN/server.pid")" 2>/dev/null && echo "slipway-server: stopped"
  rm -f "$RUN/server.pid"
fi
exit 0
