"""reap_idle_workspaces / resume_workspace against real code-server processes on loopback.

The workspaces are Deployments in the real API server; their endpoints are real
code-server 4.139.1 processes (tests/fixtures/codeserver.py), reached through the
injectable ``reap_probe_urls``. No controller runs here, so the test plays the deployment
controller where one would write ``status`` (the Available condition and its transition
time, i.e. when the session started): see :func:`play_controller`.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from flows.reaper import reap_idle_workspaces, resume_workspace
from tasks.core.settings import get_settings
from tasks.reaper.decide import rfc3339
from tasks.reaper.probe import probe_all, probe_one
from tests.fixtures.reaper import add_workspace, owners_secret, play_controller, rows

pytestmark = pytest.mark.usefixtures("prefect_server")
H, M = timedelta(hours=1), timedelta(minutes=1)


@pytest.fixture
def endpoints(monkeypatch, code_servers, kube, namespace, smtp_inbox, free_closed_port):
    """alice (used), bob (nobody used it), erin (a tab held open): three real code-servers.
    carol (exempt) answers from bob's process; dave's endpoint is a closed port."""
    alice, bob, erin = code_servers(3)
    urls = {"alice": alice.url, "bob": bob.url, "carol": bob.url, "erin": erin.url,
            "dave": f"http://127.0.0.1:{free_closed_port}"}
    monkeypatch.setenv("VIBECODE_REAP_PROBE_URLS", json.dumps(urls))
    get_settings.cache_clear()
    owners_secret(kube, get_settings().platform_namespace,  # the users database lives with Authelia
                  {u: f"{u}@example.com" for u in ("alice", "bob", "carol", "dave", "erin")})
    return {"alice": alice, "bob": bob, "erin": erin}


def test_used_kept_unused_warned_then_stopped_exempt_and_unknown_kept_open_tab_by_session_age_resume(
        kube, namespace, endpoints, smtp_inbox):
    ns = namespace
    R = datetime.now(timezone.utc).replace(microsecond=0)
    for user, ann in (("alice", {}), ("bob", {}), ("carol", {"vibecode.dev/reap": "false"}), ("dave", {}),
                      ("erin", {})):
        add_workspace(kube, ns, user, annotations=ann)
    play_controller(kube, ns, "alice", R - 5 * H)
    play_controller(kube, ns, "bob", R - 2 * H + 10 * M)  # up 1h50, nobody ever opened it
    play_controller(kube, ns, "carol", R - 30 * H)
    play_controller(kube, ns, "dave", R - 30 * H)
    play_controller(kube, ns, "erin", R - 11 * H - 50 * M)  # session started 11h50 ago
    endpoints["alice"].use()
    endpoints["erin"].hold_connection()
    bob_pvc = kube.get("PersistentVolumeClaim", ns, "ws-bob-workspace")["metadata"]["uid"]
    assert endpoints["bob"].healthz()["lastHeartbeat"] == 0

    # Dry run: the plan, and nothing written.
    before = {d["metadata"]["name"]: d["metadata"]["resourceVersion"] for d in kube.list("Deployment", ns)}
    plan = reap_idle_workspaces(dry_run=True, now=R)
    assert rows(plan)["bob"].action == "warn" and rows(plan)["erin"].action == "warn"
    assert {d["metadata"]["name"]: d["metadata"]["resourceVersion"] for d in kube.list("Deployment", ns)} == before
    assert smtp_inbox.messages == []

    # Run 1 at R: bob idle 1h50 -> warned (idle); erin 11h50 running -> warned (max session).
    first = rows(reap_idle_workspaces(now=R))
    assert first["alice"].action == "keep" and "active" in first["alice"].reason
    assert first["bob"].action == "warn" and first["bob"].rule == "idle"
    assert first["carol"].action == "keep" and "exempt" in first["carol"].reason
    assert first["dave"].action == "keep" and "probe failed" in first["dave"].reason
    assert first["erin"].action == "warn" and first["erin"].rule == "max-session"
    assert sorted(m["To"] for m in smtp_inbox.messages) == ["bob@example.com", "erin@example.com"]
    assert "stopped at" in smtp_inbox.messages[0]["Subject"]
    bob_ann = kube.get("Deployment", ns, "ws-bob")["metadata"]["annotations"]
    assert bob_ann["vibecode.dev/idle-warned-at"] == rfc3339(R)

    # Run 2, 10 minutes later: warnings too young; nothing stops, no second email.
    second = rows(reap_idle_workspaces(now=R + 10 * M))
    assert {u: r.action for u, r in second.items()} == {u: "keep" for u in second}
    assert len(smtp_inbox.messages) == 2

    # Run 3, 16 minutes after the warning: bob (idle 2h06) and erin (session 12h06) stop.
    third = rows(reap_idle_workspaces(now=R + 16 * M))
    assert third["bob"].action == "stop" and third["bob"].rule == "idle"
    assert third["erin"].action == "stop" and third["erin"].rule == "max-session"
    # erin's tab kept code-server's heartbeat alive the whole time: only the session rule applied.
    assert third["erin"].probe.startswith("alive") and third["erin"].idle_minutes < 100
    assert third["alice"].action == "keep" and third["carol"].action == "keep" and third["dave"].action == "keep"
    for user in ("bob", "erin"):
        dep = kube.get("Deployment", ns, f"ws-{user}")
        ann = dep["metadata"]["annotations"]
        assert dep["spec"]["replicas"] == 0 and ann["vibecode.dev/stopped-at"] == rfc3339(R + 16 * M)
        assert ann["vibecode.dev/stop-reason"].startswith("idle" if user == "bob" else "max-session")
        assert "vibecode.dev/idle-warned-at" not in ann
    assert kube.get("PersistentVolumeClaim", ns, "ws-bob-workspace")["metadata"]["uid"] == bob_pvc  # volume kept
    for user in ("alice", "carol", "dave"):
        assert kube.get("Deployment", ns, f"ws-{user}")["spec"]["replicas"] == 1

    # Resume bob: scaled back, waits for readiness (the controller stand-in answers), marks cleared.
    stop = threading.Event()

    def controller():
        while not stop.is_set():
            dep = kube.get("Deployment", ns, "ws-bob")
            status = dep.get("status") or {}
            if dep["spec"]["replicas"] == 1 and status.get("observedGeneration", 0) < dep["metadata"]["generation"]:
                play_controller(kube, ns, "bob", datetime.now(timezone.utc))
            time.sleep(0.2)

    t = threading.Thread(target=controller, daemon=True)
    t.start()
    try:
        result = resume_workspace("bob")
    finally:
        stop.set()
        t.join(5)
    assert result.was.startswith("stopped at") and "1 of 1" in result.ready
    dep = kube.get("Deployment", ns, "ws-bob")
    ann = dep["metadata"].get("annotations") or {}
    assert dep["spec"]["replicas"] == 1
    assert not {"vibecode.dev/stopped-at", "vibecode.dev/stop-reason", "vibecode.dev/idle-warned-at"} & set(ann)
    assert endpoints["bob"].healthz()["status"] in ("alive", "expired")
    later = rows(reap_idle_workspaces(now=datetime.now(timezone.utc) + M))
    assert later["bob"].action == "keep" and later["erin"].action == "keep"  # erin: stopped by us, not dormant


def test_warning_is_cancelled_by_use(kube, namespace, endpoints, smtp_inbox):
    ns = namespace
    R = datetime.now(timezone.utc).replace(microsecond=0)
    add_workspace(kube, ns, "alice")
    play_controller(kube, ns, "alice", R - 5 * H)
    endpoints["alice"].use()
    # Warned by an earlier run before this use (played: the warning is an hour old).
    kube.annotate("Deployment", ns, "ws-alice", {"vibecode.dev/idle-warned-at": rfc3339(R - H),
                                                 "vibecode.dev/idle-warning": "idle"})
    out = rows(reap_idle_workspaces(now=R + 2 * M))
    assert out["alice"].action == "cancel-warning"
    ann = kube.get("Deployment", ns, "ws-alice")["metadata"].get("annotations") or {}
    assert "vibecode.dev/idle-warned-at" not in ann and kube.get("Deployment", ns, "ws-alice")["spec"]["replicas"] == 1


@pytest.mark.slow
def test_probing_for_more_than_two_minutes_never_renews_the_heartbeat(code_servers):
    """code-server beats on any request but exactly /healthz and while any connection is open;
    the reaper's prober (fresh connection, Connection: close) must do neither."""
    (cs,) = code_servers(1)
    cs.use()  # one real use, then nothing but probes
    first = cs.healthz()["lastHeartbeat"]
    assert first > 0
    url = cs.url + "/healthz"
    started = time.monotonic()
    seen = set()
    statuses = []
    while time.monotonic() - started < 130:
        for p in probe_all({f"u{i}": url for i in range(5)}, concurrency=5, timeout=5).values():
            assert p.ok
            seen.add(int(p.last_heartbeat.timestamp() * 1000))
            statuses.append(p.status)
        time.sleep(2)
    assert seen == {first}, "the reaper's probes renewed code-server's heartbeat"
    assert statuses[-1] == "expired" and "alive" in statuses[:3]
    # The check can fail: a query string on /healthz is a real request, and it beats.
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", cs.port, timeout=10)
    conn.request("GET", "/healthz?probe=1", headers={"Connection": "close"})
    conn.getresponse().read()
    conn.close()
    assert probe_one(url, 5).last_heartbeat.timestamp() * 1000 > first
    assert not probe_one(cs.url + "/healthz?x=1", 5).ok  # and the prober refuses to send one
