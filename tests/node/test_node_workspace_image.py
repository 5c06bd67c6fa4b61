"""The workspace image (images/workspace) on the real node, as people get it.

The pods run under Pod Security "restricted" (the chart's own security context for the one the
flow provisions; the same fields for the bare pod). Nothing here writes status: the kubelet
runs the image's entrypoint and marks the pods Ready through code-server's /healthz. Inside,
everything runs as the workspace user (``kubectl exec`` gets the image's uid 1000).
"""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from flows.workspace import provision_workspace
from tasks.image import build as image_build
from tests.fixtures.node import kubectl_exec, wait_for
from tests.fixtures.pss import restricted_violations
from tests.image.vsix import make_vsix

pytestmark = [pytest.mark.node, pytest.mark.usefixtures("node_cluster", "prefect_server", "helm_bin")]

KEY = "sk-ant-test-" + "k" * 24  # a stand-in key: it must reach the env and nothing else


def _sh(node, kubectl_bin, ns, pod, script: str) -> str:
    return kubectl_exec(node, kubectl_bin, ns, pod, "bash", "-c", script)


def _logs(node, kubectl_bin, ns: str, pod: str) -> str:
    return subprocess.run([str(kubectl_bin), "--kubeconfig", str(node.kubeconfig), "-n", ns, "logs", pod],
                          capture_output=True, text=True, timeout=60, check=True).stdout


def _ready(kube, ns, name, timeout=240):
    def ready():
        pod = kube.get("Pod", ns, name) or {}
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        if statuses and "terminated" in (statuses[0].get("state") or {}):
            raise AssertionError(f"{name} exited: {statuses[0]['state']}")
        return pod if statuses and statuses[0].get("ready") else None
    return wait_for(f"pod {name} ready", ready, timeout=timeout)


def test_the_workspace_image_has_the_tools_the_settings_and_an_operators_vsix(
        node_cluster, node_kube, node_namespace, kubectl_bin, tmp_path):
    """A bare restricted pod of the image, no key configured, with a .vsix made here in the
    image's extensions folder (a ConfigMap over it, as an operator's build would put it)."""
    kube, ns, node = node_kube, node_namespace, node_cluster
    built = image_build.build()
    vsix = make_vsix(tmp_path)
    kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "vsix", "namespace": ns},
                 "binaryData": {vsix.name: base64.b64encode(vsix.read_bytes()).decode()}})
    container = {
        "name": "code-server", "image": f"{built.reference}@{built.digest}", "imagePullPolicy": "IfNotPresent",
        "args": ["--bind-addr", "0.0.0.0:8080", "--auth", "none", "/workspace"],
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 1000,
                            "runAsGroup": 1000, "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
        "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"},
                         {"name": "data", "mountPath": "/home/coder/.local/share/code-server"},
                         {"name": "vsix", "mountPath": "/usr/lib/vibecode/extensions"}],
    }
    spec = {"automountServiceAccountToken": False, "enableServiceLinks": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
            "volumes": [{"name": "workspace", "emptyDir": {}}, {"name": "data", "emptyDir": {}},
                        {"name": "vsix", "configMap": {"name": "vsix"}}]}
    assert restricted_violations(spec) == []
    kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ws", "namespace": ns}, "spec": spec})
    pod = _ready(kube, ns, "ws")
    assert pod["status"]["containerStatuses"][0]["imageID"].endswith(built.digest)  # run by digest

    out = _sh(node, kubectl_bin, ns, "ws", "set -e; id -u; id -un; claude --version; git --version; "
              "python3 -m venv /tmp/v && /tmp/v/bin/python -c 'import sys; print(sys.prefix)'; "
              "npm --version; node --version; code-server --version | head -1")
    lines = out.splitlines()
    assert lines[0] == "1000" and lines[1] == "coder"
    assert "2.1.332" in lines[2] and "Claude Code" in lines[2]
    assert lines[3].startswith("git version ") and lines[4] == "/tmp/v"
    assert lines[5] == "11.6.2" and lines[6] == "v24.22.3" and lines[7].startswith("4.139.1")
    # No setuid program works its way up: the bits are gone from the image.
    assert _sh(node, kubectl_bin, ns, "ws", "find / -xdev -perm /6000 -type f 2>/dev/null | wc -l").strip() == "0"

    # The settings: the platform's on every start (Machine), the person's seeded once (User).
    machine = json.loads(_sh(node, kubectl_bin, ns, "ws", "cat ~/.local/share/code-server/Machine/settings.json"))
    assert machine["security.workspace.trust.enabled"] is False and machine["workbench.startupEditor"] == "readme"
    assert json.loads(_sh(node, kubectl_bin, ns, "ws", "cat ~/.local/share/code-server/User/settings.json")) == machine
    # code-server's own flags, as the kernel shows its command line.
    cmdline = _sh(node, kubectl_bin, ns, "ws", "tr '\\0' ' ' < /proc/1/cmdline")
    assert "--disable-workspace-trust" in cmdline and "--app-name VibeCode" in cmdline
    assert "# Your VibeCode workspace" in _sh(node, kubectl_bin, ns, "ws", "cat /workspace/README.md")

    # The .vsix: installed at start into the person's extensions volume, listed by code-server.
    listed = wait_for("the vsix listed", lambda: "vibecode-tests.probe@0.0.1" in (r := _sh(
        node, kubectl_bin, ns, "ws", "code-server --extensions-dir ~/.local/share/code-server/extensions "
        "--list-extensions --show-versions")) and r, timeout=60)
    assert "vibecode-tests.probe@0.0.1" in listed.split()

    # No key: the log and the terminal say how to set one; nothing like a key in the env.
    assert "the AI assistant has no key" in _logs(node, kubectl_bin, ns, "ws")
    term = _sh(node, kubectl_bin, ns, "ws", "PS1='$ ' bash -i -c true 2>/dev/null; printenv ANTHROPIC_API_KEY || true")
    assert "VIBECODE_WORKSPACE__ASSISTANT_SECRET" in term and "sk-ant" not in term


