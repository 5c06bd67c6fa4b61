"""Container images for the real node, built locally: no registry is reachable here.

Each image is a root filesystem folder packed as an OCI image (umoci), turned into a
docker-archive (skopeo) and cached outside the repository, keyed by a recipe version and
its inputs; :func:`import_all` loads the archives into the node's containerd. Pods use
``imagePullPolicy: IfNotPresent``/``Never``, so nothing is ever pulled.

- pause:       Kubernetes' own ``build/pause/linux/pause.c``, ``gcc -static`` (the sandbox)
- base:        busybox-static, for throw-away pods in tests
- restic:      Debian's restic and the two libraries it links (libc, the loader)
- code-server: the cached code-server install (scripts/setup-codeserver.sh) and its
               Node 24, run as uid 1000 ("coder"), like codercom/code-server

Usage: ``python -m tasks.cluster.localnode.images`` builds what is missing and prints the archives.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tasks.cluster.localnode.envtest import ROOT, assets_dir

RECIPE = "1"  # bump when a recipe below changes, so old archives are rebuilt
REGISTRY = "vibecode.local"  # a name no registry answers to: these images exist only here
CACHE = Path(os.environ.get("VIBECODE_CACHE", Path.home() / ".cache" / "vibecode")) / "images"
PATH_ENV = "PATH=/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Image:
    name: str  # repository:tag as pods and containerd see it
    archive: Path


def _run(*argv: str | Path, **kw) -> str:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def _rootfs_skeleton(root: Path, *, home: str | None = None) -> None:
    for d in ("bin", "etc", "tmp", "usr/bin", "lib64", "lib/x86_64-linux-gnu", "proc", "sys", "dev"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\ncoder:x:1000:1000:coder:/home/coder:/bin/sh\n"
                                     "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (root / "etc/group").write_text("root:x:0:\ncoder:x:1000:\nnogroup:x:65534:\n")
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
    shutil.copy2(binary, root / dest.lstrip("/"))
    for line in _run("ldd", binary).splitlines():
        parts = line.split()
        lib = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if lib.startswith("/"):
            target = root / lib.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(lib), target)


def _pack(rootfs: Path, name: str, archive: Path, *, user: str, entrypoint: list[str], cmd: list[str],
          env: list[str], workdir: str = "/") -> None:
    """rootfs folder -> OCI layout (umoci) -> docker-archive (skopeo), owned as in the folder."""
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        layout, bundle = Path(tmp) / "oci", Path(tmp) / "bundle"
        tag = name.rpartition(":")[2]
        _run("umoci", "init", "--layout", layout)
        _run("umoci", "new", "--image", f"{layout}:{tag}")
        _run("umoci", "unpack", "--image", f"{layout}:{tag}", bundle)
        shutil.rmtree(bundle / "rootfs")
        _run("cp", "-a", rootfs, bundle / "rootfs")
        _run("umoci", "repack", "--image", f"{layout}:{tag}", bundle)
        config = ["--config.user", user, "--config.workingdir", workdir]
        for e in env:
            config += ["--config.env", e]
        for e in entrypoint:
            config += ["--config.entrypoint", e]
        for c in cmd:
            config += ["--config.cmd", c]
        _run("umoci", "config", "--image", f"{layout}:{tag}", *config)
        partial = archive.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        _run("skopeo", "copy", "--quiet", f"oci:{layout}:{tag}", f"docker-archive:{partial}:{name}")
        partial.rename(archive)


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


def code_server_dir() -> Path:
    out = _run("bash", ROOT / "scripts" / "setup-codeserver.sh").strip()
    return Path(out.splitlines()[-1])


def code_server_image() -> Image:
    src = code_server_dir()
    version = src.name
    node = src / "bin" / "node"
    key = _digest(version, hashlib.sha256(Path(os.path.realpath(node)).read_bytes()).hexdigest())

    def build(rootfs: Path, name: str, archive: Path) -> None:
        _rootfs_skeleton(rootfs, home="/home/coder")
        _add_busybox(rootfs)
        app = rootfs / "usr/lib/code-server"
        app.mkdir(parents=True)
        _run("cp", "-a", src / "node_modules", app / "node_modules")
        _add_dynamic(rootfs, os.path.realpath(node), "/usr/lib/code-server/node")
        # node links libstdc++ & co.: _add_dynamic copied them; code-server's native modules
        # (kerberos, spdlog...) link the same set or less.
        for so in _run("find", app / "node_modules", "-name", "*.node").split():
            ldd = subprocess.run(["ldd", so], capture_output=True, text=True)  # some are for Windows/macOS
            for line in ldd.stdout.splitlines() if ldd.returncode == 0 else []:
                parts = line.split()
                lib = parts[2] if "=>" in parts and len(parts) > 2 else ""
                if lib.startswith("/") and not (rootfs / lib.lstrip("/")).exists():
                    (rootfs / lib.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(os.path.realpath(lib), rootfs / lib.lstrip("/"))
        launcher = rootfs / "usr/bin/code-server"
        launcher.write_text("#!/bin/sh\nexec /usr/lib/code-server/node "
                            "/usr/lib/code-server/node_modules/code-server/out/node/entry.js \"$@\"\n")
        launcher.chmod(0o755)
        os.chown(rootfs / "home/coder", 1000, 1000)
        _pack(rootfs, name, archive, user="1000:1000", entrypoint=["/usr/bin/code-server"], cmd=[],
              env=[PATH_ENV, "HOME=/home/coder", "USER=coder", "SHELL=/bin/sh"], workdir="/home/coder")

    return _cached("code-server", version, key, build)


def all_images(code_server: bool = True) -> list[Image]:
    images = [pause_image(), base_image(), restic_image()]
    if code_server:
        images.append(code_server_image())
    return images


def import_all(images: list[Image], ctr: list[str]) -> None:
    """Load archives into containerd's k8s.io namespace (where the kubelet's CRI looks)."""
    for image in images:
        _run(*ctr, "-n", "k8s.io", "images", "import", image.archive)


if __name__ == "__main__":
    for image in all_images():
        print(f"{image.name}\t{image.archive}")
