"""One platform day on the real one-node cluster, every process on the real components.

20 hires arrive through the HR API (signed webhooks to the gateway on loopback); each becomes
an identity in Authelia's users Secret, a ledger entry, a workspace release and a real
code-server pod. The nightly backup runs a real restic pod per workspace into SeaweedFS on
the node's address. Some people never open their workspace: the reaper reads code-server's
own /healthz through each Service (the others got real requests, so code-server beats for
them), warns the idle owners by email and stops them on its next run, the pods really go.
The health flow counts workspaces by state and pushes to a real Pushgateway, whose /metrics
is scraped. One person leaves (a signed webhook again): access ends, the final backup runs
as a real pod, and a restore of it comes back byte-identical.

Only the reaper's clock is injected (its ``now``), so that "idle for ten minutes" costs none.
Idle and active are told apart by code-server's real heartbeats: the active ones are beaten
a while after the idle ones started, and ``now`` is chosen between the two.

Prefect runs on PostgreSQL (tests/fixtures/postgres.py), the database a team runs: the SQLite
test server answered 503 ("database is locked") to some of the 20 concurrent hires here while
the machine was loaded, which is the very limit the operations issue names.

How the gateway's runs execute, honestly: no worker process runs here (20 worker subprocesses
beside 20 editors do not fit 2 cores). The gateway creates each flow run on the real Prefect
server; the test reads that run back and executes it, concurrently, with Prefect's own engine
(``run_flow(flow, flow_run=<the run>, parameters=<its stored parameters>)``, what a process
worker runs in its subprocess), and reads the final states back from the server.

Measured here (2026-12-02, 2 cores shared with other work): the day 462 s (hires 99-277 s, nightly
backup 140-183 s, reaper 16 s, health 3-4 s, termination 20-29 s, restore 12 s), 20 code-server
pods Ready at once; the whole test with node and Prefect-on-PostgreSQL start-up about 10 min.

Two cores hold 20 editors because the workspace requests are lowered in settings
(``VIBECODE_WORKSPACE__CPU_REQUEST=50m``, memory 256Mi; the chart's default 500m would fit 3);
Authelia's image cannot be had here, so its Deployment is kept at zero replicas and its
``/api/health`` is the loopback stand-in (tests/fixtures/health.py).
"""

from __future__ import annotations

import base64
import contextvars
import http.client
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from email.utils import parseaddr
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from flows.backup import backup_workspaces
from flows.health import check_platform_health
from flows.offboarding import offboard_user
from flows.onboarding import onboard_user
from flows.reaper import reap_idle_workspaces
from flows.restore import restore_workspace
from tasks.backup.status import Outcome
from tasks.cluster import helm
from tasks.cluster.limits import ensure_concurrency_limits
from tasks.cluster.localnode import node as node_harness
from tasks.core.settings import Settings, get_settings
from tasks.core.timefmt import parse_time
from tasks.people.ledger import Ledger
from tests.fixtures.gateway import flow_runs, gateway_settings, register_hr_deployments, start_gateway
from tests.fixtures.identity import authelia_deployment_manifest
from tests.fixtures.node import pv_dir, wait_for
from tests.fixtures.people import event
from tests.fixtures.reaper import rows
from tests.fixtures.storage import make_tree, restic_for, tree_state

# The node may first be queued behind another run (tasks/cluster/localnode/node.py), and the day
# itself takes about a quarter of an hour on 2 cores: past the suite's 900 s default.
pytestmark = [pytest.mark.node, pytest.mark.timeout(3000), pytest.mark.usefixtures("node_cluster", "helm_bin")]

PEOPLE = [f"dev{chr(ord('a') + i)}" for i in range(20)]
IDLE = {"devc", "devf", "devi", "devl", "devo", "devr"}  # never open their workspace today
LEAVER = "devb"  # active all day, then terminated
IDLE_TIMEOUT, LEAD = 600, 60  # seconds (settings.reaper), so that the injected clock stays near the real one
CODE_SERVER = "app.kubernetes.io/name=code-server"


def _hire(user: str, i: int) -> dict:
    return event(event_id=f"evt-day-hire-{user}", employee_id=f"D{i:04d}", email=f"{user}@example.com",
                 given_name="Dev", family_name=user.title(), username=user)


