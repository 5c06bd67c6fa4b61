"""Write an air-gapped bundle: every pinned chart and image of the platform in one directory
(see :mod:`tasks.platform.bundle`), for ``bootstrap_platform(bundle=DIR)`` on a machine with
no network. Orchestration only; it refuses, before downloading anything, any entry of the
lock that is not pinned (leave its component out with ``exclude``).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from tasks.core.settings import get_settings
from tasks.platform.bundle_steps import check_bundle_entries, fetch_bundle_chart, write_bundle
from tasks.platform.lock import load_lock


@flow(name="bundle-platform")
def bundle(directory: Path, exclude: list[str] | None = None, built: dict[str, str] | None = None) -> dict:
    """``exclude``: components to leave out (e.g. ``datadog``); ``built``: lock image key -> a
    skopeo source of an image built here (``oci:DIR:TAG``), e.g. the HR gateway's."""
    logger = get_run_logger()
    lock_file = get_settings().platform.lock_file
    lock = load_lock(lock_file)
    charts, images, left = check_bundle_entries(lock, list(exclude or []))
    files = {key: fetch_bundle_chart(lock, key) for key in charts}
    manifest = write_bundle(Path(directory), lock_file, files, images, left, dict(built or {}))
    rows = [{"entry": f"chart {c['key']}", "reference": f"{c['name']} {c['version']}", "digest": c["digest"]}
            for c in manifest["charts"]]
    rows += [{"entry": f"image {i['key']}", "reference": i["image"], "digest": i["digest"]} for i in manifest["images"]]
    rows += [{"entry": e["entry"], "reference": "left out", "digest": e["reason"]} for e in manifest["left_out"]]
    create_table_artifact(key="platform-bundle", table=rows, description=f"Bundle in {directory}")
    logger.info("bundle %s: %d charts, %d images, %d left out", directory, len(manifest["charts"]),
                len(manifest["images"]), len(manifest["left_out"]))
    return manifest
