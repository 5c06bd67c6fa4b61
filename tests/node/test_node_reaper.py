"""The reaper on a real node: it probes the real code-server pod through its Service, stops
it (the pod really goes, the volume stays), and resume_workspace brings back a Ready pod on
the same volume.

Nothing here writes status: the Deployment controller reports availability (and when the
session started), the kubelet runs and removes the pod, code-server answers /healthz. Only
the clock is injected, so "idle for three hours" needs no three hours.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from flows.reaper import reap_idle_workspaces, resume_workspace
from flows.workspace import provision_workspace
from tasks.core.settings import get_settings
from tests.fixtures.node import kubectl_exec, pv_dir, wait_for
from tests.fixtures.reaper import owners_secret, rows

pytestmark = [pytest.mark.node, pytest.mark.usefixtures("node_cluster", "prefect_server", "helm_bin")]
M = timedelta(minutes=1)


def _live_pods(kube, ns, user):
    return [p for p in kube.list("Pod", ns, f"vibecode.dev/user={user}") if not p["metadata"].get("deletionTimestamp")]


def test_idle_workspace_on_the_node_is_warned_stopped_with_its_volume_and_resumed_ready(
        node_cluster, node_kube, node_namespace, kubectl_bin, smtp_inbox, monkeypatch):
    kube, ns = node_kube, node_namespace
    monkeypatch.setenv("VIBECODE_READY_POLL_SECONDS", "1")
    get_settings.cache_clear()
    provision_workspace("rita")
    svc = kube.get("Service", ns, "ws-rita")
    monkeypatch.setenv("VIBECODE_REAP_PROBE_URLS", json.dumps(
        {"rita": f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"}))
    get_settings.cache_clear()
    owners_secret(kube, ns, {"rita": "rita@example.com"})
    (pod,) = _live_pods(kube, ns, "rita")
    kubectl_exec(node_cluster, kubectl_bin, ns, pod["metadata"]["name"], "sh", "-c", "echo draft > /workspace/notes.md")
    pvc_uid = kube.get("PersistentVolumeClaim", ns, "ws-rita-workspace")["metadata"]["uid"]

    # Three hours on, nobody has opened it: code-server itself says lastHeartbeat 0.
    R = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=3)
    first = rows(reap_idle_workspaces(now=R))["rita"]
    assert first.action == "warn", first
    assert [m["To"] for m in smtp_inbox.messages] == ["rita@example.com"]
    assert len(_live_pods(kube, ns, "rita")) == 1

    second = rows(reap_idle_workspaces(now=R + 16 * M))["rita"]
    assert second.action == "stop", second
    dep = kube.get("Deployment", ns, "ws-rita")
    assert dep["spec"]["replicas"] == 0
    assert dep["metadata"]["annotations"]["vibecode.dev/stop-reason"].startswith("idle")
    # The kubelet really stops the container; the claim and what was written stay.
    wait_for("the pod is gone", lambda: not kube.list("Pod", ns, "vibecode.dev/user=rita"), timeout=90)
    pvc = kube.get("PersistentVolumeClaim", ns, "ws-rita-workspace")
    assert pvc["metadata"]["uid"] == pvc_uid and pvc["status"]["phase"] == "Bound"
    assert (pv_dir(node_cluster, kube, ns, "ws-rita-workspace") / "notes.md").read_text() == "draft\n"

    resumed = resume_workspace("rita")

    assert "1 of 1 replicas available" in resumed.ready, resumed
    (pod,) = _live_pods(kube, ns, "rita")
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
    assert kubectl_exec(node_cluster, kubectl_bin, ns, pod["metadata"]["name"], "cat", "/workspace/notes.md") == "draft\n"
    ann = kube.get("Deployment", ns, "ws-rita")["metadata"].get("annotations") or {}
    assert not {"vibecode.dev/stopped-at", "vibecode.dev/stop-reason", "vibecode.dev/idle-warned-at"} & set(ann)
    # A run right after the resume keeps it: the session is new.
    assert rows(reap_idle_workspaces())["rita"].action == "keep"
