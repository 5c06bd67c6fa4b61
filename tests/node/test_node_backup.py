"""The nightly backup flow and a restore on a real node: restic Jobs run as real pods.

The Jobs run the restic image (tasks/cluster/localnode/images.py) as uid 1000 with the workspace
volume mounted read-only and their secrets only through ``secretKeyRef``, into the S3
server (SeaweedFS) bound to the node's address. The kubelet enforces the memory limit and the
Job controller the deadline; nothing here writes a status.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tasks.backup.steps as backup_steps
from flows.backup import backup_workspaces
from flows.restore import restore_workspace
from flows.workspace import provision_workspace
from tasks.backup.restic import SECRET_ENV
from tasks.backup.status import Outcome
from tasks.cluster.localnode import node as node_harness
from tasks.core.names import workspace_names
from tests.fixtures.node import pv_dir, wait_for
from tests.fixtures.storage import make_tree, tree_state

pytestmark = [pytest.mark.node, pytest.mark.usefixtures("node_cluster", "prefect_server", "helm_bin")]


def _chown_tree(root: Path, uid: int = 1000) -> None:
    """Files in a workspace belong to the person (code-server runs as uid 1000)."""
    os.lchown(root, uid, uid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(Path(dirpath) / name, uid, uid)


def _random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size // (1 << 20)):
            f.write(os.urandom(1 << 20))


def _job_pod(kube, ns: str, job: str) -> dict:
    (pod,) = kube.list("Pod", ns, f"job-name={job}")
    return pod


def _bound_workspace_volume(node, kube, ns: str, user: str) -> Path:
    """A workspace volume as the chart labels it, bound to a local PV by a throw-away pod
    (its StorageClass binds on first use); returns the PV's folder."""
    names = workspace_names(user)
    claim = names.workspace_pvc
    kube.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {"name": claim, "namespace": ns,
                              "labels": {**names.labels, "vibecode.dev/volume": "workspace"}},
                 "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": node_harness.STORAGE_CLASS,
                          "resources": {"requests": {"storage": "1Gi"}}}})
    kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"bind-{user}", "namespace": ns},
                 "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                          "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True},
                          "containers": [{"name": "bind", "image": node.images["base"], "imagePullPolicy": "Never",
                                          "command": ["sh", "-c", "true"],
                                          "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                          "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}})
    wait_for(f"pod bind-{user} done", lambda: (kube.get("Pod", ns, f"bind-{user}").get("status") or {})
             .get("phase") == "Succeeded", timeout=120)
    return pv_dir(node, kube, ns, claim)


def test_nightly_backup_runs_restic_pods_and_a_restore_comes_back_byte_identical(
        node_cluster, node_kube, node_namespace, node_backup_settings):
    kube, ns, s = node_kube, node_namespace, node_backup_settings
    provision_workspace("alice")  # a real code-server pod holds the volume: the Job is pinned to its node
    src = pv_dir(node_cluster, kube, ns, "ws-alice-workspace")
    make_tree(src, big_bytes=6 << 20)
    _chown_tree(src)
    before = tree_state(src)

    report = backup_workspaces()

    assert report.outcome is Outcome.COMPLETED, report
    (ws,) = report.workspaces
    assert ws.username == "alice" and ws.snapshot_id and ws.verified, ws
    (job,) = kube.list("Job", ns, "app.kubernetes.io/component=backup")
    assert job["status"].get("succeeded") == 1  # written by the Job controller
    pod = _job_pod(kube, ns, job["metadata"]["name"])
    assert pod["status"]["phase"] == "Succeeded" and pod["spec"]["nodeName"] == node_harness.NODE_NAME
    (cs,) = pod["status"]["containerStatuses"]
    assert cs["state"]["terminated"]["exitCode"] == 0 and cs["imageID"]  # the kubelet ran the image
    assert cs["image"].endswith(node_cluster.images["restic"].rpartition("/")[2])
    (c,) = pod["spec"]["containers"]
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000 and c["securityContext"]["readOnlyRootFilesystem"]
    assert [m["readOnly"] for m in c["volumeMounts"] if m["mountPath"] == "/data"] == [True]
    env = {e["name"]: e for e in c["env"]}
    for key in SECRET_ENV:
        assert "value" not in env[key] and env[key]["valueFrom"]["secretKeyRef"]["name"] == s.backup.secret
    secrets = [s.backup.restic_password, s.backup.s3_access_key_id, s.backup.s3_secret_access_key]
    assert not any(x.get_secret_value() in str(job) + str(pod) for x in secrets)

    restored = restore_workspace("alice")  # into a new volume, by a real restic pod

    assert restored.outcome is Outcome.COMPLETED and restored.snapshot_id == ws.snapshot_id
    target = pv_dir(node_cluster, kube, ns, restored.pvc)
    assert tree_state(target) == before
    (rjob,) = kube.list("Job", ns, "app.kubernetes.io/component=restore")
    assert _job_pod(kube, ns, rjob["metadata"]["name"])["status"]["phase"] == "Succeeded"


