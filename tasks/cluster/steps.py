"""Prefect steps of bringing a cluster up: the KIND cluster, the Prefect tag limits and work pools."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from tasks.cluster import kind
from tasks.cluster.limits import ensure_concurrency_limits as _ensure_limits
from tasks.cluster.workpools import ensure_work_pools as _ensure_pools
from tasks.core.steps import transient_retries

ROOT = Path(__file__).resolve().parents[2]


@task(name="ensure-kind-cluster", **transient_retries(2))
def ensure_kind_cluster(name: str, kubeconfig: Path) -> str:
    return kind.ensure_cluster(name, ROOT / "kind" / "cluster.yaml", kubeconfig)


@task(name="ensure-concurrency-limits", **transient_retries(2))
def ensure_concurrency_limits() -> dict[str, int]:
    return _ensure_limits()


@task(name="ensure-work-pools", **transient_retries(2))
def ensure_work_pools() -> dict[str, str]:
    """Both pools, their base job templates brought in step with git (Prefect itself keeps
    an existing pool's template whatever the file says)."""
    return dict(_ensure_pools())
