"""Prefect steps of idle workspace reaping and resume: decisions in :mod:`tasks.reaper.decide`,
probing in :mod:`tasks.reaper.probe`, cluster calls through :mod:`tasks.cluster.kube` and
:mod:`tasks.cluster.helm`.

One run: one LIST each of Deployments, volumes and restic Jobs (never a GET per
workspace); every running workspace's ``/healthz`` probed inside one task with a bounded
pool; then writes only for the workspaces whose decision changes something. Dormant
workspaces without a verified backup newer than their stop get one from the backup flow;
their deletion waits for a later run, which re-reads the volumes' backup annotations.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from prefect import get_run_logger, task
from pydantic import BaseModel

from tasks.cluster import helm, kube
from tasks.core import mail
from tasks.core.names import (
    DORMANT_DELETED_AT,
    RESTIC_JOBS_SELECTOR,
    STOPPED_AT,
    WORKSPACE_DEPLOYMENT_SELECTOR,
    WORKSPACE_VOLUMES_SELECTOR,
    workspace_names,
)
from tasks.core.settings import get_settings
from tasks.core.steps import HELM, KUBE_API, transient_retries
from tasks.reaper.decide import (
    CLEAR_WARNING,
    Decision,
    Probe,
    Workspace,
    policy_for,
    resume_annotations,
    rfc3339,
    stop_patch,
    warn_annotations,
    warning_message,
    workspaces_from,
)
from tasks.reaper.probe import probe_all

RETRY = transient_retries(3)


class ReapRow(BaseModel):
    username: str
    action: str
    rule: str = ""
    reason: str
    probe: str = ""
    idle_minutes: float | None = None
    outcome: str = ""


class ReapReport(BaseModel):
    dry_run: bool
    now: datetime
    counts: dict[str, int]
    unknown: int  # running workspaces whose probe failed
    rows: list[ReapRow]

    def table(self) -> list[dict]:
        return [r.model_dump() for r in self.rows]


@task(name="list-workspaces", tags=[KUBE_API], **RETRY)
def list_workspaces() -> list[Workspace]:
    s = get_settings()
    client = kube.connect()
    return workspaces_from(client.list_json("Deployment", s.namespace, WORKSPACE_DEPLOYMENT_SELECTOR),
                           client.list_json("PersistentVolumeClaim", s.namespace, WORKSPACE_VOLUMES_SELECTOR),
                           client.list_json("Job", s.namespace, RESTIC_JOBS_SELECTOR))


@task(name="read-owners", **RETRY)
def read_owners() -> dict[str, tuple[str, tuple[str, ...]]] | None:
    """username -> (email, groups), one read of the directory; None when it cannot be read
    (then the gentlest policy applies and no warning is sent, so nothing is stopped)."""
    from tasks.people.identity import get_backend

    try:
        return {u: (st.email, tuple(st.groups)) for u, st in get_backend().list_users().items()}
    except Exception as exc:  # noqa: BLE001 - judged above: unknown owners
        get_run_logger().warning("owner directory unreadable, warnings postponed: %s", exc)
        return None


@task(name="probe-workspaces")
def probe_workspaces(urls: dict[str, str]) -> dict[str, Probe]:
    s = get_settings()
    return probe_all(urls, s.reaper.probe_concurrency, s.reaper.probe_timeout_seconds)


def _apply_one(ws: Workspace, d: Decision, now: datetime, owner: tuple[str, tuple[str, ...]] | None,
               owners_known: bool) -> str:
    s = get_settings()
    client = kube.connect()
    name = workspace_names(ws.username).deployment
    if d.action == "cancel-warning":
        client.annotate("Deployment", s.namespace, name, CLEAR_WARNING)
        return "warning cleared"
    if d.action == "warn":
        if not owners_known:
            return "postponed: owner directory unreadable"
        note = "annotated; no email address on file"
        if owner and owner[0]:
            lead = policy_for(s, owner[1]).warning_lead
            mail.send(warning_message(to_email=owner[0], username=ws.username, decision=d, stop_at=now + lead,
                                      sender=s.mail.sender, domain=s.domain))
            note = f"emailed {owner[0]}, annotated"
        client.annotate("Deployment", s.namespace, name, warn_annotations(d, now))
        return note
    if d.action == "stop":
        client.patch("Deployment", s.namespace, name, stop_patch(ws, d, now))
        return "scaled to 0, volumes kept"
    if d.action == "delete":
        stopped = ws.annotations.get(STOPPED_AT, "")
        client.patch("Deployment", s.namespace, name, {"metadata": {"resourceVersion": ws.resource_version,
                                                                    "annotations": {DORMANT_DELETED_AT: rfc3339(now)}}})
        for v in ws.volumes:
            client.annotate("PersistentVolumeClaim", s.namespace, v["metadata"]["name"],
                            {STOPPED_AT: stopped, DORMANT_DELETED_AT: rfc3339(now)})
        gone = helm.uninstall(workspace_names(ws.username).release, s.namespace, s)
        return f"release {'uninstalled' if gone else 'already absent'}; volumes kept"
    if d.action == "delete-volumes":
        deleted = [v["metadata"]["name"] for v in ws.volumes
                   if client.delete("PersistentVolumeClaim", s.namespace, v["metadata"]["name"])]
        return f"deleted {', '.join(deleted) or 'nothing (already gone)'}"
    return ""


@task(name="apply-reap-decisions", tags=[KUBE_API, HELM], **transient_retries(0))
def apply_decisions(changes: list[tuple[Workspace, Decision]], now: datetime,
                    owners: dict[str, tuple[str, tuple[str, ...]]] | None) -> dict[str, str]:
    """The writes, bounded by settings.kube_concurrency. One workspace's failure is its row's
    outcome, never the others'; a moved resourceVersion (it changed since the LIST) skips it."""
    def one(item: tuple[Workspace, Decision]) -> tuple[str, str]:
        ws, d = item
        try:
            return ws.username, _apply_one(ws, d, now, (owners or {}).get(ws.username), owners is not None)
        except Exception as exc:  # noqa: BLE001 - reported per workspace
            return ws.username, f"failed: {type(exc).__name__}: {exc}"[:300]

    with ThreadPoolExecutor(max_workers=max(1, min(get_settings().kube_concurrency, len(changes) or 1))) as pool:
        return dict(pool.map(one, changes))


