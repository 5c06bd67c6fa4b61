"""The backup and restore flows' decisions, as tables (tasks.backup.plan, .rotation, .guard)."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.backup.guard import guard_holds, guard_step, guard_value, setup_seconds
from tasks.backup.plan import Target, backup_targets, in_place_refusal, pick_snapshot, pre_restore_refusal
from tasks.backup.restic import PARTIAL_TAG, PRE_RESTORE_TAG, Snapshot
from tasks.backup.rotation import add_key_step, check_rotation, remove_key_step, secret_data_patch
from tasks.backup.status import Outcome, Recorded
from tasks.core.errors import InvalidInput, PermanentError

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)
MINE, OTHER = "ws-alice-restore-r1", "ws-alice-restore-r2"


# -- the restore guard -------------------------------------------------------------------------
@pytest.mark.parametrize("current, clear, other_holds, step", [
    (None, False, True, "set"),
    ("", False, True, "set"),
    (guard_value(MINE, NOW), False, True, "set"),  # a retry re-stamps its own guard
    (guard_value(OTHER, NOW), False, True, "refuse"),  # another restore is writing
    (guard_value(OTHER, NOW), False, False, "set"),  # a killed restore's guard that lapsed is taken over
    ("garbage", False, True, "refuse"),  # an unreadable guard is not ours (and holds: guard_holds)
    (guard_value(MINE, NOW), True, True, "clear"),
    (guard_value(OTHER, NOW), True, True, "leave"),  # never clear the next restore's guard
    (guard_value(OTHER, NOW), True, False, "leave"),  # ... nor a lapsed one: provisioning clears those
    (None, True, True, "leave"),
])
def test_guard_step(current, clear, other_holds, step):
    assert guard_step(current, MINE, clear, other_holds) == step


def test_an_unreadable_guard_always_holds_so_it_is_never_taken_over():
    holds, why = guard_holds("garbage", None, None, NOW + timedelta(days=30), setup_seconds(3600))
    assert holds and "unreadable" in why


def test_a_guard_without_its_job_holds_through_the_pre_restore_window_then_lapses():
    value = guard_value(OTHER, NOW)
    window = setup_seconds(3600)
    assert guard_holds(value, None, None, NOW + timedelta(seconds=window - 1), window)[0]
    assert not guard_holds(value, None, None, NOW + timedelta(seconds=window), window)[0]
    assert guard_holds(value, {"metadata": {}}, "running", NOW + timedelta(days=1), window)[0]
    assert not guard_holds(value, {"metadata": {}}, "failed", NOW, window)[0]


# -- in place: only into a stopped workspace -------------------------------------------------
PVC = {"metadata": {"name": "ws-alice-workspace"}}


def dep(replicas):
    return {"spec": {"replicas": replicas}}


def pod(phase, node="node-a"):
    return {"metadata": {"labels": {"vibecode.dev/user": "alice"}}, "spec": {"nodeName": node},
            "status": {"phase": phase}}


@pytest.mark.parametrize("pvc, deployment, pods, refused", [
    (PVC, dep(0), [], None),
    (PVC, None, [], None),  # the release is gone, the volume kept: restorable in place
    (PVC, dep(0), [pod("Succeeded")], None),  # a finished pod holds no volume
    (None, dep(0), [], "does not exist; restore into a new volume"),
    (PVC, dep(1), [], "running workspace alice: scale it to zero first"),
    (PVC, {"spec": {}}, [], "running workspace"),  # replicas default to 1
    (PVC, dep(0), [pod("Running")], "a pod still uses its volume"),
    (PVC, dep(0), [pod("Pending")], "a pod still uses its volume"),
    (PVC, dep(0), [pod("Unknown")], "a pod still uses its volume"),  # a lost node may still write
])
def test_in_place_refusal(pvc, deployment, pods, refused):
    why = in_place_refusal("alice", pvc, deployment, pods)
    assert (why is None) if refused is None else (why is not None and refused in why)


# -- which snapshot ----------------------------------------------------------------------------
def snap(id_, hours, tags=(), host="alice"):
    return Snapshot(id=id_, time=NOW - timedelta(hours=hours), tags=tags, hostname=host)


SNAPS = [snap("aaaa1111", 30), snap("bbbb2222", 20), snap("cccc3333", 10, (PARTIAL_TAG,)),
         snap("dddd4444", 5, (PRE_RESTORE_TAG,)), snap("eeee5555", 1, host="bob")]


@pytest.mark.parametrize("wanted, found", [
    ("latest", "bbbb2222"),  # not the partial, not the pre-restore copy, not bob's
    ("aaaa1111", "aaaa1111"),
    ("aaaa", "aaaa1111"),  # a prefix, as restic prints short ids
    ("dddd4444", "dddd4444"),  # a pre-restore copy is restorable by id
    ("cccc3333", "cccc3333"),
    ("eeee5555", None),  # bob's snapshot is not alice's
    ("ffff6666", None),
])
def test_pick_snapshot(wanted, found):
    got = pick_snapshot(SNAPS, "alice", wanted)
    assert (got.id if got else None) == found


def test_latest_of_nothing_good_is_none():
    assert pick_snapshot([snap("cccc3333", 1, (PARTIAL_TAG,))], "alice", "latest") is None


# -- the pre-restore copy must be verified before anything is replaced ----------------------------
@pytest.mark.parametrize("ok, reason, recorded, refused", [
    (True, "", Recorded("abcd1234", None, True, "no errors"), None),
    (False, "the Job failed: volume not attached", Recorded(), "volume not attached"),
    (True, "", Recorded(), "no snapshot was saved"),
    (True, "", Recorded("abcd1234", None, False, "pack 1 damaged"), "pack 1 damaged"),
    (True, "", Recorded("abcd1234", None, None, ""), "no snapshot was saved"),  # check could not run
])
def test_pre_restore_refusal(ok, reason, recorded, refused):
    why = pre_restore_refusal("alice", ok, reason, recorded)
    if refused is None:
        assert why is None
    else:
        assert refused in why and "nothing was changed" in why


# -- choosing the workspaces of a backup run ---------------------------------------------------
@pytest.mark.parametrize("wanted, volumes, nodes, targets, failed", [
    ([], {"bob": "ws-bob-workspace", "alice": "ws-alice-workspace"}, {"alice": "n1"},
     [Target("alice", "ws-alice-workspace", "n1"), Target("bob", "ws-bob-workspace", None)], []),
    (["bob"], {"bob": "ws-bob-workspace", "alice": "ws-alice-workspace"}, {},
     [Target("bob", "ws-bob-workspace", None)], []),
    (["carol"], {"bob": "ws-bob-workspace"}, {}, [], [("carol", "no workspace volume found")]),
    ([], {"": "stray", "Bad_Name": "ws-x"}, {}, [],
     [("?", "no valid vibecode.dev/user label"), ("Bad_Name", "no valid vibecode.dev/user label")]),
    ([], {}, {}, [], []),
])
def test_backup_targets(wanted, volumes, nodes, targets, failed):
    got, failures = backup_targets(wanted, volumes, nodes)
    assert got == targets
    assert [(f.username, f.outcome) for f in failures] == [(u, Outcome.FAILED) for u, _ in failed]
    assert all(why in f.reason for f, (_, why) in zip(failures, failed, strict=True))


# -- restic password rotation --------------------------------------------------------------------
@pytest.mark.parametrize("old, new, field", [
    ("old", "new", None),
    ("old", None, "restic_new_password"),
    ("old", "", "restic_new_password"),
    (None, "new", "restic_password"),
    ("same", "same", "restic_new_password"),
])
def test_check_rotation(old, new, field):
    if field is None:
        check_rotation(old, new)
    else:
        with pytest.raises(InvalidInput) as caught:
            check_rotation(old, new)
        assert caught.value.field == field


@pytest.mark.parametrize("new_opens, old_opens, step", [
    (True, True, "present"), (True, False, "present"), (False, True, "add"), (False, False, PermanentError),
])
def test_add_key_step(new_opens, old_opens, step):
    if step is PermanentError:
        with pytest.raises(PermanentError, match="neither the old nor the new password"):
            add_key_step("alice", new_opens, old_opens)
    else:
        assert add_key_step("alice", new_opens, old_opens) == step


@pytest.mark.parametrize("old_key, new_key, step", [
    ("k1", "k2", "remove"),
    (None, "k2", "gone"),  # a rerun after the removal
    (None, None, "gone"),
    ("k1", None, PermanentError),  # the new password opens nothing: removing k1 would lock it out
    ("k1", "k1", PermanentError),  # both passwords open the same key: it is the only one
])
def test_remove_key_step(old_key, new_key, step):
    if step is PermanentError:
        with pytest.raises(PermanentError, match="does not open it"):
            remove_key_step("alice", old_key, new_key)
    else:
        assert remove_key_step("alice", old_key, new_key) == step


def b64(v: str) -> str:
    return base64.b64encode(v.encode()).decode()


WANT = {"RESTIC_PASSWORD": "old", "AWS_ACCESS_KEY_ID": "ak", "AWS_SECRET_ACCESS_KEY": "sk"}


@pytest.mark.parametrize("have, new_password, patch", [
    ({k: b64(v) for k, v in WANT.items()}, None, None),  # already right
    ({}, None, {k: b64(v) for k, v in WANT.items()}),  # a fresh Secret
    ({**{k: b64(v) for k, v in WANT.items()}, "AWS_ACCESS_KEY_ID": b64("stale")}, None,
     {k: b64(v) for k, v in WANT.items()}),
    ({**{k: b64(v) for k, v in WANT.items()}, "RESTIC_PASSWORD": b64("new")}, "new", None),  # rotated: kept
    ({**{k: b64(v) for k, v in WANT.items()}, "RESTIC_PASSWORD": b64("new")}, None,  # no rotation: settings win
     {k: b64(v) for k, v in WANT.items()}),
    ({k: b64(v) for k, v in WANT.items()}, "new", None),  # rotation started, Secret not switched yet
])
def test_secret_data_patch(have, new_password, patch):
    assert secret_data_patch(WANT, have, new_password) == patch


passwords = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)


@given(old=passwords, new=passwords, current=st.sampled_from(["old", "new", "other", None]))
def test_during_a_rotation_the_secret_never_switches_back_from_the_new_password(old, new, current):
    want = {**WANT, "RESTIC_PASSWORD": old}
    have = {k: b64(v) for k, v in WANT.items() if k != "RESTIC_PASSWORD"}
    if current is not None:
        have["RESTIC_PASSWORD"] = b64({"old": old, "new": new, "other": old + new}[current])
    patch = secret_data_patch(want, have, new)
    after = have if patch is None else patch
    if current == "new":
        assert after["RESTIC_PASSWORD"] == b64(new)
    else:
        assert after["RESTIC_PASSWORD"] in (b64(old), b64(new))
    assert secret_data_patch(want, after, new) is None  # converged: a rerun writes nothing
