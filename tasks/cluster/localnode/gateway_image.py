"""The HR gateway's image (``vibecode-ops``), built on this machine for the one-node cluster.

No registry is reachable here, so the image is made the way tasks/cluster/localnode/images.py
makes the others: a root filesystem folder packed with umoci. It holds Debian's Python 3.11
(its standard library and every library its binary and extension modules link), the
project's runtime dependencies copied from the installed environment (the distributions
``vibecode-ops`` requires, resolved from their metadata, none of the test extras), and the
project's own packages; ``vibecode`` runs the CLI, as ``deployments/gateway`` expects, as uid
10001 with a read-only root filesystem (HOME and Prefect's files in /tmp).

Usage: ``python -m tasks.cluster.localnode.gateway_image`` builds it (cached) and prints it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

from tasks.cluster.localnode import images

NAME = "vibecode-ops"
VERSION = "0.1.0"
PYTHON = Path("/usr/bin/python3.11")
STDLIB = Path("/usr/lib/python3.11")
SKIP_STDLIB = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "__pycache__",
               "config-3.11-x86_64-linux-gnu", "site-packages", "dist-packages"}
PROJECT_PACKAGES = ("flows", "tasks", "gateway", "vibecode_cli")
SITE = "/opt/vibecode/site"
APP = "/opt/vibecode/app"


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_distributions(root: str = "vibecode-ops") -> list[metadata.Distribution]:
    """``root`` and everything it requires at run time: markers evaluated here, and the extras a
    requirement asks for (``pydantic[email]``) followed; the root's own extras (tests) are not."""
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    seen: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, str]] = set()
    todo: list[tuple[str, str]] = [(root, "")]
    while todo:
        name, extra = todo.pop()
        name = _key(name)
        if (name, extra) in done:
            continue
        done.add((name, extra))
        try:
            dist = seen.get(name) or metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency that is not installed
        seen[name] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({**env, "extra": extra}):
                todo += [(req.name, "")] + [(req.name, e) for e in req.extras]
    return [d for k, d in sorted(seen.items()) if k != _key(root)]


def _copy_distribution(dist: metadata.Distribution, site: Path) -> int:
    copied = 0
    for f in dist.files or []:
        src = Path(str(dist.locate_file(f)))
        parts = Path(str(f)).parts
        if ".." in parts or "__pycache__" in parts or not src.is_file():
            continue  # scripts in bin/, bytecode
        dest = site / f
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
        copied += 1
    return copied


def _copy_stdlib(root: Path) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in SKIP_STDLIB or n.endswith(".pyc")}

    shutil.copytree(STDLIB, root / STDLIB.relative_to("/"), ignore=ignore, symlinks=True)
    for so in (root / STDLIB.relative_to("/") / "lib-dynload").glob("*.so"):
        _libraries(root, so)


def _libraries(root: Path, elf: Path) -> None:
    """Every shared library ``ldd`` names for ``elf``, at the same path in ``root``."""
    proc = subprocess.run(["ldd", str(elf)], capture_output=True, text=True)
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        parts = line.split()
        lib = parts[2] if "=>" in parts and len(parts) > 2 else (parts[0] if parts and parts[0].startswith("/") else "")
        if lib.startswith("/") and not (root / lib.lstrip("/")).exists():
            (root / lib.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(lib), root / lib.lstrip("/"))


def _inputs_digest(dists: list[metadata.Distribution]) -> str:
    h = hashlib.sha256(PYTHON.read_bytes())
    for d in dists:
        h.update(f"{d.metadata['Name']}=={d.version}\n".encode())
    for pkg in PROJECT_PACKAGES:
        for path in sorted((images.ROOT / pkg).rglob("*.py")):
            h.update(path.relative_to(images.ROOT).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def unavailable() -> str | None:
    if not PYTHON.exists() or not STDLIB.is_dir():
        return f"Debian's Python 3.11 ({PYTHON}) is not installed"
    try:
        metadata.distribution("vibecode-ops")
    except metadata.PackageNotFoundError:
        return "the project is not installed in this environment (scripts/setup.sh)"
    return None


def hr_gateway_image() -> images.Image:
    why = unavailable()
    if why:
        raise RuntimeError(f"cannot build the HR gateway image: {why}")
    dists = runtime_distributions()
    key = images._digest("hr-gateway", _inputs_digest(dists))

    def build(rootfs: Path, name: str, archive: Path) -> None:
        images._rootfs_skeleton(rootfs)
        images._add_busybox(rootfs)
        with open(rootfs / "etc/passwd", "a") as f:
            f.write("gateway:x:10001:10001:gateway:/tmp:/bin/sh\n")
        with open(rootfs / "etc/group", "a") as f:
            f.write("gateway:x:10001:\n")
        images._add_dynamic(rootfs, str(PYTHON), str(PYTHON))
        _copy_stdlib(rootfs)
        site = rootfs / SITE.lstrip("/")
        for dist in dists:
            _copy_distribution(dist, site)
        for so in site.rglob("*.so"):
            _libraries(rootfs, so)
        app = rootfs / APP.lstrip("/")
        for pkg in PROJECT_PACKAGES:
            shutil.copytree(images.ROOT / pkg, app / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        launcher = rootfs / "usr/local/bin/vibecode"
        launcher.parent.mkdir(parents=True, exist_ok=True)
        launcher.write_text(f"#!/bin/sh\nexec {PYTHON} -c 'import sys; from vibecode_cli import main; "
                            f"sys.exit(main())' \"$@\"\n")
        launcher.chmod(0o755)
        images._pack(rootfs, name, archive, user="10001:10001", entrypoint=["/usr/local/bin/vibecode"], cmd=["gateway"],
                     env=["PATH=/usr/local/bin:/usr/bin:/bin", f"PYTHONPATH={APP}:{SITE}", "HOME=/tmp",
                          "PYTHONDONTWRITEBYTECODE=1", "PREFECT_HOME=/tmp/.prefect"], workdir="/tmp")

    return images._cached(NAME, VERSION, key, build)


if __name__ == "__main__":
    image = hr_gateway_image()
    print(f"{image.name}\t{image.archive}")
    sys.exit(0)
