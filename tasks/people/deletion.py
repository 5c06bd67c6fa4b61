"""Pure decisions: when may a workspace's objects and volumes be deleted?

One rule for every deletion, so "may this be deleted" is decided in one place: offboarding
(since the termination, after the retention period) and dormancy (since the reaper
stopped the workspace, after the dormancy period) both call :func:`deletion_decision`.

Deletion is irreversible, so it needs a *verified* backup of each workspace volume taken
after the event (so the last day's work is in it) and the period to have passed. Anything
less is refused or deferred. The extensions volume holds only reinstallable tooling and is
not backed up (see flows.backup), so it follows the workspace volume's verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tasks.backup.status import has_verified_backup
from tasks.core.names import VOLUME_LABEL


@dataclass(frozen=True)
class Decision:
    action: str  # "delete" | "defer" | "refuse" | "nothing"
    reason: str
    not_before: datetime | None = None


def _is_backed_up_volume(pvc: dict) -> bool:
    return ((pvc.get("metadata") or {}).get("labels") or {}).get(VOLUME_LABEL) == "workspace"


def deletion_decision(since: datetime | None, pvcs: list[dict], now: datetime, wait_days: int, *,
                      event: str = "termination", period: str = "retention") -> Decision:
    """``since``: the event after which the backup must have been taken (termination, stop);
    ``wait_days``: how long after it deletion waits. With no volume left (a rerun after the
    volumes went) there is nothing to lose, so only the period counts."""
    if since is None:
        return Decision("nothing", f"no {event} recorded")
    # Backup times are recorded to the second (RFC 3339 annotations): a backup in the same
    # second as the event counts as taken after it.
    since_event = max(now - since.replace(microsecond=0), timedelta(0))
    missing = sorted(p["metadata"]["name"] for p in pvcs if _is_backed_up_volume(p)
                     and not has_verified_backup(p, now, max_age=since_event))
    not_before = since + timedelta(days=wait_days)
    if missing:
        return Decision("refuse", f"no verified backup taken after {event} of " + ", ".join(missing), not_before)
    if now < not_before:
        return Decision("defer", f"{period} runs until {not_before.isoformat()}", not_before)
    return Decision("delete", f"verified backup exists and {period} ended {not_before.isoformat()}", not_before)
