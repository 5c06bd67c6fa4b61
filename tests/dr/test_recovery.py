"""Disaster recovery end to end, on real components: a platform on one kube-apiserver (people,
a leaver, TOTP registrations in PostgreSQL, Prefect's own database written by a real Prefect
server, workspace files backed up by the real backup flow) is backed up by
``backup_platform``; a second, empty kube-apiserver and an empty PostgreSQL are recovered by
``recover_platform`` from the S3 store alone, bootstrap included: the charts are installed on
the second API server with helm, from the loopback registry of chart stand-ins
(tests/fixtures/registry.py), as tests/platform/test_bootstrap.py installs them.

Stand-ins, named as such: Authelia's binary does not run here, so its storage is the table
``totp_configurations`` created by this test from Authelia's published PostgreSQL schema
(a stand-in for Authelia's own migration), its ``secret`` column encrypted with the
platform's ``authelia-storage-encryption-key`` (AES-256-GCM over sha256 of the key, as
Authelia does; a stand-in for Authelia's writer). No kubelet or controllers run: the platform's
workloads are marked ready by :class:`tests.fixtures.platform.ControllerStandIn` (a stand-in),
workspace Deployments are marked available, and Jobs are run by the kubelet stand-in
(tests/fixtures/storage.JobKubelet) on this machine, against the real S3 server, as the other
backup tests do. The databases are restored into a PostgreSQL of this machine (standing in
for the one the platform chart runs); the CA is written as cert-manager writes it.
"""

from __future__ import annotations

import base64
import contextvars
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tasks.cluster import kube as kube_adapter
from tasks.cluster.localnode import envtest
from tasks.cluster.localnode import prefectserver as localpg
from tasks.core.errors import PermanentError
from tasks.core.names import EMPLOYEE_INDEX_SELECTOR, LEDGER_SELECTOR
from tasks.core.settings import get_settings
from tasks.dr import plan
from tasks.people import usersdb
from tasks.platform import credentials
from tasks.platform.releases import HR_GATEWAY_SECRET
from tests.fixtures.backup import add_workspace
from tests.fixtures.platform import ControllerStandIn, stand_in_node
from tests.fixtures.recovery import (
    LEFT_AT,
    PEOPLE,
    ca_secret,
    db_url,
    deployments_available,
    prefect_state,
    psql,
    source_platform,
    unseal,
)
from tests.fixtures.storage import JobKubelet, tree_state

pytestmark = pytest.mark.usefixtures("prefect_server", "helm_bin")

def _switch(kubeconfig) -> None:
    os.environ["VIBECODE_KUBECONFIG"] = str(kubeconfig)
    get_settings.cache_clear()
    kube_adapter.reset_connections()


@pytest.fixture
def second_cluster(apiserver):
    """A second, empty kube-apiserver over its own etcd; the flows are pointed back at the
    first one afterwards."""
    env = envtest.start()
    yield env
    _switch(apiserver.kubeconfig)
    env.stop()


@pytest.fixture
def new_postgres():
    pg = localpg.start_postgres(durable=False)
    for db in ("authelia", "prefect_new"):
        psql(pg, "postgres", f"CREATE DATABASE {db}")
    yield pg
    pg.stop()


def _rows(pg, db, table, order="id") -> list[str]:
    return psql(pg, db, f"SELECT * FROM {table} ORDER BY {order}").splitlines()


def _ledger(kube, pns) -> dict:
    cms = kube.list("ConfigMap", pns, LEDGER_SELECTOR) + kube.list("ConfigMap", pns, EMPLOYEE_INDEX_SELECTOR)
    return {c["metadata"]["name"]: plan.clean_configmap(c) for c in cms}


def _secret(kube, ns, name) -> dict:
    return (kube.get("Secret", ns, name) or {}).get("data") or {}


