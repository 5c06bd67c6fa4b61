"""Pure decisions: when may a workspace's objects and volumes be deleted?

One rule for every deletion, so "may this be deleted" is decided in one place: offboarding
(since the termination, after the retention period) and dormancy (since the reaper
stopped the workspace, after the dormancy period) both call :func:`deletion_decision`.

Deletion is irreversible, so it needs a *verified* backup of each workspace volume taken
after the event (so the last day's work is in it), the period to have passed, and the
repository itself to hold the snapshot the volume's annotation names. An annotation is a
word written at backup time; retention, a repository rebuilt or a hand-edited annotation
can make it stale, and deleting on a stale word loses the person's work. So the step that
judges first asks the rule whether a deletion is due at all (``repository=None``: the
answer is ``confirm``), then lists the repository's snapshots once and asks again with
what it found (:class:`RepositoryWord`). Anything less is refused or deferred. The
extensions volume holds only reinstallable tooling and is not backed up (see
flows.backup), so it follows the workspace volume's verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from tasks.backup.status import RepositoryWord, has_verified_backup
from tasks.core.names import LAST_BACKUP_SNAPSHOT, RESTORING_ANNOTATION, VOLUME_LABEL

DeletionAction = Literal["delete", "defer", "refuse", "nothing", "confirm"]


@dataclass(frozen=True)
class Decision:
    action: DeletionAction  # confirm: due, but the repository has not been asked yet
    reason: str
    not_before: datetime | None = None


def _is_backed_up_volume(pvc: dict) -> bool:
    return ((pvc.get("metadata") or {}).get("labels") or {}).get(VOLUME_LABEL) == "workspace"


def _snapshot_of(pvc: dict) -> str:
    return ((pvc.get("metadata") or {}).get("annotations") or {}).get(LAST_BACKUP_SNAPSHOT, "")


def deletion_decision(since: datetime | None, pvcs: list[dict], now: datetime, wait_days: int, *,
                      event: str = "termination", period: str = "retention",
                      repository: RepositoryWord | None = None) -> Decision:
    """``since``: the event after which the backup must have been taken (termination, stop);
    ``wait_days``: how long after it deletion waits; ``repository``: what the repository
    said (None: not asked yet). A volume a restore is writing into (the restore guard) waits
    for the restore, and is not backed up meanwhile. With no volume left (a rerun after the
    volumes went) there is nothing to lose, so only the period counts."""
    if since is None:
        return Decision("nothing", f"no {event} recorded")
    restoring = sorted(p["metadata"]["name"] for p in pvcs
                       if ((p.get("metadata") or {}).get("annotations") or {}).get(RESTORING_ANNOTATION))
    if restoring:
        return Decision("defer", f"a restore is writing into {', '.join(restoring)} ({RESTORING_ANNOTATION})",
                        since + timedelta(days=wait_days))
    # Backup times are recorded to the second (RFC 3339 annotations): a backup in the same
    # second as the event counts as taken after it.
    since_event = max(now - since.replace(microsecond=0), timedelta(0))
    backed_up = [p for p in pvcs if _is_backed_up_volume(p)]
    missing = sorted(p["metadata"]["name"] for p in backed_up if not has_verified_backup(p, now, max_age=since_event))
    not_before = since + timedelta(days=wait_days)
    if missing:
        return Decision("refuse", f"no verified backup taken after {event} of " + ", ".join(missing), not_before)
    if now < not_before:
        return Decision("defer", f"{period} runs until {not_before.isoformat()}", not_before)
    if not backed_up:
        return Decision("delete", f"no volume left to back up and {period} ended {not_before.isoformat()}",
                        not_before)
    named = sorted({_snapshot_of(p) for p in backed_up})
    if repository is None:
        return Decision("confirm", f"the repository must confirm snapshot {', '.join(named)} first", not_before)
    if repository.error:
        return Decision("defer", f"the repository could not be read to confirm snapshot {', '.join(named)}: "
                                 f"{repository.error}"[:300], not_before)
    absent = [s for s in named if not repository.holds(s)]
    if absent:
        return Decision("refuse", f"the volume's annotation names snapshot {', '.join(absent)}, which the "
                                  f"repository does not hold (a stale word): a new backup is needed", not_before)
    return Decision("delete", f"verified backup {', '.join(s[:8] for s in named)} confirmed in the repository "
                              f"and {period} ended {not_before.isoformat()}", not_before)
