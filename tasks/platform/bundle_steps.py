"""Prefect steps of air-gapped bundles: writing one (on a connected machine) and publishing
its images to the registry an air-gapped cluster pulls from."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from tasks.cluster import helm
from tasks.core.errors import InvalidInput, PermanentError
from tasks.core.settings import get_settings
from tasks.core.steps import transient_retries
from tasks.platform import bundle as bundles
from tasks.platform.lock import Lock, LockError, load_lock, require_pinned

RETRY = transient_retries(2)


@task(name="open-bundle", **RETRY)
def open_bundle(directory: Path) -> tuple[Lock, str | None, frozenset[str], frozenset[str]]:
    """The bundle's lock, checked against every chart archive and image in it; the mirror the
    cluster pulls from (settings.platform.mirror_registry) or None on KIND (``kind load``)."""
    lock, manifest = bundles.read_bundle(directory)
    mirror = get_settings().platform.mirror_registry
    return (lock, mirror, frozenset(i["key"] for i in manifest["images"]),
            frozenset(c["key"] for c in manifest["charts"]))


@task(name="publish-bundle-images", **RETRY)
def publish_bundle_images(directory: Path, mirror: str | None, kind_cluster: str | None) -> dict[str, str]:
    """Push the bundle's images to the mirror (digests kept), or load them into KIND's nodes."""
    lock, manifest = bundles.read_bundle(directory)
    s = get_settings()
    if mirror is not None:
        return bundles.push_to_mirror(directory, manifest, lock, s.platform.mirror_push_registry or mirror)
    if kind_cluster is not None:
        return bundles.kind_load(directory, manifest, lock, kind_cluster)
    raise PermanentError("an air-gapped install needs a registry the cluster pulls from: set "
                         "VIBECODE_PLATFORM__MIRROR_REGISTRY (host:port), or install on KIND (kind load)")


@task(name="check-bundle-entries")
def check_bundle_entries(lock: Lock, exclude: list[str]) -> tuple[list[str], list[str], list[dict]]:
    """What goes in; refuses (before anything is downloaded) entries that are not pinned."""
    unknown = sorted(set(exclude) - {p.component for p in lock.images.values()} - set(lock.charts))
    if unknown:
        raise InvalidInput("exclude", f"no such component(s) {unknown}")
    charts, images, left = bundles.contents(lock, set(exclude))
    try:
        require_pinned(lock, charts, [k for k in images if lock.image(k).build is None], "a bundle")
    except LockError as exc:
        raise PermanentError(str(exc)) from None
    return charts, images, left


@task(name="fetch-bundle-chart", task_run_name="fetch-{key}", **RETRY)
def fetch_bundle_chart(lock: Lock, key: str) -> Path:
    pin = lock.chart(key)
    return helm.fetch_chart(pin.name(key), pin.repository, pin.version, pin.digest)


@task(name="write-bundle", **RETRY)
def write_bundle(directory: Path, lock_file: Path, charts: dict[str, Path], images: list[str], left: list[dict],
                 built: dict[str, str]) -> dict:
    lock = load_lock(lock_file)
    return bundles.write_bundle(directory, lock, Path(lock_file).read_text(), charts, images, left, built)
