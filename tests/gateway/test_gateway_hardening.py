"""Issue 16 (HR gateway) against the live gateway: uvicorn on loopback, SCIM users in the
ledger ConfigMaps of a real kube-apiserver, runs created on the real Prefect server and
read back from it. One test per defect, named after what must hold; each failed on the
code before the fix (see the closing note of issue 16)."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tasks.gateway import signature
from tasks.people.ledger import Ledger, index_name
from tests.fixtures.gateway import gateway_settings, start_gateway
from tests.fixtures.gateway_http import (
    ENTERPRISE,
    OFFBOARD,
    ONBOARD,
    PATCH_OP,
    all_flow_runs,
    build_request,
    create_run,
    dead_prefect_starter,
    error_log,
    hr_requests,
    raw_request,
    runs_with_key,
    scim_client,
    scim_event_id,
    scim_user,
)

pytestmark = pytest.mark.usefixtures("prefect_server", "helm_bin")

DEACTIVATE = {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "active", "value": False}]}


def hire(event_id: str | None = None, type_: str = "employee.hired", **employee) -> dict:
    n = uuid.uuid4().hex[:8]
    emp = {"employee_id": f"E{n}", "email": f"p{n}@example.com", "given_name": "Alice",
           "family_name": "Liddell", "username": f"p{n}"}
    emp.update(employee)
    return {"event_id": event_id or f"evt-{uuid.uuid4().hex}", "type": type_,
            "occurred_at": "2026-11-28T09:00:00Z", "employee": emp}


def raw(body: dict) -> bytes:
    return json.dumps(body).encode()


def runs_for(hr_deployments, name: str, employee_id: str) -> list:
    return [r for r in all_flow_runs(hr_deployments[name])
            if r.parameters["request"]["employee"]["employee_id"] == employee_id]


# -- People must not keep or regain access they should not have -------------------------------
def test_scim_put_or_patch_leaving_out_active_keeps_a_leaver_out(scim_gateway, hr_deployments):
    """An identity provider replacing a deactivated user's profile (a new phone number)
    without repeating ``active: false``, or removing ``active``, starts no hire."""
    body = scim_user()
    emp = body[ENTERPRISE]["employeeNumber"]
    with scim_client(scim_gateway) as c:
        uid = c.post("/Users", json=body).json()["id"]
        assert c.patch(f"/Users/{uid}", json=DEACTIVATE).status_code in (200, 204)
        assert [r["type"] for r in hr_requests(runs_for(hr_deployments, OFFBOARD, emp))] == ["employee.terminated"]
        hires = len(runs_for(hr_deployments, ONBOARD, emp))

        profile = {k: v for k, v in c.get(f"/Users/{uid}").json().items() if k not in ("active", "meta")}
        put = c.put(f"/Users/{uid}", json={**profile, "phoneNumbers": [{"value": "+1 555 0100", "type": "work"}]})
        assert put.status_code == 200, put.text
        assert len(runs_for(hr_deployments, ONBOARD, emp)) == hires  # no re-hire
        assert put.json().get("active") is False and c.get(f"/Users/{uid}").json().get("active") is False
        removed = c.patch(f"/Users/{uid}", json={"schemas": [PATCH_OP], "Operations": [
            {"op": "remove", "path": "active"}]})
        assert removed.status_code in (200, 204) and c.get(f"/Users/{uid}").json()["active"] is False
        renamed = c.put(f"/Users/{uid}", json={**profile, "name": {"givenName": "Alicia", "familyName": "Liddell"}})
        assert renamed.status_code == 200 and renamed.json()["active"] is False
        assert len(runs_for(hr_deployments, ONBOARD, emp)) == hires  # no hire, no update for a leaver

        back = c.put(f"/Users/{uid}", json={**profile, "active": True})  # only an explicit true re-hires
        assert back.status_code == 200 and back.json()["active"] is True
        assert [r["type"] for r in hr_requests(runs_for(hr_deployments, ONBOARD, emp))][hires:] == ["employee.hired"]


def test_webhook_cannot_take_the_event_id_of_a_scim_deactivation(scim_gateway, hr_deployments):
    """A webhook sender posting first under the id SCIM will derive for a deactivation must
    not leave that deactivation answered 204 with no offboarding run naming the person."""
    body = scim_user()
    emp = body[ENTERPRISE]["employeeNumber"]
    with scim_client(scim_gateway) as c:
        uid = c.post("/Users", json=body).json()["id"]
        # Pre-empt every id the gateway could derive for version 2: the form it used before,
        # and the namespaced one (which the webhook refuses outright).
        answers = {key: scim_gateway.post_event(raw(hire(key, "employee.terminated", employee_id="E-someone-else")))
                   for key in (f"scim-{uid}-v2", scim_event_id(scim_gateway, uid, 2), f"SCIM:{uid}")}
        assert c.patch(f"/Users/{uid}", json=DEACTIVATE).status_code in (200, 204)
    [run] = runs_for(hr_deployments, OFFBOARD, emp)  # the deactivation offboards this person
    assert run.parameters["request"]["type"] == "employee.terminated"
    assert run.idempotency_key == scim_event_id(scim_gateway, uid, 2)
    for key, resp in answers.items():
        if key.lower().startswith("scim:"):
            assert resp.status_code == 422, resp.text
            assert resp.json()["fields"][0]["field"] == "event_id" and "reserved" in resp.text


def test_an_event_id_reused_for_a_termination_is_409_and_starts_nothing(gateway, hr_deployments):
    """The promised 409 also holds across flows: a hire's id sent with a termination."""
    body = hire()
    assert gateway.post_event(raw(body)).status_code == 202
    terminate = {**body, "type": "employee.terminated"}
    resp = gateway.post_event(raw(terminate))
    assert resp.status_code == 409, resp.text
    assert "already used for a different event" in resp.json()["error"] and "offboard" in resp.json()["error"]
    assert [r.parameters["request"]["type"] for r in runs_with_key(body["event_id"])] == ["employee.hired"]
    # ... and the other way round, and for another person under the same id.
    term = hire(type_="employee.terminated")
    assert gateway.post_event(raw(term)).status_code == 202
    assert gateway.post_event(raw({**term, "type": "employee.hired"})).status_code == 409
    other = {**term, "employee": {**term["employee"], "employee_id": "E-other"}}
    assert gateway.post_event(raw(other)).status_code == 409
    assert len(runs_with_key(term["event_id"])) == 1


