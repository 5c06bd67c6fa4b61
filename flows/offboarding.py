"""Offboarding from HR (employee.terminated) and the daily purge of leavers' workspaces.
Orchestration only; the deletion rule is :func:`tasks.offboard.deletion_decision`, the
event order :func:`tasks.identity.record.admit`.

A termination acts only on the person whose employee id owns the username (the ledger's
employee index); an unknown employee id changes nothing and is refused before anything
is disabled. Then, in this order: the event is admitted (a termination older than a
re-hire already applied is recorded and ignored), access ends (identity disabled,
workspace scaled to zero), and the data is kept until a verified backup taken after the
termination exists and the retention period has passed. Nothing is deleted otherwise;
every step converges, so a rerun or a replay is safe.

Concurrency: no task here holds a ``kube-api`` slot while it waits for other work. The
final backup runs the backup flow as a subflow whose own tasks take the slots they need,
so it carries no tag (holding one would deadlock once as many offboardings as the limit
wait for their backups).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.common import HELM, KUBE_API, USERS_DB, now as _now, table_artifact, transient_retries
from flows.person import EventResult, admit_event, note_failure, record_event, scale_workspace
from flows.totp import expire_totp_handoffs
from tasks import helm
from tasks.errors import BackupRequired, InvalidInput, PermanentError
from tasks.hr import HRRequest
from tasks.identity import get_backend
from tasks.identity.ledger import Ledger
from tasks.identity.record import EVENT_KINDS, Record, State
from tasks.jobs import job_state
from tasks.kube import connect
from tasks.names import workspace_names
from tasks.offboard import Decision, deletion_decision
from tasks.settings import get_settings

RETRY = transient_retries(4, backoff_factor=1)


class OffboardResult(EventResult):
    backup: str
    deletion: str


@task(name="find-person", tags=[KUBE_API], **RETRY)
def find_person(employee_id: str) -> Record:
    """The ledger record this employee id owns; refused (nothing changed) when it owns none."""
    rec = Ledger().by_employee(employee_id)
    if rec is None:
        raise InvalidInput("employee.employee_id", f"{employee_id!r} owns no onboarded username; "
                                                   "nothing was disabled or changed")
    return rec


@task(name="disable-identity", tags=[USERS_DB], **RETRY)
def disable_identity(username: str) -> str:
    return get_backend().disable(username)


@task(name="final-backup", retries=0, cache_policy=NO_CACHE)
def final_backup(username: str) -> str:
    """Run the backup flow for this workspace; it writes the vibecode.dev/last-backup-*
    annotations the deletion rule judges. Untagged: see the module docstring."""
    from flows.backup import backup_workspaces

    report = backup_workspaces(usernames=[username])
    ws = report.workspaces[0] if report.workspaces else None
    if ws is None:
        return report.outcome.value
    detail = f"snapshot {ws.snapshot_id[:8]}, {'verified' if ws.verified else 'not verified'}" \
        if ws.snapshot_id else ws.reason
    return f"{ws.outcome.value} ({detail})"[:200]


def _pvcs(username: str) -> list[dict]:
    s = get_settings()
    return connect(s).list("PersistentVolumeClaim", s.namespace, workspace_names(username).selector)


@task(name="judge-deletion", tags=[KUBE_API], **RETRY)
def judge_deletion(username: str, now: datetime) -> Decision:
    s = get_settings()
    rec = Ledger().get(username)
    terminated = rec.terminated_at if rec and rec.state is State.TERMINATED else None
    return deletion_decision(terminated, _pvcs(username), now, s.offboard_retention_days)


@task(name="delete-workspace", tags=[KUBE_API, HELM], **RETRY)
def delete_workspace(username: str, now: datetime) -> str:
    """Release first, then the kept PVCs; re-judged here so nothing is deleted on a stale verdict."""
    decision = judge_deletion.fn(username, now)
    if decision.action != "delete":
        raise BackupRequired(f"{username}: deletion refused: {decision.reason}")
    s = get_settings()
    names = workspace_names(username)
    kube = connect(s)
    uninstalled = helm.uninstall(names.release, s.namespace, s)
    # Finished Jobs (the final backup among them) keep pods that name the claims, and the PVC
    # protection controller holds a claim while any pod names it; a Job's TTL clean-up is not
    # there on every cluster (alpha before 1.21). A running Job is left to finish.
    for job in kube.list("Job", s.namespace, names.selector):
        if job_state(job)[0] != "running":
            kube.delete("Job", s.namespace, job["metadata"]["name"])
    deleted = [p["metadata"]["name"] for p in _pvcs(username)
               if kube.delete("PersistentVolumeClaim", s.namespace, p["metadata"]["name"])]
    Ledger().update(username, lambda r: replace(r, state=State.PURGED, purged_at=now))
    return f"release {'uninstalled' if uninstalled else 'absent'}; PVCs deleted: {', '.join(deleted) or 'none'}"


@flow(name="offboard-user")
def offboard_user(request: HRRequest, now: datetime | None = None) -> OffboardResult:
    """employee.terminated: access ends first; data is kept until a verified backup and retention allow."""
    if request.type != "employee.terminated":
        raise PermanentError(f"{request.type} goes to onboard_user")
    now = now or _now()
    logger = get_run_logger()
    username = find_person(request.employee.employee_id).username  # before anything changes
    rows: dict[str, str] = {"event": f"{request.type} {request.event_id}", "username": username}
    try:
        admission = admit_event(username, EVENT_KINDS[request.type], request.event_id, request.occurred_at, now)
        if not admission.applies:
            rows["result"] = admission.ignored
            logger.info("termination %s for %s ignored: %s", request.event_id, username, admission.ignored)
            table_artifact(f"offboard-{username}", rows, f"Offboarding {username} (ignored)")
            return OffboardResult(username=username, event_id=request.event_id, identity="unchanged",
                                  workspace="unchanged", backup="not needed", deletion="nothing",
                                  ignored=admission.ignored)
        rows["identity"] = disable_identity(username)  # access ends at once
        rows["workspace"] = scale_workspace(username, 0)
        decision = judge_deletion(username, now)
        if decision.action == "refuse":
            try:
                rows["backup"] = final_backup(username)
            except Exception as exc:  # noqa: BLE001 - judged below: no verified backup, no deletion
                rows["backup"] = f"failed: {exc}"[:300]
            decision = judge_deletion(username, now)
        else:
            rows["backup"] = "verified backup already present"
        rows["deletion"] = f"{decision.action}: {decision.reason}"
        logger.info("offboarded %s: %s", username, rows)
        table_artifact(f"offboard-{username}", rows, f"Offboarding {username}")
        if decision.action == "refuse":
            raise BackupRequired(f"{username}: access removed, but nothing deleted: {decision.reason}")
        if decision.action == "delete":
            rows["deletion"] = delete_workspace(username, now)
        record_event(username, request.event_id, State.PURGED if decision.action == "delete" else State.TERMINATED)
    except BaseException as exc:
        note_failure(username, exc)
        raise
    return OffboardResult(username=username, event_id=request.event_id, identity=rows["identity"],
                          workspace=rows["workspace"], backup=rows["backup"], deletion=rows["deletion"])


@flow(name="purge-offboarded")
def purge_offboarded(now: datetime | None = None) -> dict[str, str]:
    """Scheduled (daily): delete departed people's workspaces once retention and a verified backup allow,
    and TOTP hand-off Secrets nobody collected before they expired."""
    now = now or _now()
    out: dict[str, str] = {}
    for rec in Ledger().all(state=State.TERMINATED):
        decision = judge_deletion(rec.username, now)
        if decision.action == "delete":
            out[rec.username] = delete_workspace(rec.username, now)
        else:
            out[rec.username] = f"{decision.action}: {decision.reason}"
    expired = expire_totp_handoffs(now)
    if expired:  # the key cannot be a username
        out["(expired TOTP hand-offs)"] = f"deleted: {', '.join(expired)}"
    table_artifact("purge-offboarded", out, "Offboarded workspaces judged for deletion")
    return out
