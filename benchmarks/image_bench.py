#!/usr/bin/env python
"""Workspace image benchmark (rerunnable; not a test). Prints results and merges them into
benchmarks/results/image.json.

1. ``first``: ``vibecode image build`` with an empty image cache (a scratch VIBECODE image
   cache): the Debian base by mmdebstrap, Node and the npm packages from the registry, the
   assembly and the packing. code-server's own npm install (scripts/setup-codeserver.sh, about
   4 min on 2 cores, REFERENCE.md) is shared with the test harness and reused when present: the
   figure says whether it was.
2. ``rebuild``: the same build forced again from the caches (``--force``): assembly and packing
   only; the digest must equal the first one.

Both report seconds per step, the image's size compressed (what a registry stores) and as
unpacked files, and the 1-minute load average (other work on the machine explains outliers).

    .venv/bin/python benchmarks/image_bench.py [--skip first]

Needs root, mmdebstrap, umoci, skopeo, npm and the Debian and npm registries.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "image.json"


def figures(result) -> dict:
    return {"digest": result.digest, "seconds": result.seconds, "compressed_bytes": result.size.get("compressed"),
            "compressed_mib": round(result.size.get("compressed", 0) / 2**20, 1),
            "unpacked_mib": round(_unpacked(result) / 2**20, 1), "from_cache": result.from_cache,
            "load_average_1m": round(os.getloadavg()[0], 2)}


def _layer(result) -> str:
    from tasks.image import oci

    manifest = json.loads(oci.blob(result.layout, oci.manifest_digest(result.layout, result.tag)).read_text())
    return manifest["layers"][0]["digest"].partition(":")[2]


def _unpacked(result) -> int:
    import tarfile

    from tasks.image import oci

    total = 0
    with tarfile.open(oci.blob(result.layout, "sha256:" + _layer(result)), "r:gz") as tar:
        for m in tar:
            total += m.size
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip", action="append", default=[], choices=["first", "rebuild"])
    args = ap.parse_args()
    from tasks.image import build

    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
            "platform": platform.platform()}
    first = None
    if "first" not in args.skip:
        scratch = Path(tempfile.mkdtemp(prefix="image-bench-", dir=build.CACHE.parent))
        shared = build.CACHE
        build.CACHE = scratch
        try:
            cs = shared.parent / "code-server" / build.load_inputs().spec.code_server_version / ".done"
            first = build.build(out=scratch / "out")
            results["first"] = {**meta, **figures(first), "code_server_install_reused": cs.exists()}
            print(json.dumps(results["first"], indent=2))
        finally:
            build.CACHE = shared
            if first is None:
                shutil.rmtree(scratch, ignore_errors=True)
    if "rebuild" not in args.skip:
        base = build.build()  # the shared cache's build (made now if missing)
        with tempfile.TemporaryDirectory(dir=build.CACHE) as tmp:
            again = build.build(out=Path(tmp) / "again", force=True)
            results["rebuild"] = {**meta, **figures(again), "same_digest_as_cached": again.digest == base.digest,
                                  "same_digest_as_first": (again.digest == first.digest) if first else None}
            print(json.dumps(results["rebuild"], indent=2))
    if first is not None:
        shutil.rmtree(first.out.parent, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
