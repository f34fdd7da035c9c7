#!/usr/bin/env bash
# Builds the web console into manager/console/dist (npm ci if needed, TypeScript from proto/,
# type check, esbuild) and links target/debug/console to it, where traceflow-manager looks by
# default. Needs node 20+, npm and protoc (scripts/lib.sh install_deps installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
build_console
