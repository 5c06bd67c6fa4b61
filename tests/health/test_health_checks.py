"""Each health check's ok, warning and critical case, table-driven, against the real API server.

Every case creates its objects (and plays the controllers/kubelet by writing ``status``,
as envtest users do) in a fresh namespace, then observes the cluster exactly as the flow
does (its own tasks: one LIST per kind) and evaluates the pure checks.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from tasks.backup.status import rfc3339
from tasks.cluster import kube as kube_adapter
from tasks.cluster.localnode.envtest import free_port
from tasks.core.settings import get_settings
from tasks.health import steps as health_flow
from tasks.health.checks import Observed, evaluate
from tests.fixtures.objects import backup_annotations, deployment, ledger, now, pvc, ts, user, users_secret, workspace
from tests.fixtures.platform import remove_cluster_wide_crds


def observe() -> tuple[dict, Observed]:
    """Run the flow's own observation tasks and evaluate, as one health run does."""
    s = get_settings()
    obs = {"bucket": s.backup.s3_bucket}
    try:
        obs["api_latency"] = health_flow.probe_api.fn()
        obs.update(health_flow.list_cluster_objects.fn())
    except Exception as exc:  # noqa: BLE001 - the flow turns this into the api check
        obs["api_latency"], obs["api_error"] = None, str(exc)
    status, body, seconds, error = health_flow.probe_authelia.fn()
    obs.update(authelia_status=status, authelia_body=body, authelia_latency=seconds, authelia_error=error)
    obs["bucket_latency"], obs["bucket_error"] = health_flow.probe_backup_bucket.fn()
    observed = Observed(**obs)
    checks, _ = evaluate(observed, datetime.now(timezone.utc), s.namespace, s.health.components,
                         s.health.slow_seconds, dormancy=timedelta(days=s.reaper.dormancy_days))
    return {c.name: c for c in checks}, observed


# -- setups: each returns nothing; `env` is the health_env fixture ---------------------------
def api_ok(env):
    pass


def api_slow(env):
    env["monkeypatch"].setenv("VIBECODE_HEALTH_SLOW_SECONDS", "0.000001")


