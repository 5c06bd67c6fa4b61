"""OCI images from a root filesystem folder, without Docker: GNU tar, umoci and skopeo.

One deterministic layer per image: every entry's mtime is the given epoch, names are sorted,
owners numeric, no atime/ctime, no extended attributes (so no file capabilities), and no
setuid/setgid bit (``--mode=ug-s``; :func:`strip_setuid` also clears them in the folder, so
what is packed is what was checked). umoci adds the layer and writes the configuration with
``--created`` at the same epoch and no history entries, so the same folder gives the same
manifest digest. Used by the workspace image (tasks/image/build.py) and the node harness's
images (tasks/cluster/localnode/images.py). Adapter: runs the tools.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

EPOCH = 1704067200  # 2024-01-01T00:00:00Z: the images' one timestamp, so it never varies


@dataclass(frozen=True)
class Config:
    user: str
    entrypoint: list[str]
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    workdir: str = "/"
    labels: dict[str, str] = field(default_factory=dict)


def run(*argv: str | Path, **kw) -> str:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def strip_setuid(rootfs: Path) -> list[str]:
    """Clear setuid/setgid bits on every file under ``rootfs``; the paths that had one. A
    workspace runs with allowPrivilegeEscalation false anyway: this makes the image itself
    safe under a laxer policy, and `su`/`passwd` fail plainly instead of half-working."""
    found = []
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for name in filenames + dirnames:
            p = Path(dirpath) / name
            st = p.lstat()
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID) and stat.S_ISREG(st.st_mode):
                os.chmod(p, stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
                found.append("/" + str(p.relative_to(rootfs)))
    return sorted(found)


# What node-gyp leaves beside a native module's ``build/Release/*.node``: the generated
# Makefiles, its config and the object files with their dependency lists. They name the folder
# the module was compiled in (the cache under $HOME), so two machines' otherwise identical
# builds differed in exactly these files, and no program reads them at run time.
GYP_FILES = ("Makefile", "config.gypi")
GYP_SUFFIXES = (".mk", ".Makefile")
GYP_DIRS = ("obj.target", ".deps", "obj")


def strip_native_build_files(root: Path) -> int:
    """Remove node-gyp's build intermediates under every ``node_modules/**/build`` folder of
    ``root`` (at any depth inside it), keeping the compiled modules; how many files went."""
    removed = 0
    for build in [p for p in root.rglob("build") if p.is_dir() and "node_modules" in p.parts]:
        if not build.exists():  # inside a build folder removed a moment ago
            continue
        for d in [q for q in build.rglob("*") if q.is_dir() and not q.is_symlink()
                  and (q.name == ".deps" or q.name in GYP_DIRS and q.parent.name in ("Release", "Debug"))]:
            if d.exists():  # not inside one removed a moment ago
                removed += sum(1 for q in d.rglob("*") if q.is_file())
                shutil.rmtree(d)
        for f in [q for q in build.rglob("*") if q.is_file() and not q.is_symlink()
                  and (q.name in GYP_FILES or q.name.endswith(GYP_SUFFIXES))]:
            f.unlink()
            removed += 1
    return removed


def layer_tar(rootfs: Path, out: Path, epoch: int = EPOCH) -> None:
    entries = sorted(os.listdir(rootfs))
    run("tar", "--create", "--file", out, "--directory", rootfs, "--sort=name", "--format=posix",
        "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime", f"--mtime=@{epoch}",
        "--numeric-owner", "--no-xattrs", "--no-acls", "--no-selinux", "--mode=ug-s", *entries)


def new_layout(layout: Path, tag: str, layer: Path, config: Config, epoch: int = EPOCH) -> str:
    """An OCI layout holding one image (``tag``) of one layer; its manifest digest."""
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", f"{layout}:{tag}")
    run("umoci", "raw", "add-layer", "--no-history", "--image", f"{layout}:{tag}", layer)
    created = f"{datetime.fromtimestamp(epoch, timezone.utc):%Y-%m-%dT%H:%M:%SZ}"
    args = ["--config.user", config.user, "--config.workingdir", config.workdir, "--created", created,
            "--no-history"]
    for e in config.env:
        args += ["--config.env", e]
    for e in config.entrypoint:
        args += ["--config.entrypoint", e]
    for c in config.cmd:
        args += ["--config.cmd", c]
    for k, v in sorted(config.labels.items()):
        args += ["--config.label", f"{k}={v}"]
    run("umoci", "config", "--image", f"{layout}:{tag}", *args)
    run("umoci", "gc", "--layout", layout)
    return manifest_digest(layout, tag)


def manifest_digest(layout: Path, tag: str) -> str:
    index = json.loads((layout / "index.json").read_text())
    for m in index["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return m["digest"]
    raise RuntimeError(f"{layout} has no image tagged {tag}")


def blob(layout: Path, digest: str) -> Path:
    algo, _, hexd = digest.partition(":")
    return layout / "blobs" / algo / hexd


def image_size(layout: Path, tag: str) -> dict[str, int]:
    """Compressed (what a registry stores) and uncompressed size of the image's layers, bytes."""
    manifest = json.loads(blob(layout, manifest_digest(layout, tag)).read_text())
    compressed = sum(layer["size"] for layer in manifest["layers"])
    return {"compressed": compressed}


