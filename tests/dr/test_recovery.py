"""Disaster recovery end to end, on real components: a platform on one kube-apiserver (people,
a leaver, TOTP registrations in PostgreSQL, workspace files backed up by the real backup flow)
is backed up by ``backup_platform``; a second, empty kube-apiserver and an empty PostgreSQL
are recovered by ``recover_platform`` from the S3 store alone.

Stand-ins, named as such: Authelia's binary does not run here, so its storage is the table
``totp_configurations`` created by this test from Authelia's published PostgreSQL schema
(a stand-in for Authelia's own migration), its ``secret`` column encrypted with the
platform's ``authelia-storage-encryption-key`` (AES-256-GCM over sha256 of the key, as
Authelia does; a stand-in for Authelia's writer). Prefect's database is a stand-in table in a
real PostgreSQL database. No kubelet or controllers run: workspace Deployments are marked
available and Jobs are run by the kubelet stand-in (tests/fixtures/storage.JobKubelet), on
this machine, against the real S3 server, as the other backup tests do. Bootstrap is not
run (``bootstrap=False``: the platform charts need pods; its place in the order is in
tests/dr/test_recovery_plan.py).
"""

from __future__ import annotations

import base64
import os
import secrets
import threading
import time

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
from tests.fixtures.backup import add_workspace
from tests.fixtures.recovery import LEFT_AT, PEOPLE, db_url, deployments_available, psql, source_platform, unseal
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


