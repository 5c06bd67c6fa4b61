"""The nightly backup deployment: 02:00 in prefect.yaml's timezone (the backup setting derives from it),
never two runs at once."""

from pathlib import Path

import yaml

from flows.backup import backup_workspaces
from flows.restore import restore_workspace
from tasks.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_nightly_backup_deployment_cancels_overlapping_runs():
    deployments = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    backup = deployments["backup-workspaces"]
    assert backup["entrypoint"] == "flows/backup.py:backup_workspaces" and backup_workspaces.name == "backup-workspaces"
    (schedule,) = backup["schedules"]
    assert schedule["cron"] == "0 2 * * *"
    assert schedule["timezone"] == Settings().backup.timezone
    assert backup["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    assert deployments["restore-workspace"]["entrypoint"].endswith(":" + restore_workspace.fn.__name__)
