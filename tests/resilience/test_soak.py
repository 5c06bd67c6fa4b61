"""The HR soak (issue 19): a seeded stream of hires, updates and terminations of the same
people, with duplicates, out-of-order deliveries and events at the very same moment,
delivered by a thread pool, interleaved with backup and reaper runs, under 10% faults
(API server, helm's own requests, S3) must end in the state a serial, fault-free replay of
the same events reaches on a fresh world: users database, ledger, releases, replicas,
volumes. What "serial replay" means, and what is not compared, is in tests/fixtures/soak.py.

Real kube-apiserver, helm, Prefect server, SMTP server, S3 server and restic; the kubelet
stand-ins of tests/fixtures (Deployments' status, the backup Jobs) play the node. The suite
runs a small stream (``VIBECODE_SOAK_EVENTS``/``_PEOPLE``, default 12 over 3 people: the
CI budget); benchmarks/soak_bench.py runs 200 over 50 with this same test and reads the
row it prints and appends to ``$VIBECODE_SOAK_TABLE``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from datetime import datetime, timezone

import pytest

from tasks.cluster import kube as kube_adapter
from tasks.core.settings import get_settings
from tasks.core.steps import retry_counts
from tests.fixtures.codeserver import HealthzServer, HealthzStandIn
from tests.fixtures.faults import FAILURES, FaultPlan, api_proxy, s3_proxy
from tests.fixtures.kube import _fresh_namespace
from tests.fixtures.soak import (
    deliver,
    differences,
    hr_stream,
    serial_replay,
    stream_shape,
    username,
    welcome_counts,
    world_state,
)

pytestmark = pytest.mark.usefixtures("prefect_server", "helm_bin")

SEED = int(os.environ.get("VIBECODE_SOAK_SEED", "1919"))
EVENTS = int(os.environ.get("VIBECODE_SOAK_EVENTS", "12"))
PEOPLE = int(os.environ.get("VIBECODE_SOAK_PEOPLE", "3"))
SHARE = float(os.environ.get("VIBECODE_SOAK_SHARE", "0.1"))
WORKERS = 4


def _plans() -> tuple[FaultPlan, FaultPlan, FaultPlan]:
    """(API server, helm's requests, S3): as tests/resilience/test_faults.py at SHARE, helm's as
    an API server under load refuses (client-go inside helm retries only those)."""
    api = FaultPlan.failing(SHARE, seed=SEED, retry_after=1)
    helm = FaultPlan({"429": SHARE / 2, "503": SHARE / 2}, seed=SEED + 2, retry_after=1)
    lost = min(0.02, SHARE)
    s3 = FaultPlan({**{k: (SHARE - lost) / len(FAILURES) for k in FAILURES}, "lost_answer": lost},
                   seed=SEED + 1, retry_after=1, hold_seconds=1)
    return api, helm, s3


class _Alive(HealthzStandIn):
    """code-server's /healthz: everyone is at work right now, so the reaper keeps every running
    workspace (a stop would be the reaper's decision, not the events')."""

    def answer(self, user: str) -> dict:
        return {"status": "alive", "lastHeartbeat": int(time.time() * 1000)}


def _second_world(kube, monkeypatch, tmp_path, s3_server, stop: threading.Event):
    """Fresh workspace and platform namespaces, users Secret, bucket and kubelet stand-ins, as
    the ``platform``/``backup_settings``/``job_kubelet`` fixtures make the first."""
    from tasks.people.identity.filedb import USERS_KEY
    from tests.fixtures.identity import authelia_deployment_manifest
    from tests.fixtures.people import _kubelet
    from tests.fixtures.storage import JobKubelet

    ns, pns = _fresh_namespace(kube, "t-soak-ws"), _fresh_namespace(kube, "t-soak-pf")
    monkeypatch.setenv("VIBECODE_NAMESPACE", ns)
    monkeypatch.setenv("VIBECODE_PLATFORM_NAMESPACE", pns)
    monkeypatch.setenv("VIBECODE_S3_BUCKET", f"soak-{ns[-10:]}")
    get_settings.cache_clear()
    s = get_settings()
    kube.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                 "metadata": {"name": s.identity.authelia_users_secret, "namespace": pns},
                 "stringData": {USERS_KEY: "users: {}\n"}})
    kube.create(authelia_deployment_manifest(pns, s.identity.authelia_deployment))
    threading.Thread(target=_kubelet, args=(kube, ns, stop), daemon=True).start()
    jobs = JobKubelet(kube, ns, tmp_path / "kubelet-soak")
    jobs.scratch.mkdir()
    return ns, pns, jobs.start()


def _fill_volumes(jobs, people):
    """Someone's work in every workspace volume (restic refuses an empty snapshot)."""
    for u in people:
        (jobs.claim_dir(f"ws-{u}-workspace") / "notes.md").write_text(f"{u}'s work\n")


@pytest.fixture
def first_world(platform):
    """The ``platform`` fixture's namespaces and inbox, without the secrets it records (a
    failure report shows a test's arguments)."""
    return platform["ns"], platform["pns"], platform["inbox"]


def test_hr_soak_under_faults_ends_as_its_serial_fault_free_replay(
        first_world, kube, apiserver, backup_settings, job_kubelet, s3_server, tmp_path, monkeypatch):
    from flows.backup import backup_workspaces
    from flows.reaper import reap_idle_workspaces

    people = [username(p) for p in range(PEOPLE)]
    stream = hr_stream(SEED, EVENTS, PEOPLE)
    replay = serial_replay(stream)
    shape = stream_shape(stream)
    assert shape["duplicated deliveries"] and shape["overtaken"] and shape["same moment"], shape
    oracle_ns, oracle_pns, inbox = first_world
    secret_name = get_settings().identity.authelia_users_secret

    # The replay: one event at a time in HR's order, no faults, on the fixtures' world.
    _fill_volumes(job_kubelet, people)
    oracle = deliver(replay, workers=1, rounds=0, in_place=3)
    assert not oracle.failed, oracle.failed
    want = world_state(kube, oracle_ns, oracle_pns, secret_name, people)
    want_mail, _ = welcome_counts(inbox)
    inbox.clear()

    # The soak: a world of its own, every request through the fault proxies.
    stop = threading.Event()
    heartbeats = HealthzServer(("127.0.0.1", 0), _Alive)
    threading.Thread(target=heartbeats.serve_forever, daemon=True).start()
    monkeypatch.setenv("VIBECODE_REAP_PROBE_URL", f"http://127.0.0.1:{heartbeats.server_address[1]}/{{username}}")
    ns, pns, jobs = _second_world(kube, monkeypatch, tmp_path, s3_server, stop)
    _fill_volumes(jobs, people)
    api, kubeconfig = api_proxy(apiserver.kubeconfig, tmp_path / "api-proxy")
    s3 = s3_proxy(s3_server.url)
    monkeypatch.setenv("VIBECODE_KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("VIBECODE_S3_ENDPOINT", s3.url)
    get_settings.cache_clear()
    kube_adapter.reset_connections()
    retries_before = sum(retry_counts().values())
    api.plan, helm_plan, s3.plan = _plans()
    api.agent_plans = {"Helm/": helm_plan}
    now = datetime.now(timezone.utc)
    try:
        soak = deliver(stream, workers=WORKERS, every=max(4, EVENTS // 8),
                       side_runs={"backup": backup_workspaces, "reaper": lambda: reap_idle_workspaces(now=now)})
    finally:
        api.plan, api.agent_plans, s3.plan = FaultPlan(), {}, FaultPlan()
        stop.set()
        heartbeats.shutdown()
    try:
        have = world_state(kube, ns, pns, secret_name, people)
    finally:
        api.stop()
        s3.stop()
        jobs.stop()
        s3_server.delete_bucket(f"soak-{ns[-10:]}")
        kube_adapter.reset_connections()
    have_mail, per_event = welcome_counts(inbox)

    diff = differences(want, have)
    duplicates = {"emails per hire event": {e: n for e, n in per_event.items() if n > 1},
                  "deployments": {u: n for u, n in have["deployments per person"].items() if n != 1},
                  "identities": sorted(set(have["users"]) - set(people)),
                  "emails beyond the replay's": {u: n for u, n in have_mail.items() if n > want_mail[u]}}
    faults = api.faults() + s3.faults()
    row = {"seed": SEED, "events": len(stream), "distinct": len(replay), "people": PEOPLE, "share": SHARE, **shape,
           "faults injected": faults, "api requests": api.counts()["requests"], "s3 requests": s3.counts()["requests"],
           "task retries": sum(retry_counts().values()) - retries_before,
           "redelivered": [len(r) for r in soak.rounds[:-1]], "still failing": len(soak.failed),
           "interleaved": dict(Counter(f"{k} {v}" for k, v in soak.interleaved)), "differences": len(diff),
           "duplicates": sum(len(v) for v in duplicates.values()),
           "replay seconds": round(oracle.seconds, 1), "soak seconds": round(soak.seconds, 1)}
    print("\nSOAK TABLE ROW " + json.dumps(row))
    if os.environ.get("VIBECODE_SOAK_TABLE"):
        with open(os.environ["VIBECODE_SOAK_TABLE"], "a") as f:
            f.write(json.dumps({**row, "difference lines": diff[:50], "failing": soak.failed[:20]}) + "\n")

    assert not soak.failed, soak.failed
    assert diff == [], "\n".join(diff)
    assert not any(duplicates.values()), duplicates
    active = [u for u, r in have["ledger"].items() if r["state"] == "active"]
    assert active and all(have_mail[u] >= 1 for u in active), (active, have_mail)
    assert sorted(have["users"]) == sorted(want["users"]) and want["releases"]
    assert faults > 0 and {k for k, _ in soak.interleaved} == {"backup", "reaper"}
