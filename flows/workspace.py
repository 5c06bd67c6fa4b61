"""Provision one person's code-server workspace. Orchestration only: the steps are in
:mod:`tasks.workspace.steps`. Rerunning with the same input changes nothing.
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import Field

from tasks.core.names import GATEWAY_SELECTOR, Username, workspace_names
from tasks.core.settings import get_settings
from tasks.workspace.steps import (
    ProvisionResult,
    check_restore_guard,
    ensure_namespace,
    find_gateway,
    install_release,
    wait_available,
)


@flow(name="provision-workspace", log_prints=False)
def provision_workspace(username: Username, replicas: Annotated[int, Field(ge=0, le=1)] = 1) -> ProvisionResult:
    """Install or upgrade the user's workspace release and wait until it serves."""
    names = workspace_names(username)  # validates before anything is created
    s = get_settings()
    logger = get_run_logger()
    ensure_namespace(s.namespace)
    if replicas > 0:
        check_restore_guard(names.username)
    gateway = find_gateway()
    release = install_release(names.username, replicas, gateway)
    ready = wait_available(names.username)
    route = (f"HTTPRoute on {gateway}" if gateway else
             f"no route: the cluster has no Gateway labelled {GATEWAY_SELECTOR} (install the platform chart)")
    result = ProvisionResult(username=names.username, url=f"https://{names.host(s.domain)}",
                             release=release.name, revision=release.revision,
                             changed=release.changed, ready=ready, route=route)
    logger.info("workspace %s: %s (revision %s, %s)", names.username,
                "changed" if release.changed else "unchanged", release.revision, ready)
    create_table_artifact(key=f"workspace-{names.username}", table=[result.model_dump()],
                          description=f"Workspace {names.username}")
    return result
