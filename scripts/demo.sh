#!/usr/bin/env bash
# The example lab and a few traces. Debian, as root:
#   scripts/demo.sh [TOPOLOGY]        (default tests/topologies/one-node.yaml)
# Leaves the lab running; prints how to take it down.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
install_deps

echo "==> cargo build --workspace --bins"
cargo build --workspace --bins
BIN="$PWD/target/debug"
export TRACEFLOW_LAB_DIR="${TRACEFLOW_LAB_DIR:-/var/run/traceflow-lab}"
TOPOLOGY="${1:-tests/topologies/one-node.yaml}"

if [ -e "$TRACEFLOW_LAB_DIR/state.json" ]; then
  echo "==> an earlier lab is in $TRACEFLOW_LAB_DIR: taking it down"
  "$BIN/traceflow-lab" down
fi

echo "==> traceflow-lab up $TOPOLOGY"
# up prints its status on stderr and `export TFCTL_CONFIG=...` as the last stdout line.
if ! UP_OUT="$("$BIN/traceflow-lab" up "$TOPOLOGY")"; then
  echo "traceflow-lab up failed (see the error above); clean up with: $BIN/traceflow-lab down" >&2
  exit 1
fi
eval "$(printf '%s\n' "$UP_OUT" | tail -n 1)"
echo "TFCTL_CONFIG=$TFCTL_CONFIG"

trace() {
  echo
  echo "==> tfctl $*"
  "$BIN/tfctl" "$@" || echo "(tfctl exited with $?)"
}

if [ "$TOPOLOGY" = tests/topologies/one-node.yaml ]; then
  echo
  echo "==> real traffic: traceflow-lab exec c1/default/p0 -- ping -c 1 10.10.0.3"
  "$BIN/traceflow-lab" exec c1/default/p0 -- ping -c 1 -W 2 10.10.0.3 || true
  trace cluster list
  trace pods --cluster c1 -n default
  trace traceflow --cluster c1 -S default/p0 -D default/p1
  trace traceflow --cluster c1 -S default/p0 -D default/web -f tcp,tcp_dst=80 -o wide
  trace traceflow --cluster c1 -S default/p1 -D 10.10.0.2 -o json
  trace list --cluster c1
  # Live traffic: the trace waits for the first new ICMP connection p0 -> p1, which the
  # pings (one new connection each) provide once the trace is armed.
  echo
  echo "==> tfctl traceflow --cluster c1 -S default/p0 -D default/p1 -L -f icmp -t 30s -o yaml  (with pings from p0)"
  "$BIN/tfctl" traceflow --cluster c1 -S default/p0 -D default/p1 -L -f icmp -t 30s -o yaml &
  LIVE=$!
  for _ in $(seq 1 20); do
    kill -0 "$LIVE" 2>/dev/null || break
    "$BIN/traceflow-lab" exec c1/default/p0 -- ping -c 1 -W 1 10.10.0.3 >/dev/null 2>&1 || true
    sleep 0.3
  done
  wait "$LIVE" || echo "(tfctl exited with $?)"
else
  "$BIN/traceflow-lab" status
fi

cat <<MSG

The lab is still up ($TRACEFLOW_LAB_DIR). Try:
  export TFCTL_CONFIG=$TFCTL_CONFIG
  $BIN/tfctl traceflow --cluster c1 -S default/p0 -D default/p1
  $BIN/tfctl list --phase Failed
  $BIN/tfctl --help
  $BIN/traceflow-lab status
  $BIN/traceflow-lab exec c1/default/p0 -- ip addr
Tear it down with:
  $BIN/traceflow-lab down
MSG
