"""Prefect steps of bringing a cluster up: the KIND cluster and the Prefect tag limits."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from tasks.cluster import kind
from tasks.cluster.limits import ensure_concurrency_limits as _ensure_limits
from tasks.core.steps import transient_retries

ROOT = Path(__file__).resolve().parents[2]


@task(name="ensure-kind-cluster", **transient_retries(2))
def ensure_kind_cluster(name: str, kubeconfig: Path, image: str) -> str:
    """``image``: the node image, pinned in the lock."""
    return kind.ensure_cluster(name, ROOT / "kind" / "cluster.yaml", kubeconfig, image)


@task(name="kind-cluster-exists", **transient_retries(2))
def kind_cluster_exists(name: str, kubeconfig: Path) -> bool:
    return kind.cluster_exists(name)


@task(name="ensure-concurrency-limits", **transient_retries(2))
def ensure_concurrency_limits() -> dict[str, int]:
    return _ensure_limits()
