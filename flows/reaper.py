"""Idle workspace reaping and resume. Orchestration only: the steps are in
:mod:`tasks.reaper.steps`, the decision in :mod:`tasks.reaper.decide`.

One run: one paged LIST each of restic Jobs, Deployments and volumes (never a GET per
workspace), every running workspace's ``/healthz`` probed as its Deployment's page arrives, a
bounded number at once on one selector loop, all in one task; then writes only for the
workspaces whose decision changes something. Dormant workspaces without a verified backup
newer than their stop get one from the backup flow; their deletion waits for a later run,
which re-reads the volumes' backup annotations.
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow, get_run_logger
from prefect.utilities.annotations import quote

from flows.backup import backup_workspaces
from flows.workspace import provision_workspace
from tasks.backup.status import Outcome as BackupOutcome
from tasks.core.errors import PermanentError
from tasks.core.names import REAP_EXEMPT, Username, workspace_names
from tasks.core.runtime import without_flow_heartbeats
from tasks.core.settings import get_settings
from tasks.core.steps import now as _now
from tasks.core.steps import table_artifact
from tasks.reaper.decide import Action, Probe, decide, exemption, policy_for, rfc3339
from tasks.reaper.steps import (
    NOTHING,
    Outcome,
    OutcomeKind,
    ReapReport,
    ReapRow,
    ResumeResult,
    apply_decisions,
    clear_stop_marks,
    confirm_then_decide,
    has_kept_volume,
    observe_workspaces,
    probe_note,
    read_owners,
    read_repositories,
    start_workspace,
)
from tasks.workspace.steps import check_restore_guard, wait_available

# A log line is one record on the Prefect server (its default limit is 1 MB): at 10,000
# workspaces the whole plan would not fit, and the kept ones say nothing.
PLAN_LOG_ROWS = 500


@flow(name="reap-idle-workspaces")
def reap_idle_workspaces(dry_run: bool = False, now: datetime | None = None) -> ReapReport:
    """Warn, then stop, idle workspaces; delete long-stopped ones once a verified backup,
    confirmed in its repository, allows. With ``dry_run`` it only reports what it would do
    (it still reads the repositories: reading changes nothing). ``now`` is for tests and replays."""
    now = now or _now()
    s = get_settings()
    logger = get_run_logger()
    observed = observe_workspaces()  # the LISTs, and the probes of the running ones as their pages arrive
    workspaces, probes = observed.workspaces, observed.probes
    running = [w for w in workspaces if w.replicas and not w.busy]
    # The owners' groups choose the policy and their addresses receive warnings: read only when needed.
    owners = read_owners() if workspaces and (s.reaper.group_policies or (running and not dry_run)) else {}

    def policy_of(user: str):
        return policy_for(s, None if owners is None else owners.get(user, ("", ()))[1])

    decisions = {w.username: decide(w, probes.get(w.username), now, policy_of(w.username)) for w in workspaces}
    due = sorted(u for u, d in decisions.items() if d.action is Action.CONFIRM)
    if due:  # a deletion is due: the repository itself must hold the snapshot the annotation names
        decisions = confirm_then_decide(workspaces, decisions, now, policy_of, read_repositories(due))
    changes = [(w, decisions[w.username]) for w in workspaces if decisions[w.username].action is not Action.KEEP]
    outcomes: dict[str, Outcome] = {}
    if not dry_run:
        direct = [(w, d) for w, d in changes if d.action is not Action.BACKUP]
        outcomes = apply_decisions(quote(direct), now, quote(owners)) if direct else {}  # type: ignore[call-overload]
        to_back_up = sorted(w.username for w, d in changes if d.action is Action.BACKUP)
        if to_back_up:
            outcomes.update(_backup_first(to_back_up))
    planned = Outcome(kind=OutcomeKind.PLANNED, detail="dry run: nothing written")
    rows = []
    for w in workspaces:
        d = decisions[w.username]
        out = outcomes.get(w.username, planned if dry_run and d.action is not Action.KEEP else NOTHING)
        rows.append(ReapRow(username=w.username, action=d.action, rule=d.rule, reason=d.reason,
                            probe=probe_note(probes.get(w.username)),
                            idle_minutes=None if d.idle_seconds is None else round(d.idle_seconds / 60, 1),
                            outcome=out.detail, outcome_kind=out.kind))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.action.value] = counts.get(r.action.value, 0) + 1
    unknown = sum(1 for w in running if not probes.get(w.username, Probe(False)).ok)
    odd = {w.username: raw for w in workspaces for kind, raw in [exemption(w.annotations)] if kind == "unknown"}
    report = ReapReport(dry_run=dry_run, now=now, counts=counts, unknown=unknown, rows=rows, unknown_exemptions=odd)
    for user, raw in odd.items():
        logger.warning("reap %s: unknown value %r of %s: kept; set \"false\" to exempt, or remove it", user, raw,
                       REAP_EXEMPT)
    for r in rows if not dry_run else []:
        if r.outcome:
            logger.info("reap %s: %s (%s) %s", r.username, r.action, r.reason, r.outcome)
    logger.info("reap %s: %s; %d probe(s) failed (unknown, kept); %d unknown exemption value(s)",
                "plan" if dry_run else "run", counts, unknown, len(odd))
    if dry_run:  # the plan, in the run's log (what it would change; the CLI prints the whole report)
        acting = [r for r in rows if r.action is not Action.KEEP]
        more = f"\n... and {len(acting) - PLAN_LOG_ROWS} more" if len(acting) > PLAN_LOG_ROWS else ""
        logger.info("plan: %d to act on, %d kept:\n%s%s", len(acting), len(rows) - len(acting),
                    "\n".join(f"{r.username:<24} {r.action:<15} {r.reason}" for r in acting[:PLAN_LOG_ROWS]), more)
    else:
        table_artifact("reap-decisions", report.table(),
                       f"Idle reaping at {rfc3339(now)}: {counts}, {unknown} unknown")
    return report


def _backup_first(usernames: list[str]) -> dict[str, Outcome]:
    """The backup flow for dormant workspaces with no verified backup newer than their stop
    (or one its repository does not hold); deletion is judged again on a later run from the
    annotations this writes. A backup that did not complete is a failed row."""
    try:
        report = backup_workspaces(usernames=usernames)
    except Exception as exc:  # noqa: BLE001 - no backup, so nothing is deleted
        return {u: Outcome(kind=OutcomeKind.FAILED, detail=f"backup failed: {exc}"[:300]) for u in usernames}
    out = {}
    for u in usernames:
        r = report.for_user(u)
        detail = f"backup {r.outcome.value if r else 'not run'}; deletion judged on a later run" + (
            f" ({r.reason})" if r and r.reason else "")
        ok = r is not None and r.outcome is BackupOutcome.COMPLETED
        out[u] = Outcome(kind=OutcomeKind.DONE if ok else OutcomeKind.FAILED, detail=detail)
    return out


@flow(name="resume-workspace")
def resume_workspace(username: Username) -> ResumeResult:
    """Start a stopped workspace again and wait until it serves. A dormant one whose release was
    uninstalled is reinstalled onto its kept volumes."""
    names = workspace_names(username)
    check_restore_guard(names.username)  # refuses while a restore writes the volume; clears a lapsed guard
    was = start_workspace(names.username)
    if was == "absent":
        if not has_kept_volume(names.username):
            raise PermanentError(f"{username} has no workspace and no volume left: restore it from its backup "
                                 f"(`vibecode restore {username} --in-place` after `vibecode provision "
                                 f"{username} --replicas 0`)")
        with without_flow_heartbeats():  # a subflow: this run's heartbeat covers the process
            ready = provision_workspace(names.username).ready
        was = "dormant: release reinstalled onto the kept volumes"
    else:
        ready = wait_available(names.username)
    clear_stop_marks(names.username, _now())
    get_run_logger().info("resumed %s (%s): %s", names.username, was, ready)
    return ResumeResult(username=names.username, was=was, ready=ready)

