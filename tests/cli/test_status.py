"""`vibecode status` and the workspace-overview artifact, on the real API server and the real
Prefect server: a populated platform as the flows leave it, then the table, the JSON, the
artifact the Prefect UI shows, and the health flow refreshing that artifact.

No controllers run on the test API server, so the Deployments' ``status`` (ready replicas,
the Available condition) and the volumes' phase are written here, playing the deployment
controller and the volume binder (a stand-in, as envtest users do)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tasks.core.names import DORMANT_DELETED_AT, STOP_REASON, STOPPED_AT
from tasks.core.timefmt import rfc3339
from tasks.people.ledger import to_manifest
from tasks.people.record import Record, State
from tasks.workspace.status import ARTIFACT_KEY
from tests.fixtures.objects import backup_annotations, ledger, pvc
from vibecode_cli import main as cli

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
H, D = timedelta(hours=1), timedelta(days=1)


def ago(d: timedelta) -> str:
    return rfc3339(datetime.now(timezone.utc) - d)


def workspace(ns: str, user: str, replicas: int, annotations: dict | None = None) -> dict:
    """The Deployment the workspace chart renders, as far as the overview reads it."""
    labels = {"app.kubernetes.io/name": "code-server", "app.kubernetes.io/part-of": "vibecode",
              "vibecode.dev/user": user}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"ws-{user}", "namespace": ns, "labels": labels, "annotations": annotations or {}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"vibecode.dev/user": user}},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "code-server", "image": "codercom/code-server",
                                                           "resources": {"requests": {"cpu": "500m",
                                                                                      "memory": "1Gi"}}}]}}}}


def volume(ns: str, user: str, annotations: dict) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": f"ws-{user}-workspace", "namespace": ns, "annotations": annotations,
                         "labels": {"app.kubernetes.io/part-of": "vibecode", "vibecode.dev/volume": "workspace",
                                    "vibecode.dev/user": user}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}}


@pytest.fixture
def populated(kube, namespaces, prefect_server):
    """Six people, one of each kind the overview tells apart."""
    ns, pns = namespaces

    def ws(user, replicas, annotations=None, ready=True, available_for=3 * H):
        kube.create(workspace(ns, user, replicas, annotations))
        if replicas:  # stand-in for the deployment controller
            kube.patch_status("Deployment", ns, f"ws-{user}", {
                "observedGeneration": 1, "replicas": 1, "readyReplicas": 1 if ready else 0,
                "availableReplicas": 1 if ready else 0,
                "conditions": [{"type": "Available", "status": "True" if ready else "False",
                                "reason": "MinimumReplicasAvailable", "lastUpdateTime": ago(available_for),
                                "lastTransitionTime": ago(available_for)}]})

    def vol(user, annotations):
        kube.create(volume(ns, user, annotations))
        kube.patch_status("PersistentVolumeClaim", ns, f"ws-{user}-workspace", {"phase": "Bound"})  # the binder

    def person(user, state, terminated=None):
        rec = Record(username=user, employee_id=f"E-{user}", state=state,
                     terminated_at=datetime.now(timezone.utc) - terminated if terminated else None)
        kube.create(to_manifest(rec, pns))

    ws("alice", 1)
    vol("alice", backup_annotations("Completed", 3 * H))
    person("alice", State.ACTIVE)
    ws("bob", 0, {STOPPED_AT: ago(2 * D), STOP_REASON: "idle: idle 2h05m; warned 15m00s ago"})
    vol("bob", backup_annotations("Completed", 20 * H))
    person("bob", State.ACTIVE)
    vol("carol", {**backup_annotations("Completed", 5 * H), STOPPED_AT: ago(40 * D), DORMANT_DELETED_AT: ago(10 * D)})
    ws("dan", 1)  # has left, still running: an incident
    vol("dan", backup_annotations("Completed", 2 * H))
    person("dan", State.TERMINATED, terminated=H)
    ws("erin", 1, ready=False, available_for=25 * timedelta(minutes=1))
    vol("erin", {**backup_annotations("Completed", 30 * H),
                 **{k: v for k, v in backup_annotations("Failed", 5 * H).items() if "snapshot" not in k},
                 "vibecode.dev/last-backup-reason": "backup failed: bucket unreachable"})
    person("erin", State.ACTIVE)
    person("fay", State.PURGED, terminated=40 * D)
    return ns, pns


def _artifact_rows() -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[ARTIFACT_KEY])))
    return artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data)


def test_status_on_a_populated_platform(populated, capsys, monkeypatch):
    assert cli(["status", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {w["person"]: w for w in out["workspaces"]}
    assert {p: w["state"] for p, w in rows.items()} == {
        "alice": "running", "bob": "stopped", "carol": "dormant", "dan": "running", "erin": "starting",
        "fay": "absent"}
    assert out["counts"] == {"running": 2, "starting": 1, "stopped": 1, "dormant": 1, "absent": 1}
    assert out["leavers"] == ["dan", "fay"]
    assert sorted((p["person"], p["problem"]) for p in out["problems"]) == [
        ("dan", "has left, but the workspace still runs"),
        ("erin", "last backup Failed: backup failed: bucket unreachable"),
        ("erin", "no verified backup for 1d"),
        ("erin", "not ready for 25m"),
    ]
    assert rows["alice"] | {"last_active": None, "last_backup": None} == {
        "person": "alice", "state": "running", "url": "https://alice.vibecode.dev", "cpu": "500m", "memory": "1Gi",
        "storage": "10Gi", "last_active": None, "last_backup": None, "employment": "active", "left_at": None,
        "note": "", "problems": []}
    assert rows["alice"]["last_backup"] and rows["carol"]["last_backup"] and rows["fay"]["last_backup"] is None
    assert rows["bob"]["note"].startswith("stopped 2d ago: idle: idle 2h05m")

    # the same list is the Prefect UI's workspace-overview artifact
    art = {r["person"]: r for r in _artifact_rows()}
    assert set(art) == set(rows) and art["bob"]["state"] == "stopped" and art["alice"]["cpu"] == "500m"
    assert art["dan"]["problems"] == "has left, but the workspace still runs"

    monkeypatch.setenv("COLUMNS", "240")  # one table row per line: no cell wraps, whatever the terminal
    assert cli(["status"]) == 0
    text = capsys.readouterr().out
    print(f"\n$ vibecode status\n{text}", file=sys.__stderr__)  # for the record (pytest -s)
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if line.startswith("│")}
    assert set(lines) == set(rows)
    assert "https://alice.vibecode.dev" in lines["alice"] and "500m" in lines["alice"] and "10Gi" in lines["alice"]
    assert "dormant" in lines["carol"] and "absent" in lines["fay"] and "purged" in lines["fay"]
    assert "Open problems (4)" in text and "! dan: has left, but the workspace still runs" in text
    assert "Leavers" in text and "dan: terminated" in text


def test_status_json_is_the_only_thing_on_stdout(populated):
    """A script's view: another process, its stdout parsed whole; the flow's logs are on stderr."""
    from prefect.settings import get_current_settings

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": str(get_current_settings().api.url)}
    got = subprocess.run([sys.executable, "-c", "import sys, vibecode_cli; sys.exit(vibecode_cli.main())",
                          "status", "--json"], env=env, capture_output=True, text=True, timeout=180)
    assert got.returncode == 0, got.stderr
    out = json.loads(got.stdout)
    assert out["counts"]["running"] == 2 and "platform-status" in got.stderr  # Prefect's run log


def test_the_health_flow_refreshes_the_overview_artifact(quiet_platform, prefect_server):
    from flows.health import check_platform_health

    k, ns = quiet_platform["kube"], quiet_platform["ns"]
    k.create(workspace(ns, "alice", 1))
    k.patch_status("Deployment", ns, "ws-alice", {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1})
    k.create(workspace(ns, "bob", 0, {STOPPED_AT: ago(40 * D)}))
    for name in ("alice", "bob"):
        k.create(pvc(ns, name, backup_annotations("Completed", 2 * H)))
        k.patch_status("PersistentVolumeClaim", ns, f"ws-{name}-workspace", {"phase": "Bound"})
        k.create(ledger(ns, name, "active"))

    check_platform_health(return_state=True)  # (its users check is critical: nobody has an identity)
    rows = {r["person"]: r for r in _artifact_rows()}
    assert {p: r["state"] for p, r in rows.items()} == {"alice": "running", "bob": "stopped"}
    assert rows["alice"]["url"] == "https://alice.vibecode.dev" and rows["alice"]["last_backup"] != "-"
    assert rows["bob"]["note"].startswith("stopped 40d ago")


def test_a_broken_overview_never_fails_the_health_run(prefect_server):
    from prefect import flow

    from tasks.workspace.status_steps import publish_workspace_overview

    broken = {"deployments": [42]}  # not an object

    @flow(name="overview-probe")
    def probe(quiet: bool):
        return publish_workspace_overview(broken, datetime.now(timezone.utc), quiet=quiet)

    assert probe(True) is None  # logged, the health run goes on
    with pytest.raises(AttributeError):
        probe(False)  # `vibecode status` shows the error
