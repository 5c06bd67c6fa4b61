"""Backups never forget the last good copy (issue 16): retention counts only verified
snapshots, runs only after a passing ``restic check``, and never removes the newest
verified one - so the volume's annotation never names a snapshot the repository lost.

The pure plan, then real restic on local repositories: the plan cross-checked against
``restic forget --tag``, and the whole record -> check -> expire step against a
repository whose new snapshot is really corrupt.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tasks.backup.repo import record_and_expire
from tasks.backup.restic import PARTIAL_TAG, Snapshot, run_tag
from tasks.backup.retention import KeepPolicy, plan_retention
from tasks.backup.runner import Restic
from tasks.core.settings import get_settings

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def snap(sid: str, when: datetime, partial: bool = False) -> Snapshot:
    return Snapshot(id=sid, time=when, tags=("nightly",) + ((PARTIAL_TAG,) if partial else ()), hostname="alice")


# -- the plan, pure ------------------------------------------------------------------------------
def test_a_new_unverified_snapshot_neither_counts_nor_pushes_out_the_last_verified_one():
    """The night's snapshot, before its check: it must not take the daily slot of the
    verified one before it (which the volume's annotation names)."""
    verified, new = snap("verified-1", NOW - DAY), snap("new-unchecked", NOW - timedelta(hours=1))
    plan = plan_retention([verified, new], KeepPolicy(daily=1, weekly=0, monthly=0), NOW, verified={"verified-1"})
    assert plan.forget == [] and plan.newest_good == "verified-1"
    assert plan.keep["new-unchecked"] == ["not verified yet"]
    assert "newest good snapshot" in plan.keep["verified-1"]
    # once a check has covered both, the usual rules apply
    both = plan_retention([verified, new], KeepPolicy(daily=1, weekly=0, monthly=0), NOW)
    assert both.forget == ["verified-1"] and both.newest_good == "new-unchecked"


ids = st.integers(0, 10_000).map(lambda n: f"{n:08x}")
snapshots = st.lists(st.builds(snap, ids, st.integers(-90 * 24, 48).map(lambda h: NOW + timedelta(hours=h)),
                               st.booleans()), max_size=30, unique_by=lambda s: s.id)
policies = st.builds(KeepPolicy, st.integers(0, 7), st.integers(0, 4), st.integers(0, 6), st.just("UTC"),
                     st.integers(0, 3))


@hsettings(max_examples=400, deadline=None)
@given(snapshots, policies, st.data())
def test_retention_never_forgets_what_no_check_covered_nor_the_newest_good_verified(snaps, policy, data):
    verified = data.draw(st.sets(st.sampled_from([s.id for s in snaps])) if snaps else st.just(set()))
    plan = plan_retention(snaps, policy, NOW, verified=verified)
    forgotten = set(plan.forget)
    assert forgotten <= verified  # only what a passing check covered can go
    assert not forgotten & set(plan.keep) and forgotten | set(plan.keep) == {s.id for s in snaps}
    good = [s for s in snaps if s.id in verified and s.good and s.time <= NOW]
    if good:
        assert plan.newest_good == max(good, key=lambda s: s.time).id and plan.newest_good not in forgotten
    else:
        assert plan.newest_good is None


# -- real restic ---------------------------------------------------------------------------------
def local_repo(tmp_path: Path) -> Restic:
    repo = Restic(env={"RESTIC_REPOSITORY": str(tmp_path / "repo"), "RESTIC_PASSWORD": "test-only",
                       "RESTIC_CACHE_DIR": str(tmp_path / "cache"), "TZ": "UTC"})
    repo.run(["init"])
    (tmp_path / "src").mkdir()
    return repo


def backup(repo: Restic, tmp_path: Path, when: datetime, content: str, run: str = "") -> None:
    (tmp_path / "src" / "notes.md").write_text(content)
    tags = ["--tag", "nightly", *(["--tag", run_tag(run)] if run else [])]
    repo.run(["backup", ".", "--host", "alice", *tags, "--time", when.strftime("%Y-%m-%d %H:%M:%S")],
             cwd=tmp_path / "src")


def test_the_plan_over_verified_snapshots_is_what_restic_forget_decides_over_them(tmp_path, monkeypatch):
    """Cross-check against restic itself: our plan with ``verified`` = restic's own keep rules
    run over only the snapshots tagged verified, plus every unverified one kept."""
    monkeypatch.setenv("TZ", "UTC")
    repo = local_repo(tmp_path)
    start = datetime(2026, 9, 25, 2, 0, tzinfo=timezone.utc)
    offsets = [0, 1, 2, 6, 9, 13, 20, 21, 30, 37, 38, 45, 52, 60, 61]  # irregular nights
    for i, off in enumerate(offsets):
        backup(repo, tmp_path, start + timedelta(days=off), f"night {i}\n")
    first = repo.snapshots()
    repo.add_tag([s.id for i, s in enumerate(first) if i % 3 != 2 and i != len(first) - 1], "verified")
    snaps = repo.snapshots()  # tagging rewrote those snapshots under new ids
    verified = {s.id for s in snaps if "verified" in s.tags}
    assert 0 < len(verified) < len(snaps)
    for last, daily, weekly, monthly in [(0, 3, 2, 2), (2, 1, 1, 3), (0, 1, 0, 0)]:
        out = repo.run(["forget", "--dry-run", "--json", "--tag", "verified", "--keep-last", str(last),
                        "--keep-daily", str(daily), "--keep-weekly", str(weekly),
                        "--keep-monthly", str(monthly)]).stdout
        restic_keep = {s["id"] for group in json.loads(out) for s in group["keep"]}
        ours = plan_retention(snaps, KeepPolicy(daily, weekly, monthly, last=last), NOW, verified=verified)
        assert set(ours.keep) == restic_keep | (set(s.id for s in snaps) - verified)
        assert set(ours.forget) == verified - restic_keep


def corrupt_new_packs(repo_dir: Path, before: set[Path]) -> list[Path]:
    """Flip bytes in every pack file written since ``before``: the new snapshot's data."""
    new = [p for p in (repo_dir / "data").rglob("*") if p.is_file() and p not in before]
    for p in new:
        data = bytearray(p.read_bytes())
        for i in range(len(data) // 3, len(data) // 3 + 32):
            data[i] ^= 0xFF
        p.write_bytes(bytes(data))
    return new


@pytest.fixture
def full_check(monkeypatch):
    """``restic check`` reads every pack, so a corrupt one is always found."""
    monkeypatch.setenv("VIBECODE_VERIFY_READ_DATA_PERCENT", "100")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_night_whose_check_fails_forgets_nothing_and_the_last_verified_snapshot_stays(tmp_path, full_check):
    repo = local_repo(tmp_path)
    policy = KeepPolicy(daily=1, weekly=0, monthly=0)
    backup(repo, tmp_path, NOW - DAY, "yesterday's work\n", run="night-1")
    first = record_and_expire(repo, "night-1", False, policy, NOW)
    (good,) = [s.id for s in repo.snapshots()]
    assert first.snapshot_id == good  # what the volume's annotation then names

    before = {p for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file()}
    backup(repo, tmp_path, NOW - timedelta(hours=6), "today's work, on a disk that lies\n", run="night-2")
    assert corrupt_new_packs(tmp_path / "repo", before)
    after = record_and_expire(repo, "night-2", False, policy, NOW)

    assert good in {s.id for s in repo.snapshots()}, "the last verified snapshot was pruned before the check"
    assert after.forgotten == [] and after.verified is False and after.check_detail
    assert after.snapshot_id != good  # the night's (bad) snapshot is reported, never annotated as good


def test_a_night_whose_check_passes_expires_as_usual_and_keeps_the_new_verified_snapshot(tmp_path, full_check):
    repo = local_repo(tmp_path)
    policy = KeepPolicy(daily=1, weekly=0, monthly=0)
    backup(repo, tmp_path, NOW - DAY, "yesterday\n", run="night-1")
    record_and_expire(repo, "night-1", False, policy, NOW)
    (old,) = [s.id for s in repo.snapshots()]
    backup(repo, tmp_path, NOW - timedelta(hours=6), "today\n", run="night-2")
    after = record_and_expire(repo, "night-2", False, policy, NOW + timedelta(days=1, hours=1))
    assert after.verified is True and after.forgotten == [old]
    assert [s.id for s in repo.snapshots()] == [after.snapshot_id]


def test_a_partial_night_is_tagged_under_its_new_id_and_never_becomes_the_newest_good(tmp_path, full_check):
    """``restic tag`` rewrites a snapshot under a new id: the step reports the id that exists."""
    repo = local_repo(tmp_path)
    policy = KeepPolicy(daily=1, weekly=0, monthly=0)
    backup(repo, tmp_path, NOW - DAY, "complete\n", run="night-1")
    record_and_expire(repo, "night-1", False, policy, NOW)
    (complete,) = [s.id for s in repo.snapshots()]
    backup(repo, tmp_path, NOW - timedelta(hours=6), "some files unreadable\n", run="night-2")
    after = record_and_expire(repo, "night-2", True, policy, NOW)
    held = {s.id: s for s in repo.snapshots()}
    assert after.snapshot_id in held and PARTIAL_TAG in held[after.snapshot_id].tags
    assert complete in held  # the newest good snapshot survives a partial night's daily slot
