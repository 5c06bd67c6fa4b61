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
import hashlib
import os
import secrets
import subprocess
import threading
import time
from datetime import datetime, timezone

import pytest

from tasks.cluster import kube as kube_adapter
from tasks.cluster.localnode import envtest
from tasks.cluster.localnode import prefectserver as localpg
from tasks.core.names import LEDGER_SELECTOR
from tasks.core.settings import get_settings
from tasks.dr import plan
from tasks.people import usersdb
from tasks.people.ledger import index_manifest, to_manifest
from tasks.people.record import Record, State
from tasks.platform import credentials
from tasks.platform.releases import HR_GATEWAY_SECRET
from tests.fixtures.backup import add_workspace
from tests.fixtures.kube import mark_deployment_available
from tests.fixtures.storage import JobKubelet, tree_state

pytestmark = pytest.mark.usefixtures("prefect_server", "helm_bin")

# Authelia's schema (internal/storage/migrations/postgres/V0001.Initial_Schema.up.sql, v4.38):
# the table its TOTP registrations live in.
TOTP_SCHEMA = """
CREATE TABLE IF NOT EXISTS totp_configurations (
    id SERIAL CONSTRAINT totp_configurations_pkey PRIMARY KEY,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_used_at TIMESTAMP WITH TIME ZONE NULL DEFAULT NULL,
    username VARCHAR(100) NOT NULL,
    issuer VARCHAR(100),
    algorithm VARCHAR(6) NOT NULL DEFAULT 'SHA1',
    digits INTEGER NOT NULL DEFAULT 6,
    period INTEGER NOT NULL DEFAULT 30,
    secret BYTEA NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS totp_configurations_username_key ON totp_configurations (username);
"""
PEOPLE = {"alice": "active", "bob": "active", "carol": "terminated"}
LEFT_AT = datetime(2026, 11, 20, 17, 0, tzinfo=timezone.utc)


