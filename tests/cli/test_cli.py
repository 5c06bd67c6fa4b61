"""The vibecode command line: validation before any flow runs, and the flows behind it."""

import json

from tasks.cluster import kind
from tests.fixtures.kube import mark_deployment_available  # noqa: F401
from vibecode_cli import main as cli


def test_cli_up_explains_missing_prerequisites(monkeypatch, capsys):
    monkeypatch.setattr(kind, "missing_prerequisites", lambda: [kind.KIND_HELP])
    assert cli(["up"]) == 2
    assert "go install sigs.k8s.io/kind" in capsys.readouterr().err


def test_cli_refuses_bad_username_before_any_flow_runs(capsys):
    assert cli(["provision", "../etc/passwd"]) == 2
    assert "username" in capsys.readouterr().err


def test_cli_backup_and_restore_validate_before_any_flow_runs(capsys):
    assert cli(["backup", "alice", "Bad!"]) == 2
    assert "username" in capsys.readouterr().err
    assert cli(["restore", "alice", "--snapshot", "x;rm -rf /"]) == 2
    assert "snapshot" in capsys.readouterr().err
    assert cli(["restore", "../root"]) == 2


def _workspace_pvc(kube, ns, user):
    kube.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {"name": f"ws-{user}-workspace", "namespace": ns,
                              "labels": {"app.kubernetes.io/part-of": "vibecode", "vibecode.dev/volume": "workspace",
                                         "vibecode.dev/user": user}},
                 "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})


def test_cli_backup_then_list_and_restore(prefect_server, kube, namespace, backup_settings, job_kubelet, capsys):
    from tests.fixtures.storage import make_tree, tree_state

    _workspace_pvc(kube, namespace, "carol")
    make_tree(job_kubelet.claim_dir("ws-carol-workspace"))
    before = tree_state(job_kubelet.claim_dir("ws-carol-workspace"))

    assert cli(["backup"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["outcome"] == "Completed" and out["workspaces"][0]["verified"] is True

    assert cli(["restore", "carol", "--list"]) == 0
    (snap,) = json.loads(capsys.readouterr().out)
    assert "nightly" in snap["tags"] and "carol" in snap["tags"]

    assert cli(["restore", "carol", "--snapshot", snap["id"]]) == 0
    restored = json.loads(capsys.readouterr().out)
    assert restored["outcome"] == "Completed" and restored["pvc"] != "ws-carol-workspace"
    assert tree_state(job_kubelet.claim_dir(restored["pvc"])) == before