def api_down(env):
    """A kubeconfig naming a port nobody listens on."""
    cfg = yaml.safe_load(open(get_settings().kubeconfig).read())
    cfg["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    path = env["tmp_path"] / "dead-kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    env["monkeypatch"].setenv("VIBECODE_KUBECONFIG", str(path))
    env["monkeypatch"].setenv("VIBECODE_KUBE_CONTEXT", "envtest")
    kube_adapter.reset_connections()


def nodes(*ready: bool):
    def setup(env):
        for i, r in enumerate(ready):
            name = f"node-{uuid.uuid4().hex[:6]}-{i}"
            env["kube"].create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
            env["cleanup"].append(("Node", None, name))
            env["kube"].patch_status("Node", None, name, {"conditions": [{
                "type": "Ready", "status": "True" if r else "False",
                "reason": "KubeletReady" if r else "KubeletNotReady",
                "lastHeartbeatTime": ts(), "lastTransitionTime": ts()}]})
    return setup


def component(kind: str, want: int, have: int):
    def setup(env):
        ns, k = env["ns"], env["kube"]
        if kind == "Deployment":
            k.create(deployment(ns, "authelia", want))
            k.patch_status("Deployment", ns, "authelia", {"replicas": want, "availableReplicas": have,
                                                           "readyReplicas": have})
        else:
            manifest = deployment(ns, "authelia-redis", want)
            manifest.update(kind="StatefulSet")
            manifest["spec"]["serviceName"] = "authelia-redis"
            k.create(manifest)
            k.patch_status("StatefulSet", ns, "authelia-redis", {"replicas": want, "readyReplicas": have})
    return setup


def authelia(status: int, body: dict, delay: float = 0.0, slow: str | None = None):
    def setup(env):
        env["authelia"].reply = (status, body, delay)
        if slow:
            env["monkeypatch"].setenv("VIBECODE_HEALTH_SLOW_SECONDS", slow)
    return setup


CERT_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "certificates.cert-manager.io"},
    "spec": {"group": "cert-manager.io", "scope": "Namespaced",
             "names": {"plural": "certificates", "singular": "certificate", "kind": "Certificate"},
             "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}}}]}}


def certificate(ready: bool, days_left: float):
    def setup(env):
        k, ns = env["kube"], env["ns"]
        remove_cluster_wide_crds(k)  # one still terminating from the last case refuses Certificates
        k.create(CERT_CRD)
        for _ in range(50):  # the CRD is served once Established
            try:
                k.list_all("Certificate")
                break
            except Exception:  # noqa: BLE001
                import time

                time.sleep(0.1)
        k.create({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                  "metadata": {"name": "wildcard", "namespace": ns},
                  "spec": {"secretName": "wildcard-tls", "dnsNames": ["*.vibecode.dev"],
                           "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}}})
        env["cleanup"] += [("Certificate", ns, "wildcard"), ("CustomResourceDefinition", None, CERT_CRD["metadata"]["name"])]
        k.patch_status("Certificate", ns, "wildcard", {
            "notAfter": rfc3339(now() + timedelta(days=days_left)),
            "conditions": [{"type": "Ready", "status": "True" if ready else "False", "reason": "Ready"}]})
    return setup


def workspace_ready(ready: int, unavailable_for: timedelta):
    def setup(env):
        k, ns = env["kube"], env["ns"]
        k.create(workspace(ns, "alice"))
        k.patch_status("Deployment", ns, "ws-alice", {
            "replicas": 1, "readyReplicas": ready, "availableReplicas": ready,
            "conditions": [{"type": "Available", "status": "True" if ready else "False",
                            "reason": "MinimumReplicasAvailable" if ready else "MinimumReplicasUnavailable",
                            "lastUpdateTime": ts(unavailable_for), "lastTransitionTime": ts(unavailable_for)}]})
    return setup


def volume(phase: str):
    def setup(env):
        k, ns = env["kube"], env["ns"]
        k.create(pvc(ns, "alice"))
        k.patch_status("PersistentVolumeClaim", ns, "ws-alice-workspace", {"phase": phase})
    return setup


def leaver(replicas: int, pods: int):
    def setup(env):
        k, ns = env["kube"], env["ns"]
        k.create(ledger(ns, "bob", "terminated", timedelta(hours=1)))
        k.create(workspace(ns, "bob", replicas))
        k.patch_status("Deployment", ns, "ws-bob", {"replicas": pods})
    return setup


def backups(*volumes: tuple[str, timedelta]):
    def setup(env):
        for i, (outcome, age) in enumerate(volumes):
            env["kube"].create(pvc(env["ns"], f"user{i}", backup_annotations(outcome, age)))
    return setup


def bucket(exists: bool = True, slow: str | None = None):
    def setup(env):
        if not exists:
            env["monkeypatch"].setenv("VIBECODE_S3_BUCKET", f"missing-{uuid.uuid4().hex[:8]}")
        if slow:
            env["monkeypatch"].setenv("VIBECODE_HEALTH_SLOW_SECONDS", slow)
    return setup


def users_db(users: dict | str | None):
    def setup(env):
        if users is not None:
            env["kube"].create(users_secret(env["ns"], users))
    return setup


def users_with(workspace_for: list[str], ledger_states: dict[str, tuple[str, timedelta | None]], **entries):
    def setup(env):
        k, ns = env["kube"], env["ns"]
        k.create(users_secret(ns, {name: e for name, e in entries.items()}))
        for name in workspace_for:
            k.create(pvc(ns, name))
        for name, (state, terminated) in ledger_states.items():
            k.create(ledger(ns, name, state, terminated))
    return setup


H = timedelta(hours=1)
CASES = [
    ("api", api_ok, "ok"),
    ("api", api_slow, "warning"),
    ("api", api_down, "critical"),
    ("nodes", nodes(True), "ok"),
    ("nodes", nodes(True, False), "warning"),
    ("nodes", nodes(False), "critical"),
    ("component.authelia", component("Deployment", 2, 2), "ok"),
    ("component.authelia", component("Deployment", 2, 1), "warning"),
    ("component.authelia", component("Deployment", 1, 0), "critical"),
    ("component.authelia-redis", component("StatefulSet", 1, 1), "ok"),
    ("component.authelia-redis", component("StatefulSet", 0, 0), "warning"),
    ("component.authelia-redis", component("StatefulSet", 3, 0), "critical"),
    ("authelia", authelia(200, {"status": "OK"}), "ok"),
    ("authelia", authelia(200, {"status": "OK"}, delay=0.05, slow="0.01"), "warning"),
    ("authelia", authelia(503, {"status": "KO"}), "critical"),
    ("certificates", certificate(True, 60), "ok"),
    ("certificates", certificate(True, 10), "warning"),
    ("certificates", certificate(True, 2), "critical"),
    ("certificates", certificate(False, 60), "critical"),
    ("workspaces.ready", workspace_ready(1, timedelta(0)), "ok"),
    ("workspaces.ready", workspace_ready(0, timedelta(minutes=1)), "warning"),
    ("workspaces.ready", workspace_ready(0, timedelta(minutes=20)), "critical"),
    ("workspaces.volumes", volume("Bound"), "ok"),
    ("workspaces.volumes", volume("Pending"), "warning"),
    ("workspaces.volumes", volume("Lost"), "critical"),
    ("workspaces.leavers", leaver(0, 0), "ok"),
    ("workspaces.leavers", leaver(0, 1), "warning"),
    ("workspaces.leavers", leaver(1, 1), "critical"),
    ("backups.fresh", backups(("Completed", 2 * H), ("Completed", 20 * H)), "ok"),
    ("backups.fresh", backups(("Completed", 2 * H), ("Completed", 30 * H)), "warning"),
    ("backups.fresh", backups(("Completed", 2 * H), ("Completed", 60 * H)), "critical"),
    ("backups.last_run", backups(("Completed", 2 * H), ("Completed", 3 * H)), "ok"),
    ("backups.last_run", backups(("Completed", 2 * H), ("Failed", 2 * H)), "warning"),
    ("backups.last_run", backups(("Failed", 2 * H), ("Failed", 2 * H)), "critical"),
    ("backups.bucket", bucket(), "ok"),
    ("backups.bucket", bucket(slow="0.000001"), "warning"),
    ("backups.bucket", bucket(exists=False), "critical"),
    ("users.database", users_db({"alice": user()}), "ok"),
    ("users.database", users_db({"alice": user(password="")}), "warning"),
    ("users.database", users_db("users: [unclosed"), "critical"),
    ("users.database", users_db(None), "critical"),
    ("users.workspaces", users_with(["alice"], {}, alice=user()), "ok"),
    ("users.workspaces", users_with([], {"alice": ("onboarding", None)}, alice=user()), "warning"),
    ("users.workspaces", users_with([], {"alice": ("active", None)}, alice=user()), "critical"),
    ("users.leavers", users_with(["alice"], {"bob": ("terminated", H)}, alice=user(), bob=user(True)), "ok"),
    ("users.leavers", users_with([], {"bob": ("terminated", timedelta(minutes=1))}, bob=user()), "warning"),
    ("users.leavers", users_with([], {"bob": ("terminated", H)}, bob=user()), "critical"),
]


@pytest.mark.parametrize("check,setup,expected", CASES,
                         ids=[f"{c}-{e}-{i}" for i, (c, _, e) in enumerate(CASES)])
def test_check(health_env, monkeypatch, tmp_path, check, setup, expected):
    env = {**health_env, "monkeypatch": monkeypatch, "tmp_path": tmp_path}
    setup(env)
    get_settings.cache_clear()
    try:
        checks, _ = observe()
    finally:
        kube_adapter.reset_connections()
    assert check in checks, f"no {check} check among {sorted(checks)}"
    got = checks[check]
    assert got.status.value == expected, got
    assert got.message


def test_no_certificate_check_without_the_crd(health_env):
    try:
        health_env["kube"].delete("CustomResourceDefinition", None, "certificates.cert-manager.io")
    except Exception:  # noqa: BLE001
        pass
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        checks, observed = observe()
        if observed.certificates is None:
            break
        time.sleep(0.2)
    assert observed.certificates is None
    assert "certificates" not in checks
