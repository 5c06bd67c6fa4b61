"""`vibecode reap` and `vibecode resume`: validation first, then the flows behind them."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from tasks.reaper.decide import rfc3339
from tests.fixtures.reaper import add_workspace, play_controller
from vibecode_cli import main as cli


def test_resume_refuses_a_bad_username_before_any_flow_runs(capsys):
    assert cli(["resume", "../etc"]) == 2
    assert "username" in capsys.readouterr().err


def test_bad_reaper_settings_are_refused_naming_the_field(monkeypatch):
    from pydantic import ValidationError

    from tasks.core.settings import Settings

    monkeypatch.setenv("VIBECODE_REAP_PROBE_URL", "http://{service}/x?healthz")
    with pytest.raises(ValidationError, match=r"reaper\.probe_url"):  # the nested field (VIBECODE_REAP_PROBE_URL)
        Settings()


def test_reap_dry_run_json_prints_the_plan_and_writes_nothing(prefect_server, kube, namespace, capsys, monkeypatch):
    R = datetime.now(timezone.utc)
    monkeypatch.setenv("VIBECODE_REAP_PROBE_URLS", json.dumps({"zoe": "http://127.0.0.1:1"}))
    from tasks.core.settings import get_settings

    get_settings.cache_clear()
    add_workspace(kube, namespace, "zoe")
    play_controller(kube, namespace, "zoe", R - timedelta(hours=30))
    add_workspace(kube, namespace, "yan", replicas=0,
                  annotations={"vibecode.dev/stopped-at": rfc3339(R - timedelta(days=45))})
    before = {d["metadata"]["name"]: d["metadata"]["resourceVersion"] for d in kube.list("Deployment", namespace)}

    assert cli(["reap", "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["username"]: r for r in report["rows"]}
    assert report["dry_run"] is True and report["unknown"] == 1
    assert rows["zoe"]["action"] == "keep" and "probe failed" in rows["zoe"]["reason"]
    assert rows["yan"]["action"] == "backup" and rows["yan"]["outcome"] == "dry run: nothing written"
    after = {d["metadata"]["name"]: d["metadata"]["resourceVersion"] for d in kube.list("Deployment", namespace)}
    assert after == before and kube.list("Job", namespace) == []

    assert cli(["reap", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "dry run:" in text and "yan" in text and "backing up first" in text


def test_a_run_writes_only_what_changes_and_leaves_a_table_artifact(prefect_server, kube, namespace, monkeypatch):
    from flows.reaper import reap_idle_workspaces
    from tasks.core.settings import get_settings

    R = datetime.now(timezone.utc)
    monkeypatch.setenv("VIBECODE_REAP_PROBE_URLS", json.dumps({"kim": "http://127.0.0.1:1", "lee": "http://127.0.0.1:1"}))
    get_settings.cache_clear()
    add_workspace(kube, namespace, "kim")  # probe fails: kept, unknown
    play_controller(kube, namespace, "kim", R - timedelta(hours=30))
    add_workspace(kube, namespace, "lee", annotations={"vibecode.dev/reap": "false"})
    add_workspace(kube, namespace, "max", replicas=0)  # stopped by someone else: left alone
    before = {d["metadata"]["name"]: d["metadata"]["resourceVersion"] for d in kube.list("Deployment", namespace)}
    for _ in range(2):
        report = reap_idle_workspaces()
        assert {r.username: r.action for r in report.rows} == {"kim": "keep", "lee": "keep", "max": "keep"}
        assert report.unknown == 2 and all(r.outcome == "" for r in report.rows)  # kim and lee: closed port
    after = {d["metadata"]["name"]: d["metadata"]["resourceVersion"] for d in kube.list("Deployment", namespace)}
    assert after == before  # nothing changed, so nothing was written

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["reap-decisions"])))
    rows = artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data)
    assert {r["username"]: r["action"] for r in rows} == {"kim": "keep", "lee": "keep", "max": "keep"}
    assert "probe failed" in next(r["reason"] for r in rows if r["username"] == "kim")
