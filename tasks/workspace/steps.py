"""Prefect steps on one person's workspace: its namespace, the restore guard, the helm
release, waiting until it serves, scaling. Each converges, so a rerun changes nothing.
"""

from __future__ import annotations

from prefect import task
from pydantic import BaseModel

from tasks.backup.guard import guard_holds, guarding_job, setup_seconds
from tasks.cluster import helm, kube
from tasks.cluster.jobs import job_state
from tasks.cluster.rollout import await_available
from tasks.core.errors import NotFound, PermanentError
from tasks.core.names import PART_OF, PART_OF_LABEL, RESTORING_ANNOTATION, workspace_names
from tasks.core.settings import get_settings
from tasks.core.steps import HELM, KUBE_API, now, transient_retries
from tasks.platform.lock import load_lock, pinned_for
from tasks.platform.values import GATEWAY_SELECTOR
from tasks.workspace.values import GatewayRef, platform_gateway, workspace_values

RETRY = transient_retries(4)


class ProvisionResult(BaseModel):
    username: str
    url: str
    release: str
    revision: int
    changed: bool
    ready: str
    route: str = ""  # where the HTTPRoute attached, or why there is none


@task(name="ensure-namespace", tags=[KUBE_API], **RETRY)
def ensure_namespace(name: str) -> None:
    """Read first: on the platform the chart made the namespace, and the flows' Role may read
    it but holds no cluster-wide right to create namespaces (tasks.platform.values.FLOWS_RULES).
    Only a bare cluster (`vibecode up` as an admin) gets it created here."""
    client = kube.connect()
    if client.get("Namespace", None, name) is None:
        client.create({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": name, "labels": {PART_OF_LABEL: PART_OF}}})


@task(name="check-restore-guard", tags=[KUBE_API], **RETRY)
def check_restore_guard(username: str) -> str:
    """Refuse to start a workspace whose volume a restore is writing; clear a guard that lapsed
    (its restore Job finished or is gone). See :mod:`tasks.backup.guard`."""
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
                                 setup_seconds=setup_seconds(s.backup.timeout_seconds))
        if holds:
            raise PermanentError(f"workspace {username} is being restored ({why}; {kind} {name} has "
                                 f"{RESTORING_ANNOTATION}); it can start when the restore has finished")
        client.annotate(kind, s.namespace, name, {RESTORING_ANNOTATION: None})
        notes.append(f"cleared a lapsed restore guard on {kind} {name}: {why}")
    return "; ".join(notes) or "no restore in progress"


@task(name="find-platform-gateway", tags=[KUBE_API], **RETRY)
def find_gateway() -> GatewayRef | None:
    """The platform's Gateway, read from the cluster (one LIST by label): its name is the platform
    chart's to choose. None when there is none, or the Gateway API is not installed at all."""
    s = get_settings()
    try:
        gateways = kube.connect(s).list_all("Gateway", GATEWAY_SELECTOR)
    except NotFound:  # no Gateway API CRDs in this cluster
        gateways = []
    return platform_gateway(gateways, s)


@task(name="install-workspace-release", tags=[KUBE_API, HELM], **RETRY)
def install_release(username: str, replicas: int, gateway: GatewayRef | None = None) -> helm.ReleaseResult:
    s = get_settings()
    names = workspace_names(username)
    lock = load_lock(s.platform.lock_file)
    image = pinned_for(lock, "code-server", s.workspace.image)
    return helm.install_or_upgrade(names.release, s.workspace.chart,
                                   workspace_values(names, s, replicas, gateway, image), s.namespace, s)


@task(name="wait-workspace-available", **RETRY)
def wait_available(username: str) -> str:
    """Wait on a watch until the Deployment is available; bounded by settings.workspace.ready_timeout_seconds.

    Untagged: a wait must not hold a ``kube-api`` slot (a watch is one cheap request; holding
    a slot for minutes would starve every other run's API calls under the limit).

    A timeout is transient (the node may still be pulling the image), so the task's
    retries extend the wait a bounded number of times; a failed rollout is permanent.
    """
    s = get_settings()
    names = workspace_names(username)
    return await_available(kube.connect(), s.namespace, names.deployment, names.selector,
                           s.workspace.ready_timeout_seconds, s.workspace.ready_poll_seconds)


@task(name="scale-workspace", tags=[KUBE_API], **RETRY)
def scale_workspace(username: str, replicas: int) -> str:
    s = get_settings()
    client = kube.connect(s)
    name = workspace_names(username).deployment
    dep = client.get("Deployment", s.namespace, name)
    if dep is None:
        return "absent"
    if dep["spec"].get("replicas") == replicas:
        return f"already at {replicas}"
    client.scale(s.namespace, name, replicas)
    return f"scaled to {replicas}"
