"""Prefect steps of the platform overview: one LIST per kind, then the pure builder of
:mod:`tasks.workspace.status`, published as a table artifact under one fixed key.

The health flow hands over what it listed already (so its run stays at one LIST per kind);
``vibecode status`` lists the same three selectors itself.
"""

from __future__ import annotations

from datetime import datetime

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.cluster import kube
from tasks.core.names import LEDGER_SELECTOR, WORKSPACE_DEPLOYMENT_SELECTOR, WORKSPACE_PVC_SELECTOR
from tasks.core.settings import get_settings
from tasks.core.steps import KUBE_API, transient_retries
from tasks.workspace.status import ARTIFACT_KEY, Overview, build_overview

RETRY = transient_retries(2, backoff_factor=1)


@task(name="list-workspace-objects", tags=[KUBE_API], **RETRY)
def list_workspace_objects() -> dict[str, list[dict]]:
    """Workspace Deployments, home volumes and ledger records: three LISTs, the keys the
    health flow's listing uses too."""
    s = get_settings()
    client = kube.connect()
    return dict(deployments=client.list_json("Deployment", s.namespace, WORKSPACE_DEPLOYMENT_SELECTOR),
                pvcs=client.list_json("PersistentVolumeClaim", s.namespace, WORKSPACE_PVC_SELECTOR),
                ledger=client.list_json("ConfigMap", s.platform_namespace, LEDGER_SELECTOR))


# NO_CACHE: Prefect's default policy would hash every listed object to build a cache key
# (seconds at 10,000 workspaces), for an artifact that must be written each time anyway.
@task(name="publish-workspace-overview", cache_policy=NO_CACHE)
def publish_workspace_overview(listed: dict[str, list[dict]] | None, now: datetime,
                               quiet: bool = False) -> Overview | None:
    """Build the overview from listed objects and write it to the ``workspace-overview``
    artifact. ``None`` (the listing failed) leaves the last published one in place: the
    health report names the outage. ``quiet`` (the health flow): a failure here is logged and
    never hides the health checks."""
    if listed is None:
        get_run_logger().warning("workspace overview not refreshed: the cluster could not be listed")
        return None
    try:
        s = get_settings()
        overview = build_overview(listed.get("deployments") or [], listed.get("pvcs") or [],
                                  listed.get("ledger") or [], now, s.namespace, s.domain)
        create_table_artifact(key=ARTIFACT_KEY, table=overview.table(),
                              description=f"Workspaces: {overview.summary()}")
    except Exception as exc:
        if not quiet:
            raise
        get_run_logger().error("workspace overview not refreshed: %s: %s", type(exc).__name__, exc)
        return None
    return overview
