"""Pure decisions for offboarding: when may a departed person's workspace be deleted?

Deletion is irreversible, so it needs both a *verified* backup taken after the person
left (the final backup, so the last day's work is in it) on every one of their volumes,
and the retention period to have passed. Anything less is refused or deferred.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

LAST_TIME = "vibecode.dev/last-backup-time"
LAST_OUTCOME = "vibecode.dev/last-backup-outcome"
LAST_SNAPSHOT = "vibecode.dev/last-backup-snapshot"
LAST_VERIFIED = "vibecode.dev/last-backup-verified"


def _parse(ts: str) -> datetime | None:
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None


def verified_backup_time(pvc: dict) -> datetime | None:
    """When this PVC's last *verified, completed* backup was taken, from the backup flow's annotations."""
    ann = (pvc.get("metadata") or {}).get("annotations") or {}
    if ann.get(LAST_OUTCOME) != "Completed" or ann.get(LAST_VERIFIED, "").lower() != "true":
        return None
    if not ann.get(LAST_SNAPSHOT):
        return None
    return _parse(ann.get(LAST_TIME, ""))


@dataclass(frozen=True)
class Decision:
    action: str  # "delete" | "defer" | "refuse" | "nothing"
    reason: str
    not_before: datetime | None = None


def deletion_decision(terminated_at: datetime | None, pvcs: list[dict], now: datetime,
                      retention_days: int) -> Decision:
    if terminated_at is None:
        return Decision("nothing", "the person is not terminated")
    missing = sorted(p["metadata"]["name"] for p in pvcs
                     if (t := verified_backup_time(p)) is None or t < terminated_at)
    not_before = terminated_at + timedelta(days=retention_days)
    if missing:
        return Decision("refuse", "no verified backup taken after termination for: " + ", ".join(missing),
                        not_before)
    if now < not_before:
        return Decision("defer", f"retention runs until {not_before.isoformat()}", not_before)
    return Decision("delete", f"verified backups exist and retention ended {not_before.isoformat()}", not_before)
