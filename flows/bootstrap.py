"""Bring the platform up: create or reuse the KIND cluster, then provision a workspace.

The README's "run it" command ends here. Later work adds the platform components
(ingress, certificates, Authelia, S3) as further tasks between the two steps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger, task
from pydantic import Field

from flows.common import Username, transient_retries
from flows.workspace import ProvisionResult, provision_workspace
from tasks import kind, kube
from tasks.limits import ensure_concurrency_limits
from tasks.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent


@task(name="ensure-kind-cluster", **transient_retries(2))
def ensure_kind_cluster(name: str, kubeconfig: Path) -> str:
    return kind.ensure_cluster(name, ROOT / "kind" / "cluster.yaml", kubeconfig)


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
    limits = task(name="ensure-concurrency-limits", **transient_retries(2))(ensure_concurrency_limits)()
    logger.info("Prefect tag concurrency limits: %s", limits)
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
