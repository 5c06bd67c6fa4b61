"""Dormancy against the real API server, helm, restic and S3: a long-stopped workspace is
deleted only after a verified backup newer than its stop, never without one.

The workspace is the real chart installed by helm, scaled to zero. Its stop by an earlier
reaper run is played by writing the ``stopped-at`` annotation 31 days back. The backup the
reaper asks for is the real backup flow; its restic Jobs are run by the kubelet stand-in
(tests/fixtures/storage.py) against the S3 server.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

import tasks.backup.steps as backup_flow
from flows.reaper import reap_idle_workspaces
from tasks.cluster import helm
from tasks.cluster.localnode.envtest import free_port
from tasks.core.settings import get_settings
from tasks.reaper.decide import rfc3339
from tests.fixtures.reaper import install_stopped

pytestmark = pytest.mark.usefixtures("prefect_server", "helm_bin")
DAY = timedelta(days=1)


def volumes(kube, ns, user):
    return {p["metadata"]["name"]: p for p in kube.list("PersistentVolumeClaim", ns, f"vibecode.dev/user={user}")}


def row(report, user):
    return next(r for r in report.rows if r.username == user)


@pytest.mark.flows_identity  # runs as the flows' ServiceAccount (tests/fixtures/kube.py)
def test_dormant_workspace_deleted_only_after_a_verified_backup_newer_than_its_stop(
        kube, namespace, backup_settings, job_kubelet, monkeypatch):
    ns = namespace
    R = datetime.now(timezone.utc).replace(microsecond=0)
    stopped = R - 31 * DAY
    install_stopped(kube, ns, "dora", stopped)
    (job_kubelet.claim_dir("ws-dora-workspace") / "notes.md").write_text("work in progress\n")
    # A verified backup from before the stop does not count.
    kube.annotate("PersistentVolumeClaim", ns, "ws-dora-workspace", {
        "vibecode.dev/last-backup-time": rfc3339(stopped - DAY), "vibecode.dev/last-backup-outcome": "Completed",
        "vibecode.dev/last-backup-verified": "true", "vibecode.dev/last-backup-snapshot": "0123abcd"})
    uids = {n: p["metadata"]["uid"] for n, p in volumes(kube, ns, "dora").items()}
    assert len(uids) == 2

    # Dry run: the plan says "backup first", and nothing runs.
    assert row(reap_idle_workspaces(dry_run=True, now=R), "dora").action == "backup"
    assert job_kubelet.runs == []

    # S3 unreachable: the backup fails, nothing is deleted, however often the reaper runs.
    # One attempt per run: the backup's own retries are tested in test_backup_flow.py, and
    # restic alone spends ~13 s retrying a refused connection on every attempt.
    monkeypatch.setenv("VIBECODE_S3_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(backup_flow, "STEP_RETRIES", 0)
    get_settings.cache_clear()
    for _ in range(2):
        r = row(reap_idle_workspaces(now=R), "dora")
        assert r.action == "backup" and r.outcome.startswith("backup Failed"), r
        assert helm.status("ws-dora", ns) is not None
        assert {n: p["metadata"]["uid"] for n, p in volumes(kube, ns, "dora").items()} == uids
    ann = volumes(kube, ns, "dora")["ws-dora-workspace"]["metadata"]["annotations"]
    assert ann["vibecode.dev/last-backup-outcome"] == "Failed"

    # S3 back: this run takes the backup (real restic Job into S3, verified) but deletes nothing yet.
    monkeypatch.setenv("VIBECODE_S3_ENDPOINT", backup_settings.backup.s3_endpoint)
    monkeypatch.setattr(backup_flow, "STEP_RETRIES", 3)
    get_settings.cache_clear()
    r = row(reap_idle_workspaces(now=R), "dora")
    assert r.action == "backup" and r.outcome.startswith("backup Completed"), r
    assert [run.returncode for run in job_kubelet.runs if "-backup-" in run.job] == [0]
    assert helm.status("ws-dora", ns) is not None
    ann = volumes(kube, ns, "dora")["ws-dora-workspace"]["metadata"]["annotations"]
    assert ann["vibecode.dev/last-backup-verified"] == "true" and ann["vibecode.dev/last-backup-time"] > rfc3339(
        stopped)

    # The next run finds the verified backup newer than the stop: the release goes, the volumes stay.
    now = datetime.now(timezone.utc)
    r = row(reap_idle_workspaces(now=now), "dora")
    assert r.action == "delete" and "uninstalled" in r.outcome, r
    assert helm.status("ws-dora", ns) is None and kube.get("Deployment", ns, "ws-dora") is None
    vols = volumes(kube, ns, "dora")
    assert {n: p["metadata"]["uid"] for n, p in vols.items()} == uids
    assert all(p["metadata"]["annotations"]["vibecode.dev/stopped-at"] == rfc3339(stopped) for p in vols.values())
    assert not any(p["metadata"].get("deletionTimestamp") for p in vols.values())

    # Before the volume period (90 days since the stop) the volumes are kept ...
    assert row(reap_idle_workspaces(now=now + 30 * DAY), "dora").action == "keep"
    # ... a failed later backup means the newest is no longer verified: nothing goes ...
    kube.annotate("PersistentVolumeClaim", ns, "ws-dora-workspace", {"vibecode.dev/last-backup-outcome": "Failed"})
    r = row(reap_idle_workspaces(now=now + 60 * DAY, dry_run=True), "dora")
    assert r.action == "backup"
    kube.annotate("PersistentVolumeClaim", ns, "ws-dora-workspace", {"vibecode.dev/last-backup-outcome": "Completed"})
    # ... and after it, with the verified backup, they are deleted.
    r = row(reap_idle_workspaces(now=now + 60 * DAY), "dora")
    assert r.action == "delete-volumes" and "ws-dora-workspace" in r.outcome, r
    # No controller-manager lifts the pvc-protection finalizer here: deleted means marked for deletion.
    left = volumes(kube, ns, "dora")
    assert all(p["metadata"].get("deletionTimestamp") for p in left.values())


def test_a_workspace_with_a_running_backup_or_the_restore_guard_is_never_stopped_or_deleted(kube, namespace):
    ns = namespace
    R = datetime.now(timezone.utc).replace(microsecond=0)
    from tests.fixtures.reaper import add_workspace, play_controller

    add_workspace(kube, ns, "gina", annotations={"vibecode.dev/restoring": "run-1",
                                                 "vibecode.dev/idle-warned-at": rfc3339(R - 1 * DAY)})
    play_controller(kube, ns, "gina", R - 3 * DAY)
    add_workspace(kube, ns, "hank", annotations={"vibecode.dev/idle-warned-at": rfc3339(R - 1 * DAY)})
    play_controller(kube, ns, "hank", R - 3 * DAY)
    kube.create({"apiVersion": "batch/v1", "kind": "Job",
                 "metadata": {"name": "ws-hank-backup-abc", "namespace": ns,
                              "labels": {"app.kubernetes.io/part-of": "vibecode", "app.kubernetes.io/component":
                                         "backup", "vibecode.dev/user": "hank"}},
                 "spec": {"template": {"spec": {"restartPolicy": "Never",
                                                "containers": [{"name": "restic", "image": "restic"}]}}}})
    add_workspace(kube, ns, "ivan", replicas=0, annotations={"vibecode.dev/stopped-at": rfc3339(R - 40 * DAY),
                                                             "vibecode.dev/restoring": "run-2"})
    report = reap_idle_workspaces(now=R)
    got = {r.username: r for r in report.rows}
    assert got["gina"].action == "keep" and "restoring" in got["gina"].reason
    assert got["hank"].action == "keep" and "backup Job is running" in got["hank"].reason
    assert got["ivan"].action == "keep"
    assert kube.get("Deployment", ns, "ws-gina")["spec"]["replicas"] == 1
    assert kube.get("Deployment", ns, "ws-hank")["spec"]["replicas"] == 1
    assert kube.get("Deployment", ns, "ws-ivan") is not None
