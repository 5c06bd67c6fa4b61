"""backup_workspaces / restore_workspace end to end: real API server, Prefect, restic and S3.

The kubelet stand-in (tests.fixtures.storage.JobKubelet) runs each Job's own restic
command against a local directory in place of the PVC.
"""

from __future__ import annotations

import json

import boto3
import pytest

from flows.backup import backup_workspaces
from flows.restore import restore_workspace
from tasks.backup.status import (
    LAST_BACKUP_OUTCOME,
    LAST_BACKUP_REASON,
    LAST_BACKUP_SNAPSHOT,
    LAST_BACKUP_VERIFIED,
    Outcome,
    has_verified_backup,
)
from tasks.core.settings import get_settings
from tests.fixtures.backup import add_workspace
from tests.fixtures.storage import restic_for

pytestmark = pytest.mark.usefixtures("prefect_server")


def pvc_annotations(kube, ns, user):
    return kube.get("PersistentVolumeClaim", ns, f"ws-{user}-workspace")["metadata"].get("annotations") or {}


def test_one_failure_leaves_the_run_partially_failed_and_the_others_completed(
        kube, namespace, backup_settings, job_kubelet, tmp_path, monkeypatch, smtp_inbox):
    monkeypatch.setenv("VIBECODE_BACKUP_CONCURRENCY", "2")
    monkeypatch.setenv("VIBECODE_OPS_EMAIL", "platform-team@example.com")
    get_settings.cache_clear()
    add_workspace(kube, namespace, job_kubelet, "alice", tmp_path, node="node-a")
    add_workspace(kube, namespace, job_kubelet, "bob", tmp_path)
    add_workspace(kube, namespace, job_kubelet, "carol", tmp_path)
    job_kubelet.unmountable.add("ws-bob-workspace")

    report = backup_workspaces()

    assert report.outcome is Outcome.PARTIALLY_FAILED
    by_user = {w.username: w for w in report.workspaces}
    assert set(by_user) == {"alice", "bob", "carol"}
    for user in ("alice", "carol"):
        w = by_user[user]
        assert w.outcome is Outcome.COMPLETED and w.verified and w.snapshot_id, w
        ann = pvc_annotations(kube, namespace, user)
        assert ann[LAST_BACKUP_SNAPSHOT] == w.snapshot_id and ann[LAST_BACKUP_VERIFIED] == "true"
        assert ann.get(LAST_BACKUP_REASON, "") == ""
        assert has_verified_backup(kube.get("PersistentVolumeClaim", namespace, f"ws-{user}-workspace"),
                                   report.finished)
        (snap,) = restic_for(backup_settings, user).snapshots()
        assert {"nightly", user} <= set(snap.tags) and snap.id == w.snapshot_id and snap.hostname == user
    bob = by_user["bob"]
    assert bob.outcome is Outcome.FAILED and "did not attach" not in bob.reason  # the Job said Failed
    assert bob.snapshot_id is None and not bob.verified
    ann = pvc_annotations(kube, namespace, "bob")
    assert ann[LAST_BACKUP_OUTCOME] == "Failed" and ann[LAST_BACKUP_REASON].startswith("backup failed")
    assert LAST_BACKUP_SNAPSHOT not in ann
    assert not has_verified_backup(kube.get("PersistentVolumeClaim", namespace, "ws-bob-workspace"), report.finished)

    jobs = {j["metadata"]["labels"]["vibecode.dev/user"]: j for j in kube.list("Job", namespace)}
    assert set(jobs) == {"alice", "bob", "carol"}
    affinity = jobs["alice"]["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    assert affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchFields"][0][
        "values"] == ["node-a"]
    assert "affinity" not in jobs["carol"]["spec"]["template"]["spec"]
    stored = json.dumps(list(jobs.values()))
    assert backup_settings.backup.restic_password.get_secret_value() not in stored
    assert backup_settings.backup.s3_secret_access_key.get_secret_value() not in stored
    assert 1 <= job_kubelet.peak <= 2

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["workspace-backups"])))
    rows = artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data)
    assert {r["workspace"]: r["outcome"] for r in rows} == {"alice": "Completed", "bob": "Failed", "carol": "Completed"}

    # The platform team hears about it: one notice naming only the failed workspace, no secret.
    (notice,) = smtp_inbox.messages
    assert notice["To"] == "platform-team@example.com" and "PartiallyFailed: 1 of 3" in notice["Subject"]
    body = notice.get_content()
    assert "- bob: Failed: backup failed" in body and "alice" not in body and "carol" not in body
    assert backup_settings.backup.restic_password.get_secret_value() not in smtp_inbox.raw[0].decode()


