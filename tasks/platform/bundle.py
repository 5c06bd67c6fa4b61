"""Air-gapped bundles: the pinned charts and images in one directory, and installing from it.

Layout of a bundle (``DIR``), the way zarf and hauler package the same thing::

    DIR/manifest.json          what is inside: each chart (file, version, sha256) and image
                               (reference, index digest, its name in the OCI layout), and what
                               was left out and why
    DIR/platform.lock.yaml     the lock the bundle was made from (an install uses this one)
    DIR/charts/NAME-VERSION.tgz
    DIR/images/                one OCI image layout holding every image, multi-architecture
                               indexes and all (``skopeo copy --all --preserve-digests``), each
                               under its lock key as reference name

Digests are preserved end to end: the layout holds exactly the pinned index, and pushing it
to a mirror keeps it, so pods run ``<mirror>/<path>@<the pinned digest>``. An entry that is not
pinned is refused (:func:`tasks.platform.lock.require_pinned`). Adapter: runs ``skopeo`` and
reads/writes files; the choices are in :func:`contents`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from tasks.core.errors import PermanentError, ServerError
from tasks.platform.lock import ImagePin, Lock, LockError, load_lock, parse_image, require_pinned

MANIFEST = "manifest.json"
LOCK_NAME = "platform.lock.yaml"
LAYOUT = "images"
SKOPEO = "skopeo"
CALLS: dict[str, int] = {"skopeo": 0}


def contents(lock: Lock, exclude: set[str]) -> tuple[list[str], list[str], list[dict]]:
    """(chart keys, image keys, left out) for a bundle of every component but ``exclude``.
    Images built from this repository are left out unless given (see :func:`write_bundle`)."""
    charts = [k for k in lock.charts if k not in exclude]
    images = [k for k, pin in lock.images.items() if pin.component not in exclude]
    left = [{"entry": f"chart {k}", "reason": f"component {k} excluded"} for k in lock.charts if k in exclude]
    left += [{"entry": f"image {k}", "reason": f"component {pin.component} excluded"}
             for k, pin in lock.images.items() if pin.component in exclude]
    return charts, images, left


def _loopback(host: str) -> bool:
    return host.split(":")[0] in ("127.0.0.1", "localhost")


def _skopeo(*args: str) -> str:
    CALLS["skopeo"] += 1
    proc = subprocess.run([SKOPEO, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        text = proc.stderr.strip().splitlines()
        msg = f"skopeo {args[0]}: {text[-1] if text else proc.returncode}"
        if "manifest unknown" in proc.stderr or "not found" in proc.stderr.lower():
            raise PermanentError(msg)
        raise ServerError(msg)
    return proc.stdout


def _tls(flag: str, host: str) -> list[str]:
    return [f"--{flag}-tls-verify=false"] if _loopback(host) else []


def layout_digest(layout: Path, name: str) -> str | None:
    """The digest the OCI layout's index names ``name`` with (None: not there)."""
    try:
        index = json.loads((layout / "index.json").read_text())
    except (OSError, ValueError):
        return None
    for entry in index.get("manifests") or []:
        if (entry.get("annotations") or {}).get("org.opencontainers.image.ref.name") == name:
            return entry.get("digest")
    return None


def copy_into_layout(pin: ImagePin, key: str, layout: Path, source: str | None = None) -> str:
    """Copy the pinned index (every architecture) into the layout under ``key``; idempotent."""
    have = layout_digest(layout, key)
    if pin.digest is not None and have == pin.digest:
        return have
    ref = pin.ref
    src = source or f"docker://{ref.repository}@{pin.digest}"
    tls = _tls("src", ref.domain) if src.startswith("docker://") else []
    layout.mkdir(parents=True, exist_ok=True)
    _skopeo("copy", "--quiet", "--all", "--preserve-digests", *tls, src, f"oci:{layout}:{key}")
    got = layout_digest(layout, key)
    if pin.digest is not None and got != pin.digest:
        raise PermanentError(f"image {key}: {src} copied as {got}, not the pinned {pin.digest}")
    return got or ""


