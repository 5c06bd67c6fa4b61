"""prefect.yaml must point at flows that exist, with the schedules and limits we promise."""

import importlib
from pathlib import Path

import yaml
from prefect import Flow

ROOT = Path(__file__).resolve().parents[2]


def _deployments():
    return {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}


def test_every_entrypoint_is_a_prefect_flow():
    for name, dep in _deployments().items():
        module_path, func = dep["entrypoint"].split(":")
        module = importlib.import_module(module_path.removesuffix(".py").replace("/", "."))
        assert isinstance(getattr(module, func), Flow), name
        assert dep["work_pool"]["name"] == "vibecode-ops"


def test_bootstrap_never_overlaps():
    assert _deployments()["bootstrap-platform"]["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}


def test_scheduled_deployments():
    deps = _deployments()
    assert deps["backup-workspaces"]["schedules"][0]["cron"] == "0 2 * * *"
    assert deps["backup-workspaces"]["concurrency_limit"]["collision_strategy"] == "CANCEL_NEW"
    assert deps["purge-offboarded"]["schedules"][0]["cron"] == "0 4 * * *"
    assert {"onboard-user", "offboard-user", "restore-workspace", "provision-workspace"} <= set(deps)


def test_reaper_runs_every_15_minutes_and_never_overlaps():
    dep = _deployments()["reap-idle-workspaces"]
    assert dep["schedules"][0]["cron"] == "*/15 * * * *"
    assert dep["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    assert "resume-workspace" in _deployments()
