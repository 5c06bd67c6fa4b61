"""A person's whole life on the platform, with nothing stood in but the kubelet:
hire -> work -> leave (final backup by the backup flow's own restic Jobs, into the S3
server) -> purge after retention -> re-hire -> their work is back, byte for byte."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from flows.offboarding import offboard_user, purge_offboarded
from flows.onboarding import onboard_user
from tasks.backup.status import has_verified_backup
from tasks.cluster import helm
from tasks.people.hr import parse_request
from tasks.people.ledger import Ledger
from tests.fixtures.people import HIRE, event, users_file
from tests.fixtures.storage import make_tree, tree_state

pytestmark = pytest.mark.usefixtures("prefect_server", "helm_bin")


def _play_pvc_protection_controller(kube, ns):
    """No controller-manager here: lift the pvc-protection finalizer so deleted PVCs go."""
    for pvc in kube.list("PersistentVolumeClaim", ns, "vibecode.dev/user=alice"):
        if pvc["metadata"].get("deletionTimestamp"):
            kube.patch("PersistentVolumeClaim", ns, pvc["metadata"]["name"], {"metadata": {"finalizers": None}})


def test_leave_purge_and_rehire_brings_the_work_back(platform, kube, backup_settings, job_kubelet):
    ns = platform["ns"]
    onboard_user(parse_request(HIRE))
    work = job_kubelet.claim_dir("ws-alice-workspace")
    make_tree(work)
    (work / "notes.md").write_text("unsaved life\n")
    before = tree_state(work)

    left = offboard_user(parse_request(event("evt-2026-0100", "employee.terminated")))

    assert users_file(kube)["alice"]["disabled"] is True
    assert left.backup.startswith("Completed (snapshot ") and left.backup.endswith(", verified)")
    assert left.deletion.startswith("defer")
    pvc = kube.get("PersistentVolumeClaim", ns, "ws-alice-workspace")
    assert has_verified_backup(pvc, datetime.now(timezone.utc))
    assert [r.job for r in job_kubelet.runs if r.returncode == 0][:1] == [next(
        j["metadata"]["name"] for j in kube.list("Job", ns) if "-backup-" in j["metadata"]["name"])]

    purged = purge_offboarded(now=datetime.now(timezone.utc) + timedelta(days=31))
    assert "uninstalled" in purged["alice"] and helm.status("ws-alice", ns) is None
    _play_pvc_protection_controller(kube, ns)
    assert kube.list("PersistentVolumeClaim", ns, "vibecode.dev/user=alice") == []
    job_kubelet.volumes.pop("ws-alice-workspace")  # the next volume of that name is a new, empty disk

    back = onboard_user(parse_request(event("evt-2027-0001")))

    assert back.identity == "enabled" and users_file(kube)["alice"]["disabled"] is False
    assert tree_state(job_kubelet.claim_dir("ws-alice-workspace")) == before
    assert kube.get("Deployment", ns, "ws-alice")["spec"]["replicas"] == 1
    rec = Ledger().get("alice")
    assert rec.state == "active" and rec.purged_at is None
    assert len(platform["inbox"].messages) == 2