def test_a_provisioned_workspace_gets_the_key_from_the_secret_and_nowhere_else(
        node_cluster, node_kube, node_namespace, kubectl_bin, helm_bin, monkeypatch):
    """The flow installs the chart (restricted, by the image's digest) with the assistant Secret
    configured: the key is in the container's environment, and in no pod spec value, no value
    of the release, no log and no flow artifact."""
    kube, ns, node = node_kube, node_namespace, node_cluster
    built = image_build.build()
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vibecode-assistant", "namespace": ns},
                 "stringData": {"ANTHROPIC_API_KEY": KEY}})
    monkeypatch.setenv("VIBECODE_READY_POLL_SECONDS", "1")
    monkeypatch.setenv("VIBECODE_WORKSPACE_IMAGE", f"{built.reference}@{built.digest}")
    monkeypatch.setenv("VIBECODE_WORKSPACE__ASSISTANT_SECRET", "vibecode-assistant")
    from tasks.core.settings import get_settings
    get_settings.cache_clear()

    result = provision_workspace("dana")

    assert "1 of 1 replicas available" in result.ready
    [pod] = [p for p in kube.list("Pod", ns, "vibecode.dev/user=dana") if not p["metadata"].get("deletionTimestamp")]
    name = pod["metadata"]["name"]
    assert pod["status"]["containerStatuses"][0]["imageID"].endswith(built.digest)
    assert restricted_violations(pod["spec"]) == []
    assert _sh(node, kubectl_bin, ns, name, "printenv ANTHROPIC_API_KEY").strip() == KEY
    assert KEY not in json.dumps(pod) and KEY not in json.dumps(kube.get("Deployment", ns, "ws-dana"))
    release = subprocess.run([str(helm_bin), "--kubeconfig", str(node.kubeconfig), "-n", ns, "get", "all", "ws-dana"],
                             capture_output=True, text=True, check=True).stdout  # helm's release record, decoded
    assert "secretName: vibecode-assistant" in release and KEY not in release
    assert KEY not in _logs(node, kubectl_bin, ns, name) and KEY not in repr(result)
    assert "the AI assistant has no key" not in _logs(node, kubectl_bin, ns, name)
