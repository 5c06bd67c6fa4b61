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


def test_create_args_use_the_repo_config_and_the_pinned_node_image(tmp_path):
    from tasks.platform.lock import load_lock

    pinned = load_lock().node_image.pinned_ref
    args = kind.create_args("vibecode", ROOT / "kind" / "cluster.yaml", tmp_path / "kc", pinned)
    assert args[:4] == ["kind", "create", "cluster", "--name"] and str(ROOT / "kind" / "cluster.yaml") in args
    assert args[args.index("--image") + 1] == pinned
    assert pinned.startswith("docker.io/kindest/node:v1.36.1@sha256:")


def test_the_kind_version_is_the_locks_and_an_older_kind_is_reported():
    from tasks.platform.lock import load_lock

    assert kind.KIND_VERSION == load_lock().kind_version == "v0.32.0"
    assert kind.parse_version("kind v0.32.0 go1.26.1 linux/amd64") == (0, 32, 0)
    assert kind.parse_version("kind v0.33.0-alpha+abc go1.26") == (0, 33, 0)

    class Old(_Proc):
        stdout = "kind v0.29.0 go1.24.2 linux/amd64"

    problems = kind.missing_prerequisites(which=lambda n: f"/usr/bin/{n}", run=lambda *a, **k: Old(0))
    assert len(problems) == 1 and "older than v0.32.0" in problems[0] and "go install sigs.k8s.io/kind@v0.32.0" in problems[0]


def test_the_cluster_maps_host_ports_to_the_gateways_node_ports():
    import yaml

    from tasks.platform.releases import KIND_GATEWAY_NODE_PORTS

    config = yaml.safe_load((ROOT / "kind" / "cluster.yaml").read_text())
    control = next(n for n in config["nodes"] if n["role"] == "control-plane")
    mapped = {m["hostPort"]: m["containerPort"] for m in control["extraPortMappings"]}
    assert mapped == {80: KIND_GATEWAY_NODE_PORTS["http"], 443: KIND_GATEWAY_NODE_PORTS["https"]}
    assert "image" not in str(config)  # the node image comes from the lock, one place


def _kind_available() -> bool:
    return (shutil.which("kind") is not None and shutil.which("docker") is not None
            and subprocess.run(["docker", "info"], capture_output=True).returncode == 0)


@pytest.mark.kind
@pytest.mark.skipif(not _kind_available(), reason="needs a Docker engine and the kind binary; "
                    "this machine has no Docker engine (see README: Running the platform)")
def test_bootstrap_on_real_kind(prefect_server, helm_bin, monkeypatch):
    """The real bootstrap end to end on KIND: the pinned upstream charts and images from their
    registries, every component behind its readiness gate, then a no-op rerun."""
    from flows.bootstrap import bootstrap_platform

    monkeypatch.setenv("VIBECODE_WORKSPACE__READY_TIMEOUT_SECONDS", "600")
    result = bootstrap_platform(cluster_name="vibecode-test", workspace_user="demo")
    actions = {o.component: o.action for o in result.components}
    assert actions["cert-manager"] in ("installed", "unchanged") and actions["envoy-gateway"] in ("installed", "unchanged")
    assert actions["vibecode-platform"] in ("installed", "unchanged")
    assert result.workspace_url == "https://demo.vibecode.dev"
    again = bootstrap_platform(cluster_name="vibecode-test", workspace_user="demo")
    assert again.changed is False
