"""The vibecode command line: validation before any flow runs, exit codes, --json, --help,
completion, and the flows behind it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect import Flow

from tasks.cluster import kind
from tests.fixtures.kube import mark_deployment_available  # noqa: F401
from vibecode_cli import app, outcomes
from vibecode_cli import main as cli
from vibecode_cli.output import Exit

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = sorted(c.name or c.callback.__name__ for c in app.registered_commands)


@pytest.fixture
def no_flow_may_run(monkeypatch):
    """Any flow called from here is recorded and refused: validation must come first."""
    ran: list[str] = []

    def refuse(self, *args, **kwargs):
        ran.append(self.name)
        raise AssertionError(f"flow {self.name} ran")

    monkeypatch.setattr(Flow, "__call__", refuse)
    return ran


def test_every_flow_has_its_command():
    assert {"up", "status", "onboard", "offboard", "backup", "restore", "reap", "resume", "health", "gateway",
            "deploy", "provision", "totp-handoff", "rotate-restic-password", "limits", "bundle", "backup-platform",
            "recover"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_teaches_with_an_example(command, capsys):
    assert cli([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Example" in out and f"vibecode {command}" in out.split("Example", 1)[1], out
    assert "--json" in out


def test_top_level_help_documents_the_exit_codes(capsys):
    assert cli(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "0 done; 1 the flow failed" in out and "2 refused before anything ran" in out


@pytest.mark.parametrize("argv", [["no-such-command"], ["provision"], ["provision", "alice", "--replicas", "2"],
                                  ["reap", "--force"], ["deploy", "--pool", "lambda"], ["backup", "--json", "-x"]])
def test_usage_errors_exit_2_and_run_nothing(argv, no_flow_may_run, capsys):
    assert cli(argv) == Exit.BAD_INPUT
    assert capsys.readouterr().err and no_flow_may_run == []


def test_up_explains_missing_prerequisites(monkeypatch, capsys, no_flow_may_run):
    monkeypatch.setattr(kind, "missing_prerequisites", lambda: [kind.KIND_HELP])
    assert cli(["up"]) == 2
    assert "go install sigs.k8s.io/kind" in capsys.readouterr().err
    assert cli(["up", "--json"]) == 2
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["ok"] is False and out["exit"] == 2 and "go install sigs.k8s.io/kind" in out["problems"][0]
    assert no_flow_may_run == []


@pytest.mark.parametrize("argv,field", [
    (["provision", "../etc/passwd"], "username"),
    (["resume", "Alice"], "username"),
    (["restore", "../root"], "username"),
    (["restore", "alice", "--snapshot", "x;rm -rf /"], "snapshot"),
    (["restore", "alice", "--snapshot", "0123abcd\n"], "snapshot"),
    (["restore", "alice", "--snapshot", "latest\n"], "snapshot"),
    (["backup", "alice", "Bad!"], "username"),
    (["recover", "--from", "http://s3.example.com/bkp"], "from"),
    (["recover", "--from", "s3:https://key:secret@s3.example.com/bkp"], "from"),
    (["recover", "--from", "s3://s3.example.com/bkp", "--set", "x;y"], "set"),
    (["totp-handoff", "kube-system"], "username"),
    (["up", "--user", "admin"], "user"),
    (["up", "--kubeconfig", "/nonexistent/kubeconfig"], "kubeconfig"),
    (["up", "--cluster", "Not_A_Label", "--kubeconfig", "/etc/hostname"], "cluster"),
    (["up", "--bundle", "/etc", "--kubeconfig", "/etc/hostname"], "bundle"),
    (["up", "--context", "prod"], "context"),
    (["bundle", "/etc"], "directory"),
    (["bundle", "/tmp/vibecode-new-bundle", "--exclude", "no-such-part"], "exclude"),
    (["bundle", "/tmp/vibecode-new-bundle", "--built", "hr-gateway"], "built"),
    (["bundle", "/tmp/vibecode-new-bundle", "--built", "no-such-image=oci:/x:1"], "built"),
])
def test_bad_input_is_refused_naming_the_field_before_any_flow_runs(argv, field, no_flow_may_run, capsys):
    assert cli(argv) == 2
    assert f"invalid input: {field}: " in capsys.readouterr().err
    assert cli([*argv, "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out == {"ok": False, "exit": 2, "error": out["error"], "field": field}
    assert no_flow_may_run == []


def test_deploy_refuses_a_second_timezone_before_reaching_any_server(monkeypatch, capsys):
    from tasks.core.settings import get_settings

    monkeypatch.setenv("VIBECODE_BACKUP__TIMEZONE", "Europe/Berlin")
    get_settings.cache_clear()
    try:
        assert cli(["deploy", "--no-worker"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert "invalid input: backup.timezone: is 'Europe/Berlin'" in err and "definitions.timezone" in err


def test_shell_completion_completes_commands_and_choices():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "_VIBECODE_COMPLETE": "complete_bash"}
    run = [sys.executable, "-c", "import sys, vibecode_cli; sys.exit(vibecode_cli.main())"]
    got = subprocess.run(run, env={**env, "COMP_WORDS": "vibecode re", "COMP_CWORD": "1"}, capture_output=True,
                         text=True, timeout=60)
    assert got.returncode == 0 and set(got.stdout.split()) == {"reap", "recover", "restore", "resume"}
    got = subprocess.run(run, env={**env, "COMP_WORDS": "vibecode deploy --pool ", "COMP_CWORD": "3"},
                         capture_output=True, text=True, timeout=60)
    assert set(got.stdout.split()) == {"process", "kubernetes"}


def test_exit_codes_come_from_typed_outcomes():
    from datetime import datetime, timezone

    from tasks.backup.status import BackupReport, Outcome
    from tasks.health.checks import Check, HealthReport, Status
    from tasks.reaper.steps import ReapReport, ReapRow

    t = datetime.now(timezone.utc)
    assert [outcomes.backup(BackupReport(outcome=o, started=t, finished=t, workspaces=[])) for o in Outcome] == \
        [Exit.DONE, Exit.FAILED, Exit.FAILED]
    assert [outcomes.health(HealthReport(started=t, finished=t, checks=[Check(name="x", status=s, value=0,
                                                                             message="")])) for s in Status] == \
        [Exit.DONE, Exit.DONE, Exit.FAILED]

    from tasks.reaper.steps import OutcomeKind as K

    def reap(*kinds: K) -> Exit:
        return outcomes.reap(ReapReport(dry_run=False, now=t, counts={}, unknown=0,
                                        rows=[ReapRow(username="a", action="stop", reason="", outcome=k.value,
                                                      outcome_kind=k) for k in kinds]))

    # the kind decides, never the text: a failed backup of a dormant workspace fails the command too
    assert reap() == reap(K.NONE, K.DONE, K.PLANNED, K.SKIPPED) == Exit.DONE
    assert reap(K.DONE, K.FAILED) == reap(K.FAILED) == Exit.FAILED


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

    assert cli(["backup", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["outcome"] == "Completed" and out["workspaces"][0]["verified"] is True

    assert cli(["restore", "carol", "--list", "--json"]) == 0
    (snap,) = json.loads(capsys.readouterr().out)
    assert "nightly" in snap["tags"] and "carol" in snap["tags"]

    assert cli(["restore", "carol", "--snapshot", snap["id"], "--json"]) == 0
    restored = json.loads(capsys.readouterr().out)
    assert restored["outcome"] == "Completed" and restored["pvc"] != "ws-carol-workspace"
    assert tree_state(job_kubelet.claim_dir(restored["pvc"])) == before

    assert cli(["backup", "carol"]) == 0  # for a person: a table, the outcome in its title
    text = capsys.readouterr().out
    assert "Backup Completed: 1 workspace(s)" in text and "carol" in text


def test_backup_of_a_workspace_without_a_volume_exits_1(prefect_server, kube, namespace, backup_settings, capsys):
    assert cli(["backup", "nobody", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["outcome"] == "Failed" and out["workspaces"][0]["reason"] == "no workspace volume found"


def test_progress_shows_the_flow_steps_in_a_terminal_and_gives_prefect_its_console_back(prefect_server,
                                                                                      monkeypatch, capsys):
    import logging

    from prefect import flow, get_run_logger, task

    from vibecode_cli.output import progress

    @task(name="step-one")
    def step() -> None:
        get_run_logger().info("copying the volume")

    @flow(name="cli-progress-probe")
    def probe() -> None:
        step()
        get_run_logger().info("all done")

    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: treat stderr as a terminal
    consoles = [h for h in logging.getLogger().handlers if type(h).__name__ == "PrefectConsoleHandler"]
    before = [h.level for h in consoles]
    with progress("Probing"):
        probe()
    err = capsys.readouterr().err
    assert "copying the volume" in err and "all done" in err and "step-one" in err
    assert [h.level for h in consoles] == before

    monkeypatch.setenv("TTY_COMPATIBLE", "0")  # a pipe: one line, Prefect's own log lines unchanged
    with progress("Probing"):
        pass
    assert capsys.readouterr().err == "Probing ...\n"
