"""The deletion rule, pure: verified backup after termination AND retention passed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tasks.backup.status import RepositoryWord
from tasks.people.deletion import deletion_decision

T = datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)
IN_REPO = RepositoryWord(frozenset({"abc123"}))  # the repository holds the annotated snapshot


def pvc(name="ws-alice-workspace", volume="workspace", **ann):
    return {"metadata": {"name": name, "labels": {"vibecode.dev/volume": volume}, "annotations": ann}}


def verified(at: datetime, **over):
    ann = {"vibecode.dev/last-backup-time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
           "vibecode.dev/last-backup-outcome": "Completed", "vibecode.dev/last-backup-verified": "true",
           "vibecode.dev/last-backup-snapshot": "abc123"}
    return pvc(**{**ann, **over})


def test_no_backup_refuses_even_after_retention():
    d = deletion_decision(T, [pvc(), pvc("ws-alice-extensions", "extensions")], T + timedelta(days=90), 30)
    assert d.action == "refuse" and "ws-alice-workspace" in d.reason


def test_a_backup_from_before_termination_does_not_count():
    d = deletion_decision(T, [verified(T - timedelta(hours=1))], T + timedelta(days=31), 30)
    assert d.action == "refuse"


def test_unverified_or_partial_backups_do_not_count():
    for over in ({"vibecode.dev/last-backup-verified": "false"},
                 {"vibecode.dev/last-backup-outcome": "PartiallyFailed"}):
        assert deletion_decision(T, [verified(T + timedelta(minutes=5), **over)],
                                 T + timedelta(days=31), 30).action == "refuse"


def test_verified_backup_waits_for_retention_then_deletes():
    pvcs = [verified(T + timedelta(minutes=5)), pvc("ws-alice-extensions", "extensions")]
    assert deletion_decision(T, pvcs, T + timedelta(days=29), 30).action == "defer"
    assert deletion_decision(T, pvcs, T + timedelta(days=30), 30).action == "confirm"  # ask the repository
    assert deletion_decision(T, pvcs, T + timedelta(days=30), 30, repository=IN_REPO).action == "delete"


def test_not_terminated_means_nothing():
    assert deletion_decision(None, [verified(T)], T, 0).action == "nothing"


def test_a_final_backup_in_the_same_second_as_the_termination_counts():
    # Annotations keep whole seconds; the termination time has microseconds. Seen in CI as a
    # flaky refusal when the final backup finished within the second of the termination.
    left = T + timedelta(microseconds=772_000)
    d = deletion_decision(left, [verified(T)], T + timedelta(days=31), 30, repository=IN_REPO)
    assert d.action == "delete"
    assert deletion_decision(left, [verified(T - timedelta(seconds=1))], T + timedelta(days=31), 30).action == "refuse"