def test_a_hire_and_a_termination_racing_with_one_event_id_start_one_run(gateway, hr_deployments):
    """Two replicas, one event id, two flows at the same moment: one 202, one 409, and one
    run left to execute (the loser's run, if the race made one, is cancelled)."""
    replica = start_gateway(gateway.settings, gateway.secrets, gateway.scim_token)
    events = [hire() for _ in range(8)]
    try:
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(2) as pool:
            answers = []
            for ev in events:
                now = int(time.time())
                pair = [(gateway, ev, now), (replica, {**ev, "type": "employee.terminated"}, now - 1)]
                answers.append(list(pool.map(lambda a: a[0].post_event(raw(a[1]), client=client, t=a[2]), pair)))
    finally:
        replica.stop()
    for ev, (on, off) in zip(events, answers, strict=True):
        assert sorted([on.status_code, off.status_code]) == [202, 409], (on.text, off.text)
        winner = on if on.status_code == 202 else off
        live = [r for r in runs_with_key(ev["event_id"]) if not r.state.is_cancelled()]
        assert [str(r.id) for r in live] == [winner.json()["flow_run_id"]]


def test_a_run_created_in_a_race_is_cancelled_and_the_first_run_answers(gateway, hr_deployments):
    """The race above made deterministic: a replica whose look-up missed the other flow's run
    (created a moment before) creates its own, sees both, cancels its own and answers with
    the first, which the caller then judges (a 409 for another event)."""
    import asyncio

    from gateway.runs import RunStarter

    first = hire()
    assert gateway.post_event(raw(first)).status_code == 202

    class LateReplica(RunStarter):
        missed = False

        async def _runs_with_key(self, key):
            if not self.missed:  # the first look-up, before the other replica's run was visible
                self.missed = True
                return []
            return await super()._runs_with_key(key)

    async def start():
        starter = LateReplica(timeout=20)
        await starter.open()
        try:
            return await starter.start(OFFBOARD, {"request": {**first, "type": "employee.terminated"}},
                                       first["event_id"])
        finally:
            await starter.close()

    got = asyncio.run(start())
    assert got.deployment == ONBOARD and got.parameters["request"]["type"] == "employee.hired"
    assert not got.created
    runs = runs_with_key(first["event_id"])
    assert [r.parameters["request"]["type"] for r in runs] == ["employee.hired", "employee.terminated"]
    assert not runs[0].state.is_cancelled() and runs[1].state.is_cancelled()
    assert f"already used by flow run {runs[0].id}" in runs[1].state.message


