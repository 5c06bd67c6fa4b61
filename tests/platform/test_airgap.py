"""Air-gapped: bundle(DIR) on a "connected" machine, then bootstrap_platform(bundle=DIR) with
every network address unreachable. The "internet" is a loopback registry serving the upstream
charts' stand-ins and multi-architecture test images (tests/fixtures/registry.py); it is
stopped before the install, HTTP(S)_PROXY points at a closed port (so anything not on
loopback fails), and the cluster's images come from a second loopback registry, the mirror.
The controllers are played by the stand-in of tests/fixtures/platform.py.
"""

from __future__ import annotations

import json

import pytest

from tasks.cluster.localnode.envtest import free_port
from tasks.core.settings import get_settings
from tests.fixtures.platform import ControllerStandIn
from tests.fixtures.registry import make_upstream, start_registry

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server", "helm_bin")]


def test_bundle_then_install_with_no_network(kube, apiserver, platform_env, helm_bin, tmp_path, monkeypatch, capsys):
    """Through the command line, as an operator runs it: `vibecode bundle DIR`, then
    `vibecode up --kubeconfig ... --bundle DIR` twice."""
    from vibecode_cli import main as cli

    def vibecode(*argv: str) -> dict:
        capsys.readouterr()
        assert cli([*argv, "--json"]) == 0, capsys.readouterr()
        return json.loads(capsys.readouterr().out)

    up = make_upstream(tmp_path / "internet", helm_bin)
    monkeypatch.setenv("VIBECODE_PLATFORM__LOCK_FILE", str(up.lock_file))
    monkeypatch.setenv("VIBECODE_WORKSPACE__IMAGE", up.lock.image("code-server").image)
    get_settings.cache_clear()
    directory = tmp_path / "bundle"
    manifest = vibecode("bundle", str(directory), "--exclude", "datadog")

    assert {c["key"] for c in manifest["charts"]} == {"envoy-gateway", "cert-manager"}
    assert {e["entry"] for e in manifest["left_out"]} >= {"chart datadog", "image datadog-agent", "image hr-gateway"}
    index = json.loads((directory / "images" / "index.json").read_text())
    for image in manifest["images"]:
        assert image["digest"] == up.lock.image(image["key"]).digest  # the pinned index, digest preserved
        blob = json.loads((directory / "images" / "blobs" / "sha256" / image["digest"].split(":")[1]).read_text())
        assert {m["platform"]["architecture"] for m in blob["manifests"]} == {"amd64", "arm64"}  # --all
    assert len(index["manifests"]) == len(manifest["images"])

    up.registry.stop()  # the "internet" is gone
    mirror = start_registry(tmp_path / "mirror")
    closed = free_port()
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("VIBECODE_PLATFORM__MIRROR_REGISTRY", mirror.host)
    get_settings.cache_clear()
    s = get_settings()
    namespaces = [s.platform_namespace, s.namespace, s.platform.cert_manager_namespace, s.platform.envoy_gateway_namespace]
    try:
        with ControllerStandIn(kube, set(namespaces)):
            first = vibecode("up", "--kubeconfig", str(apiserver.kubeconfig), "--bundle", str(directory))
            again = vibecode("up", "--kubeconfig", str(apiserver.kubeconfig), "--bundle", str(directory))
        actions = {o["component"]: o["action"] for o in first["components"]}
        assert actions["cert-manager"] == actions["envoy-gateway"] == actions["vibecode-platform"] == "installed"
        assert actions["demo-workspace"] == "installed"
        assert actions["hr-gateway"] == "skipped" and actions["datadog"] == "skipped"
        assert not again["changed"] and first["changed"]

        images = []
        for ns in namespaces:
            for kind in ("Deployment", "StatefulSet"):
                for obj in kube.list(kind, ns):
                    spec = obj["spec"]["template"]["spec"]
                    images += [c["image"] for c in spec["containers"] + spec.get("initContainers", [])]
        assert len(images) >= 8
        for ref in images:
            assert ref.startswith(mirror.host + "/") and "@sha256:" in ref, ref  # from the mirror, by digest
            path, digest = ref[len(mirror.host) + 1:].split("@")
            assert mirror.has(path.rsplit(":", 1)[0], digest), ref
    finally:
        mirror.stop()


def test_a_bundle_refuses_unpinned_entries_before_downloading_anything(tmp_path, prefect_server):
    from flows.bundle import bundle

    state = bundle(tmp_path / "b", return_state=True)  # the real lock: restic, datadog unpinned
    assert state.is_failed()
    message = str(state.message)
    assert "not pinned by digest" in message and "image restic" in message and "chart datadog" in message
    assert not (tmp_path / "b").exists()
