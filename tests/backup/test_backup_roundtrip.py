"""A real round trip: back up, change, back up, restore both snapshots; byte-identical.

Every restic command is the one in the Job the flow created in the real API server,
run by the kubelet stand-in against directories standing in for the PVCs.
"""

from __future__ import annotations

import os
import shutil

import pytest

from flows.backup import backup_workspaces
from flows.restore import restore_workspace
from tasks.backup.status import Outcome
from tasks.core.settings import get_settings
from tests.fixtures.storage import make_tree, tree_state

pytestmark = pytest.mark.usefixtures("prefect_server")
BIG = 200 * 1000 * 1000  # the "200 MB file"


def test_backup_change_backup_restore_is_byte_identical(kube, namespace, backup_settings, job_kubelet, tmp_path,
                                                        monkeypatch):
    # two runs on one day: keep-daily alone would expire the first, so keep the last two as well
    monkeypatch.setenv("VIBECODE_KEEP_LAST", "2")
    get_settings.cache_clear()
    kube.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {"name": "ws-alice-workspace", "namespace": namespace,
                              "labels": {"app.kubernetes.io/part-of": "vibecode", "vibecode.dev/volume": "workspace",
                                         "vibecode.dev/user": "alice"}},
                 "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}})
    volume = tmp_path / "alice"
    volume.mkdir()
    make_tree(volume, big_bytes=BIG)
    job_kubelet.volumes["ws-alice-workspace"] = volume

    first = backup_workspaces(["alice"]).for_user("alice")
    assert first.outcome is Outcome.COMPLETED and first.verified
    state1 = tree_state(volume)
    assert state1["big.bin"][2] == BIG and state1["empty"][2] == 0
    assert state1["link-to-main"] == ("link", "src/main.py") and "Ünïcødé 文件 🚀.txt" in state1

    # a day's work: edit, delete, add, chmod, re-link, and touch the middle of the big file
    (volume / "src" / "main.py").write_text("print('changed')\n")
    (volume / "readonly.txt").chmod(0o644)
    (volume / "readonly.txt").unlink()
    (volume / "new 新.txt").write_text("added\n")
    os.chmod(volume / "run.sh", 0o700)
    (volume / "link-to-main").unlink()
    os.symlink("run.sh", volume / "link-to-main")
    with open(volume / "big.bin", "r+b") as f:
        f.seek(BIG // 2)
        f.write(b"changed in the middle")

    second = backup_workspaces(["alice"]).for_user("alice")
    assert second.outcome is Outcome.COMPLETED and second.snapshot_id != first.snapshot_id
    state2 = tree_state(volume)
    assert state2 != state1

    old = restore_workspace("alice", snapshot=first.snapshot_id[:8])
    assert old.outcome is Outcome.COMPLETED and old.pvc.startswith("ws-alice-restore-")
    assert old.snapshot_id == first.snapshot_id
    assert tree_state(job_kubelet.volumes[old.pvc]) == state1

    new = restore_workspace("alice")  # latest, into another new volume
    assert new.snapshot_id == second.snapshot_id
    assert tree_state(job_kubelet.volumes[new.pvc]) == state2
    assert kube.get("PersistentVolumeClaim", namespace, new.pvc)["metadata"]["labels"]["vibecode.dev/volume"] == "restore"

    # in place, the workspace being stopped (no Deployment, no pod): the volume was wiped
    for entry in volume.iterdir():
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    inplace = restore_workspace("alice", target="in-place")
    assert inplace.pvc == "ws-alice-workspace"
    assert tree_state(volume) == state2
