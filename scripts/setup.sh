#!/usr/bin/env bash
# Set up everything VibeCode Ops needs on a fresh Debian machine; safe to rerun.
#   scripts/setup.sh          runtime: venv with the project, helm + kubectl
#   scripts/setup.sh --dev    the venv with the test and static-check tools only (seconds once
#                             cached): what scripts/check needs; no apt, no builds, no tools
#   scripts/setup.sh --test   everything: the runtime, the dev venv, and the real test stack: etcd, kube-apiserver (built once
#                             from Debian's source package and cached), restic, slapd,
#                             prometheus-pushgateway, postgresql-15 (Prefect's team database),
#                             docker-registry (+ umoci, skopeo), mmdebstrap (the workspace image),
#                             and the test extras; for the real node (tests marked
#                             `node`): containerd, runc, CNI plugins, kubelet & co.
#                             (same build), code-server, and the local images
set -euo pipefail
cd "$(dirname "$0")/.."
with_tests=false; [[ "${1:-}" == "--test" ]] && with_tests=true
dev_only=false; [[ "${1:-}" == "--dev" ]] && dev_only=true

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
if $with_tests; then
  have etcd || need_apt+=(etcd-server)
  have restic || need_apt+=(restic)
  have slapd || need_apt+=(slapd)
  have ldapadd || need_apt+=(ldap-utils)
  have prometheus-pushgateway || need_apt+=(prometheus-pushgateway)
  [[ -x /usr/lib/postgresql/15/bin/initdb ]] || need_apt+=(postgresql-15)
  # An OCI registry on loopback (distribution 2.8.2) for the platform's charts and images in the
  # bootstrap and air-gap tests, and the tools that build and copy OCI images there.
  have docker-registry || need_apt+=(docker-registry)
  have umoci || need_apt+=(umoci)
  have skopeo || need_apt+=(skopeo)
  # The workspace image's Debian base (tasks/image/build.py; the node's code-server image is it).
  have mmdebstrap || need_apt+=(mmdebstrap)
  # For the Kubernetes build and code-server (installed here, before they run in parallel below).
  for pkg in golang-go rsync dpkg-dev golang-github-modern-go-reflect2-dev libkrb5-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
  done
  have npm || need_apt+=(npm)
fi
if ((${#need_apt[@]})); then
  echo "setup: apt-get install ${need_apt[*]}" >&2
  as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need_apt[@]}" >/dev/null
  # Debian's docker-registry package enables a system registry on :5000 (every interface) where
  # systemd runs; the tests start their own on loopback, so that one is switched off.
  if [[ " ${need_apt[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null 2>&1; then
    as_root systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
fi

# The two long one-off builds (Kubernetes from source, ~12 min; code-server from npm, ~4 min)
# run in the background while the venv is installed; both are cached outside the repo.
bg=()
if $with_tests; then
  [[ "$(uname -s)" == Linux ]] && scripts/setup-node.sh
  logs="${VIBECODE_CACHE:-$HOME/.cache/vibecode}/logs"; mkdir -p "$logs"
  scripts/setup-envtest.sh >/dev/null 2>"$logs/setup-envtest.log" & bg+=($!)
  if [[ "$(uname -s)" == Linux ]]; then
    scripts/setup-codeserver.sh >/dev/null 2>"$logs/setup-codeserver.log" & bg+=($!)
  fi
fi

# The venv: the exact versions of requirements/ (scripts/lock writes them; CI tested them),
# then the project itself without resolving anything again.
py=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$py" -m venv .venv
lock=requirements/lock.txt; { $with_tests || $dev_only; } && lock=requirements/lock-test.txt
stamp=".venv/.installed-$(cat pyproject.toml "$lock" | sha1sum | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
  .venv/bin/pip install -q --upgrade pip >&2
  .venv/bin/pip install -q -r "$lock" >&2
  .venv/bin/pip install -q --no-deps -e . >&2
  touch "$stamp"
fi
$dev_only && exit 0
bin=$(.venv/bin/python scripts/install_tools.py)
echo "setup: helm and kubectl in $bin" >&2
if $with_tests; then
  for pid in "${bg[@]}"; do
    if ! wait "$pid"; then
      echo "setup: a background build failed; its log:" >&2
      tail -n 40 "$logs"/setup-*.log >&2
      exit 1
    fi
  done
  if [[ "$(uname -s)" == Linux ]]; then
    .venv/bin/python -m tasks.cluster.localnode.images >&2   # cached in ~/.cache/vibecode/images
  fi
  # Other projects' schemas the chart tests validate against (not vendored): fetched once where
  # GitHub answers; elsewhere the tests that need them skip and say so.
  upstream="${VIBECODE_UPSTREAM_SCHEMAS:-$HOME/.cache/vibecode/upstream}"
  if [[ ! -f "$upstream/authelia/configuration.v4.39.json" ]]; then
    .venv/bin/python scripts/fetch-upstream-schemas "$upstream" >&2 \
      || echo "setup: upstream schemas not fetched (no GitHub here?); the tests that need them skip" >&2
  fi
fi
