"""prefect.yaml must point at flows that exist, with the schedules and limits we promise, read
strictly (tasks.deploy.spec), with the schedules' timezone in one place."""

import importlib
from pathlib import Path

import pytest
import yaml
from prefect import Flow

from tasks.core.errors import InvalidInput
from tasks.core.settings import Settings, prefect_yaml_timezone
from tasks.core.steps import HELM, KUBE_API, RESTIC, USERS_DB
from tasks.deploy.spec import load_project

ROOT = Path(__file__).resolve().parents[2]


def _deployments():
    return {d.name: d for d in load_project().deployments}


def test_every_entrypoint_is_a_prefect_flow_on_the_process_pool():
    for name, dep in _deployments().items():
        module = importlib.import_module(dep.module)
        assert isinstance(getattr(module, dep.function), Flow), name
        assert dep.work_pool.name == "vibecode-process"


def test_two_pools_and_every_deployment_can_move_to_the_kubernetes_one():
    project = load_project()
    assert {k: p.name for k, p in project.definitions.work_pools.items()} == {
        "process": "vibecode-process", "kubernetes": "vibecode-kubernetes"}
    moved = project.for_pool("kubernetes")
    assert [d.name for d in moved] == [d.name for d in project.deployments]
    assert {d.work_pool.name for d in moved} == {"vibecode-kubernetes"}


def test_every_deployment_is_described_and_tagged_without_a_limit_tag():
    for name, dep in _deployments().items():
        assert len(dep.description) > 30 and "vibecode" in dep.tags, name
        # deployment tags reach every task run of the flow: one named like a tag concurrency
        # limit would throttle the whole flow by it
        assert not {KUBE_API, HELM, RESTIC, USERS_DB} & set(dep.tags), name


def test_schedules_and_limits():
    deps = _deployments()
    assert {n: [s.cron for s in d.schedules] for n, d in deps.items() if d.schedules} == {
        "backup-workspaces": ["0 2 * * *"], "backup-platform": ["0 3 * * *"], "purge-offboarded": ["0 4 * * *"],
        "check-platform-health": ["*/5 * * * *"], "reap-idle-workspaces": ["*/15 * * * *"]}
    no_overlap = {n for n, d in deps.items() if d.concurrency_limit
                  and (d.concurrency_limit.limit, d.concurrency_limit.collision_strategy) == (1, "CANCEL_NEW")}
    assert no_overlap == {"bootstrap-platform", "backup-workspaces", "purge-offboarded", "check-platform-health",
                          "reap-idle-workspaces", "rotate-restic-password", "backup-platform", "recover-platform"}
    assert deps["restore-workspace"].concurrency_limit.collision_strategy == "ENQUEUE"
    # HR events run concurrently (20 hires at once); each is idempotent per event id
    assert deps["onboard-user"].concurrency_limit is None and deps["offboard-user"].concurrency_limit is None


def test_the_schedule_timezone_is_set_once_and_the_backup_setting_derives_from_it(tmp_path, monkeypatch):
    project = load_project()
    zones = {s.timezone for d in project.deployments for s in d.schedules}
    assert zones == {project.definitions.timezone}
    for k in [k for k in __import__("os").environ if "TIMEZONE" in k]:
        monkeypatch.delenv(k)
    assert Settings().backup.timezone == project.definitions.timezone == prefect_yaml_timezone()

    # change it in the one place: the setting and every schedule follow
    text = (ROOT / "prefect.yaml").read_text()
    assert text.count('timezone: &timezone "UTC"') == 1 and "timezone: UTC" not in text
    moved = tmp_path / "prefect.yaml"
    moved.write_text(text.replace('timezone: &timezone "UTC"', 'timezone: &timezone "Europe/Berlin"'))
    assert prefect_yaml_timezone(moved) == "Europe/Berlin"
    assert {s.timezone for d in load_project(moved).deployments for s in d.schedules} == {"Europe/Berlin"}


@pytest.mark.parametrize("change,where", [
    (lambda d: d["deployments"][0].update(triggers=[]), "deployments.0.triggers"),
    (lambda d: d["deployments"][3]["schedules"][0].update(timezone="America/New_York"), "schedule timezone"),
    (lambda d: d["definitions"].update(timezone="Mars/Olympus"), "IANA"),
    (lambda d: d["deployments"][0].update(entrypoint="flows/nope.py"), "entrypoint"),
    (lambda d: d["deployments"].append(d["deployments"][0]), "repeat"),
    (lambda d: d["deployments"][0].update(work_pool={"name": "elsewhere"}), "is not one of"),
])
def test_the_file_is_read_strictly(tmp_path, change, where):
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    if where == "schedule timezone":
        doc["deployments"] = [d for d in doc["deployments"] if d.get("schedules")]
    change(doc)
    bad = tmp_path / "prefect.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(InvalidInput, match=where.replace(".", r"\.")):
        load_project(bad)
