"""S3 unreachable for a whole run: nothing is deleted, and the health flow says critical.

Dormancy under an unreachable S3 is tests/reaper/test_reaper_dormancy.py (the backup fails and
nothing is deleted, however often the reaper runs); the health flow against a hung API server
*and* an unreachable S3 is tests/health/test_health_hardening.py. Here: offboarding (the final
backup cannot reach its bucket, so the identity is disabled, the workspace stopped, nothing
deleted, and later purges refuse), and the health flow on an otherwise healthy platform,
where S3 alone makes it critical.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

import tasks.backup.steps as backup_steps
from tasks.cluster.localnode.envtest import free_port
from tasks.core.settings import get_settings

pytestmark = pytest.mark.usefixtures("prefect_server")


def _unreachable_s3(monkeypatch):
    """A closed port for S3, and one attempt per backup Job: restic spends ~13 s retrying a refused
    connection on each attempt (the backup's own retries are tested in tests/backup)."""
    monkeypatch.setenv("VIBECODE_S3_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(backup_steps, "run_backup_job", backup_steps.run_backup_job.with_options(retries=0))
    get_settings.cache_clear()


@pytest.mark.usefixtures("helm_bin")
def test_offboarding_with_s3_unreachable_deletes_nothing(platform, kube, backup_calls, monkeypatch):
    from flows.offboarding import offboard_user, purge_offboarded
    from flows.onboarding import onboard_user
    from tasks.cluster import helm
    from tasks.core.errors import BackupRequired
    from tasks.people.hr import parse_request
    from tasks.people.ledger import Ledger
    from tests.fixtures.people import HIRE, event, users_file

    ns = platform["ns"]
    onboard_user(parse_request(HIRE))
    backup_calls.verified = True  # the volume attaches: the only thing wrong is S3
    uids = {p["metadata"]["name"]: p["metadata"]["uid"]
            for p in kube.list("PersistentVolumeClaim", ns, "vibecode.dev/user=alice")}
    assert len(uids) == 2
    monkeypatch.setenv("VIBECODE_OFFBOARD_RETENTION_DAYS", "0")  # retention alone would allow deletion
    _unreachable_s3(monkeypatch)

    with pytest.raises(BackupRequired, match="nothing deleted"):
        offboard_user(parse_request(event("evt-2026-0100", "employee.terminated")))

    assert users_file(kube)["alice"]["disabled"] is True  # access ended at once all the same
    assert kube.get("Deployment", ns, "ws-alice")["spec"]["replicas"] == 0
    assert all(r.returncode != 0 for r in backup_calls.kubelet.runs)  # no backup Job succeeded (if one ran)
    for days in (31, 365):
        assert purge_offboarded(now=datetime.now(timezone.utc) + timedelta(days=days))["alice"].startswith("refuse")
    assert helm.status("ws-alice", ns) is not None
    left = kube.list("PersistentVolumeClaim", ns, "vibecode.dev/user=alice")
    assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in left} == uids
    assert not any(p["metadata"].get("deletionTimestamp") for p in left)
    assert Ledger().get("alice").state == "terminated"


def test_health_with_s3_unreachable_is_critical(healthy, monkeypatch):
    from flows.health import check_platform_health
    from tasks.health.checks import Status
    from tasks.health.steps import PlatformUnhealthy

    assert check_platform_health(return_state=True).is_completed()  # healthy before
    monkeypatch.setenv("VIBECODE_S3_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    get_settings.cache_clear()

    state = check_platform_health(return_state=True)

    assert state.is_failed()
    with pytest.raises(PlatformUnhealthy) as failed:
        state.result()
    report = failed.value.report
    checks = {c.name: c for c in report.checks}
    assert report.status is Status.CRITICAL and checks["backups.bucket"].status is Status.CRITICAL, report.table()
    assert checks["api"].status is Status.OK  # S3 alone made it critical
    assert [c.name for c in report.checks if c.status is Status.CRITICAL] == ["backups.bucket"], report.table()
