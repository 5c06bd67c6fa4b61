"""Offboarding from HR (employee.terminated) and the daily purge of leavers' workspaces.
Orchestration only: the steps are in :mod:`tasks.people.steps`, the deletion rule is
:func:`tasks.people.deletion.deletion_decision`, the event order
:func:`tasks.people.record.admit`.

A termination acts only on the person whose employee id owns the username (the ledger's
employee index); an unknown employee id changes nothing and is refused before anything
is disabled. Then, in this order: the event is admitted (a termination older than a
re-hire already applied is recorded and ignored), access ends (identity disabled,
workspace scaled to zero), and the data is kept until a verified backup taken after the
termination exists and the retention period has passed. Nothing is deleted otherwise;
every step converges, so a rerun or a replay is safe.

Concurrency: no task here holds a ``kube-api`` slot while it waits for other work. The
final backup runs the backup flow as a subflow whose own tasks take the slots they need
(holding one would deadlock once as many offboardings as the limit wait for their backups).
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow, get_run_logger

from flows.backup import backup_workspaces
from tasks.core.errors import BackupRequired, PermanentError
from tasks.core.steps import now as _now
from tasks.core.steps import table_artifact
from tasks.people.hr import HRRequest
from tasks.people.record import EVENT_KINDS, State
from tasks.people.steps import (
    REHIRED,
    OffboardResult,
    admit_event,
    delete_workspace,
    disable_identity,
    find_person,
    judge_deletion,
    list_leavers,
    note_failure,
    record_event,
)
from tasks.people.totp_steps import expire_totp_handoffs
from tasks.workspace.steps import scale_workspace


def final_backup(username: str) -> str:
    """Run the backup flow for this workspace; it writes the vibecode.dev/last-backup-*
    annotations the deletion rule judges."""
    report = backup_workspaces(usernames=[username])
    ws = report.workspaces[0] if report.workspaces else None
    if ws is None:
        return report.outcome.value
    detail = f"snapshot {ws.snapshot_id[:8]}, {'verified' if ws.verified else 'not verified'}" \
        if ws.snapshot_id else ws.reason
    return f"{ws.outcome.value} ({detail})"[:200]


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
            rows["result"] = admission.ignored or ""
            logger.info("termination %s for %s ignored: %s", request.event_id, username, admission.ignored)
            table_artifact(f"offboard-{username}", rows, f"Offboarding {username} (ignored)")
            return OffboardResult(username=username, event_id=request.event_id, identity="unchanged",
                                  workspace="unchanged", backup="not needed", deletion="nothing",
                                  ignored=admission.ignored or "")
        rows["identity"] = disable_identity(username)  # access ends at once
        rows["workspace"] = rows["identity"] if rows["identity"] == REHIRED else scale_workspace(username, 0)
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
    for rec in list_leavers():
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