def test_a_scim_change_whose_event_id_names_another_run_is_409_and_changes_nothing(scim_gateway, hr_deployments):
    """Defence in depth behind the namespaces: if the run found under the derived id is not
    this event for this person (another Prefect API client made it), the deactivation is
    refused and the User is left as it was, instead of a 204 that offboards no one."""
    body = scim_user()
    emp = body[ENTERPRISE]["employeeNumber"]
    with scim_client(scim_gateway) as c:
        uid = c.post("/Users", json=body).json()["id"]
        key = scim_event_id(scim_gateway, uid, 2)
        create_run(OFFBOARD, hire(key, "employee.terminated", employee_id="E-someone-else"), key)
        resp = c.patch(f"/Users/{uid}", json=DEACTIVATE)
        assert resp.status_code == 409, resp.text
        assert "nothing was changed" in resp.json()["detail"]
        after = c.get(f"/Users/{uid}").json()
        assert after["active"] is True and after["meta"]["version"] == 'W/"1"'
    assert runs_for(hr_deployments, OFFBOARD, emp) == []


def test_scim_lookalike_username_is_refused_and_the_real_person_keeps_it(scim_gateway, hr_deployments, kube):
    ledger = Ledger(scim_gateway.settings, kube=kube)
    n = uuid.uuid4().hex[:6]
    with scim_client(scim_gateway) as c:
        for fake, real, username in ((f"ａlice.{n}@example.com", f"alice.{n}@example.com", f"alice-{n}"),
                                     (f"\u212aelly{n}", f"kelly{n}", f"kelly{n}")):
            resp = c.post("/Users", json=scim_user(fake))
            assert resp.status_code == 400, resp.text
            assert resp.json()["detail"].startswith("userName:") and "ASCII" in resp.json()["detail"]
            assert ledger.get(username) is None
            ok = c.post("/Users", json=scim_user(real))
            assert ok.status_code == 201, ok.text
            assert ledger.by_scim_id(ok.json()["id"]).username == username


# -- A refusal leaves nothing behind, and a retry with corrected input works -----------------
def test_scim_create_refused_with_503_leaves_nothing_behind_and_the_corrected_retry_succeeds(
        hr_deployments, namespace, kube):
    settings, keys, token = gateway_settings(platform_namespace=namespace, namespace=namespace,
                                             gateway_prefect_timeout_seconds=2)
    ledger = Ledger(settings, kube=kube)
    down = start_gateway(settings, keys, token, starter=dead_prefect_starter())
    body = scim_user("alcie.typo@example.com")  # the first attempt has a typo in the login
    emp = body[ENTERPRISE]["employeeNumber"]
    try:
        with scim_client(down) as c:
            assert c.post("/Users", json=body).status_code == 503
    finally:
        down.stop()
    assert ledger.get("alcie-typo") is None and kube.get("ConfigMap", namespace, index_name(emp)) is None
    up = start_gateway(settings, keys, token)
    try:
        with scim_client(up) as c:
            fixed = c.post("/Users", json={**body, "userName": "alice.fixed@example.com"})
            assert fixed.status_code == 201, fixed.text
            assert ledger.by_scim_id(fixed.json()["id"]).username == "alice-fixed"
    finally:
        up.stop()
    [run] = runs_for(hr_deployments, ONBOARD, emp)
    assert run.parameters["request"]["employee"]["username"] == "alice-fixed"


