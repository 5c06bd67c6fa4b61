"""The workspace chart on a real node: provision_workspace starts a real code-server pod.

Nothing here writes status: the scheduler places the pod, the kubelet runs it under the
chart's restricted security context and marks it Ready through code-server's own
readiness probe, the Deployment controller reports it available, and kube-proxy routes
the Service's ClusterIP to it.
"""

from __future__ import annotations

import json

import httpx
import pytest

from flows.workspace import provision_workspace
from tests.fixtures.node import kubectl_exec, wait_for

pytestmark = [pytest.mark.node, pytest.mark.usefixtures("node_cluster", "prefect_server", "helm_bin")]


def _pod(kube, ns: str, user: str) -> dict:
    pods = [p for p in kube.list("Pod", ns, f"vibecode.dev/user={user}") if not p["metadata"].get("deletionTimestamp")]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def test_provisioned_workspace_runs_code_server_restricted_and_serves_through_its_service(
        node_cluster, node_kube, node_namespace, kubectl_bin, monkeypatch):
    kube, ns = node_kube, node_namespace
    monkeypatch.setenv("VIBECODE_READY_POLL_SECONDS", "1")

    first = provision_workspace("alice")

    assert first.changed is True and "1 of 1 replicas available" in first.ready
    pod = _pod(kube, ns, "alice")
    status = pod["status"]
    (cs,) = status["containerStatuses"]
    assert cs["ready"] is True and cs["restartCount"] == 0 and "running" in cs["state"]
    assert cs["imageID"].endswith(node_cluster.images["code-server"].rpartition("@")[2])  # the image built here
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    # The volumes bound to the node's local PersistentVolumes.
    for claim in ("ws-alice-workspace", "ws-alice-extensions"):
        assert kube.get("PersistentVolumeClaim", ns, claim)["status"]["phase"] == "Bound"

    # Restricted for real: the kernel's view of the container's first process.
    proc = kubectl_exec(node_cluster, kubectl_bin, ns, pod["metadata"]["name"], "cat", "/proc/1/status")
    fields = dict(line.split(":\t", 1) for line in proc.splitlines() if ":\t" in line)
    assert fields["Uid"].split()[:2] == ["1000", "1000"] and fields["Gid"].split()[0] == "1000"
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapBnd"], 16) == 0  # capabilities: drop ALL
    assert fields["NoNewPrivs"].strip() == "1"  # allowPrivilegeEscalation: false
    assert fields["Seccomp"].strip() == "2"  # RuntimeDefault: a filter is installed
    # fsGroup made the workspace volume writable for the person.
    kubectl_exec(node_cluster, kubectl_bin, ns, pod["metadata"]["name"], "sh", "-c", "echo hi > /workspace/probe.txt")

    # /healthz through the Service's ClusterIP (kube-proxy's iptables rules), from this machine.
    svc = kube.get("Service", ns, "ws-alice")
    url = f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}/healthz"

    def healthz():
        try:
            r = httpx.get(url, timeout=3)
        except httpx.HTTPError:
            return None
        return r if r.status_code == 200 else None

    r = wait_for(f"GET {url}", healthz, timeout=60)
    assert json.loads(r.text)["status"] in ("alive", "expired")

    second = provision_workspace("alice")

    assert second.changed is False and second.revision == first.revision
    again = _pod(kube, ns, "alice")
    assert again["metadata"]["uid"] == pod["metadata"]["uid"]  # not restarted or replaced
    assert again["status"]["containerStatuses"][0]["restartCount"] == 0
