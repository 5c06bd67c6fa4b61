"""Backup outcomes as Velero names them, the PVC annotations other flows read, and the report.

All pure. Offboarding calls :func:`has_verified_backup` on the PVC before it deletes
anything; health checks and the reaper read the same annotations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from pydantic import BaseModel

from tasks.core.names import (
    LAST_BACKUP_OUTCOME,
    LAST_BACKUP_REASON,
    LAST_BACKUP_SNAPSHOT,
    LAST_BACKUP_TIME,
    LAST_BACKUP_VERIFIED,
    LAST_VERIFIED_TIME,
)
from tasks.core.timefmt import rfc3339


class Outcome(str, Enum):
    COMPLETED = "Completed"
    PARTIALLY_FAILED = "PartiallyFailed"
    FAILED = "Failed"


class WorkspaceResult(BaseModel):
    username: str
    pvc: str
    outcome: Outcome
    snapshot_id: str | None = None  # the snapshot this run made, if any
    verified: bool = False
    reason: str = ""
    duration_seconds: float = 0.0


class BackupReport(BaseModel):
    outcome: Outcome
    started: datetime
    finished: datetime
    workspaces: list[WorkspaceResult]

    def for_user(self, username: str) -> WorkspaceResult | None:
        return next((w for w in self.workspaces if w.username == username), None)

    def table(self) -> list[dict]:
        return [{"workspace": w.username, "outcome": w.outcome.value, "snapshot": (w.snapshot_id or "")[:8],
                 "verified": w.verified, "seconds": round(w.duration_seconds, 1), "reason": w.reason}
                for w in self.workspaces]


def classify(job_state: str, job_reason: str, snapshot_id: str | None, retention_error: str | None,
             check_ok: bool | None, check_detail: str = "") -> tuple[Outcome, str]:
    """One workspace's outcome from what each step found.

    A snapshot from a failed Job means restic saved what it could read (exit 3): partial.
    A failed verification outranks everything - the repository cannot be trusted.
    """
    if check_ok is False:
        return Outcome.FAILED, f"verification failed: {check_detail}"
    if snapshot_id is None:
        why = job_reason if job_state == "failed" else "the Job succeeded but no snapshot was saved"
        return Outcome.FAILED, f"backup failed: {why}"
    problems = []
    if job_state == "failed":
        problems.append(f"some files were not backed up ({job_reason})")
    if retention_error:
        problems.append(f"retention failed: {retention_error}")
    if check_ok is None:
        problems.append("not verified")
    if problems:
        return Outcome.PARTIALLY_FAILED, "; ".join(problems)
    return Outcome.COMPLETED, ""


@dataclass(frozen=True)
class Recorded:
    """What the repository says after a backup Job: the run's snapshot, retention, verification."""

    snapshot_id: str | None = None
    retention_error: str | None = None
    verified: bool | None = None  # None: not checked (no snapshot, or the check could not run)
    check_detail: str = ""


def workspace_outcome(job_state: str, job_reason: str, recorded: Recorded,
                      error: str | None = None) -> tuple[Outcome, str]:
    """One workspace's outcome; ``error`` is a step that raised (after its retries)."""
    if error and recorded.snapshot_id is None:
        return Outcome.FAILED, f"backup failed: {error}"
    outcome, reason = classify(job_state, job_reason, recorded.snapshot_id, recorded.retention_error,
                               recorded.verified, recorded.check_detail)
    return outcome, f"{reason}; {error}" if error else reason


def run_outcome(outcomes: list[Outcome]) -> Outcome:
    """Velero's rule for the whole run: all good, all bad, or partially failed."""
    if all(o is Outcome.COMPLETED for o in outcomes):
        return Outcome.COMPLETED
    if all(o is Outcome.FAILED for o in outcomes):
        return Outcome.FAILED
    return Outcome.PARTIALLY_FAILED


def volume_annotations(result: WorkspaceResult, now: datetime) -> dict[str, str]:
    """The patch for the PVC. The snapshot key moves only on success ("the last good one");
    an empty reason clears a stale one."""
    ann: dict[str, str] = {
        LAST_BACKUP_TIME: rfc3339(now),
        LAST_BACKUP_OUTCOME: result.outcome.value,
        LAST_BACKUP_VERIFIED: "true" if result.verified else "false",
        LAST_BACKUP_REASON: result.reason[:256] if result.outcome is not Outcome.COMPLETED else "",
    }
    if result.outcome is Outcome.COMPLETED and result.snapshot_id:
        ann[LAST_BACKUP_SNAPSHOT] = result.snapshot_id
        if result.verified:  # outlives a failed night, so health can tell how old the last good one is
            ann[LAST_VERIFIED_TIME] = rfc3339(now)
    return ann


def has_verified_backup(pvc: dict, now: datetime, max_age: timedelta | None = None) -> bool:
    """True only if the *latest* backup of this volume completed, was verified, names a
    snapshot and (with ``max_age``) is recent. Anything missing or unparsable is False."""
    ann = (pvc.get("metadata") or {}).get("annotations") or {}
    if ann.get(LAST_BACKUP_OUTCOME) != Outcome.COMPLETED.value or ann.get(LAST_BACKUP_VERIFIED) != "true":
        return False
    if not ann.get(LAST_BACKUP_SNAPSHOT):
        return False
    try:
        when = datetime.fromisoformat(ann.get(LAST_BACKUP_TIME, "").replace("Z", "+00:00"))
    except ValueError:
        return False
    if when.tzinfo is None or when > now + timedelta(minutes=5):
        return False
    return max_age is None or now - when <= max_age


MIN_ID_PREFIX = 8  # restic's short ids; a shorter annotation must match a whole id


@dataclass(frozen=True)
class RepositoryWord:
    """What the restic repository itself said when it was listed: the ids of the good
    (complete) snapshots of this workspace it holds, or why it could not be read."""

    snapshots: frozenset[str] = field(default_factory=frozenset)
    error: str = ""

    def holds(self, snapshot_id: str) -> bool:
        """The id itself, or a prefix of at least 8 hex digits (restic's short id)."""
        return snapshot_id in self.snapshots or (len(snapshot_id) >= MIN_ID_PREFIX and any(
            s.startswith(snapshot_id) for s in self.snapshots))