def test_known_employee_provisioned_again_under_a_new_username_keeps_theirs(scim_gateway, hr_deployments, kube):
    """A name change after a delete: the person is re-hired into the username (workspace,
    volumes, backups, identity) they already own; a second live User for them is a 409."""
    ledger = Ledger(scim_gateway.settings, kube=kube)
    n = uuid.uuid4().hex[:6]
    first = scim_user(f"alice.{n}@example.com")
    emp = first[ENTERPRISE]["employeeNumber"]
    with scim_client(scim_gateway) as c:
        uid = c.post("/Users", json=first).json()["id"]
        assert c.delete(f"/Users/{uid}").status_code == 204
        renamed = {**first, "userName": f"alice.smith.{n}@example.com",
                   "emails": [{"value": f"alice.smith.{n}@example.com", "type": "work", "primary": True}],
                   "name": {"givenName": "Alice", "familyName": "Smith"}}
        again = c.post("/Users", json=renamed)
        assert again.status_code == 201, again.text
        assert again.json()["userName"] == renamed["userName"]
        assert ledger.by_scim_id(again.json()["id"]).username == f"alice-{n}"
        dup = c.post("/Users", json={**renamed, "userName": f"alice.third.{n}@example.com"})
        assert dup.status_code == 409 and dup.json()["scimType"] == "uniqueness"
        assert renamed["userName"] in dup.json()["detail"] and f"alice-{n}" in dup.json()["detail"]
    kinds = [(r["type"], r["employee"]["username"]) for r in
             hr_requests(sorted(runs_for(hr_deployments, ONBOARD, emp) + runs_for(hr_deployments, OFFBOARD, emp),
                                key=lambda r: r.created))]
    assert kinds == [("employee.hired", f"alice-{n}"), ("employee.terminated", f"alice-{n}"),
                     ("employee.hired", f"alice-{n}")]


def test_hostile_bytes_in_headers_paths_and_bodies_get_a_clear_4xx_and_no_error_log(scim_gateway, hr_deployments):
    gw = scim_gateway
    auth = b"Bearer " + gw.scim_token.encode()
    deep = b'{"a":' * 3000 + b"1" + b"}" * 3000
    signed = signature.sign(gw.secrets[0].encode(), int(time.time()), deep).encode()
    cases = {
        "SCIM Authorization not UTF-8": build_request(b"GET", b"/scim/v2/Users", [(b"Authorization", b"Bearer \xff\xfe")]),
        "SCIM Host not UTF-8": build_request(b"GET", b"/scim/v2/Users", [(b"Host", b"\xff"), (b"Authorization", auth)]),
        "SCIM any header not UTF-8": build_request(b"GET", b"/scim/v2/Users", [(b"X-Trace", b"\xc3\x28"),
                                                                              (b"Authorization", auth)]),
        "SCIM path with NUL": build_request(b"GET", b"/scim/v2/Users/%00", [(b"Authorization", auth)]),
        "SCIM path with DEL": build_request(b"GET", b"/scim/v2/Users/a%7fb", [(b"Authorization", auth)]),
        "SCIM path with CR LF": build_request(b"GET", b"/scim/v2/Users/%0d%0aSet-Cookie:%20x", [(b"Authorization", auth)]),
        "SCIM body nested 3000 deep": build_request(b"POST", b"/scim/v2/Users", [(b"Authorization", auth),
                                                                                 (b"Content-Type", b"application/scim+json")], deep),
        "webhook body nested 3000 deep, signed": build_request(b"POST", b"/v1/hr/events", [
            (b"Content-Type", b"application/json"), (signature.HEADER.encode(), signed)], deep),
        "webhook lone surrogate, signed": build_request(b"POST", b"/v1/hr/events", [
            (b"Content-Type", b"application/json"),
            (signature.HEADER.encode(), signature.sign(gw.secrets[0].encode(), int(time.time()), b'"\\ud800"').encode())],
            b'"\\ud800"'),
        "webhook path with a trailing slash": build_request(b"POST", b"/v1/hr/events/", [], b"{}"),
        "webhook signature header not UTF-8": build_request(b"POST", b"/v1/hr/events", [
            (signature.HEADER.encode(), b"t=1,v1=\xff")], b"{}"),
    }
    with error_log() as errors:
        answers = {name: raw_request(gw.url, data) for name, data in cases.items()}
    bad = {name: (a.status, a.body[:200]) for name, a in answers.items() if not 400 <= a.status < 500}
    assert bad == {}
    for name, a in answers.items():
        assert a.body, name  # every refusal says what is wrong
    assert errors.summary() == []
    assert answers["SCIM Host not UTF-8"].status == 400 and b"the host header is not valid UTF-8" in \
        answers["SCIM Host not UTF-8"].body


