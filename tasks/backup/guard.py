"""The restore guard: while a restore writes into a workspace volume, nothing may start the workspace.

The restore flow sets :data:`tasks.core.names.RESTORING_ANNOTATION` on the workspace's
Deployment and volume before it checks that the workspace is stopped, and clears it when
it ends. Provisioning and the reaper read it with :func:`guard_holds`. A guard whose flow
died is not honoured forever: it lapses once its restore Job has finished or is gone,
and a guard whose Job was never created lapses after ``setup_seconds`` (the pre-restore
backup runs before the restore Job exists). Pure.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Literal

SEPARATOR = "@"

GuardStep = Literal["set", "clear", "leave", "refuse"]


def guard_value(job_name: str, now: datetime) -> str:
    return f"{job_name}{SEPARATOR}{now.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}"


def guarding_job(value: str) -> str:
    return value.partition(SEPARATOR)[0]


def guard_step(current: str | None, job: str, clear: bool, other_holds: bool = True) -> GuardStep:
    """What the restore flow does to one object's guard annotation, holding ``current``.

    Setting: set it (again: a retry re-stamps its own guard), or refuse when another
    restore's guard is there and still holds (:func:`guard_holds`, ``other_holds``). A guard
    that lapsed is taken over: that is how a restore whose run was killed is run again as a
    new run, and it is the rule provisioning already clears such a guard by. Clearing: only
    our own guard; another restore's, or none, is left alone (a restore that lost its guard
    must not clear the next one's).
    """
    mine = bool(current) and guarding_job(current or "") == job
    if clear:
        return "clear" if mine else "leave"
    return "refuse" if current and not mine and other_holds else "set"


def setup_seconds(backup_timeout_seconds: float) -> float:
    """How long a guard whose restore Job does not exist yet holds: the run's pre-restore
    backup (one Job, up to its deadline, possibly twice on a retry) comes first. A flow killed
    in that time leaves a guard nobody can tell from a live one, so it holds that long."""
    return 2 * backup_timeout_seconds + 120


def guard_holds(value: str | None, job: dict | None, job_state: str | None, now: datetime,
                setup_seconds: float) -> tuple[bool, str]:
    """(holds, why). ``job`` is the guarding restore Job (None if absent), ``job_state`` its
    state from :func:`tasks.cluster.jobs.job_state`. An unreadable guard holds: an operator removes it."""
    if not value:
        return False, "no restore in progress"
    name, _, since = value.partition(SEPARATOR)
    try:
        started = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        return True, f"restore guard {value!r} is unreadable; remove the annotation once no restore runs"
    if job is not None:
        if job_state == "running":
            return True, f"restore Job {name} is running"
        return False, f"restore Job {name} has finished ({job_state})"
    if now - started < timedelta(seconds=setup_seconds):
        return True, f"a restore started at {since} is preparing (Job {name} not created yet)"
    return False, f"restore Job {name} is gone"
