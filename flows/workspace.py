"""Provision one person's code-server workspace.

Orchestration only: names and values come from pure builders, cluster calls go through
the Helm and Kubernetes adapters. Rerunning with the same input changes nothing.
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, Field

from tasks import helm, kube
from flows.common import HELM, KUBE_API, Username, now, transient_retries
from tasks.errors import PermanentError
from tasks.jobs import job_state
from tasks.names import RESTORING_ANNOTATION, workspace_names
from tasks.restore_guard import guard_holds, guarding_job
from tasks.objects import workspace_values
from tasks.rollout import await_available
from tasks.settings import get_settings

RETRY = transient_retries(4)


class ProvisionResult(BaseModel):
    username: str
    url: str
    release: str
    revision: int
    changed: bool
    ready: str


@task(name="ensure-namespace", tags=[KUBE_API], **RETRY)
def ensure_namespace(name: str) -> None:
    kube.connect().create({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "vibecode"}}})


@task(name="check-restore-guard", tags=[KUBE_API], **RETRY)
def check_restore_guard(username: str) -> str:
    """Refuse to start a workspace whose volume a restore is writing; clear a guard that lapsed
    (its restore Job finished or is gone). See :mod:`tasks.restore_guard`."""
    s = get_settings()
    names = workspace_names(username)
    client = kube.connect()
    notes = []
    for kind, name in (("Deployment", names.deployment), ("PersistentVolumeClaim", names.workspace_pvc)):
        obj = client.get(kind, s.namespace, name)
        value = ((obj or {}).get("metadata", {}).get("annotations") or {}).get(RESTORING_ANNOTATION)
        if not value:
            continue
        job = client.get("Job", s.namespace, guarding_job(value))
        holds, why = guard_holds(value, job, job_state(job)[0] if job else None, now(),
                                 setup_seconds=2 * s.backup_timeout_seconds + 120)
        if holds:
            raise PermanentError(f"workspace {username} is being restored ({why}; {kind} {name} has "
                                 f"{RESTORING_ANNOTATION}); it can start when the restore has finished")
        client.annotate(kind, s.namespace, name, {RESTORING_ANNOTATION: None})
        notes.append(f"cleared a lapsed restore guard on {kind} {name}: {why}")
    return "; ".join(notes) or "no restore in progress"


@task(name="install-workspace-release", tags=[KUBE_API, HELM], **RETRY)
def install_release(username: str, replicas: int) -> helm.ReleaseResult:
    s = get_settings()
    names = workspace_names(username)
    return helm.install_or_upgrade(names.release, s.workspace_chart,
                                   workspace_values(names, s, replicas), s.namespace, s)


@task(name="wait-workspace-available", **RETRY)
def wait_available(username: str) -> str:
    """Wait on a watch until the Deployment is available; bounded by settings.ready_timeout_seconds.

    Untagged: a wait must not hold a ``kube-api`` slot (a watch is one cheap request; holding
    a slot for minutes would starve every other run's API calls under the limit).

    A timeout is transient (the node may still be pulling the image), so the task's
    retries extend the wait a bounded number of times; a failed rollout is permanent.
    """
    s = get_settings()
    names = workspace_names(username)
    return await_available(kube.connect(), s.namespace, names.deployment, names.selector,
                           s.ready_timeout_seconds, s.ready_poll_seconds)


@flow(name="provision-workspace", log_prints=False)
def provision_workspace(username: Username, replicas: Annotated[int, Field(ge=0, le=1)] = 1) -> ProvisionResult:
    """Install or upgrade the user's workspace release and wait until it serves."""
    names = workspace_names(username)  # validates before anything is created
    s = get_settings()
    logger = get_run_logger()
    ensure_namespace(s.namespace)
    if replicas > 0:
        check_restore_guard(names.username)
    release = install_release(names.username, replicas)
    ready = wait_available(names.username)
    result = ProvisionResult(username=names.username, url=f"https://{names.host(s.domain)}",
                             release=release.name, revision=release.revision,
                             changed=release.changed, ready=ready)
    logger.info("workspace %s: %s (revision %s, %s)", names.username,
                "changed" if release.changed else "unchanged", release.revision, ready)
    create_table_artifact(key=f"workspace-{names.username}", table=[result.model_dump()],
                          description=f"Workspace {names.username}")
    return result