def _users(kube, ns) -> dict:
    from tasks.people.identity.filedb import USERS_KEY

    secret = kube.get("Secret", ns, get_settings().identity.authelia_users_secret)
    return yaml.safe_load(base64.b64decode(secret["data"][USERS_KEY]))["users"]


def _pods(kube, ns, user: str | None = None) -> list[dict]:
    sel = CODE_SERVER + (f",vibecode.dev/user={user}" if user else "")
    return [p for p in kube.list("Pod", ns, sel) if not p["metadata"].get("deletionTimestamp")]


def _ready(pod: dict) -> bool:
    return {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions") or []}.get("Ready") == "True"


def _base_url(kube, ns, user: str) -> str:
    svc = kube.get("Service", ns, f"ws-{user}")
    return f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"


def _get(url: str, path: str) -> tuple[int, bytes]:
    """One request on its own connection, closed at once (an open one keeps code-server beating)."""
    host, _, port = url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _available_since(kube, ns, user: str) -> datetime:
    dep = kube.get("Deployment", ns, f"ws-{user}")
    (cond,) = [c for c in dep["status"]["conditions"] if c["type"] == "Available" and c["status"] == "True"]
    at = parse_time(cond["lastTransitionTime"])
    assert at is not None
    return at


def _execute(run_id: str):
    """Run one gateway-created flow run to its end in this process, as a worker would; return
    (its result or the exception, the run re-read from the server)."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    flows = {"onboard-user": onboard_user, "offboard-user": offboard_user}
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        name = client.read_deployment(run.deployment_id).name
        try:
            result = run_flow(flows[name], flow_run=run, parameters=run.parameters, return_type="result")
        except Exception as exc:  # noqa: BLE001 - reported by the caller beside the run's final state
            result = exc
        return result, client.read_flow_run(run_id)


def _execute_all(run_ids: list[str]) -> list:
    with ThreadPoolExecutor(max_workers=len(run_ids)) as pool:  # each thread in a copy of this context
        futures = [pool.submit(contextvars.copy_context().run, _execute, r) for r in run_ids]
        return [f.result() for f in futures]


def _metrics(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset((k, v) for k, v in s.labels.items() if k in ("state", "workspace", "check"))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _snapshots(settings, user: str) -> list[dict]:
    return json.loads(restic_for(settings, user).run(["snapshots", "--json"]).stdout)


def _chown(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        os.lchown(dirpath, 1000, 1000)
        for name in dirnames + filenames:
            os.lchown(Path(dirpath) / name, 1000, 1000)


@pytest.fixture
def day(node_cluster, node_kube, node_namespace, node_backup_settings, smtp_inbox, pushgateway, authelia_health,
        prefect_pg, monkeypatch):
    from tasks.people.identity.filedb import USERS_KEY

    ns = node_namespace
    for k, v in {
        "VIBECODE_READY_POLL_SECONDS": "1",
        "VIBECODE_WORKSPACE__READY_TIMEOUT_SECONDS": "900",
        "VIBECODE_WORKSPACE__CPU_REQUEST": "50m", "VIBECODE_WORKSPACE__MEMORY_REQUEST": "256Mi",
        "VIBECODE_WORKSPACE__CPU_LIMIT": "1", "VIBECODE_WORKSPACE__MEMORY_LIMIT": "1Gi",
        "VIBECODE_DEPARTMENT_GROUPS": '{"engineering": ["engineering"]}',
        "VIBECODE_HR_ALLOWED_GROUPS": '["developers", "engineering", "users"]',
        "VIBECODE_REAPER__IDLE_TIMEOUT_SECONDS": str(IDLE_TIMEOUT),
        "VIBECODE_REAPER__WARNING_LEAD_SECONDS": str(LEAD),
        "VIBECODE_PUSHGATEWAY_URL": pushgateway.url,
        "VIBECODE_AUTHELIA_HEALTH_URL": f"{authelia_health.url}/api/health",
        "VIBECODE_HEALTH_COMPONENTS": "[]",  # nothing of the platform chart runs: this is the pieces a day needs
        "VIBECODE_METRICS_ENV": "day", "VIBECODE_METRICS_CLUSTER": "node",
    }.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    s = get_settings()
    node_kube.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": s.identity.authelia_users_secret, "namespace": ns},
                      "stringData": {USERS_KEY: "users: {}\n"}})
    authelia = authelia_deployment_manifest(ns, s.identity.authelia_deployment)
    authelia["spec"]["replicas"] = 0
    node_kube.create(authelia)
    # A day needs two volumes per person and one for the restore (earlier tests used some).
    node_harness.ensure_volumes(node_cluster, 2 * len(PEOPLE) + 2, f"local-pv-day-{ns}")
    with prefect_pg.settings():  # the team's Prefect server, on PostgreSQL (see the docstring)
        ensure_concurrency_limits(Settings())  # the tag limits bootstrap creates
        deployments = register_hr_deployments()
        gw = start_gateway(*gateway_settings(platform_namespace=ns, namespace=ns))
        try:
            yield {"ns": ns, "s": s, "gw": gw, "inbox": smtp_inbox, "pushgateway": pushgateway,
                   "deployments": deployments, "prefect": prefect_pg}
        finally:
            gw.stop()


def test_a_platform_day_hires_backs_up_reaps_checks_health_offboards_and_restores(node_cluster, node_kube, day,
                                                                                  monkeypatch):
    with day["prefect"].settings():  # again here: not relying on how pytest runs fixture generators
        _a_day(node_cluster, node_kube, day, monkeypatch)


def _a_day(node_cluster, node_kube, day, monkeypatch) -> None:
    kube, ns, gw, inbox, hr_deployments = node_kube, day["ns"], day["gw"], day["inbox"], day["deployments"]
    took: dict[str, float] = {}
    t0 = mark = time.monotonic()

    def lap(step: str) -> None:
        nonlocal mark
        took[step] = round(time.monotonic() - mark, 1)
        print(f"\n[day] {step}: {took[step]} s", flush=True)
        mark = time.monotonic()

    # -- 09:00 twenty hires through the HR API ---------------------------------------------
    answers = [gw.post_event(json.dumps(_hire(u, i)).encode()) for i, u in enumerate(PEOPLE)]
    assert [a.status_code for a in answers] == [202] * len(PEOPLE), [a.text for a in answers if a.status_code != 202]
    run_ids = [a.json()["flow_run_id"] for a in answers]
    assert len(set(run_ids)) == len(PEOPLE)
    onboard_runs = {str(r.id) for r in flow_runs(hr_deployments["onboard-user/onboard-user"])}
    assert set(run_ids) <= onboard_runs  # the gateway created them on the onboarding deployment
    hired = _execute_all(run_ids)
    lap("20 hires")

    for (result, run), user in zip(hired, PEOPLE, strict=True):
        assert run.state.is_completed(), f"{user}: {run.state.name} {run.state.message} {result!r}"
        assert result.username == user and not result.replay, result
    users = _users(kube, ns)
    assert sorted(users) == sorted(PEOPLE)
    assert all(users[u]["email"] == f"{u}@example.com" and not users[u].get("disabled") for u in PEOPLE)
    ledger = Ledger()
    for u in PEOPLE:
        rec = ledger.get(u)
        assert rec is not None and rec.state == "active" and f"evt-day-hire-{u}" in rec.events, rec
        assert helm.status(f"ws-{u}", ns) is not None, u
    assert sorted(parseaddr(m["To"])[1] for m in inbox.messages) == sorted(f"{u}@example.com" for u in PEOPLE)  # welcome emails
    pods = _pods(kube, ns)
    assert len(pods) == len(PEOPLE) and all(_ready(p) for p in pods), [p["metadata"]["name"] for p in pods]
    assert {p["spec"]["nodeName"] for p in pods} == {node_harness.NODE_NAME}
    peak_pods = len(pods)
    (c,) = pods[0]["spec"]["containers"]
    assert c["resources"]["requests"] == {"cpu": "50m", "memory": "256Mi"}

    # -- the day's work lands in the workspaces --------------------------------------------
    for u in PEOPLE:
        work = pv_dir(node_cluster, kube, ns, f"ws-{u}-workspace")
        (work / "notes.md").write_text(f"{u}'s notes\n" * 100)
        if u == LEAVER:
            make_tree(work, big_bytes=2 << 20)
        _chown(work)

    # -- 02:00 the nightly backup: a restic pod per workspace, into SeaweedFS ------------------
    nightly = backup_workspaces()
    lap("nightly backup")

    assert nightly.outcome is Outcome.COMPLETED, nightly
    by_user = {w.username: w for w in nightly.workspaces}
    assert sorted(by_user) == sorted(PEOPLE)
    for u, w in by_user.items():
        assert w.outcome is Outcome.COMPLETED and w.snapshot_id and w.verified, w
        assert [snap["id"] for snap in _snapshots(day["s"], u)] == [w.snapshot_id], u  # in SeaweedFS
    jobs = kube.list("Job", ns, "app.kubernetes.io/component=backup")
    assert len(jobs) == len(PEOPLE) and all(j["status"].get("succeeded") == 1 for j in jobs)
    lap("snapshots listed")

    # -- people at work: real requests make code-server beat; the idle ones get none ------------
    idle_since = max(_available_since(kube, ns, u) for u in IDLE)
    wait = (idle_since + timedelta(seconds=LEAD + 30) - datetime.now(timezone.utc)).total_seconds()
    if wait > 0:  # the active ones' heartbeats must be clearly newer than the idle ones' start
        time.sleep(wait)
    urls = {u: _base_url(kube, ns, u) for u in PEOPLE}
    for u in set(PEOPLE) - IDLE:
        assert _get(urls[u], "/")[0] < 500, u  # the editor, or its login page: either way a beat
    beats = {u: json.loads(_get(urls[u], "/healthz")[1])["lastHeartbeat"] for u in PEOPLE}
    assert all(beats[u] == 0 for u in IDLE) and all(beats[u] > 0 for u in set(PEOPLE) - IDLE), beats
    monkeypatch.setenv("VIBECODE_REAP_PROBE_URLS", json.dumps(urls))  # the Services' ClusterIPs (no cluster DNS here)
    get_settings.cache_clear()

    # -- the reaper: warned, then stopped ------------------------------------------------------
    now1 = idle_since + timedelta(seconds=IDLE_TIMEOUT - LEAD + 5)
    welcomes = len(inbox.messages)
    first = rows(reap_idle_workspaces(now=now1))
    assert {u for u, r in first.items() if r.action == "warn"} == IDLE, {u: (r.action, r.reason) for u, r in first.items()}
    assert all(first[u].action == "keep" for u in set(PEOPLE) - IDLE), first
    assert sorted(parseaddr(m["To"])[1] for m in inbox.messages[welcomes:]) == sorted(f"{u}@example.com" for u in IDLE)
    assert len(_pods(kube, ns)) == len(PEOPLE)  # a warning stops nothing

    second = rows(reap_idle_workspaces(now=now1 + timedelta(seconds=LEAD + 1)))
    assert {u for u, r in second.items() if r.action == "stop"} == IDLE, {u: (r.action, r.reason) for u, r in second.items()}
    assert all(second[u].action == "keep" for u in set(PEOPLE) - IDLE), second
    for u in IDLE:
        dep = kube.get("Deployment", ns, f"ws-{u}")
        assert dep["spec"]["replicas"] == 0 and dep["metadata"]["annotations"]["vibecode.dev/stop-reason"].startswith("idle")
    wait_for("the idle editors' pods are gone", lambda: {p["metadata"]["labels"]["vibecode.dev/user"]
                                                         for p in _pods(kube, ns)} == set(PEOPLE) - IDLE, timeout=120)
    for u in IDLE:  # the volume and the work stay
        assert (pv_dir(node_cluster, kube, ns, f"ws-{u}-workspace") / "notes.md").read_text() == f"{u}'s notes\n" * 100
    lap("reaper: warn, stop")

    # -- the health run: counts by state, pushed to the Pushgateway ----------------------------
    def health(running: int, stopped: int, enabled: int, disabled: int) -> None:
        state = check_platform_health(return_state=True)
        assert state.is_completed(), state.message
        report = state.result()
        assert report.sinks["pushgateway"].startswith("ok"), report.sinks
        gauges = {(g.name, g.labels.get("state")): g.value for g in report.gauges if g.name in ("workspaces", "users")}
        assert gauges == {("workspaces", "running"): running, ("workspaces", "stopped"): stopped,
                          ("workspaces", "dormant"): 0, ("users", "enabled"): enabled,
                          ("users", "disabled"): disabled}, report.table()
        got = _metrics(day["pushgateway"].metrics())  # what Prometheus would scrape

        def sample(name, **labels):
            return got.get((name, frozenset(labels.items())))

        assert sample("vibecode_workspaces", state="running") == running
        assert sample("vibecode_workspaces", state="stopped") == stopped
        assert sample("vibecode_workspaces", state="dormant") == 0
        assert sample("vibecode_users", state="enabled") == enabled
        assert sample("vibecode_users", state="disabled") == disabled
        for u in PEOPLE:
            assert sample("vibecode_backup_age_seconds", workspace=u) is not None, u
        for c in report.checks:
            assert sample("vibecode_health_check_status", check=c.name) == c.status.rank, c

    active = len(PEOPLE) - len(IDLE)
    health(running=active, stopped=len(IDLE), enabled=len(PEOPLE), disabled=0)
    lap("health")

    # -- 17:00 one person leaves: access ends, the final backup runs --------------------------
    work = pv_dir(node_cluster, kube, ns, f"ws-{LEAVER}-workspace")
    (work / "handover.md").write_text("everything is in src/\n")
    _chown(work)
    before = tree_state(work)
    leave = event(event_id=f"evt-day-leave-{LEAVER}", type_="employee.terminated", employee_id="D0001",
                  email=f"{LEAVER}@example.com", given_name="Dev", family_name=LEAVER.title(), username=LEAVER)
    answer = gw.post_event(json.dumps(leave).encode())
    assert answer.status_code == 202 and answer.json()["deployment"] == "offboard-user/offboard-user", answer.text
    ((left, run),) = _execute_all([answer.json()["flow_run_id"]])
    lap("termination")

    assert run.state.is_completed(), f"{run.state.name} {run.state.message} {left!r}"
    assert left.identity == "disabled" and _users(kube, ns)[LEAVER]["disabled"] is True, left
    assert left.workspace == "scaled to 0" and kube.get("Deployment", ns, f"ws-{LEAVER}")["spec"]["replicas"] == 0
    assert left.backup.startswith("Completed") and "verified" in left.backup, left.backup
    assert left.deletion.startswith("defer"), left.deletion  # within retention: the data is kept
    assert ledger.get(LEAVER).state == "terminated"
    snaps = _snapshots(day["s"], LEAVER)
    # The final backup is a new snapshot on top of the nightly one (retention's keep-daily may
    # already have forgotten that one: both are from today).
    assert snaps[-1]["id"] != by_user[LEAVER].snapshot_id and snaps[-1]["parent"] == by_user[LEAVER].snapshot_id
    jobs = sorted(kube.list("Job", ns, f"app.kubernetes.io/component=backup,vibecode.dev/user={LEAVER}"),
                  key=lambda j: j["metadata"]["creationTimestamp"])
    assert jobs and jobs[-1]["status"].get("succeeded") == 1  # the final backup ran as a real pod
    (pod,) = kube.list("Pod", ns, f"job-name={jobs[-1]['metadata']['name']}")
    assert pod["status"]["phase"] == "Succeeded" and pod["spec"]["nodeName"] == node_harness.NODE_NAME
    wait_for("the leaver's pod is gone", lambda: not _pods(kube, ns, LEAVER), timeout=120)
    health(running=active - 1, stopped=len(IDLE) + 1, enabled=len(PEOPLE) - 1, disabled=1)
    lap("health after the leaver")

    # -- one restore: the final backup, byte for byte -----------------------------------------
    restored = restore_workspace(LEAVER)
    lap("restore")

    assert restored.outcome is Outcome.COMPLETED and restored.snapshot_id == snaps[-1]["id"], restored
    assert tree_state(pv_dir(node_cluster, kube, ns, restored.pvc)) == before
    took["day"] = round(time.monotonic() - t0, 1)
    print(f"\nplatform day: {json.dumps(took)}; code-server pods at once: {peak_pods}")
