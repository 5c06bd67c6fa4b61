"""Bring the platform up: create or reuse the KIND cluster, then provision a workspace.
Orchestration only: the steps are in :mod:`tasks.cluster.steps`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from flows.workspace import provision_workspace
from tasks.cluster import kube
from tasks.cluster.steps import ensure_concurrency_limits, ensure_kind_cluster, ensure_work_pools
from tasks.core.names import Username
from tasks.core.settings import get_settings
from tasks.workspace.steps import ProvisionResult


@flow(name="bootstrap-platform")
def bootstrap_platform(
    cluster_name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,30}$")] = "vibecode",
    workspace_user: Username = "demo",
    existing_kubeconfig: Path | None = None,
) -> ProvisionResult:
    """``existing_kubeconfig``: a cluster that is already running (scripts/up's one-node
    cluster where Docker or kind is missing); KIND is then not used."""
    logger = get_run_logger()
    kubeconfig = Path.home() / ".cache" / "vibecode" / f"kubeconfig-{cluster_name}"
    limits = ensure_concurrency_limits()
    logger.info("Prefect tag concurrency limits: %s", limits)
    logger.info("Prefect work pools: %s", ensure_work_pools())
    if existing_kubeconfig is None:
        state = ensure_kind_cluster(cluster_name, kubeconfig)
        logger.info("KIND cluster %s %s; kubeconfig %s", cluster_name, state, kubeconfig)
    else:
        kubeconfig = existing_kubeconfig
        logger.info("using the running cluster of %s (KIND not used)", kubeconfig)
    os.environ["VIBECODE_KUBECONFIG"] = str(kubeconfig)
    get_settings.cache_clear()
    kube.reset_connections()
    return provision_workspace(workspace_user)
