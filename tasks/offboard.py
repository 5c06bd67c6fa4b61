"""Pure decisions for offboarding: when may a departed person's workspace be deleted?

Deletion is irreversible, so it needs a *verified* backup of each workspace volume taken
after the person left (the final backup, so the last day's work is in it) and the
retention period to have passed. Anything less is refused or deferred. The extensions
volume holds only reinstallable tooling and is not backed up (see flows.backup), so it
follows the workspace volume's verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tasks.backup_status import has_verified_backup


@dataclass(frozen=True)
class Decision:
    action: str  # "delete" | "defer" | "refuse" | "nothing"
    reason: str
    not_before: datetime | None = None


def _is_backed_up_volume(pvc: dict) -> bool:
    return ((pvc.get("metadata") or {}).get("labels") or {}).get("vibecode.dev/volume") == "workspace"


def deletion_decision(terminated_at: datetime | None, pvcs: list[dict], now: datetime,
                      retention_days: int) -> Decision:
    if terminated_at is None:
        return Decision("nothing", "the person is not terminated")
    # Backup times are recorded to the second (RFC 3339 annotations): a final backup in the
    # same second as the termination counts as taken after it.
    since_termination = max(now - terminated_at.replace(microsecond=0), timedelta(0))
    missing = sorted(p["metadata"]["name"] for p in pvcs if _is_backed_up_volume(p)
                     and not has_verified_backup(p, now, max_age=since_termination))
    not_before = terminated_at + timedelta(days=retention_days)
    if missing:
        return Decision("refuse", "no verified backup taken after termination of " + ", ".join(missing),
                        not_before)
    if now < not_before:
        return Decision("defer", f"retention runs until {not_before.isoformat()}", not_before)
    return Decision("delete", f"verified backup exists and retention ended {not_before.isoformat()}", not_before)