def write_bundle(directory: Path, lock: Lock, lock_text: str, chart_files: dict[str, Path], images: list[str],
                 left_out: list[dict], built: dict[str, str] | None = None) -> dict:
    """Write the bundle; ``chart_files``: chart key -> a verified archive; ``built``: image key ->
    a skopeo source (``oci:DIR:TAG``) of an image built here (its digest is recorded as built)."""
    built = built or {}
    wanted = [k for k in images if lock.image(k).build is None or k in built]
    left_out = left_out + [{"entry": f"image {k}", "reason": f"built from {lock.image(k).build}; no built copy given"}
                           for k in images if lock.image(k).build is not None and k not in built]
    require_pinned(lock, list(chart_files), [k for k in wanted if k not in built], "a bundle")
    directory = Path(directory)
    (directory / "charts").mkdir(parents=True, exist_ok=True)
    (directory / LOCK_NAME).write_text(lock_text)
    charts = []
    for key, path in chart_files.items():
        pin = lock.chart(key)
        name = f"{pin.name(key)}-{pin.version}.tgz"
        shutil.copyfile(path, directory / "charts" / name)
        charts.append({"key": key, "name": pin.name(key), "version": pin.version, "digest": pin.digest,
                       "file": f"charts/{name}"})
    entries = []
    for key in wanted:
        image_pin = lock.image(key)
        digest = copy_into_layout(image_pin, key, directory / LAYOUT, built.get(key))
        entries.append({"key": key, "image": image_pin.image, "digest": digest, "layout": LAYOUT, "name": key,
                        "built": key in built})
    manifest = {"schema": 1, "lock_sha256": hashlib.sha256(lock_text.encode()).hexdigest(),
                "charts": charts, "images": entries, "left_out": left_out}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_bundle(directory: Path) -> tuple[Lock, dict]:
    """The bundle's lock and manifest, after checking every file against them (no network)."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        lock_text = (directory / LOCK_NAME).read_text()
    except (OSError, ValueError) as exc:
        raise PermanentError(f"{directory} is not a bundle (no readable {MANIFEST} and {LOCK_NAME}): {exc}") from None
    if hashlib.sha256(lock_text.encode()).hexdigest() != manifest.get("lock_sha256"):
        raise PermanentError(f"{directory}/{LOCK_NAME} is not the lock the bundle was made from")
    try:
        lock = load_lock(directory / LOCK_NAME)
        require_pinned(lock, [c["key"] for c in manifest["charts"]],
                       [i["key"] for i in manifest["images"] if not i.get("built")], "an air-gapped install")
    except LockError as exc:
        raise PermanentError(str(exc)) from None
    for chart in manifest["charts"]:
        path = directory / chart["file"]
        got = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        if got != chart["digest"] or chart["digest"] != lock.chart(chart["key"]).digest:
            raise PermanentError(f"bundle chart {chart['file']}: {got or 'missing'}, not the pinned {chart['digest']}")
    for image in manifest["images"]:
        got = layout_digest(directory / image["layout"], image["name"])
        want = image["digest"] if image.get("built") else lock.image(image["key"]).digest
        if got != want:
            raise PermanentError(f"bundle image {image['key']}: the layout holds {got or 'nothing'}, not {want}")
    return lock, manifest


def mirror_ref(pin: ImagePin, registry: str, digest: str | None = None) -> str:
    r = parse_image(pin.image)
    return f"{registry}/{r.path}@{digest or pin.digest}"


def push_to_mirror(directory: Path, manifest: dict, lock: Lock, registry: str) -> dict[str, str]:
    """Push every image to ``registry`` keeping its digest; one already there is left alone."""
    out = {}
    for image in manifest["images"]:
        pin = lock.image(image["key"])
        r = parse_image(pin.image)
        target = f"{registry}/{r.path}"
        try:
            insecure = ["--tls-verify=false"] if _loopback(registry) else []
            raw = _skopeo("inspect", "--raw", *insecure, f"docker://{target}@{image['digest']}")
            if "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == image["digest"]:
                out[image["key"]] = "present"
                continue
        except (PermanentError, ServerError):
            pass
        _skopeo("copy", "--quiet", "--all", "--preserve-digests", *_tls("dest", registry),
                f"oci:{directory / image['layout']}:{image['name']}", f"docker://{target}:{r.tag}")
        out[image["key"]] = "pushed"
    return out


def kind_load(directory: Path, manifest: dict, lock: Lock, cluster: str) -> dict[str, str]:
    """KIND without a mirror: load each image into the nodes (``kind load image-archive``). A
    docker archive holds one architecture, so pods there run the tag (its content is the
    pinned index's image for the node's architecture)."""
    import tempfile

    out = {}
    for image in manifest["images"]:
        pin = lock.image(image["key"])
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "image.tar"
            _skopeo("copy", "--quiet", f"oci:{directory / image['layout']}:{image['name']}",
                    f"docker-archive:{archive}:{pin.image}")
            proc = subprocess.run(["kind", "load", "image-archive", str(archive), "--name", cluster],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise ServerError(f"kind load {pin.image}: {proc.stderr.strip()[-500:]}")
        out[image["key"]] = "loaded"
    return out