def probe_note(p: Probe | None) -> str:
    if p is None:
        return ""
    if not p.ok:
        return f"failed: {p.error}"
    return f"{p.status}, last heartbeat {rfc3339(p.last_heartbeat) if p.last_heartbeat else 'never'}"


class ResumeResult(BaseModel):
    username: str
    was: str
    ready: str


@task(name="start-workspace", tags=[KUBE_API], **RETRY)
def start_workspace(username: str) -> str:
    """Scale a stopped workspace back to one replica; what it found, for the report."""
    s = get_settings()
    names = workspace_names(username)
    client = kube.connect()
    dep = client.get("Deployment", s.namespace, names.deployment)
    if dep is None:
        return "absent"
    was = (dep["metadata"].get("annotations") or {}).get(STOPPED_AT)
    client.scale(s.namespace, names.deployment, 1)
    return f"stopped at {was}" if was else f"{dep['spec'].get('replicas', 1)} replica(s)"


@task(name="clear-stop-marks", tags=[KUBE_API], **RETRY)
def clear_stop_marks(username: str, now: datetime) -> None:
    s = get_settings()
    names = workspace_names(username)
    client = kube.connect()
    client.annotate("Deployment", s.namespace, names.deployment, resume_annotations(now))
    for v in client.list("PersistentVolumeClaim", s.namespace, names.selector):
        if (v["metadata"].get("annotations") or {}).get(STOPPED_AT):
            client.annotate("PersistentVolumeClaim", s.namespace, v["metadata"]["name"],
                            {STOPPED_AT: None, DORMANT_DELETED_AT: None})


@task(name="has-kept-volume", tags=[KUBE_API], **RETRY)
def has_kept_volume(username: str) -> bool:
    """Whether the workspace volume is still there (a dormant workspace keeps it)."""
    s = get_settings()
    names = workspace_names(username)
    vols = kube.connect().list("PersistentVolumeClaim", s.namespace, names.selector)
    return any(v["metadata"]["name"] == names.workspace_pvc for v in vols)
