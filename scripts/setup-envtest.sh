#!/usr/bin/env bash
# Fill a KUBEBUILDER_ASSETS directory (the envtest convention: kube-apiserver + etcd)
# so the tests can run a real API server without nodes.
#
# Nothing can be downloaded here except distribution packages, so kube-apiserver is
# built from Debian's `kubernetes` source package (v1.20.2, ~8 min on 2 cores) and
# cached outside the repo. etcd comes from Debian's etcd-server package.
#
# Usage: scripts/setup-envtest.sh            -> prints the assets directory on stdout
# Env:   KUBEBUILDER_ASSETS  use this directory as-is if it already holds both binaries
#        VIBECODE_CACHE      cache root (default ~/.cache/vibecode)
set -euo pipefail

log() { echo "setup-envtest: $*" >&2; }

if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "${KUBEBUILDER_ASSETS}/kube-apiserver" && -x "${KUBEBUILDER_ASSETS}/etcd" ]]; then
  log "using KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS}"
  echo "${KUBEBUILDER_ASSETS}"
  exit 0
fi

K8S_VERSION=1.20.2
cache="${VIBECODE_CACHE:-$HOME/.cache/vibecode}"
assets="$cache/envtest/$K8S_VERSION"
mkdir -p "$assets"

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# etcd: Debian's etcd-server puts the binary at /usr/bin/etcd.
if ! command -v etcd >/dev/null 2>&1; then
  log "installing etcd-server"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server >&2
fi
ln -sf "$(command -v etcd)" "$assets/etcd"

if [[ ! -x "$assets/kube-apiserver" ]]; then
  log "building kube-apiserver $K8S_VERSION from Debian's source package (one-off, ~8 min)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y golang-go rsync dpkg-dev >&2
  # Enable deb-src by deriving a stanza from the machine's own deb sources.
  if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ ; then
    src=/etc/apt/sources.list.d/debian.sources
    [[ -f "$src" ]] || { log "no $src to derive deb-src from"; exit 1; }
    sed 's/^Types: deb$/Types: deb-src/' "$src" | as_root tee /etc/apt/sources.list.d/vibecode-deb-src.sources >/dev/null
    as_root apt-get update >&2
  fi
  work="$cache/envtest/build"
  rm -rf "$work"; mkdir -p "$work"
  (cd "$work" && apt-get source --download-only kubernetes >&2)
  tarball=$(ls "$work"/kubernetes_*.orig.tar.gz | head -n1)
  mkdir -p "$work/src" && tar -xzf "$tarball" -C "$work/src" --strip-components=1
  cd "$work/src"
  mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes
  env HOME="$work/home" GOPATH="$PWD/.go" CGO_ENABLED=0 \
      make WHAT=cmd/kube-apiserver >&2
  install -m 0755 _output/bin/kube-apiserver "$assets/kube-apiserver"
  cd / && rm -rf "$work"
  log "built $assets/kube-apiserver"
fi
echo "$assets"