def psql(pg: localpg.Postgres, db: str, sql: str) -> str:
    return subprocess.run([str(localpg.PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", localpg.DB_USER,
                           "-d", db, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql], check=True, capture_output=True,
                          text=True, env={**os.environ, "PGPASSWORD": pg.password}).stdout


def db_url(pg: localpg.Postgres, db: str) -> str:
    return f"postgresql://{localpg.DB_USER}:{pg.password}@127.0.0.1:{pg.port}/{db}"


def seal(key: str, plaintext: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    return nonce + AESGCM(hashlib.sha256(key.encode()).digest()).encrypt(nonce, plaintext, None)


def unseal(key: str, sealed: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(hashlib.sha256(key.encode()).digest()).decrypt(sealed[:12], sealed[12:], None)


def _deployments_available(kube, ns: str, stop: threading.Event) -> None:
    """Play controller + kubelet for the workspace Deployments of the recovered cluster."""
    while not stop.is_set():
        try:
            for dep in kube.list("Deployment", ns, "app.kubernetes.io/part-of=vibecode"):
                status = dep.get("status") or {}
                if (status.get("observedGeneration") != dep["metadata"]["generation"]
                        or status.get("replicas", 0) != dep["spec"].get("replicas", 1)):
                    mark_deployment_available(kube, ns, dep["metadata"]["name"])
        except Exception:  # noqa: BLE001 - the namespace does not exist yet
            pass
        time.sleep(0.2)


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


def _source_platform(kube, ns, pns, settings, postgres) -> dict:
    """The platform Secrets, people, a leaver, TOTP registrations and Prefect's stand-in rows."""
    values = credentials.generate(list(credentials.PLATFORM_SECRET_KEYS), secrets.token_urlsafe)
    values["restic-password"] = settings.backup.restic_password.get_secret_value()  # what the Jobs use
    kube.create(credentials.platform_secret(settings.platform.secret_name, pns, values))
    kube.create(credentials.hr_gateway_secret(HR_GATEWAY_SECRET, pns, values))
    kube.create(credentials.backup_secret(settings.backup.secret, ns, {
        **values, "s3-access-key-id": settings.backup.s3_access_key_id.get_secret_value(),
        "s3-secret-access-key": settings.backup.s3_secret_access_key.get_secret_value()}))
    users = {u: {"displayname": u.title(), "email": f"{u}@example.com", "groups": ["developers"],
                 "disabled": state != "active", "password": f"$argon2id$v=19$m=65536,t=3,p=4${u}"}
             for u, state in PEOPLE.items()}
    kube.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                 "metadata": {"name": settings.identity.authelia_users_secret, "namespace": pns},
                 "stringData": {usersdb.USERS_KEY: usersdb.dump({"users": users})}})
    for n, (user, state) in enumerate(PEOPLE.items()):
        rec = Record(user, f"E{n}", state=State(state), events=(f"evt-{n}",),
                     terminated_at=LEFT_AT if state == "terminated" else None)
        kube.create(to_manifest(rec, pns))
        kube.create(index_manifest(f"E{n}", user, pns))
    totp = {u: secrets.token_bytes(20) for u in PEOPLE}
    psql(postgres, "postgres", "DROP DATABASE IF EXISTS authelia_src")
    psql(postgres, "postgres", "DROP DATABASE IF EXISTS prefect_src")
    psql(postgres, "postgres", "CREATE DATABASE authelia_src")
    psql(postgres, "postgres", "CREATE DATABASE prefect_src")
    psql(postgres, "authelia_src", TOTP_SCHEMA)
    for user, raw in totp.items():
        sealed = seal(values["authelia-storage-encryption-key"], raw).hex()
        psql(postgres, "authelia_src", f"INSERT INTO totp_configurations (username, issuer, secret) "
                                       f"VALUES ('{user}', 'vibecode.dev', '\\x{sealed}'::bytea)")
    psql(postgres, "prefect_src", "CREATE TABLE flow_run (id uuid PRIMARY KEY, name text, state text); "
                                  "INSERT INTO flow_run VALUES (gen_random_uuid(), 'nightly', 'COMPLETED'), "
                                  "(gen_random_uuid(), 'onboard-alice', 'COMPLETED')")
    return {"values": values, "totp": totp}


def _rows(pg, db, table, order="id") -> list[str]:
    return psql(pg, db, f"SELECT * FROM {table} ORDER BY {order}").splitlines()


def _ledger(kube, pns) -> dict:
    from tasks.core.names import EMPLOYEE_INDEX_SELECTOR

    cms = kube.list("ConfigMap", pns, LEDGER_SELECTOR) + kube.list("ConfigMap", pns, EMPLOYEE_INDEX_SELECTOR)
    return {c["metadata"]["name"]: plan.clean_configmap(c) for c in cms}


def _secret(kube, ns, name) -> dict:
    return (kube.get("Secret", ns, name) or {}).get("data") or {}


def test_a_platform_is_recovered_on_an_empty_cluster_from_s3_alone_and_a_killed_recovery_resumes(
        kube, namespaces, backup_settings, job_kubelet, postgres, tmp_path, monkeypatch,
        second_cluster, new_postgres):
    from flows.backup import backup_workspaces
    from flows.platform_backup import backup_platform
    import flows.recover as recover

    ns, pns = namespaces
    s = backup_settings
    source = _source_platform(kube, ns, pns, s, postgres)
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
    deployments = threading.Thread(target=_deployments_available, args=(kube2, ns, stop), daemon=True)
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

    # -- a third run finds everything done and changes nothing -----------------------------
    versions = {n: c["metadata"]["resourceVersion"] for n, c in
                {c["metadata"]["name"]: c for c in kube2.list("ConfigMap", pns)}.items()}
    again = recover.recover_platform(url, bootstrap=False)
    assert {r["outcome"] for r in again.rows if r["what"] != "backup set"} <= {"done earlier", "left"}
    assert {c["metadata"]["name"]: c["metadata"]["resourceVersion"] for c in kube2.list("ConfigMap", pns)} == versions
    print(f"recovery of {len(before)} workspaces: {seconds:.1f} s")

