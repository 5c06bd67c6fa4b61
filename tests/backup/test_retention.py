"""Retention: restic's keep rules over simulated nights, and the newest good snapshot guard."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest

from tasks.backup.restic import PARTIAL_TAG, Snapshot
from tasks.backup.retention import KeepPolicy, plan_retention
from tasks.backup.runner import Restic

FIRST = date(2026, 8, 30)  # 90 nights: 2026-08-30 .. 2026-11-27 (a Friday, ISO week 48)
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)


def night(d: date, partial: bool = False) -> Snapshot:
    tags = ("nightly", "alice") + ((PARTIAL_TAG,) if partial else ())
    return Snapshot(id=f"{d.isoformat()}", time=datetime(d.year, d.month, d.day, 2, 0, tzinfo=timezone.utc), tags=tags)


def nights(n: int = 90) -> list[date]:
    return [FIRST + timedelta(days=i) for i in range(n)]


def days(*isodates: str) -> set[str]:
    return {f"2026-{d}" for d in isodates}


def test_ninety_good_nights_keep_seven_daily_four_weekly_six_monthly():
    plan = plan_retention([night(d) for d in nights()], KeepPolicy(7, 4, 6), NOW)
    daily = days("11-21", "11-22", "11-23", "11-24", "11-25", "11-26", "11-27")
    weekly = days("11-27", "11-22", "11-15", "11-08")  # newest of ISO weeks 48, 47, 46, 45
    monthly = days("11-27", "10-31", "09-30", "08-31")  # only four months exist yet
    assert set(plan.keep) == daily | weekly | monthly
    assert len(plan.keep) == 12 and len(plan.forget) == 78
    assert plan.keep["2026-11-08"] == ["weekly snapshot"]
    assert plan.keep["2026-08-31"] == ["monthly snapshot"]


def test_ten_failed_nights_without_snapshots_age_nothing_out():
    """Rules count snapshots, not calendar days: failed nights cannot expire the last good copy."""
    plan = plan_retention([night(d) for d in nights()[:80]], KeepPolicy(7, 4, 6), NOW)
    assert set(plan.keep) == days("11-11", "11-12", "11-13", "11-14", "11-15", "11-16", "11-17",
                                  "11-08", "11-01", "10-31", "09-30", "08-31")
    assert plan.newest_good == "2026-11-17"


def test_ten_partial_nights_never_push_out_the_newest_good_snapshot():
    snaps = [night(d, partial=i >= 80) for i, d in enumerate(nights())]
    plan = plan_retention(snaps, KeepPolicy(7, 4, 6), NOW)
    # the partial nights take every daily slot and week 47's weekly slot (Sunday 11-22);
    # only the guard keeps Tuesday 11-17, the last night that backed up every file
    assert plan.keep["2026-11-17"] == ["newest good snapshot"]
    assert plan.newest_good == "2026-11-17"
    assert set(plan.keep) == days("11-21", "11-22", "11-23", "11-24", "11-25", "11-26", "11-27",
                                  "11-17", "11-15", "11-08", "10-31", "09-30", "08-31")


def test_newest_good_survives_a_policy_that_keeps_nothing():
    snaps = [night(d) for d in nights(5)]
    plan = plan_retention(snaps, KeepPolicy(0, 0, 0), NOW)
    assert list(plan.keep) == [snaps[-1].id] and len(plan.forget) == 4


def test_keep_last_keeps_several_runs_of_one_day():
    snaps = [Snapshot(f"s{h}", datetime(2026, 11, 27, h, tzinfo=timezone.utc)) for h in (1, 2, 3)]
    assert set(plan_retention(snaps, KeepPolicy(7, 4, 6), NOW).keep) == {"s3"}
    assert set(plan_retention(snaps, KeepPolicy(7, 4, 6, last=2), NOW).keep) == {"s2", "s3"}


def test_snapshots_dated_in_the_future_are_kept_and_not_counted():
    snaps = [night(d) for d in nights()] + [night(date(2027, 1, 1))]
    plan = plan_retention(snaps, KeepPolicy(7, 4, 6), NOW)
    assert "2027-01-01" in plan.keep and "2026-11-21" in plan.keep  # still seven real dailies


def test_timezone_decides_which_day_a_snapshot_belongs_to():
    # 23:30 and 00:30 UTC are the same day in New York: one daily slot there, two in UTC
    a = Snapshot("a", datetime(2026, 11, 26, 23, 30, tzinfo=timezone.utc))
    b = Snapshot("b", datetime(2026, 11, 27, 0, 30, tzinfo=timezone.utc))
    assert set(plan_retention([a, b], KeepPolicy(2, 0, 0, "UTC"), NOW).keep) == {"a", "b"}
    assert set(plan_retention([a, b], KeepPolicy(2, 0, 0, "America/New_York"), NOW).keep) == {"b"}


@pytest.mark.slow  # runs the restic binary (installed by scripts/setup.sh --test): not a unit test
def test_same_decisions_as_restic_forget(tmp_path, monkeypatch):
    """Cross-check the bucket walk against restic itself on a local repository."""
    monkeypatch.setenv("TZ", "UTC")
    repo = Restic(env={"RESTIC_REPOSITORY": str(tmp_path / "repo"), "RESTIC_PASSWORD": "test-only",
                       "RESTIC_CACHE_DIR": str(tmp_path / "cache"), "TZ": "UTC"})
    repo.run(["init"])
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("x")
    start = datetime(2026, 9, 25, 2, 0, tzinfo=timezone.utc)
    offsets = [0, 1, 2, 6, 9, 13, 20, 21, 30, 37, 38, 45, 52, 60, 61]  # irregular nights
    for off in offsets:
        t = start + timedelta(days=off)
        repo.run(["backup", ".", "--host", "alice", "--time", t.strftime("%Y-%m-%d %H:%M:%S")], cwd=tmp_path / "src")
    for last, daily, weekly, monthly in [(0, 3, 2, 2), (2, 1, 1, 3)]:
        out = repo.run(["forget", "--dry-run", "--json", "--keep-last", str(last), "--keep-daily", str(daily),
                        "--keep-weekly", str(weekly), "--keep-monthly", str(monthly)]).stdout
        restic_keep = {s["id"] for group in json.loads(out) for s in group["keep"]}
        ours = plan_retention(repo.snapshots(), KeepPolicy(daily, weekly, monthly, last=last), NOW)
        assert set(ours.keep) == restic_keep
        assert 0 < len(restic_keep) < len(offsets)
