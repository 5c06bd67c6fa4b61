"""Pure parts of backups: Job manifests, outcomes, annotations; manifests accepted by a real API server."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from tasks.backup.jobs import backup_job, backup_secret, restore_job, restore_pvc, workspace_nodes
from tasks.backup.restic import Snapshot, backup_args, backup_script, classify_failure, restore_script
from tasks.backup.status import (
    LAST_BACKUP_OUTCOME,
    LAST_BACKUP_REASON,
    LAST_BACKUP_SNAPSHOT,
    LAST_BACKUP_TIME,
    LAST_BACKUP_VERIFIED,
    Outcome,
    WorkspaceResult,
    classify,
    has_verified_backup,
    run_outcome,
    volume_annotations,
)
from tasks.cluster.jobs import job_state
from tasks.core.errors import NotFound, PermanentError, ServerError, TransientError
from tasks.core.names import workspace_names
from tasks.core.settings import Settings

NOW = datetime(2026, 11, 28, 2, 30, tzinfo=timezone.utc)
SECRETS = dict(restic_password="pw-for-tests-only", s3_access_key_id="id-for-tests-only",
               s3_secret_access_key="key-for-tests-only")


def test_backup_job_mounts_read_only_pins_the_node_and_holds_no_secret():
    s = Settings(**SECRETS)
    job = backup_job(workspace_names("alice"), s.backup, s.namespace, "abcd1234", node="node-7")
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == s.backup.restic_image and ":" in c["image"]
    assert c["command"] + c["args"] == ["/bin/sh", "-c", backup_script("alice", "abcd1234")]
    assert "set -- restic " + " ".join(backup_args("alice", "abcd1234")) in c["args"][0]
    assert "--tag nightly --tag alice" in c["args"][0]
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"] == {"claimName": "ws-alice-workspace", "readOnly": True}
    assert next(m for m in c["volumeMounts"] if m["name"] == "data")["readOnly"] is True
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-7"]}]}]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert set(refs) == {"RESTIC_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all(r["name"] == s.backup.secret for r in refs.values())
    text = json.dumps(job)
    assert not any(v in text for v in SECRETS.values())
    # Pod Security "restricted"
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == int(s.backup.timeout_seconds)


def test_stopped_workspace_is_not_pinned_and_restore_mounts_read_write():
    s = Settings(**SECRETS)
    assert "affinity" not in backup_job(workspace_names("bob"), s.backup, s.namespace, "r1")["spec"]["template"]["spec"]
    job = restore_job(workspace_names("bob"), s.backup, s.namespace, "r1", "ws-bob-restore-r1", "latest")
    pod = job["spec"]["template"]["spec"]
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"] == {"claimName": "ws-bob-restore-r1", "readOnly": False}
    assert pod["containers"][0]["args"] == [restore_script("bob", "latest", "r1")]
    assert "restic restore latest --host bob" in pod["containers"][0]["args"][0]


def test_workspace_nodes_only_for_pods_that_hold_the_volume():
    pods = [
        {"metadata": {"labels": {"vibecode.dev/user": "alice"}}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}},
        {"metadata": {"labels": {"vibecode.dev/user": "bob"}}, "spec": {"nodeName": "n2"}, "status": {"phase": "Succeeded"}},
        {"metadata": {"labels": {"vibecode.dev/user": "carol"}}, "spec": {}, "status": {"phase": "Pending"}},
    ]
    assert workspace_nodes(pods) == {"alice": "n1"}


def test_backup_secret_only_from_complete_settings():
    assert backup_secret(Settings(restic_password="x").backup, "ns") is None
    secret = backup_secret(Settings(**SECRETS).backup, "ns")
    assert secret["stringData"]["RESTIC_PASSWORD"] == SECRETS["restic_password"]


@pytest.mark.parametrize("job,expected", [
    (None, "failed"),
    ({"status": {"active": 1}}, "running"),
    ({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}, "succeeded"),
    ({"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}, "failed"),
])
def test_job_state(job, expected):
    assert job_state(job)[0] == expected


def test_outcomes_follow_velero():
    assert classify("succeeded", "", "s1", None, True)[0] is Outcome.COMPLETED
    out, why = classify("failed", "exit 3", "s1", None, True)
    assert out is Outcome.PARTIALLY_FAILED and "some files" in why
    assert classify("failed", "volume did not attach", None, None, None) == (
        Outcome.FAILED, "backup failed: volume did not attach")
    out, why = classify("succeeded", "", "s1", None, False, "pack abc: hash mismatch")
    assert out is Outcome.FAILED and "verification failed" in why
    assert classify("succeeded", "", "s1", "lock held", True)[0] is Outcome.PARTIALLY_FAILED
    C, P, F = Outcome.COMPLETED, Outcome.PARTIALLY_FAILED, Outcome.FAILED
    assert run_outcome([C, C]) is C and run_outcome([F, F]) is F
    assert run_outcome([C, F]) is P and run_outcome([C, P]) is P and run_outcome([]) is C


def _pvc(ann):
    return {"metadata": {"name": "ws-alice-workspace", "annotations": ann}}


def test_annotations_round_trip_into_has_verified_backup():
    good = WorkspaceResult(username="alice", pvc="p", outcome=Outcome.COMPLETED, snapshot_id="a" * 64, verified=True)
    ann = volume_annotations(good, NOW)
    assert ann[LAST_BACKUP_TIME] == "2026-11-28T02:30:00Z" and ann[LAST_BACKUP_REASON] == ""
    assert ann[LAST_BACKUP_SNAPSHOT] == "a" * 64
    assert has_verified_backup(_pvc(ann), NOW + timedelta(hours=1))
    assert has_verified_backup(_pvc(ann), NOW + timedelta(days=2), max_age=timedelta(days=1)) is False

    bad = WorkspaceResult(username="alice", pvc="p", outcome=Outcome.FAILED, reason="verification failed")
    after = {**ann, **{k: v for k, v in volume_annotations(bad, NOW).items() if v is not None}}
    assert LAST_BACKUP_SNAPSHOT not in volume_annotations(bad, NOW)  # the last good id stays
    assert after[LAST_BACKUP_OUTCOME] == "Failed" and after[LAST_BACKUP_VERIFIED] == "false"
    assert has_verified_backup(_pvc(after), NOW) is False


@pytest.mark.parametrize("ann", [
    {},
    {LAST_BACKUP_OUTCOME: "Completed", LAST_BACKUP_VERIFIED: "true", LAST_BACKUP_SNAPSHOT: "x"},  # no time
    {LAST_BACKUP_OUTCOME: "Completed", LAST_BACKUP_VERIFIED: "false", LAST_BACKUP_SNAPSHOT: "x",
     LAST_BACKUP_TIME: "2026-11-28T00:00:00Z"},
    {LAST_BACKUP_OUTCOME: "PartiallyFailed", LAST_BACKUP_VERIFIED: "true", LAST_BACKUP_SNAPSHOT: "x",
     LAST_BACKUP_TIME: "2026-11-28T00:00:00Z"},
    {LAST_BACKUP_OUTCOME: "Completed", LAST_BACKUP_VERIFIED: "true", LAST_BACKUP_SNAPSHOT: "x",
     LAST_BACKUP_TIME: "yesterday"},
])
def test_has_verified_backup_refuses_anything_incomplete(ann):
    assert has_verified_backup(_pvc(ann), NOW) is False


def test_restic_errors_map_to_the_taxonomy():
    assert isinstance(classify_failure("Fatal: unable to open config file\nIs there a repository at the following location?", "x"), NotFound)
    assert isinstance(classify_failure("Fatal: wrong password or no key found", "x"), PermanentError)
    # Seen on the node (tests/node/test_platform_day.py): 4 first backups at once into a new bucket.
    raced = ("Fatal: create repository at s3:http://10.254.254.1:8333/b/devc failed: client.MakeBucket: "
             "Your previous request to create the named bucket succeeded and you already own it.")
    assert type(classify_failure(raced, "restic init")) is TransientError
    assert isinstance(classify_failure("repository is already locked by PID 1", "x"), TransientError)
    # two first-time inits racing to create the shared bucket (SeaweedFS's words): retried
    assert isinstance(classify_failure(
        "Fatal: create repository at s3:http://127.0.0.1:9/b/bob failed: client.MakeBucket: Your previous request "
        "to create the named bucket succeeded and you already own it.", "restic init"), TransientError)
    assert isinstance(classify_failure("dial tcp 127.0.0.1:9: connect: connection refused", "x"), ServerError)
    # restic 0.14's own words for unreachable S3 end with the "no repository" hint: an outage, never "absent"
    unreachable = ('Fatal: unable to open config file: Stat: Get "http://127.0.0.1:1/bucket/?location=": '
                   "dial tcp 127.0.0.1:1: connect: connection refused\nIs there a repository at the following location?")
    assert isinstance(classify_failure(unreachable, "x"), ServerError)
    assert isinstance(classify_failure("Save(<data/1c2d>) returned error: 503 Service Unavailable", "x"), ServerError)
    # a corrupted pack whose id happens to contain "503" is a finding, not an outage
    assert not isinstance(classify_failure("pack 9f503ab1: ciphertext verification failed", "x"), TransientError)


def test_snapshot_times_keep_their_instant():
    snap = Snapshot.from_json({"id": "f" * 64, "time": "2026-11-28T01:39:01.113340417+01:00", "tags": ["nightly"]})
    assert snap.time == datetime(2026, 11, 28, 0, 39, 1, 113340, tzinfo=timezone.utc)
    assert snap.good and snap.short_id == "ffffffff"


def test_manifests_are_valid_in_a_real_api_server(kube, namespace, monkeypatch):
    s = Settings(namespace=namespace, **SECRETS)
    names = workspace_names("alice")
    kube.create(backup_secret(s.backup, namespace))
    created = kube.create(backup_job(names, s.backup, s.namespace, "abcd1234", node="node-1"), exist_ok=False)
    # defaulting happened, our read-only mount and secret references survived validation
    pod = created["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["readOnly"] is True
    assert created["spec"]["template"]["metadata"]["labels"]["job-name"] == "ws-alice-backup-abcd1234"
    source = {"metadata": {"namespace": namespace}, "spec": {"resources": {"requests": {"storage": "10Gi"}}}}
    pvc = kube.create(restore_pvc(names, source, "abcd1234"), exist_ok=False)
    assert pvc["metadata"]["labels"]["vibecode.dev/volume"] == "restore"
    kube.create(restore_job(names, s.backup, s.namespace, "abcd1234", pvc["metadata"]["name"], "latest"), exist_ok=False)
    assert {j["metadata"]["name"] for j in kube.list("Job", namespace)} == {
        "ws-alice-backup-abcd1234", "ws-alice-restore-abcd1234"}


def test_one_watch_serves_every_waiter_and_timeouts_stay_running():
    import threading
    import time

    from tasks.cluster.jobs import JobWaiter

    streams = []
    stuck = {"metadata": {"name": "stuck"}, "status": {"active": 1}}

    def list_watch():
        streams.append(1)
        yield "SYNC", [{"metadata": {"name": f"j{i}"}, "status": {"active": 1}} for i in range(8)] + [stuck]
        time.sleep(0.2)
        for i in range(8):
            yield "MODIFIED", {"metadata": {"name": f"j{i}"},
                               "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
        time.sleep(0.5)  # the server ends the watch; the waiter re-lists

    waiter = JobWaiter(list_watch, retry_interval=0.05)
    results = {}
    threads = [threading.Thread(target=lambda n=f"j{i}": results.__setitem__(n, waiter.wait(n, 5))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results.values()) == {("succeeded", "Complete")}
    assert len(streams) == 1  # one LIST+WATCH for all eight waiters, not one per waiter
    assert waiter.wait("stuck", 0.2)[0] == "running"
    assert waiter.wait("never-created", 0.5)[0] == "failed"
    waiter.close()


def test_a_job_the_lagging_watch_has_not_seen_yet_is_asked_for_before_it_is_called_gone(monkeypatch):
    """CI of stop 26 (test_backup_waves): a watcher busy re-listing 500 Jobs saw the last batch's
    new Jobs only after the 10 s grace, and ten backups were failed as "the Job disappeared".
    The watched set is a cache: a Job missing from it is called gone only when a GET says so."""
    import time

    from tasks.cluster import jobs
    from tasks.cluster.jobs import JobWaiter

    monkeypatch.setattr(jobs, "MISSING_GRACE_SECONDS", 0.2)
    running = {"metadata": {"name": "late"}, "status": {"active": 1}}
    done = {"metadata": {"name": "late"}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}

    def lagging():  # the LIST took longer than the grace: the Job shows up a second later
        yield "SYNC", []
        time.sleep(1.0)
        yield "ADDED", running
        yield "MODIFIED", done
        time.sleep(0.5)

    reads = []

    def read(name):
        reads.append(name)
        return running if name == "late" else None

    waiter = JobWaiter(lagging, retry_interval=0.05, read=read)
    assert waiter.wait("late", 5) == ("succeeded", "Complete")
    assert reads == ["late"]  # asked once, then the watch caught up
    assert waiter.wait("gone", 5) == ("failed", "the Job disappeared")  # the API server has none either
    assert reads == ["late", "gone"]
    waiter.close()

    blind = JobWaiter(lagging, retry_interval=0.05)  # without the GET: what CI saw
    assert blind.wait("late", 5) == ("failed", "the Job disappeared")
    blind.close()

    def flaky(name):
        from tasks.core.errors import ServerError

        reads.append(name)
        if len(reads) == 3:
            raise ServerError("read Job: HTTP 503")
        return running

    unsure = JobWaiter(lagging, retry_interval=0.05, read=flaky)
    assert unsure.wait("late", 5) == ("succeeded", "Complete")  # a 503 on the GET is not "gone"
    unsure.close()


def test_failure_notice_only_for_runs_that_did_not_complete_and_only_with_an_address():
    from datetime import datetime, timezone

    from tasks.backup.notify import backup_failure_notice
    from tasks.backup.status import BackupReport, Outcome, WorkspaceResult
    from tasks.core.settings import Settings

    now = datetime(2026, 11, 28, 2, 0, tzinfo=timezone.utc)
    ok = WorkspaceResult(username="alice", pvc="ws-alice-workspace", outcome=Outcome.COMPLETED)
    bad = WorkspaceResult(username="bob", pvc="ws-bob-workspace", outcome=Outcome.FAILED, reason="check failed")
    completed = BackupReport(outcome=Outcome.COMPLETED, started=now, finished=now, workspaces=[ok])
    partial = BackupReport(outcome=Outcome.PARTIALLY_FAILED, started=now, finished=now, workspaces=[ok, bad])
    assert backup_failure_notice(completed, Settings(ops_email="ops@example.com").mail) is None
    assert backup_failure_notice(partial, Settings(ops_email=None).mail) is None
    msg = backup_failure_notice(partial, Settings(ops_email="ops@example.com").mail)
    assert "- bob: Failed: check failed" in msg.get_content() and "alice" not in msg.get_content()


@pytest.mark.parametrize("stderr,race", [
    ("Fatal: create repository at s3:http://127.0.0.1:1/b/mike failed: client.MakeBucket: Your previous request "
     "to create the named bucket succeeded and you already own it.", True),          # SeaweedFS's words
    ("Fatal: create repository ... failed: client.MakeBucket: BucketAlreadyOwnedByYou", True),
    ("Fatal: create repository ... failed: client.MakeBucket: BucketAlreadyExists", False),  # someone else's
    ("Fatal: create key in repository at s3:... failed: repository master key and config already initialized", False),
    ("Fatal: unable to open config file: Stat: The access key ID you provided does not exist", False),
])
def test_an_init_that_lost_the_race_for_the_bucket_is_told_apart(stderr, race):
    from tasks.backup.restic import bucket_made_meanwhile

    assert bucket_made_meanwhile(stderr) is race
