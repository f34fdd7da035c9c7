#!/usr/bin/env bash
# Every check and test of the workspace, as CI runs it (.ci/run). Debian, as root:
#   scripts/test.sh
# Lab and real-OVS tests need root and Open vSwitch and fail (never skip) without them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
install_deps
# One build from scratch: incremental state would only cost disk (about half of target/).
export CARGO_INCREMENTAL=0

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
# Helm charts: lint, render, validate against Kubernetes 1.33, CRD schema (a few seconds).
bash scripts/check-charts.sh
echo "==> cargo build --workspace --bins"
# The end-to-end tests start the real binaries from target/debug.
cargo build --workspace --bins
# One OCI image per binary, built from scratch with umoci, each --version run from it (~20 s).
bash scripts/images.sh --bin-dir "${CARGO_TARGET_DIR:-target}/debug" --out "${CARGO_TARGET_DIR:-target}/images" --check

# Labs a killed earlier run left behind (the lab tests use $TMPDIR/tfl-<tag><n>, /tmp by
# default; another TMPDIR keeps this run's hands off labs of a run elsewhere on the machine).
for d in "${TMPDIR:-/tmp}"/tfl-*/; do
  if [ -f "$d/state.json" ]; then
    echo "==> taking down a stale lab in $d"
    target/debug/traceflow-lab --dir "$d" down || true
  fi
done

# Parallelism: nextest and libtest both default to one test per core (2 here), which is what the
# OVS-starting lab tests can take; every lab has its own directory and namespace prefix.
if cargo nextest --version >/dev/null 2>&1; then
  echo "==> cargo nextest run --workspace"
  cargo nextest run --workspace --no-fail-fast
else
  echo "==> cargo test --workspace"
  cargo test --workspace --no-fail-fast
fi
