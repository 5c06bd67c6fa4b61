"""The health flow end to end: real API server, real Prefect server, real Pushgateway, and a
loopback stand-in for Datadog's intake reached through the real ``datadog-api-client``."""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flows.health import check_platform_health
from tasks.core.settings import get_settings
from tasks.health.checks import Status
from tasks.health.sinks import datadog_series, service_check_name

pytestmark = pytest.mark.slow
H = timedelta(hours=1)


@pytest.fixture
def sinks(healthy, pushgateway, datadog_intake, monkeypatch):
    key = secrets.token_hex(16)  # generated per run: no credential lives in the repository
    monkeypatch.setenv("VIBECODE_DATADOG_API_KEY", key)
    monkeypatch.setenv("VIBECODE_DATADOG_HOST", datadog_intake.url)
    monkeypatch.setenv("VIBECODE_PUSHGATEWAY_URL", pushgateway.url)
    get_settings.cache_clear()
    return {"key": key, "pushgateway": pushgateway, "intake": datadog_intake}


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _run_record(run_id, wait_for: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        for _ in range(50):  # logs reach the server in batches, a moment after the run ends
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            if any(wait_for in log.message for log in logs):
                break
            time.sleep(0.2)
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return run, logs, artifacts


def test_run_publishes_to_pushgateway_and_datadog(sinks, healthy, caplog):
    started = time.time()
    state = check_platform_health(return_state=True)
    finished = time.time()
    assert state.is_completed(), state.message
    report = state.result()
    assert report.status is Status.OK, report.table()
    assert report.sinks["pushgateway"].startswith("ok") and report.sinks["datadog"].startswith("ok"), report.sinks
    names = {c.name for c in report.checks}
    assert {"api", "nodes", "component.authelia", "authelia", "workspaces.ready", "workspaces.volumes",
            "workspaces.leavers", "backups.fresh", "backups.last_run", "backups.bucket", "users.database",
            "users.workspaces", "users.leavers"} <= names
    cluster = f"c-{healthy['ns']}"

    # Pushgateway: the job's series, values and labels
    got = _samples(sinks["pushgateway"].metrics())
    group = {"job": "vibecode_health", "env": "test", "cluster": cluster, "instance": ""}

    def sample(name, **labels):
        return got.get((name, frozenset({**group, **labels}.items())))

    for c in report.checks:
        assert sample("vibecode_health_check_status", check=c.name) == 0, c
        assert sample("vibecode_health_check_value", check=c.name) == pytest.approx(c.value)
    assert sample("vibecode_workspaces", state="running") == 1
    assert sample("vibecode_workspaces", state="stopped") == 1
    assert sample("vibecode_workspaces", state="dormant") == 1
    assert sample("vibecode_users", state="enabled") == 2 and sample("vibecode_users", state="disabled") == 0
    for name in ("alice", "bob"):
        assert sample("vibecode_backup_age_seconds", workspace=name) == pytest.approx(7200, abs=120)
    assert started - 1 <= sample("vibecode_health_last_run_timestamp_seconds") <= finished + 1

    # Datadog: exactly the expected series and service checks, the key only in its header
    reqs = sinks["intake"].requests
    assert reqs and all(r["headers"].get("DD-API-KEY") == sinks["key"] for r in reqs)
    series = [s for r in reqs if r["path"] == "/api/v2/series" for s in r["json"]["series"]]
    want = Counter((m, tuple(sorted(tags)), v) for m, v, tags in datadog_series(report, "test", cluster))
    assert Counter((s["metric"], tuple(sorted(s["tags"])), s["points"][0]["value"]) for s in series) == want
    assert {"vibecode.workspaces", "vibecode.users", "vibecode.backup.age_seconds", "vibecode.health.status",
            "vibecode.api.latency_seconds"} <= {s["metric"] for s in series}
    assert all(s["type"] == 3 and len(s["points"]) == 1 for s in series)  # 3: gauge
    assert all(int(started) - 1 <= s["points"][0]["timestamp"] <= finished + 1 for s in series)
    runs = [c for r in reqs if r["path"] == "/api/v1/check_run" for c in r["json"]]
    assert sorted(c["check"] for c in runs) == sorted(service_check_name(c) for c in report.checks)
    assert all(c["status"] == 0 and c["host_name"] == cluster and f"check:{c['check'][9:]}" in c["tags"]
               for c in runs)
    assert all(int(started) - 1 <= c["timestamp"] <= finished + 1 for c in runs)

    run, logs, artifacts = _run_record(state.state_details.flow_run_id, "ok api")
    haystack = "\n".join([str(run.parameters), caplog.text, *(log.message for log in logs),
                          *(str(a.data) + str(a.description) for a in artifacts)])
    assert {"platform-health", "platform-health-summary"} <= {a.key for a in artifacts}
    assert "backups.fresh" in haystack
    assert sinks["key"] not in haystack


def test_pushgateway_down_still_reports_every_check(sinks, healthy):
    up = check_platform_health()
    sinks["pushgateway"].stop()
    sinks["intake"].requests.clear()
    state = check_platform_health(return_state=True)
    assert state.is_completed(), state.message  # a sink down is not a platform check
    report = state.result()
    assert report.sinks["pushgateway"].startswith("failed:") and "Pushgateway" in report.sinks["pushgateway"]
    assert report.failed_sinks == ["pushgateway"]
    assert report.sinks["datadog"].startswith("ok")
    assert sorted(c.name for c in report.checks) == sorted(c.name for c in up.checks)
    assert "pushgateway" in report.markdown()
    assert any(r["path"] == "/api/v2/series" for r in sinks["intake"].requests)


def test_critical_check_fails_the_run_and_the_cli_exits_1(sinks, healthy, capsys):
    from vibecode_cli import main as cli

    assert cli(["health", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "ok"

    healthy["authelia"].reply = (503, {"status": "KO"}, 0.0)  # Authelia down: critical
    state = check_platform_health(return_state=True)
    assert state.is_failed()
    report = state.result(raise_on_failure=False).report
    assert report.table()[0]["check"] == "authelia" and report.table()[0]["status"] == "critical"
    assert report.markdown().index("critical") < report.markdown().index("authelia")
    assert report.sinks["pushgateway"].startswith("ok")  # published before failing, so alerts see it

    assert cli(["health"]) == 1
    out = capsys.readouterr().out
    rows = [line.strip("│ ").split() for line in out.splitlines() if line.startswith("│")]
    assert rows[0][:3] == ["critical", "│", "authelia"]  # criticals first
    assert "overall: critical" in out


def test_warning_does_not_fail_the_run(sinks, healthy, monkeypatch, capsys):
    from vibecode_cli import main as cli

    monkeypatch.setenv("VIBECODE_HEALTH_SLOW_SECONDS", "0.000001")  # every latency check warns
    get_settings.cache_clear()
    state = check_platform_health(return_state=True)
    assert state.is_completed()
    assert state.result().status is Status.WARNING
    assert cli(["health", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "warning"


def test_datadog_key_from_a_prefect_secret_block(sinks, monkeypatch):
    from prefect.blocks.system import Secret

    key = secrets.token_hex(16)
    block = f"dd-key-{secrets.token_hex(4)}"
    Secret(value=key).save(block)
    monkeypatch.delenv("VIBECODE_DATADOG_API_KEY")
    monkeypatch.setenv("VIBECODE_DATADOG_API_KEY_BLOCK", block)
    get_settings.cache_clear()
    state = check_platform_health(return_state=True)
    assert state.is_completed() and state.result().sinks["datadog"].startswith("ok")
    assert {r["headers"].get("DD-API-KEY") for r in sinks["intake"].requests} == {key}
    run, logs, artifacts = _run_record(state.state_details.flow_run_id, "ok api")
    haystack = "\n".join([str(run.parameters), *(log.message for log in logs),
                          *(str(a.data) + str(a.description) for a in artifacts)])
    assert block in str(get_settings().health.datadog_api_key_block) and key not in haystack
