"""`vibecode reap` and `vibecode resume`: validation first, then the flows behind them."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from tasks.reap import rfc3339
from tests.test_reaper_codeserver import add_workspace, play_controller
from vibecode_cli import main as cli


def test_resume_refuses_a_bad_username_before_any_flow_runs(capsys):
    assert cli(["resume", "../etc"]) == 2
    assert "username" in capsys.readouterr().err


def test_bad_reaper_settings_are_refused_naming_the_field(monkeypatch):
    from pydantic import ValidationError

    from tasks.settings import Settings

    monkeypatch.setenv("VIBECODE_REAP_PROBE_URL", "http://{service}/x?healthz")
    with pytest.raises(ValidationError, match="reap_probe_url"):
        Settings()


def test_reap_dry_run_json_prints_the_plan_and_writes_nothing(prefect_server, kube, namespace, capsys, monkeypatch):
    R = datetime.now(timezone.utc)
    monkeypatch.setenv("VIBECODE_REAP_PROBE_URLS", json.dumps({"zoe": "http://127.0.0.1:1"}))
    from tasks.settings import get_settings

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
