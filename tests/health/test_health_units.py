"""The pure parts of the health checks: ordering, backup age rules, counts, the deployment."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from tasks.backup.status import LAST_BACKUP_OUTCOME, LAST_BACKUP_TIME, LAST_BACKUP_VERIFIED, LAST_VERIFIED_TIME, rfc3339
from tasks.core.names import STOPPED_AT
from tasks.health.checks import Check, Gauge, HealthReport, Observed, Status, backup_age, counts, evaluate
from tasks.health.sinks import datadog_series, prometheus_name

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parents[2]


def test_report_orders_criticals_first_and_names_failed_sinks():
    report = HealthReport(started=NOW, finished=NOW, checks=[
        Check(name="a", status=Status.OK, value=1, message="fine"),
        Check(name="z", status=Status.CRITICAL, value=0, message="down"),
        Check(name="m", status=Status.WARNING, value=2, message="slow")],
        sinks={"pushgateway": "failed: Pushgateway http://127.0.0.1:1: refused", "datadog": "ok (3 series)"})
    assert [r["check"] for r in report.table()] == ["z", "m", "a"]
    assert report.status is Status.CRITICAL
    md = report.markdown()
    assert md.index("`z`") < md.index("`m`") and "`a`" not in md
    assert report.failed_sinks == ["pushgateway"] and "pushgateway (failed" in md


def test_a_failed_night_keeps_the_age_of_the_last_verified_backup():
    ann = {LAST_BACKUP_TIME: rfc3339(NOW - timedelta(hours=1)), LAST_BACKUP_OUTCOME: "Failed",
           LAST_BACKUP_VERIFIED: "false"}
    pvc = {"metadata": {"creationTimestamp": rfc3339(NOW - timedelta(days=10)), "annotations": ann}}
    assert backup_age(pvc, NOW) == (timedelta(days=10), False)  # never a verified backup: since creation
    ann[LAST_VERIFIED_TIME] = rfc3339(NOW - timedelta(hours=25))
    assert backup_age(pvc, NOW) == (timedelta(hours=25), True)
    new = {"metadata": {"creationTimestamp": rfc3339(NOW - timedelta(hours=3))}}
    assert backup_age(new, NOW) == (timedelta(hours=3), False)


def test_the_backup_flow_stamps_the_last_verified_time():
    from tasks.backup.status import Outcome, WorkspaceResult, volume_annotations

    good = WorkspaceResult(username="a", pvc="p", outcome=Outcome.COMPLETED, snapshot_id="ab12", verified=True)
    bad = WorkspaceResult(username="a", pvc="p", outcome=Outcome.FAILED, reason="x")
    assert volume_annotations(good, NOW)[LAST_VERIFIED_TIME] == rfc3339(NOW)
    assert LAST_VERIFIED_TIME not in volume_annotations(bad, NOW)  # a failed night leaves the stamp alone


def test_counts_dormant_from_the_reapers_stopped_at():
    def dep(replicas, stopped=None):
        ann = {STOPPED_AT: rfc3339(NOW - stopped)} if stopped else {}
        return {"metadata": {"annotations": ann}, "spec": {"replicas": replicas}}

    got = {g.labels["state"]: g.value for g in counts(
        [dep(1), dep(0), dep(0, timedelta(days=2)), dep(0, timedelta(days=31))], None, NOW, timedelta(days=30))}
    assert got == {"running": 1, "stopped": 3, "dormant": 1}


def test_without_the_api_server_only_independent_checks_are_made():
    checks, _ = evaluate(Observed(api_latency=None, api_error="ServerError: refused", authelia_status=200,
                                  authelia_body='{"status": "OK"}', authelia_latency=0.01, bucket="b",
                                  bucket_latency=0.01), NOW, "ns", [], 2.0, dormancy=None)
    assert {c.name: c.status for c in checks} == {"api": Status.CRITICAL, "authelia": Status.OK,
                                                  "backups.bucket": Status.OK}


def test_sink_names():
    report = HealthReport(started=NOW, finished=NOW, checks=[Check(name="api", status=Status.WARNING, value=3,
                                                                   message="")],
                          gauges=[Gauge(name="backup.age_seconds", value=5, labels={"workspace": "alice"})])
    assert prometheus_name("backup.age_seconds") == "vibecode_backup_age_seconds"
    assert datadog_series(report, "prod", "c1") == [
        ("vibecode.health.status", 1.0, ["env:prod", "cluster:c1", "check:api"]),
        ("vibecode.health.value", 3.0, ["env:prod", "cluster:c1", "check:api"]),
        ("vibecode.backup.age_seconds", 5.0, ["env:prod", "cluster:c1", "workspace:alice"])]


def test_health_deployment_every_5_minutes_never_overlapping():
    deps = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    dep = deps["check-platform-health"]
    assert dep["entrypoint"] == "flows/health.py:check_platform_health"
    assert dep["schedules"][0]["cron"] == "*/5 * * * *"
    assert dep["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}


def test_health_settings_are_described_and_the_key_is_secret():
    from tasks.core.settings import HealthSettings

    fields = HealthSettings.model_fields
    for name in ("datadog_api_key", "datadog_api_key_block", "datadog_site", "datadog_host", "pushgateway_url",
                 "metrics_env", "metrics_cluster", "authelia_health_url", "components",
                 "slow_seconds", "timeout_seconds"):
        assert fields[name].description, name
    assert "SecretStr" in str(fields["datadog_api_key"].annotation)
