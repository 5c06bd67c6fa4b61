"""The platform overview builder (tasks.workspace.status): listed objects and ``now`` in,
one row per person out. Table tests: each case is what the flows would have written."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.core.names import (
    DORMANT_DELETED_AT,
    IDLE_WARNED_AT,
    LAST_ACTIVITY,
    LAST_BACKUP_OUTCOME,
    LAST_BACKUP_REASON,
    LAST_BACKUP_SNAPSHOT,
    LAST_BACKUP_TIME,
    LAST_BACKUP_VERIFIED,
    LAST_VERIFIED_TIME,
    RESTORING,
    STOP_REASON,
    STOPPED_AT,
)
from tasks.core.timefmt import rfc3339
from tasks.workspace.status import State, ago, build_overview, when

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
H, D = timedelta(hours=1), timedelta(days=1)
NS, DOMAIN = "vibecode", "vibecode.dev"


def t(delta: timedelta) -> str:
    return rfc3339(NOW - delta)


def dep(user, replicas=1, ready=None, annotations=None, available_for=2 * H, ns=NS, created=3 * D,
        requests=({"cpu": "500m", "memory": "1Gi"},)):
    ready = replicas if ready is None else ready
    cond = [{"type": "Available", "status": "True" if ready >= replicas else "False",
             "lastTransitionTime": t(available_for)}] if available_for is not None else []
    return {"metadata": {"name": f"ws-{user}", "namespace": ns, "creationTimestamp": t(created),
                         "annotations": annotations or {},
                         "labels": {"app.kubernetes.io/name": "code-server", "app.kubernetes.io/part-of": "vibecode",
                                    "vibecode.dev/user": user}},
            "spec": {"replicas": replicas,
                     "template": {"spec": {"containers": [{"name": f"c{i}", "resources": {"requests": r}}
                                                          for i, r in enumerate(requests)]}}},
            "status": {"readyReplicas": ready, "conditions": cond}}


def good_backup(age: timedelta) -> dict:
    return {LAST_BACKUP_TIME: t(age), LAST_BACKUP_OUTCOME: "Completed", LAST_BACKUP_VERIFIED: "true",
            LAST_BACKUP_SNAPSHOT: "0123abcd", LAST_VERIFIED_TIME: t(age)}


def vol(user, annotations=None, size="10Gi", phase="Bound", created=3 * D):
    return {"metadata": {"name": f"ws-{user}-workspace", "namespace": NS, "creationTimestamp": t(created),
                         "annotations": annotations if annotations is not None else good_backup(3 * H),
                         "labels": {"app.kubernetes.io/part-of": "vibecode", "vibecode.dev/volume": "workspace",
                                    "vibecode.dev/user": user}},
            "spec": {"resources": {"requests": {"storage": size}}}, "status": {"phase": phase}}


def person(user, state="active", last_error="", terminated=None):
    return {"metadata": {"name": f"vibecode-user-{user}"},
            "data": {"username": user, "employee_id": "E1", "state": state, "last_error": last_error,
                     "terminated_at": (NOW - terminated).isoformat() if terminated else ""}}


def one(deps=(), vols=(), people=()):
    (row,) = build_overview(list(deps), list(vols), list(people), NOW, NS, DOMAIN).rows
    return row


CASES = {
    "running, backed up, nothing to do": (
        [dep("alice")], [vol("alice")], [person("alice")],
        dict(state=State.RUNNING, cpu="500m", memory="1Gi", storage="10Gi", employment="active",
             last_active=NOW - 2 * H, last_backup=NOW - 3 * H, problems=[], note="")),
    "a resume's activity mark is newer than its start": (
        [dep("alice", annotations={LAST_ACTIVITY: t(H / 2)})], [vol("alice")], [],
        dict(state=State.RUNNING, last_active=NOW - H / 2, employment="")),
    "idle warning pending": (
        [dep("alice", annotations={IDLE_WARNED_AT: t(10 * timedelta(minutes=1))})], [vol("alice")], [],
        dict(state=State.RUNNING, note="idle warning sent 10m ago")),
    "starting for a minute is not a problem": (
        [dep("bob", ready=0, available_for=timedelta(minutes=1))], [vol("bob")], [],
        dict(state=State.STARTING, problems=[])),
    "not ready for 20 minutes is": (
        [dep("bob", ready=0, available_for=20 * timedelta(minutes=1))], [vol("bob")], [],
        dict(state=State.STARTING, problems=["not ready for 20m"])),
    "stopped by the reaper": (
        [dep("carol", replicas=0, annotations={STOPPED_AT: t(2 * D), STOP_REASON: "idle: idle 2h05m"})],
        [vol("carol")], [person("carol")],
        dict(state=State.STOPPED, note="stopped 2d ago: idle: idle 2h05m", problems=[])),
    "scaled to zero by someone else": (
        [dep("carol", replicas=0)], [vol("carol")], [],
        dict(state=State.STOPPED, note="scaled to zero by hand")),
    "dormant: release gone, volume kept": (
        [], [vol("dan", {**good_backup(5 * H), STOPPED_AT: t(40 * D), DORMANT_DELETED_AT: t(10 * D)})], [],
        dict(state=State.DORMANT, note="release uninstalled 10d ago; volumes kept", cpu="", storage="10Gi",
             last_backup=NOW - 5 * H)),
    "leaver still running is a problem": (
        [dep("erin")], [vol("erin")], [person("erin", "terminated", terminated=H)],
        dict(state=State.RUNNING, employment="terminated", left_at=NOW - H,
             problems=["has left, but the workspace still runs"])),
    "leaver stopped is not": (
        [dep("erin", replicas=0)], [vol("erin")], [person("erin", "terminated", terminated=H)],
        dict(state=State.STOPPED, employment="terminated", problems=[])),
    "purged leaver: a record, no workspace": (
        [], [], [person("fay", "purged", terminated=40 * D)],
        dict(state=State.ABSENT, employment="purged", note="workspace deleted", url="https://fay.vibecode.dev",
             last_backup=None, storage="")),
    "failed last night: the last good one still counts": (
        [dep("gus")], [vol("gus", {**good_backup(30 * H), LAST_BACKUP_TIME: t(6 * H), LAST_BACKUP_OUTCOME: "Failed",
                                  LAST_BACKUP_VERIFIED: "false", LAST_BACKUP_REASON: "backup failed: S3 down"})], [],
        dict(last_backup=NOW - 30 * H,
             problems=["last backup Failed: backup failed: S3 down", "no verified backup for 1d"])),
    "never backed up, volume old enough to have been": (
        [dep("hal")], [vol("hal", {}, created=3 * D)], [],
        dict(last_backup=None, problems=["never backed up (volume 3d old)"])),
    "never backed up, volume too new to matter": (
        [dep("hal")], [vol("hal", {}, created=2 * H)], [],
        dict(last_backup=None, problems=[])),
    "volume lost": (
        [dep("ivy")], [vol("ivy", phase="Lost")], [],
        dict(problems=["home volume Lost"])),
    "a workspace without its home volume": (
        [dep("jo")], [], [],
        dict(problems=["no home volume found"], storage="")),
    "failed hire left on the record": (
        [], [], [person("kim", "onboarding", last_error="PermanentError: helm failed")],
        dict(state=State.ABSENT, problems=["last HR run failed: PermanentError: helm failed"])),
    "restore in progress": (
        [dep("lee", replicas=0, annotations={RESTORING: "restore-lee-1"})], [vol("lee")], [],
        dict(state=State.STOPPED, note="restore running (restore-lee-1)")),
    "requests of several containers are added": (
        [dep("max", requests=({"cpu": "500m", "memory": "1Gi"}, {"cpu": "250m", "memory": "512Mi"}))],
        [vol("max")], [],
        dict(cpu="750m", memory="1.5Gi")),
}


@pytest.mark.parametrize("deps,vols,people,expected", CASES.values(), ids=CASES.keys())
def test_row(deps, vols, people, expected):
    row = one(deps, vols, people)
    for key, value in expected.items():
        assert getattr(row, key) == value, (key, getattr(row, key))


def test_only_workspaces_of_the_namespace_count_and_rows_are_sorted():
    other = dep("zed", ns="elsewhere")
    plain = dep("authelia")
    plain["metadata"]["labels"] = {"app": "authelia"}
    ov = build_overview([dep("bob"), other, plain, dep("alice")], [vol("alice"), vol("bob")], [], NOW, NS, DOMAIN)
    assert [r.person for r in ov.rows] == ["alice", "bob"]


def test_counts_leavers_problems_and_the_artifact_table():
    ov = build_overview([dep("alice"), dep("carol", replicas=0), dep("erin")],
                        [vol("alice"), vol("carol"), vol("erin"), vol("dan", {STOPPED_AT: t(40 * D)})],
                        [person("erin", "terminated", terminated=H), person("fay", "purged")], NOW, NS, DOMAIN)
    assert ov.counts == {"running": 2, "starting": 0, "stopped": 1, "dormant": 1, "absent": 1}
    assert [r.person for r in ov.leavers] == ["erin", "fay"]
    assert ("erin", "has left, but the workspace still runs") in ov.problems
    assert ov.summary() == "5 people: 2 running, 1 stopped, 1 dormant, 1 absent; 2 leavers; 2 open problems"
    table = {r["person"]: r for r in ov.table()}
    assert table["alice"] == {"person": "alice", "state": "running", "url": "https://alice.vibecode.dev",
                              "cpu": "500m", "memory": "1Gi", "storage": "10Gi",
                              "last_active": "2026-12-01 10:00 UTC (2h ago)",
                              "last_backup": "2026-12-01 09:00 UTC (3h ago)", "hr": "-", "note": "", "problems": ""}
    assert table["dan"]["problems"] == "never backed up (volume 3d old)"
    assert all(isinstance(v, str) for r in ov.table() for v in r.values())  # a Prefect table artifact


def test_time_words():
    assert when(None, NOW) == "-"
    assert [ago(x) for x in (timedelta(seconds=5), 90 * timedelta(seconds=1), 3 * H, 2 * D, -H)] == \
        ["just now", "1m ago", "3h ago", "2d ago", "in the future"]


objects = st.lists(st.sampled_from(["alice", "bob", "carol"]), max_size=3)


@settings(max_examples=200, deadline=None)
@given(objects, objects, objects, st.integers(0, 1))
def test_every_person_seen_anywhere_gets_exactly_one_row(with_dep, with_vol, on_record, replicas):
    ov = build_overview([dep(u, replicas=replicas) for u in set(with_dep)], [vol(u) for u in set(with_vol)],
                        [person(u) for u in set(on_record)], NOW, NS, DOMAIN)
    assert [r.person for r in ov.rows] == sorted(set(with_dep) | set(with_vol) | set(on_record))
    assert sum(ov.counts.values()) == len(ov.rows)
    for r in ov.rows:
        assert (r.state is State.ABSENT) == (r.person not in with_dep and r.person not in with_vol)
