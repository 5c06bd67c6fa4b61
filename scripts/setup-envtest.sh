#!/usr/bin/env bash
# Fill a KUBEBUILDER_ASSETS directory (the envtest convention: kube-apiserver + etcd) so the
# tests can run a real API server, plus the node binaries (kubelet, kube-controller-manager,
# kube-scheduler, kube-proxy) that tasks/cluster/localnode/node.py runs for real pods.
#
# Nothing can be downloaded here except distribution packages, so Kubernetes v1.20.2 is
# built from Debian's `kubernetes` source package (all five binaries in one build, ~12 min
# on 2 cores) and cached outside the repo. etcd comes from Debian's etcd-server package.
# The vendored modern-go/reflect2 1.0.1 panics under the Go Debian ships (mapiternext), so it
# is replaced by Debian's 1.0.2 before building.
#
# Usage: scripts/setup-envtest.sh            -> prints the assets directory on stdout
# Env:   KUBEBUILDER_ASSETS  use this directory as-is if it already holds every binary
#        VIBECODE_CACHE      cache root (default ~/.cache/vibecode)
set -euo pipefail

log() { echo "setup-envtest: $*" >&2; }
BINS=(kube-apiserver kubelet kube-controller-manager kube-scheduler kube-proxy)
# Bump when the build recipe changes, so an older cache is rebuilt rather than trusted.
RECIPE=2

complete() {
  local d=$1 b
  [[ -x "$d/etcd" ]] || return 1
  for b in "${BINS[@]}"; do [[ -x "$d/$b" ]] || return 1; done
}

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]] && complete "$KUBEBUILDER_ASSETS"; then
  log "using KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS}"
  echo "${KUBEBUILDER_ASSETS}"
  exit 0
fi

K8S_VERSION=1.20.2
cache="${VIBECODE_CACHE:-$HOME/.cache/vibecode}"
assets="$cache/envtest/$K8S_VERSION"
mkdir -p "$assets"
# One build at a time: a second caller waits for the first one's result.
exec 9>"$cache/envtest/.lock"
flock 9

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# etcd: Debian's etcd-server puts the binary at /usr/bin/etcd.
if ! command -v etcd >/dev/null 2>&1; then
  log "installing etcd-server"
  as_root apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq etcd-server >&2
fi
ln -sf "$(command -v etcd)" "$assets/etcd"

if ! complete "$assets" || [[ "$(cat "$assets/.recipe" 2>/dev/null)" != "$RECIPE" ]]; then
  log "building Kubernetes $K8S_VERSION (${BINS[*]}) from Debian's source package (one-off, ~12 min)"
  as_root apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
      golang-go rsync dpkg-dev golang-github-modern-go-reflect2-dev >&2
  # Enable deb-src by deriving a stanza from the machine's own deb sources.
  if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ ; then
    src=/etc/apt/sources.list.d/debian.sources
    [[ -f "$src" ]] || { log "no $src to derive deb-src from"; exit 1; }
    sed 's/^Types: deb$/Types: deb-src/' "$src" | as_root tee /etc/apt/sources.list.d/vibecode-deb-src.sources >/dev/null
    as_root apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  fi
  work="$cache/envtest/build"
  rm -rf "$work"; mkdir -p "$work"
  (cd "$work" && apt-get source --download-only kubernetes >&2)
  tarball=$(ls "$work"/kubernetes_*.orig.tar.gz | head -n1)
  mkdir -p "$work/src" && tar -xzf "$tarball" -C "$work/src" --strip-components=1
  cd "$work/src"
  reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
  [[ -f "$reflect2/reflect2.go" ]] || { log "no reflect2 1.0.2 at $reflect2"; exit 1; }
  rm -rf vendor/github.com/modern-go/reflect2
  cp -r "$reflect2" vendor/github.com/modern-go/reflect2
  sed -i 's#^github.com/modern-go/reflect2 v1.0.1#github.com/modern-go/reflect2 v1.0.2#' vendor/modules.txt go.mod
  sed -i '/^github.com\/modern-go\/reflect2 v1.0.1/d' go.sum
  mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes
  what=""; for b in "${BINS[@]}"; do what+="cmd/$b "; done
  env HOME="$work/home" GOPATH="$PWD/.go" CGO_ENABLED=0 \
      make WHAT="${what% }" >&2
  for b in "${BINS[@]}"; do install -m 0755 "_output/bin/$b" "$assets/$b"; done
  # pause.c, for the node's sandbox image (tasks/cluster/localnode/images.py builds it with gcc -static).
  install -m 0644 build/pause/linux/pause.c "$assets/pause.c"
  echo "$RECIPE" > "$assets/.recipe"
  cd / && rm -rf "$work"
  log "built ${BINS[*]} into $assets"
fi
echo "$assets"