def test_a_corrupted_pack_is_caught_by_verification_and_reported_failed(
        kube, namespace, backup_settings, job_kubelet, tmp_path, monkeypatch):
    monkeypatch.setenv("VIBECODE_VERIFY_READ_DATA_PERCENT", "100")
    get_settings.cache_clear()
    add_workspace(kube, namespace, job_kubelet, "alice", tmp_path)
    first = backup_workspaces(["alice"]).for_user("alice")
    assert first.outcome is Outcome.COMPLETED and first.verified

    s3 = boto3.client("s3", endpoint_url=backup_settings.backup.s3_endpoint, region_name="us-east-1",
                      aws_access_key_id=backup_settings.backup.s3_access_key_id.get_secret_value(),
                      aws_secret_access_key=backup_settings.backup.s3_secret_access_key.get_secret_value())
    packs = s3.list_objects_v2(Bucket=backup_settings.backup.s3_bucket, Prefix="alice/data/")["Contents"]
    pack = max(packs, key=lambda o: o["Size"])["Key"]
    body = bytearray(s3.get_object(Bucket=backup_settings.backup.s3_bucket, Key=pack)["Body"].read())
    body[len(body) // 2] ^= 0xFF  # one flipped bit-pattern in the middle of a blob
    s3.put_object(Bucket=backup_settings.backup.s3_bucket, Key=pack, Body=bytes(body))

    report = backup_workspaces(["alice"])

    second = report.for_user("alice")
    assert report.outcome is Outcome.FAILED
    assert second.outcome is Outcome.FAILED and second.verified is False
    assert "verification failed" in second.reason
    ann = pvc_annotations(kube, namespace, "alice")
    assert ann[LAST_BACKUP_OUTCOME] == "Failed" and ann[LAST_BACKUP_VERIFIED] == "false"
    assert ann[LAST_BACKUP_SNAPSHOT] == first.snapshot_id  # still names the last good one
    assert not has_verified_backup(kube.get("PersistentVolumeClaim", namespace, "ws-alice-workspace"), report.finished)


def test_a_requested_workspace_without_a_volume_fails_alone(kube, namespace, backup_settings, job_kubelet, tmp_path):
    add_workspace(kube, namespace, job_kubelet, "alice", tmp_path)
    report = backup_workspaces(["alice", "dave"])
    assert report.outcome is Outcome.PARTIALLY_FAILED
    assert report.for_user("dave").outcome is Outcome.FAILED and "no workspace volume" in report.for_user("dave").reason
    assert report.for_user("alice").outcome is Outcome.COMPLETED


def test_bad_usernames_are_refused_before_anything_is_created(kube, namespace, backup_settings, job_kubelet):
    with pytest.raises(Exception, match="usernames|pattern|match"):
        backup_workspaces(["alice", "Robert'); DROP"])
    assert kube.list("Job", namespace) == []
    assert kube.get("Secret", namespace, backup_settings.backup.secret) is None


def test_restore_in_place_refuses_a_running_workspace(kube, namespace, backup_settings, job_kubelet, tmp_path):
    add_workspace(kube, namespace, job_kubelet, "alice", tmp_path)
    kube.create({"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": "ws-alice", "namespace": namespace},
                 "spec": {"replicas": 1, "selector": {"matchLabels": {"vibecode.dev/user": "alice"}},
                          "template": {"metadata": {"labels": {"vibecode.dev/user": "alice"}},
                                       "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    with pytest.raises(Exception, match="refusing to overwrite running workspace"):
        restore_workspace("alice", target="in-place")
    assert kube.list("Job", namespace) == []