def _artifacts(flow_run_id) -> dict[str, str]:
    """key -> markdown of the artifacts of a flow run and of its subflows (bootstrap's)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter

    with get_client(sync_client=True) as client:
        runs = [flow_run_id] + [r.id for r in client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [flow_run_id]}))]
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=runs)))
    return {a.key: str(a.data) for a in found}


def test_a_platform_is_recovered_and_bootstrapped_on_an_empty_cluster_from_s3_alone_and_a_killed_recovery_resumes(
        kube, namespaces, backup_settings, job_kubelet, postgres, tmp_path, monkeypatch,
        apiserver, second_cluster, new_postgres, upstream):
    import flows.recover as recover
    from flows.backup import backup_workspaces
    from flows.platform_backup import backup_platform

    ns, pns = namespaces
    s = backup_settings
    source = source_platform(kube, ns, pns, s, postgres)
    # The team's Prefect: its history written through its API, read back, the server stopped
    # before the backup; beside the workspace backups (its start is most of its cost).
    beside = ThreadPoolExecutor(max_workers=1)
    prefect_source = beside.submit(contextvars.copy_context().run, prefect_state, postgres, "prefect_src", True)
    # cert-manager's CA, as cert-manager keeps it (this test's own namespace for it).
    cm = f"cm-{pns}"[:63]
    monkeypatch.setenv("VIBECODE_PLATFORM__CERT_MANAGER_NAMESPACE", cm)
    get_settings.cache_clear()
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": cm}})
    ca_annotations = {"cert-manager.io/certificate-name": "vibecode-ca", "cert-manager.io/issuer-name": "vibecode-self",
                      "cert-manager.io/issuer-kind": "ClusterIssuer", "cert-manager.io/issuer-group": "cert-manager.io"}
    ca, ca_fingerprint = ca_secret("vibecode-ca", cm, ca_annotations)
    kube.create(ca)
    trees = {u: add_workspace(kube, ns, job_kubelet, u, tmp_path) for u, st in PEOPLE.items() if st == "active"}
    before = {u: tree_state(d) for u, d in trees.items()}
    assert backup_workspaces().outcome.value == "Completed"

    prefect_before = prefect_source.result()
    platform_password = secrets.token_urlsafe(24)
    monkeypatch.setenv("VIBECODE_RECOVERY__PASSWORD", platform_password)
    monkeypatch.setenv("VIBECODE_RECOVERY__AUTHELIA_DB_URL", db_url(postgres, "authelia_src"))
    monkeypatch.setenv("VIBECODE_RECOVERY__PREFECT_DB_URL", db_url(postgres, "prefect_src"))
    monkeypatch.setenv("VIBECODE_READY_POLL_SECONDS", "0.2")
    get_settings.cache_clear()
    report = backup_platform()
    assert report.outcome.value == "Completed" and report.verified, report
    assert {r.item: r.outcome for r in report.items} == {i.name: "saved" for i in plan.ITEMS}

    original = {"users": _secret(kube, pns, s.identity.authelia_users_secret),
                "platform": _secret(kube, pns, s.platform.secret_name),
                "hr-gateway": _secret(kube, pns, HR_GATEWAY_SECRET),
                "backup": _secret(kube, ns, s.backup.secret), "ledger": _ledger(kube, pns),
                "ca": kube.get("Secret", cm, "vibecode-ca"),
                "totp": _rows(postgres, "authelia_src", "totp_configurations")}

    # -- the cluster is gone: a new API server and an empty PostgreSQL; only S3 is left ----
    # Bootstrap's settings, as tests/fixtures/platform.platform_env has them; what bootstrap
    # sets in the environment (the workspace image of the tests' lock) is put back afterwards.
    for key, value in {"VIBECODE_PLATFORM__LOCK_FILE": str(upstream.lock_file),
                       "VIBECODE_PLATFORM__READY_TIMEOUT_SECONDS": "30", "VIBECODE_PLATFORM__READY_POLL_SECONDS": "0.2",
                       "VIBECODE_WORKSPACE__READY_TIMEOUT_SECONDS": "30",
                       "VIBECODE_RECOVERY__AUTHELIA_DB_URL": db_url(new_postgres, "authelia"),
                       "VIBECODE_RECOVERY__PREFECT_DB_URL": db_url(new_postgres, "prefect_new")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("VIBECODE_WORKSPACE__IMAGE", raising=False)
    _switch(second_cluster.kubeconfig)
    kube2 = kube_adapter.connect()
    s2 = get_settings()
    assert kube2.get("Namespace", None, pns) is None
    # The operator's kubeconfig still names the old cluster; the recovery is told the new one.
    _switch(apiserver.kubeconfig)
    stand_in_node(kube2, ["docker.io/library/vibecode-ops:0.1.0"])  # the HR gateway's image, built here
    scratch = tmp_path / "kubelet2"
    scratch.mkdir()
    kubelet2 = JobKubelet(kube2, ns, scratch)
    stop = threading.Event()
    deployments = threading.Thread(target=deployments_available, args=(kube2, ns, stop), daemon=True)
    deployments.start()
    # The platform's workloads; the workspace namespace is left to the Job kubelet, which runs
    # the restore Jobs for real (the controller stand-in would mark them done unrun).
    controllers = ControllerStandIn(kube2, {pns, cm, s2.platform.envoy_gateway_namespace, s2.platform.ops_namespace})
    url = f"s3:{s.backup.s3_endpoint}/{s.backup.s3_bucket}/{plan.DEFAULT_PREFIX}"
    try:
        kubelet2.start()  # its watch retries until recovery creates the namespace
        controllers.__enter__()

        # a recovery that dies half-way (after the secrets, the users, bootstrap and the databases)
        def killed(*_a, **_k):
            raise RuntimeError("injected: the recovery process died here")

        real_restore_ledger = recover.restore_ledger
        monkeypatch.setattr(recover, "restore_ledger", killed)
        died = recover.recover_platform(url, existing_kubeconfig=second_cluster.kubeconfig, return_state=True)
        assert died.is_failed() and "injected" in str(died.message), died
        progress = kube2.get("ConfigMap", pns, s.recovery.progress_configmap)["data"]
        assert set(progress) == {"namespaces", "platform-secrets", "users-database", "bootstrap", "authelia-db",
                                 "prefect-db"}
        assert _ledger(kube2, pns) == {}
        monkeypatch.setattr(recover, "restore_ledger", real_restore_ledger)
        # A new Prefect on the recovered database (restored by the run that died), read while
        # the rerun recovers the rest.
        prefect_new = beside.submit(contextvars.copy_context().run, prefect_state, new_postgres, "prefect_new")

        started = time.monotonic()
        result = recover.recover_platform(url)  # now the cluster of the settings: the new one
        seconds = time.monotonic() - started
        prefect_after = prefect_new.result()
    finally:
        beside.shutdown(wait=True)
        stop.set()
        controllers.__exit__()
        if getattr(kubelet2, "_thread", None):
            kubelet2.stop()

    # -- bootstrap ran on the new cluster with the recovered Secrets and generated none -------
    shown = _artifacts(died.state_details.flow_run_id)
    boot_row = next(line for line in shown["platform-recovery"].splitlines() if line.startswith("| bootstrap |"))
    assert "platform-secrets: unchanged" in boot_row and "namespaces: unchanged" in boot_row, boot_row
    for component in ("cert-manager", "envoy-gateway", "vibecode-platform", "hr-gateway"):
        assert f"{component}: installed" in boot_row, boot_row
    assert f"SHA-256 fingerprint {ca_fingerprint}" in shown["bootstrap-platform"]  # the recovered CA, presented
    authelia = kube2.get("Deployment", pns, s.identity.authelia_deployment)  # installed by bootstrap's chart
    assert s.platform.secret_name in {(v.get("secret") or {}).get("secretName")
                                      for v in authelia["spec"]["template"]["spec"]["volumes"]}
    assert kube.get("Deployment", pns, s.identity.authelia_deployment) is None  # nothing went to the old one

    outcomes = {r["what"]: r["outcome"] for r in result.rows}
    assert result.set_run_id == report.run_id and not result.failed
    assert set(result.resumed) >= {"platform-secrets", "users-database", "bootstrap", "authelia-db"}
    assert outcomes["bootstrap"] == "done earlier" and outcomes["ledger"] == "restored"
    assert outcomes["workspace alice"] == outcomes["workspace bob"] == "recovered"
    assert outcomes["workspace carol"] == "left"

    # -- everything equals the original ---------------------------------------------------
    assert _secret(kube2, pns, s.identity.authelia_users_secret) == original["users"]
    assert _secret(kube2, pns, s.platform.secret_name) == original["platform"]
    assert _secret(kube2, pns, HR_GATEWAY_SECRET) == original["hr-gateway"]
    assert _secret(kube2, ns, s.backup.secret) == original["backup"]
    ca = kube2.get("Secret", cm, "vibecode-ca")  # the same CA: nobody is asked to trust a new one
    assert ca["type"] == "kubernetes.io/tls" and ca["data"] == original["ca"]["data"]
    assert {k: v for k, v in ca["metadata"]["annotations"].items() if k.startswith("cert-manager.io/")} == ca_annotations
    recovered = credentials.decode(kube2.get("Secret", pns, s.platform.secret_name))
    assert recovered["authelia-storage-encryption-key"] == source["values"]["authelia-storage-encryption-key"]
    assert recovered["restic-password"] == source["values"]["restic-password"]
    assert _ledger(kube2, pns) == original["ledger"]
    assert _rows(new_postgres, "authelia", "totp_configurations") == original["totp"]
    assert prefect_after == prefect_before  # deployments, schedules, runs and their state histories
    assert len(prefect_before["flow_runs"]) == 3 and len(prefect_before["deployments"]) == 1
    for user, raw in source["totp"].items():  # readable with the recovered key: nobody enrols again
        sealed = bytes.fromhex(psql(new_postgres, "authelia",
                                    f"SELECT encode(secret, 'hex') FROM totp_configurations "
                                    f"WHERE username = '{user}'").strip())
        assert unseal(recovered["authelia-storage-encryption-key"], sealed) == raw
    for user, state in before.items():
        assert tree_state(kubelet2.volumes[f"ws-{user}-workspace"]) == state, user
        dep = kube2.get("Deployment", ns, f"ws-{user}")
        assert dep["spec"]["replicas"] == 1
    users = usersdb.load(base64.b64decode(original["users"][usersdb.USERS_KEY]).decode())["users"]
    assert users["carol"]["disabled"] is True
    assert kube2.get("Deployment", ns, "ws-carol") is None
    carol = kube2.get("ConfigMap", pns, "vibecode-user-carol")
    assert carol["metadata"]["labels"]["vibecode.dev/state"] == "terminated"
    assert LEFT_AT.strftime("%Y-%m-%dT%H:%M") in str(carol["data"])  # the retention clock, as it was

    # no secret in what the flows returned or showed (their artifacts)
    shown_text = report.model_dump_json() + result.model_dump_json() + "".join(shown.values())
    for value in [*source["values"].values(), platform_password, new_postgres.password, postgres.password]:
        assert value not in shown_text

    # -- a third run finds everything done and changes nothing -----------------------------
    versions = {n: c["metadata"]["resourceVersion"] for n, c in
                {c["metadata"]["name"]: c for c in kube2.list("ConfigMap", pns)}.items()}
    again = recover.recover_platform(url)
    assert {r["outcome"] for r in again.rows if r["what"] not in ("backup set", "target cluster")} <= {
        "done earlier", "left"}
    assert {c["metadata"]["name"]: c["metadata"]["resourceVersion"] for c in kube2.list("ConfigMap", pns)} == versions

    # -- the same recovery pointed at the cluster that still runs the platform: refused, and
    # nothing there changes (no namespace, Secret or ledger record written) ----------------
    _switch(apiserver.kubeconfig)
    live = {(kind, o["metadata"]["name"]): o["metadata"]["resourceVersion"]
            for kind in ("ConfigMap", "Secret") for o in kube.list(kind, pns)}
    with pytest.raises(PermanentError, match=r"already runs a platform \(3 people in its ledger and Authelia's"):
        recover.recover_platform(url)
    assert {(kind, o["metadata"]["name"]): o["metadata"]["resourceVersion"]
            for kind in ("ConfigMap", "Secret") for o in kube.list(kind, pns)} == live
    print(f"recovery of {len(before)} workspaces after bootstrap: {seconds:.1f} s")


def test_a_recovery_killed_by_sigkill_inside_pg_restore_resumes_to_the_same_result(
        kube, namespaces, backup_settings, postgres, tmp_path, monkeypatch, second_cluster, new_postgres):
    """The recovery runs in its own process; while pg_restore of Authelia's database runs, the
    whole process group gets SIGKILL (no cleanup of any kind). The database is as it was
    (one transaction), and a rerun finishes with the originals."""
    import signal
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    from flows.platform_backup import backup_platform
    from flows.recover import recover_platform

    ns, pns = namespaces
    s = backup_settings
    source_platform(kube, ns, pns, s, postgres)
    monkeypatch.setenv("VIBECODE_RECOVERY__PASSWORD", secrets.token_urlsafe(24))
    monkeypatch.setenv("VIBECODE_RECOVERY__AUTHELIA_DB_URL", db_url(postgres, "authelia_src"))
    monkeypatch.setenv("VIBECODE_RECOVERY__PREFECT_DB_URL", db_url(postgres, "prefect_src"))
    get_settings.cache_clear()
    assert backup_platform().outcome.value == "Completed"
    original = {"users": _secret(kube, pns, s.identity.authelia_users_secret), "ledger": _ledger(kube, pns),
                "platform": _secret(kube, pns, s.platform.secret_name),
                "totp": _rows(postgres, "authelia_src", "totp_configurations")}

    _switch(second_cluster.kubeconfig)  # not monkeypatch: its undo would restore this, after the fixture's switch back
    monkeypatch.setenv("VIBECODE_RECOVERY__AUTHELIA_DB_URL", db_url(new_postgres, "authelia"))
    monkeypatch.setenv("VIBECODE_RECOVERY__PREFECT_DB_URL", db_url(new_postgres, "prefect_new"))
    get_settings.cache_clear()
    url = f"s3:{s.backup.s3_endpoint}/{s.backup.s3_bucket}/{plan.DEFAULT_PREFIX}"
    bin_dir, marker = tmp_path / "pgbin", tmp_path / "pg_restore-started"
    bin_dir.mkdir()
    wrapper = bin_dir / "pg_restore"  # pg_restore, started and then held, so the kill lands inside it
    wrapper.write_text(f"#!/bin/sh\ntouch {marker}\nsleep 60\nexec {localpg.PG_BIN / 'pg_restore'} \"$@\"\n")
    wrapper.chmod(0o755)
    code = (f"from flows.recover import recover_platform; "
            f"recover_platform({url!r}, bootstrap=False, workspaces=False)")
    child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL,
                             env={**os.environ, "PYTHONPATH": os.getcwd(), "VIBECODE_RECOVERY__PG_BIN": str(bin_dir),
                                  "PREFECT_API_URL": str(PREFECT_API_URL.value())})
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert child.poll() is None, "the recovery ended before pg_restore started"
            assert time.monotonic() < deadline, "pg_restore never started"
            time.sleep(0.2)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    kube2 = kube_adapter.connect()
    progress = kube2.get("ConfigMap", pns, s.recovery.progress_configmap)["data"]
    assert "platform-secrets" in progress and "authelia-db" not in progress
    assert psql(new_postgres, "authelia", "SELECT to_regclass('totp_configurations')").strip() == ""

    result = recover_platform(url, bootstrap=False, workspaces=False)
    outcomes = {r["what"]: r["outcome"] for r in result.rows}
    assert outcomes["platform-secrets"] == "done earlier" and outcomes["authelia-db"] == "restored"
    assert _rows(new_postgres, "authelia", "totp_configurations") == original["totp"]
    assert _ledger(kube2, pns) == original["ledger"]
    assert _secret(kube2, pns, s.identity.authelia_users_secret) == original["users"]
    assert _secret(kube2, pns, s.platform.secret_name) == original["platform"]


def test_a_recovery_that_would_bootstrap_with_no_kubeconfig_to_name_its_cluster_stops_before_anything(
        monkeypatch, tmp_path, apiserver):
    """Given no kubeconfig, bootstrap makes a KIND cluster of its own: the charts would go there
    and the Secrets to whatever the client found. Refused before the backup is even read (the
    S3 address here answers nothing)."""
    from flows.recover import recover_platform

    with monkeypatch.context() as m:
        m.delenv("VIBECODE_KUBECONFIG", raising=False)
        m.setenv("KUBECONFIG", str(tmp_path / "none"))
        get_settings.cache_clear()
        with pytest.raises(PermanentError, match="bootstrap needs the new cluster's kubeconfig file"):
            recover_platform("s3:http://127.0.0.1:9/nowhere/_platform")
    get_settings.cache_clear()
    kube_adapter.reset_connections()
