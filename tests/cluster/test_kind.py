import shutil
import subprocess
from pathlib import Path

import pytest

from tasks.cluster import kind

ROOT = Path(__file__).resolve().parents[2]


class _Proc:
    def __init__(self, rc):
        self.returncode = rc


def test_missing_prerequisites_say_what_to_install():
    problems = kind.missing_prerequisites(which=lambda _: None, run=None)
    assert any("apt-get install docker.io" in p for p in problems)
    assert any("go install sigs.k8s.io/kind@" in p for p in problems)


def test_docker_client_without_engine_is_reported():
    problems = kind.missing_prerequisites(which=lambda n: f"/usr/bin/{n}", run=lambda *a, **k: _Proc(1))
    assert len(problems) == 1 and "no Docker engine answers" in problems[0]
    assert kind.missing_prerequisites(which=lambda n: f"/usr/bin/{n}", run=lambda *a, **k: _Proc(0)) == []


def test_parse_clusters():
    assert kind.parse_clusters("vibecode\nother\n") == ["vibecode", "other"]
    assert kind.parse_clusters("No kind clusters found.\n") == []


def test_create_args_use_the_repo_config(tmp_path):
    args = kind.create_args("vibecode", ROOT / "kind" / "cluster.yaml", tmp_path / "kc")
    assert args[:4] == ["kind", "create", "cluster", "--name"] and str(ROOT / "kind" / "cluster.yaml") in args


def _kind_available() -> bool:
    return (shutil.which("kind") is not None and shutil.which("docker") is not None
            and subprocess.run(["docker", "info"], capture_output=True).returncode == 0)


@pytest.mark.kind
@pytest.mark.skipif(not _kind_available(), reason="needs a Docker engine and the kind binary; "
                    "this machine has no Docker engine (see README: Running the platform)")
def test_bootstrap_on_real_kind(prefect_server, helm_bin, monkeypatch):
    from flows.bootstrap import bootstrap_platform

    monkeypatch.setenv("VIBECODE_READY_TIMEOUT_SECONDS", "600")
    result = bootstrap_platform(cluster_name="vibecode-test", workspace_user="demo")
    assert result.url == "https://demo.vibecode.dev"
    again = bootstrap_platform(cluster_name="vibecode-test", workspace_user="demo")
    assert again.changed is False
