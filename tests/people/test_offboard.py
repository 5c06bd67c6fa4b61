"""offboard_user / purge_offboarded / re-hire, end to end on the real API server and helm.

The final backup is the real backup flow: its restic Jobs are run by the kubelet
stand-in against the S3 server (tests/fixtures/storage.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from flows.offboarding import offboard_user, purge_offboarded
from flows.onboarding import onboard_user
from tasks.cluster import helm
from tasks.core.errors import BackupRequired
from tasks.people.hr import parse_request
from tasks.people.ledger import Ledger
from tests.fixtures.people import HIRE, event, users_file

pytestmark = pytest.mark.usefixtures("prefect_server", "helm_bin")

TERMINATE = event("evt-2026-0100", "employee.terminated")


def _pvc_uids(kube, ns):
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in kube.list("PersistentVolumeClaim", ns,
                                                                           "vibecode.dev/user=alice")}


def test_termination_disables_at_once_and_refuses_deletion_without_verified_backup(platform, kube, backup_calls,
                                                                                  monkeypatch):
    ns = platform["ns"]
    onboard_user(parse_request(HIRE))
    password_before = users_file(kube)["alice"]["password"]
    uids = _pvc_uids(kube, ns)
    monkeypatch.setenv("VIBECODE_OFFBOARD_RETENTION_DAYS", "0")  # retention would allow deletion...
    from tasks.core.settings import get_settings
    get_settings.cache_clear()

    with pytest.raises(BackupRequired, match="nothing deleted"):
        offboard_user(parse_request(TERMINATE))  # ...but the backup failed

    entry = users_file(kube)["alice"]
    assert entry["disabled"] is True and entry["password"] != password_before  # access ended at once
    assert kube.get("Deployment", ns, "ws-alice")["spec"]["replicas"] == 0
    assert helm.status("ws-alice", ns) is not None and _pvc_uids(kube, ns) == uids  # nothing deleted
    assert backup_calls.users() == ["alice"]
    assert Ledger().get("alice").state == "terminated"

    # Later purges refuse too, however much time passes, while no verified backup exists.
    later = datetime.now(timezone.utc) + timedelta(days=365)
    assert purge_offboarded(now=later)["alice"].startswith("refuse")
    assert helm.status("ws-alice", ns) is not None and _pvc_uids(kube, ns) == uids


@pytest.mark.flows_identity  # runs as the flows' ServiceAccount (tests/fixtures/kube.py)
def test_verified_backup_then_retention_then_deletion(platform, kube, backup_calls):
    ns = platform["ns"]
    onboard_user(parse_request(HIRE))
    backup_calls.verified = True

    result = offboard_user(parse_request(TERMINATE))

    assert result.identity == "disabled" and result.deletion.startswith("defer")
    assert helm.status("ws-alice", ns) is not None and len(_pvc_uids(kube, ns)) == 2
    replay = offboard_user(parse_request(TERMINATE))
    assert replay.identity == "unchanged" and backup_calls.users() == ["alice"]  # no second backup needed

    assert purge_offboarded(now=datetime.now(timezone.utc) + timedelta(days=29))["alice"].startswith("defer")
    assert helm.status("ws-alice", ns) is not None

    done = purge_offboarded(now=datetime.now(timezone.utc) + timedelta(days=31))
    assert "uninstalled" in done["alice"]
    assert helm.status("ws-alice", ns) is None
    # No controller-manager runs here to lift the pvc-protection finalizer, so "deleted" means
    # marked for deletion; in a cluster the PVC controller then removes them.
    left = kube.list("PersistentVolumeClaim", ns, "vibecode.dev/user=alice")
    assert len(left) == 2 and all(p["metadata"].get("deletionTimestamp") for p in left)
    assert users_file(kube)["alice"]["disabled"] is True  # identity kept for audit
    assert Ledger().get("alice").state == "purged"


def test_rehire_within_retention_reenables_and_keeps_the_data(platform, kube, backup_calls):
    ns, inbox = platform["ns"], platform["inbox"]
    onboard_user(parse_request(HIRE))
    uids = _pvc_uids(kube, ns)
    backup_calls.verified = True
    offboard_user(parse_request(TERMINATE))
    assert kube.get("Deployment", ns, "ws-alice")["spec"]["replicas"] == 0

    back = onboard_user(parse_request(event("evt-2027-0001")))

    assert back.identity == "enabled" and users_file(kube)["alice"]["disabled"] is False
    assert kube.get("Deployment", ns, "ws-alice")["spec"]["replicas"] == 1
    assert _pvc_uids(kube, ns) == uids  # the same volumes: their work is there
    assert len(inbox.messages) == 2 and "Welcome back" in inbox.messages[1]["Subject"]
    rec = Ledger().get("alice")
    assert rec.state == "active" and rec.terminated_at is None
    assert purge_offboarded(now=datetime.now(timezone.utc) + timedelta(days=60)) == {}  # nothing to purge


def test_a_hire_overtaken_by_a_newer_termination_leaves_the_workspace_stopped(platform, kube, backup_calls,
                                                                               monkeypatch):
    """Found by the soak: a re-hire's run, admitted, went on while a newer termination was
    admitted and ran to its end (scaled to 0); the re-hire then woke the leaver's workspace.
    Here the re-hire is held at its identity step while the termination runs. Now it neither
    wakes the workspace nor leaves it running, grants no access and sends no welcome."""
    import threading

    import flows.onboarding as onboarding

    ns, inbox = platform["ns"], platform["inbox"]
    onboard_user(parse_request(HIRE))
    backup_calls.verified = True
    offboard_user(parse_request(TERMINATE))
    admitted, go = threading.Event(), threading.Event()
    real_identity = onboarding.ensure_identity

    def held(request, username):
        admitted.set()
        assert go.wait(120)
        return real_identity(request, username)

    monkeypatch.setattr(onboarding, "ensure_identity", held)
    out: dict = {}
    rehire = threading.Thread(target=lambda: out.update(r=onboard_user(parse_request(event("evt-2027-0001")))))
    rehire.start()
    try:
        assert admitted.wait(120), "the re-hire did not reach its identity step"
        offboard_user(parse_request(event("evt-2027-0100", "employee.terminated")))  # newer than the re-hire
        assert kube.get("Deployment", ns, "ws-alice")["spec"]["replicas"] == 0
    finally:
        go.set()
        rehire.join(180)

    assert kube.get("Deployment", ns, "ws-alice")["spec"]["replicas"] == 0
    assert "a termination was admitted meanwhile" in out["r"].workspace
    assert users_file(kube)["alice"]["disabled"] is True
    assert Ledger().get("alice").state.has_left
    assert len(inbox.messages) == 1  # the first welcome only: none to the leaver
