"""Which snapshots to keep: restic's keep rules plus the one rule restic lacks.

The bucket walk mirrors restic's ``ApplyPolicy`` (k8up uses the same rules), so operators
can reason with restic's documentation: newest first, a snapshot is kept by a rule when
it opens a new day/ISO-week/month and that rule still has count left. Rules count
*snapshots*, not calendar days, so nights without a snapshot do not age anything out.

What restic cannot know is which snapshots are *good* and which are *verified*. A partial
snapshot (files that could not be read) still fills a daily slot; a snapshot no passing
``restic check`` has covered yet fills none: it is kept, not counted, so a night whose
check fails (or has not run) cannot push the last verified copy out. The newest good
verified snapshot is always kept, whatever the counts say - "never lose the last good
copy" even when every recent night failed - and it is what the volume's annotation names.
The backup step therefore runs retention only after a passing check, over the snapshots
listed before it (every one of them verified by that check). Decided here, purely, so a
simulated 90 nights is a fast unit test.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from tasks.backup.restic import Snapshot

if TYPE_CHECKING:
    from tasks.core.settings import BackupSettings


@dataclass(frozen=True)
class KeepPolicy:
    daily: int = 7
    weekly: int = 4
    monthly: int = 6
    timezone: str = "UTC"  # a "day" is a day where the people live, as for the 02:00 schedule
    last: int = 0

    @classmethod
    def from_settings(cls, backup: BackupSettings) -> "KeepPolicy":
        return cls(daily=backup.keep_daily, weekly=backup.keep_weekly, monthly=backup.keep_monthly,
                   timezone=backup.timezone, last=backup.keep_last)


@dataclass
class RetentionPlan:
    keep: dict[str, list[str]] = field(default_factory=dict)  # snapshot id -> reasons
    forget: list[str] = field(default_factory=list)
    newest_good: str | None = None


def _buckets(t: datetime, snap: Snapshot):
    iso = t.isocalendar()
    return {"last": snap.id, "daily": (t.year, t.month, t.day), "weekly": (iso.year, iso.week),
            "monthly": (t.year, t.month)}


def plan_retention(snapshots: list[Snapshot], policy: KeepPolicy, now: datetime,
                   verified: Collection[str] | None = None) -> RetentionPlan:
    """Split ``snapshots`` into keep (with reasons) and forget.

    ``verified``: the ids a passing ``restic check`` covered (None: every one given). Only
    those count and only those can be forgotten; the others are kept, uncounted. Snapshots
    dated after ``now`` (a skewed clock somewhere) are kept and left out of the counting
    too, so they can neither be expired nor push real ones out.
    """
    tz = ZoneInfo(policy.timezone)
    plan = RetentionPlan()
    checked = set(verified) if verified is not None else {s.id for s in snapshots}
    for s in snapshots:
        if s.time > now:
            plan.keep[s.id] = ["dated in the future"]
        elif s.id not in checked:
            plan.keep[s.id] = ["not verified yet"]
    past = sorted((s for s in snapshots if s.time <= now and s.id in checked), key=lambda s: s.time, reverse=True)

    remaining = {"last": policy.last, "daily": policy.daily, "weekly": policy.weekly, "monthly": policy.monthly}
    last: dict[str, object] = dict.fromkeys(remaining)
    for snap in past:
        reasons = []
        for rule, bucket in _buckets(snap.time.astimezone(tz), snap).items():
            if remaining[rule] > 0 and bucket != last[rule]:
                last[rule] = bucket
                remaining[rule] -= 1
                reasons.append(f"{rule} snapshot")
        if reasons:
            plan.keep[snap.id] = reasons

    newest_good = next((s for s in past if s.good), None)
    if newest_good is not None:
        plan.newest_good = newest_good.id
        plan.keep.setdefault(newest_good.id, []).append("newest good snapshot")
    plan.forget = [s.id for s in sorted(past, key=lambda s: s.time) if s.id not in plan.keep]
    return plan
