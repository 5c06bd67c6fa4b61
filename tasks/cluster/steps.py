"""Prefect steps of bringing a cluster up: the KIND cluster (the Prefect side is in tasks.platform.steps)."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from tasks.cluster import kind
from tasks.core.steps import transient_retries

ROOT = Path(__file__).resolve().parents[2]


@task(name="ensure-kind-cluster", **transient_retries(2))
def ensure_kind_cluster(name: str, kubeconfig: Path, image: str) -> str:
    """``image``: the node image, pinned in the lock."""
    return kind.ensure_cluster(name, ROOT / "kind" / "cluster.yaml", kubeconfig, image)


@task(name="kind-cluster-exists", **transient_retries(2))
def kind_cluster_exists(name: str, kubeconfig: Path) -> bool:
    return kind.cluster_exists(name)
