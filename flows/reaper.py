"""Idle workspace reaping and resume. Orchestration only: decisions in :mod:`tasks.reap`,
probing in :mod:`tasks.probe`, cluster calls through :mod:`tasks.kube` and :mod:`tasks.helm`.

One run: one LIST each of Deployments, volumes and restic Jobs (never a GET per
workspace); every running workspace's ``/healthz`` probed inside one task with a bounded
pool; then writes only for the workspaces whose decision changes something. Dormant
workspaces without a verified backup newer than their stop get one from the backup flow;
their deletion waits for a later run, which re-reads the volumes' backup annotations.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from prefect import flow, get_run_logger, task
from pydantic import BaseModel

from flows.common import HELM, KUBE_API, Username, now as _now, table_artifact, transient_retries
from flows.workspace import provision_workspace, wait_available
from tasks import helm, kube, mail
from tasks.errors import PermanentError
from tasks.names import (
    DORMANT_DELETED_AT,
    RESTIC_JOBS_SELECTOR,
    STOPPED_AT,
    WORKSPACE_DEPLOYMENT_SELECTOR,
    WORKSPACE_VOLUMES_SELECTOR,
    workspace_names,
)
from tasks.probe import probe_all
from tasks.reap import (
    CLEAR_WARNING,
    Decision,
    Probe,
    Workspace,
    decide,
    policy_for,
    probe_url,
    resume_annotations,
    rfc3339,
    stop_patch,
    warn_annotations,
    warning_message,
    workspaces_from,
)
from tasks.settings import get_settings

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
    from tasks.identity import get_backend

    try:
        return {u: (st.email, tuple(st.groups)) for u, st in get_backend().list_users().items()}
    except Exception as exc:  # noqa: BLE001 - judged above: unknown owners
        get_run_logger().warning("owner directory unreadable, warnings postponed: %s", exc)
        return None


@task(name="probe-workspaces")
def probe_workspaces(urls: dict[str, str]) -> dict[str, Probe]:
    s = get_settings()
    return probe_all(urls, s.reap_probe_concurrency, s.reap_probe_timeout_seconds)


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
                                      sender=s.mail_sender, domain=s.domain))
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


def _probe_note(p: Probe | None) -> str:
    if p is None:
        return ""
    if not p.ok:
        return f"failed: {p.error}"
    return f"{p.status}, last heartbeat {rfc3339(p.last_heartbeat) if p.last_heartbeat else 'never'}"


@flow(name="reap-idle-workspaces")
def reap_idle_workspaces(dry_run: bool = False, now: datetime | None = None) -> ReapReport:
    """Warn, then stop, idle workspaces; delete long-stopped ones once a verified backup allows.
    With ``dry_run`` it only reports what it would do. ``now`` is for tests and replays."""
    now = now or _now()
    s = get_settings()
    logger = get_run_logger()
    workspaces = list_workspaces()
    running = [w for w in workspaces if w.replicas and not w.busy]
    probes = probe_workspaces({w.username: probe_url(s, w.username) for w in running}) if running else {}
    # The owners' groups choose the policy and their addresses receive warnings: read only when needed.
    owners = read_owners() if workspaces and (s.reap_group_policies or (running and not dry_run)) else {}
    decisions = {w.username: decide(w, probes.get(w.username), now,
                                    policy_for(s, None if owners is None else
                                               owners.get(w.username, ("", ()))[1]))
                 for w in workspaces}
    changes = [(w, decisions[w.username]) for w in workspaces if decisions[w.username].action != "keep"]
    outcomes: dict[str, str] = {}
    if not dry_run:
        direct = [(w, d) for w, d in changes if d.action != "backup"]
        outcomes = apply_decisions(direct, now, owners) if direct else {}
        to_back_up = sorted(w.username for w, d in changes if d.action == "backup")
        if to_back_up:
            outcomes.update(_backup_first(to_back_up))
    rows = [ReapRow(username=w.username, action=d.action, rule=d.rule, reason=d.reason,
                    probe=_probe_note(probes.get(w.username)),
                    idle_minutes=None if d.idle_seconds is None else round(d.idle_seconds / 60, 1),
                    outcome=outcomes.get(w.username, "dry run: nothing written" if dry_run and d.action != "keep"
                                         else ""))
            for w in workspaces for d in [decisions[w.username]]]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.action] = counts.get(r.action, 0) + 1
    unknown = sum(1 for w in running if not probes.get(w.username, Probe(False)).ok)
    report = ReapReport(dry_run=dry_run, now=now, counts=counts, unknown=unknown, rows=rows)
    for r in rows if not dry_run else []:
        if r.outcome:
            logger.info("reap %s: %s (%s) %s", r.username, r.action, r.reason, r.outcome)
    logger.info("reap %s: %s; %d probe(s) failed (unknown, kept)", "plan" if dry_run else "run", counts, unknown)
    if dry_run:  # the plan, in the run's log; the CLI prints the report on stdout
        logger.info("plan:\n%s", "\n".join(f"{r.username:<24} {r.action:<15} {r.reason}" for r in rows))
    else:
        table_artifact("reap-decisions", report.table(),
                       f"Idle reaping at {rfc3339(now)}: {counts}, {unknown} unknown")
    return report


def _backup_first(usernames: list[str]) -> dict[str, str]:
    """The backup flow for dormant workspaces with no verified backup newer than their stop;
    deletion is judged again on a later run from the annotations this writes."""
    from flows.backup import backup_workspaces

    try:
        report = backup_workspaces(usernames=usernames)
    except Exception as exc:  # noqa: BLE001 - no backup, so nothing is deleted
        return {u: f"backup failed: {exc}"[:300] for u in usernames}
    out = {}
    for u in usernames:
        r = report.for_user(u)
        out[u] = f"backup {r.outcome.value if r else 'not run'}; deletion judged on a later run" + (
            f" ({r.reason})" if r and r.reason else "")
    return out


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


@flow(name="resume-workspace")
def resume_workspace(username: Username) -> ResumeResult:
    """Start a stopped workspace again and wait until it serves. A dormant one whose release was
    uninstalled is reinstalled onto its kept volumes."""
    names = workspace_names(username)
    was = start_workspace(names.username)
    if was == "absent":
        s = get_settings()
        vols = kube.connect().list("PersistentVolumeClaim", s.namespace, names.selector)
        if not any(v["metadata"]["name"] == names.workspace_pvc for v in vols):
            raise PermanentError(f"{username} has no workspace and no volume left: restore it from its backup "
                                 f"(`vibecode restore {username} --in-place` after `vibecode provision "
                                 f"{username} --replicas 0`)")
        ready = provision_workspace(names.username).ready
        was = "dormant: release reinstalled onto the kept volumes"
    else:
        ready = wait_available(names.username)
    clear_stop_marks(names.username, _now())
    get_run_logger().info("resumed %s (%s): %s", names.username, was, ready)
    return ResumeResult(username=names.username, was=was, ready=ready)

