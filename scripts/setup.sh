#!/usr/bin/env bash
# Set up everything VibeCode Ops needs on a fresh Debian machine; safe to rerun.
#   scripts/setup.sh          runtime: venv with the project, helm + kubectl
#   scripts/setup.sh --test   also the real test stack: etcd, kube-apiserver (built once
#                             from Debian's source package and cached), restic, slapd,
#                             prometheus-pushgateway,
#                             and the test extras; for the real node (tests marked
#                             `node`): containerd, runc, CNI plugins, kubelet & co.
#                             (same build), code-server, and the local images
set -euo pipefail
cd "$(dirname "$0")/.."
with_tests=false; [[ "${1:-}" == "--test" ]] && with_tests=true

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
if $with_tests; then
  have etcd || need_apt+=(etcd-server)
  have restic || need_apt+=(restic)
  have slapd || need_apt+=(slapd)
  have ldapadd || need_apt+=(ldap-utils)
  have prometheus-pushgateway || need_apt+=(prometheus-pushgateway)
fi
if ((${#need_apt[@]})); then
  echo "setup: apt-get install ${need_apt[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

py=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$py" -m venv .venv
extras=""; $with_tests && extras="[test]"
stamp=".venv/.installed$extras-$(sha1sum pyproject.toml | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
  .venv/bin/pip install -q --upgrade pip >&2
  .venv/bin/pip install -q -e ".$extras" >&2
  touch "$stamp"
fi
bin=$(.venv/bin/python scripts/install_tools.py)
echo "setup: helm and kubectl in $bin" >&2
if $with_tests; then
  [[ "$(uname -s)" == Linux ]] && scripts/setup-node.sh
  scripts/setup-envtest.sh >/dev/null
  if [[ "$(uname -s)" == Linux ]]; then
    scripts/setup-codeserver.sh >/dev/null
    .venv/bin/python -m tests.harness.images >&2   # cached in ~/.cache/vibecode/images
  fi
fi