def test_backup_job_over_its_memory_limit_is_failed_with_the_reason(
        node_cluster, node_kube, node_namespace, node_backup_settings, monkeypatch):
    """The Job as the flow builds it, with its memory limit lowered to 24Mi so that restic,
    chunking a 64 MiB file, goes over it: the kernel kills it and the kubelet says so."""
    kube, ns = node_kube, node_namespace
    src = _bound_workspace_volume(node_cluster, kube, ns, "bob")
    _random_file(src / "big.bin", 64 << 20)
    _chown_tree(src)
    real = backup_steps.backup_job

    def tight(*args, **kwargs):
        job = real(*args, **kwargs)
        job["spec"]["template"]["spec"]["containers"][0]["resources"] = {
            "requests": {"cpu": "100m", "memory": "24Mi"}, "limits": {"memory": "24Mi"}}
        return job

    monkeypatch.setattr(backup_steps, "backup_job", tight)

    report = backup_workspaces(["bob"])

    assert report.outcome is Outcome.FAILED
    (ws,) = report.workspaces
    assert ws.outcome is Outcome.FAILED and ws.snapshot_id is None and ws.reason, ws
    (job,) = kube.list("Job", ns, "app.kubernetes.io/component=backup")
    term = _job_pod(kube, ns, job["metadata"]["name"])["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["reason"] == "OOMKilled" and term["exitCode"] == 137
    conds = {c["type"]: c for c in job["status"]["conditions"]}
    assert conds["Failed"]["status"] == "True" and conds["Failed"]["reason"] == "BackoffLimitExceeded"
    assert conds["Failed"]["message"] in ws.reason or "OOMKilled" in ws.reason


def test_backup_job_over_its_deadline_is_failed_with_the_reason(
        node_cluster, node_kube, node_namespace, node_backup_settings, monkeypatch):
    """settings.backup.timeout_seconds becomes the Job's activeDeadlineSeconds: 2 s is far
    too short for restic to start and read 1 GiB, so the Job controller stops it. (With 160 MiB,
    a quiet machine once had restic's snapshot saved inside the 2 s: a partial outcome, not the
    deadline this test is about.)"""
    kube, ns = node_kube, node_namespace
    src = _bound_workspace_volume(node_cluster, kube, ns, "carol")
    _random_file(src / "big.bin", 1 << 30)
    _chown_tree(src)
    monkeypatch.setenv("VIBECODE_BACKUP_TIMEOUT_SECONDS", "2")
    from tasks.core.settings import get_settings
    get_settings.cache_clear()

    report = backup_workspaces(["carol"])

    assert report.outcome is Outcome.FAILED
    (ws,) = report.workspaces
    assert ws.outcome is Outcome.FAILED and ws.snapshot_id is None, ws
    (job,) = kube.list("Job", ns, "app.kubernetes.io/component=backup")
    assert job["spec"]["activeDeadlineSeconds"] == 2
    conds = {c["type"]: c for c in job["status"]["conditions"]}
    assert conds["Failed"]["reason"] == "DeadlineExceeded"
    assert "deadline" in ws.reason.lower(), ws.reason
