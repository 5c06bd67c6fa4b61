"""Idle workspace reaping and resume. Orchestration only: the steps are in
:mod:`tasks.reaper.steps`, the decision in :mod:`tasks.reaper.decide`.

One run: one LIST each of Deployments, volumes and restic Jobs (never a GET per
workspace); every running workspace's ``/healthz`` probed inside one task with a bounded
pool; then writes only for the workspaces whose decision changes something. Dormant
workspaces without a verified backup newer than their stop get one from the backup flow;
their deletion waits for a later run, which re-reads the volumes' backup annotations.
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow, get_run_logger

from flows.backup import backup_workspaces
from flows.workspace import provision_workspace
from tasks.core.errors import PermanentError
from tasks.core.names import Username, workspace_names
from tasks.core.settings import get_settings
from tasks.core.steps import now as _now
from tasks.core.steps import table_artifact
from tasks.reaper.decide import Probe, decide, policy_for, probe_url, rfc3339
from tasks.reaper.steps import (
    ReapReport,
    ReapRow,
    ResumeResult,
    apply_decisions,
    clear_stop_marks,
    has_kept_volume,
    list_workspaces,
    probe_note,
    probe_workspaces,
    read_owners,
    start_workspace,
)
from tasks.workspace.steps import wait_available


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
    owners = read_owners() if workspaces and (s.reaper.group_policies or (running and not dry_run)) else {}
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
                    probe=probe_note(probes.get(w.username)),
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


@flow(name="resume-workspace")
def resume_workspace(username: Username) -> ResumeResult:
    """Start a stopped workspace again and wait until it serves. A dormant one whose release was
    uninstalled is reinstalled onto its kept volumes."""
    names = workspace_names(username)
    was = start_workspace(names.username)
    if was == "absent":
        if not has_kept_volume(names.username):
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