def test_a_body_that_never_arrives_gets_a_408_instead_of_holding_the_connection(scim_gateway, hr_deployments,
                                                                                  monkeypatch):
    """A client that declares a body and sends less (or trickles it) used to hold a connection
    until it gave up itself: no answer at all. Every request body now has a deadline."""
    import socket

    from gateway import http as gateway_http

    monkeypatch.setattr(gateway_http, "BODY_SECONDS", 1.0)
    gw = scim_gateway
    auth = b"Bearer " + gw.scim_token.encode()
    short = {
        "SCIM DELETE declaring 5 bytes, sending none": build_request(
            b"DELETE", b"/scim/v2/Schemas%0d%0a", [(b"Authorization", auth), (b"Content-Length", b" 5")]),
        "SCIM POST declaring 100 bytes, sending 10": build_request(
            b"POST", b"/scim/v2/Users", [(b"Authorization", auth), (b"Content-Type", b"application/scim+json"),
                                         (b"Content-Length", b"100")], b'{"userName'),
        "webhook declaring 50 bytes, sending none": build_request(
            b"POST", b"/v1/hr/events", [(b"Content-Type", b"application/json"), (b"Content-Length", b"50")]),
    }
    with error_log() as errors:
        started = time.monotonic()
        answers = {name: raw_request(gw.url, data, timeout=15) for name, data in short.items()}
        seconds = time.monotonic() - started
    assert {name: a.status for name, a in answers.items()} == dict.fromkeys(short, 408), answers
    assert all(b"did not arrive within 1 s" in a.body for a in answers.values())
    assert seconds < 3 * 5  # each answered at its deadline, not at the client's 15 s timeout
    assert errors.summary() == []

    host, port = gw.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:  # slowloris: a byte at a time
        sock.sendall(build_request(b"POST", b"/v1/hr/events", [(b"Content-Type", b"application/json"),
                                                               (b"Content-Length", b"40")]))
        answer = b""
        for _ in range(30):
            try:
                sock.sendall(b" ")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
            sock.setblocking(False)
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
            if answer:
                break
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_rate_limit_counts_an_ipv6_64_and_an_ipv4_prefix_as_one_client(hr_deployments):
    # One token per 100 s, so no refill can happen while the test runs.
    gw = start_gateway(*gateway_settings(gateway_rate_per_second=0.01, gateway_rate_burst=3,
                                         gateway_trusted_proxies=["127.0.0.1/32"], gateway_rate_ipv4_prefix=24))
    try:
        def post(client_ip: str) -> int:
            return httpx.post(f"{gw.url}/v1/hr/events", content=b"{}",
                              headers={"X-Forwarded-For": client_ip}).status_code

        same_64 = [post(f"2001:db8:1:2::{i:x}") for i in range(1, 7)]
        assert same_64 == [401, 401, 401, 429, 429, 429]
        assert post("2001:db8:1:3::1") == 401  # the next /64 is another client
        same_24 = [post(f"198.51.100.{i}") for i in range(1, 7)]
        assert same_24 == [401, 401, 401, 429, 429, 429]
        assert post("198.51.101.1") == 401
    finally:
        gw.stop()


def test_ledger_gives_back_only_a_claim_nothing_came_of_and_only_at_the_version_read(namespace, kube):
    """What a refused create's undo may delete: an untouched record and its index entry, and
    nothing another run touched in between (the delete is guarded by the version read)."""
    from dataclasses import replace

    from tasks.core.errors import Conflict

    settings, _, _ = gateway_settings(platform_namespace=namespace, namespace=namespace)
    ledger = Ledger(settings, kube=kube)
    ledger.claim("fresh", "E-fresh")
    assert ledger.release("fresh", "E-fresh") is True
    assert ledger.get("fresh") is None and kube.get("ConfigMap", namespace, index_name("E-fresh")) is None
    ledger.claim("fresh", "E-fresh-2")  # the username is free again, for anyone

    ledger.claim("used", "E-used")
    ledger.update("used", lambda r: r.with_event("evt-1"))
    assert ledger.release("used", "E-used") is False
    assert ledger.get("used") is not None and kube.get("ConfigMap", namespace, index_name("E-used")) is not None
    assert ledger.release("fresh", "E-someone-else") is False and ledger.get("fresh") is not None

    stale = ledger.get("fresh")
    ledger.update("fresh", lambda r: replace(r, last_error="touched meanwhile"))
    with pytest.raises(Conflict):
        kube.delete("ConfigMap", namespace, "vibecode-user-fresh", resource_version=stale.resource_version)
    assert ledger.get("fresh") is not None

    ledger.update("used", lambda r: replace(r, scim_id="ab" * 16, scim='{"version": 1}'))
    assert ledger.forget_scim("used", "cd" * 16) is False and ledger.get("used").scim_id == "ab" * 16
    assert ledger.forget_scim("used", "ab" * 16) is True
    rec = ledger.get("used")
    assert (rec.scim_id, rec.scim, rec.events) == ("", "", ("evt-1",))  # the person and their history stay