def test_a_platform_is_recovered_on_an_empty_cluster_from_s3_alone_and_a_killed_recovery_resumes(
        kube, namespaces, backup_settings, job_kubelet, postgres, tmp_path, monkeypatch,
        apiserver, second_cluster, new_postgres):
    import flows.recover as recover
    from flows.backup import backup_workspaces
    from flows.platform_backup import backup_platform

    ns, pns = namespaces
    s = backup_settings
    source = source_platform(kube, ns, pns, s, postgres)
    # cert-manager's CA, as cert-manager keeps it (this test's own namespace for it).
    cm = f"cm-{pns}"[:63]
    monkeypatch.setenv("VIBECODE_PLATFORM__CERT_MANAGER_NAMESPACE", cm)
    get_settings.cache_clear()
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": cm}})
    ca_annotations = {"cert-manager.io/certificate-name": "vibecode-ca", "cert-manager.io/issuer-name": "vibecode-self",
                      "cert-manager.io/issuer-kind": "ClusterIssuer", "cert-manager.io/issuer-group": "cert-manager.io"}
    kube.create({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                 "metadata": {"name": "vibecode-ca", "namespace": cm, "annotations": ca_annotations},
                 "data": {k: base64.b64encode(secrets.token_bytes(64)).decode() for k in ("tls.crt", "tls.key", "ca.crt")}})
    trees = {u: add_workspace(kube, ns, job_kubelet, u, tmp_path) for u, st in PEOPLE.items() if st == "active"}
    before = {u: tree_state(d) for u, d in trees.items()}
    assert backup_workspaces().outcome.value == "Completed"

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
                "backup": _secret(kube, ns, s.backup.secret), "ledger": _ledger(kube, pns),
                "ca": kube.get("Secret", cm, "vibecode-ca"),
                "totp": _rows(postgres, "authelia_src", "totp_configurations"),
                "flow_run": _rows(postgres, "prefect_src", "flow_run", "name")}

    # -- the cluster is gone: a new API server and an empty PostgreSQL; only S3 is left ----
    _switch(second_cluster.kubeconfig)
    monkeypatch.setenv("VIBECODE_RECOVERY__AUTHELIA_DB_URL", db_url(new_postgres, "authelia"))
    monkeypatch.setenv("VIBECODE_RECOVERY__PREFECT_DB_URL", db_url(new_postgres, "prefect_new"))
    get_settings.cache_clear()
    kube2 = kube_adapter.connect()
    assert kube2.get("Namespace", None, pns) is None
    scratch = tmp_path / "kubelet2"
    scratch.mkdir()
    kubelet2 = JobKubelet(kube2, ns, scratch)
    stop = threading.Event()
    deployments = threading.Thread(target=deployments_available, args=(kube2, ns, stop), daemon=True)
    deployments.start()
    url = f"s3:{s.backup.s3_endpoint}/{s.backup.s3_bucket}/{plan.DEFAULT_PREFIX}"
    try:
        kubelet2.start()  # its watch retries until recovery creates the namespace

        # a recovery that dies half-way (after the secrets, the users and the databases)
        def killed(*_a, **_k):
            raise RuntimeError("injected: the recovery process died here")

        real_restore_ledger = recover.restore_ledger
        monkeypatch.setattr(recover, "restore_ledger", killed)
        with pytest.raises(RuntimeError, match="injected"):
            recover.recover_platform(url, bootstrap=False)
        progress = kube2.get("ConfigMap", pns, s.recovery.progress_configmap)["data"]
        assert set(progress) == {"namespaces", "platform-secrets", "users-database", "bootstrap", "authelia-db",
                                 "prefect-db"}
        assert _ledger(kube2, pns) == {}
        monkeypatch.setattr(recover, "restore_ledger", real_restore_ledger)

        started = time.monotonic()
        result = recover.recover_platform(url, bootstrap=False)
        seconds = time.monotonic() - started
    finally:
        stop.set()
        if getattr(kubelet2, "_thread", None):
            kubelet2.stop()

    outcomes = {r["what"]: r["outcome"] for r in result.rows}
    assert result.set_run_id == report.run_id and not result.failed
    assert set(result.resumed) >= {"platform-secrets", "users-database", "authelia-db"}
    assert outcomes["ledger"] == "restored"
    assert outcomes["workspace alice"] == outcomes["workspace bob"] == "recovered"
    assert outcomes["workspace carol"] == "left"

    # -- everything equals the original ---------------------------------------------------
    assert _secret(kube2, pns, s.identity.authelia_users_secret) == original["users"]
    assert _secret(kube2, pns, s.platform.secret_name) == original["platform"]
    assert _secret(kube2, ns, s.backup.secret) == original["backup"]
    ca = kube2.get("Secret", cm, "vibecode-ca")  # the same CA: nobody is asked to trust a new one
    assert ca["type"] == "kubernetes.io/tls" and ca["data"] == original["ca"]["data"]
    assert {k: v for k, v in ca["metadata"]["annotations"].items() if k.startswith("cert-manager.io/")} == ca_annotations
    recovered = credentials.decode(kube2.get("Secret", pns, s.platform.secret_name))
    assert recovered["authelia-storage-encryption-key"] == source["values"]["authelia-storage-encryption-key"]
    assert recovered["restic-password"] == source["values"]["restic-password"]
    assert _ledger(kube2, pns) == original["ledger"]
    assert _rows(new_postgres, "authelia", "totp_configurations") == original["totp"]
    assert _rows(new_postgres, "prefect_new", "flow_run", "name") == original["flow_run"]
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

    # no secret in what the flows returned (and so in their artifacts' rows)
    shown = report.model_dump_json() + result.model_dump_json()
    for value in [*source["values"].values(), platform_password, new_postgres.password, postgres.password]:
        assert value not in shown

    # -- a third run finds everything done and changes nothing -----------------------------
    versions = {n: c["metadata"]["resourceVersion"] for n, c in
                {c["metadata"]["name"]: c for c in kube2.list("ConfigMap", pns)}.items()}
    again = recover.recover_platform(url, bootstrap=False)
    assert {r["outcome"] for r in again.rows if r["what"] not in ("backup set", "target cluster")} <= {
        "done earlier", "left"}
    assert {c["metadata"]["name"]: c["metadata"]["resourceVersion"] for c in kube2.list("ConfigMap", pns)} == versions

    # -- the same recovery pointed at the cluster that still runs the platform: refused, and
    # nothing there changes (no namespace, Secret or ledger record written) ----------------
    _switch(apiserver.kubeconfig)
    live = {(kind, o["metadata"]["name"]): o["metadata"]["resourceVersion"]
            for kind in ("ConfigMap", "Secret") for o in kube.list(kind, pns)}
    with pytest.raises(PermanentError, match=r"already runs a platform \(3 people in its ledger and Authelia's"):
        recover.recover_platform(url, bootstrap=False)
    assert {(kind, o["metadata"]["name"]): o["metadata"]["resourceVersion"]
            for kind in ("ConfigMap", "Secret") for o in kube.list(kind, pns)} == live
    print(f"recovery of {len(before)} workspaces: {seconds:.1f} s")



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