def layer_files(layout: Path, tag: str) -> dict[str, str]:
    """path -> sha256 (or link target, or mode) of every entry of the image's layers: what a
    comparison of two builds reads to name what differs."""
    manifest = json.loads(blob(layout, manifest_digest(layout, tag)).read_text())
    out: dict[str, str] = {}
    for layer in manifest["layers"]:
        with tarfile.open(blob(layout, layer["digest"]), "r:*") as tar:
            for m in tar:
                if m.isfile():
                    f = tar.extractfile(m)
                    assert f is not None
                    out[m.name] = f"{m.mode:o} {m.uid}:{m.gid} " + hashlib.sha256(f.read()).hexdigest()
                else:
                    out[m.name] = f"{m.mode:o} {m.uid}:{m.gid} {m.type!r} {m.linkname}"
    return out


def oci_archive(layout: Path, tag: str, name: str, out: Path) -> None:
    """A tar of the layout that ``ctr images import`` names ``name`` (the containerd annotation
    on its index entry) and keeps at the same manifest digest, so pods can run ``name@digest``."""
    digest = manifest_digest(layout, tag)
    index = json.loads((layout / "index.json").read_text())
    entry = next(m for m in index["manifests"] if m["digest"] == digest)
    entry = {**entry, "annotations": {**entry.get("annotations", {}), "io.containerd.image.name": name}}
    partial = out.with_suffix(".partial")
    with tarfile.open(partial, "w") as tar:
        for path in ("oci-layout", *sorted(str(p.relative_to(layout)) for p in (layout / "blobs").rglob("*")
                                          if p.is_file())):
            tar.add(layout / path, arcname=path, recursive=False)
        data = json.dumps({**index, "manifests": [entry]}).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    partial.rename(out)


def docker_archive(layout: Path, tag: str, name: str, out: Path) -> None:
    partial = out.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    run("skopeo", "copy", "--quiet", f"oci:{layout}:{tag}", f"docker-archive:{partial}:{name}")
    partial.rename(out)


def push(layout: Path, tag: str, destination: str, tls_verify: bool = True) -> str:
    """Copy the image to ``destination`` (a registry reference, no scheme), digest kept."""
    run("skopeo", "copy", "--quiet", "--preserve-digests", f"--dest-tls-verify={str(tls_verify).lower()}",
        f"oci:{layout}:{tag}", f"docker://{destination}")
    return manifest_digest(layout, tag)


def pack(rootfs: Path, workdir: Path, tag: str, config: Config, epoch: int = EPOCH) -> tuple[Path, str]:
    """rootfs folder -> (OCI layout under ``workdir``, manifest digest)."""
    layout, layer = workdir / "oci", workdir / "layer.tar"
    if layout.exists():
        shutil.rmtree(layout)
    layer_tar(rootfs, layer, epoch)
    try:
        return layout, new_layout(layout, tag, layer, config, epoch)
    finally:
        layer.unlink(missing_ok=True)
