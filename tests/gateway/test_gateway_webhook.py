"""The HR webhook over real HTTP: uvicorn on loopback, the real Prefect server with the
onboard-user / offboard-user deployments registered. Counts of flow runs are read back
from the Prefect API, so "created nothing" is checked where it would show."""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from gateway.runs import RunStarter
from tasks.cluster.localnode.envtest import free_port
from tasks.gateway import signature
from tests.fixtures.gateway import flow_runs, gateway_settings, start_gateway

pytestmark = pytest.mark.usefixtures("prefect_server")

ONBOARD, OFFBOARD = "onboard-user/onboard-user", "offboard-user/offboard-user"


def hire(event_id: str | None = None, type_: str = "employee.hired", **employee) -> dict:
    n = uuid.uuid4().hex[:8]
    emp = {"employee_id": f"E{n}", "email": f"p{n}@example.com", "given_name": "Alice",
           "family_name": "Liddell", "username": f"p{n}"}
    emp.update(employee)
    return {"event_id": event_id or f"evt-{uuid.uuid4().hex}", "type": type_,
            "occurred_at": "2026-11-28T09:00:00Z", "employee": emp}


def raw(body: dict) -> bytes:
    return json.dumps(body).encode()


def runs_of(hr_deployments, name: str) -> list:
    return flow_runs(hr_deployments[name])


def test_a_signed_hire_creates_exactly_one_run_with_the_event(gateway, hr_deployments):
    body = hire()
    before = len(runs_of(hr_deployments, ONBOARD))
    t0 = int(time.time())
    resp = gateway.post_event(raw(body), t=t0)
    assert resp.status_code == 202, resp.text
    out = resp.json()
    assert out["deployment"] == ONBOARD
    runs = runs_of(hr_deployments, ONBOARD)
    assert len(runs) == before + 1
    run = next(r for r in runs if str(r.id) == out["flow_run_id"])
    assert run.idempotency_key == body["event_id"]
    assert run.parameters["request"]["event_id"] == body["event_id"]
    assert run.parameters["request"]["employee"]["employee_id"] == body["employee"]["employee_id"]
    assert run.parameters["request"]["employee"]["username"] == body["employee"]["username"]
    assert run.state.is_scheduled()
    # The same event again (freshly signed, as a sender's retry is): same run, nothing new.
    again = gateway.post_event(raw(body), t=t0 - 1)
    assert again.status_code == 202 and again.json()["flow_run_id"] == out["flow_run_id"]
    assert len(runs_of(hr_deployments, ONBOARD)) == before + 1


def test_a_termination_goes_to_the_offboarding_deployment(gateway, hr_deployments):
    before = len(runs_of(hr_deployments, OFFBOARD))
    resp = gateway.post_event(raw(hire(type_="employee.terminated")))
    assert resp.status_code == 202 and resp.json()["deployment"] == OFFBOARD
    assert len(runs_of(hr_deployments, OFFBOARD)) == before + 1


def test_twenty_concurrent_posts_of_one_event_create_one_run(gateway, hr_deployments):
    """Ten at once to each of two gateway replicas: inside a replica the posts share one
    call to Prefect; between the replicas only the server's idempotency key keeps it to one run."""
    replica = start_gateway(gateway.settings, gateway.secrets, gateway.scim_token)
    body = raw(hire())
    before = len(runs_of(hr_deployments, ONBOARD))
    try:
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(20) as pool:
            # Each post signed on its own (a sender's retries are, each at its own time), all at once.
            now = int(time.time())
            answers = list(pool.map(lambda i: (gateway if i % 2 else replica).post_event(
                body, client=client, t=now - i), range(20)))
    finally:
        replica.stop()
    assert [a.status_code for a in answers] == [202] * 20, [a.text for a in answers if a.status_code != 202]
    assert len({a.json()["flow_run_id"] for a in answers}) == 1
    assert len(runs_of(hr_deployments, ONBOARD)) == before + 1


def test_forged_changed_stale_and_replayed_requests_are_refused_and_start_nothing(gateway, hr_deployments):
    before = len(flow_runs())
    body = raw(hire())
    wrong = gateway.post_event(body, secret=secrets.token_urlsafe(40))
    assert wrong.status_code == 401 and "signature does not match" in wrong.json()["error"]

    header = gateway.sign(body)
    changed = body.replace(b"Alice", b"Mallory")
    resp = httpx.post(f"{gateway.url}/v1/hr/events", content=changed,
                      headers={"Content-Type": "application/json", signature.HEADER: header})
    assert resp.status_code == 401 and "body was changed" in resp.json()["error"]

    stale = gateway.post_event(body, t=int(time.time()) - 301)
    assert stale.status_code == 401 and "300 s" in stale.json()["error"]
    future = gateway.post_event(body, t=int(time.time()) + 400)
    assert future.status_code == 401

    missing = httpx.post(f"{gateway.url}/v1/hr/events", content=body, headers={"Content-Type": "application/json"})
    assert missing.status_code == 401 and "missing" in missing.json()["error"]
    assert len(flow_runs()) == before

    # A replay: the very same signed delivery, captured and sent again.
    first_body = raw(hire())
    captured = {"Content-Type": "application/json", signature.HEADER: gateway.sign(first_body)}
    first = httpx.post(f"{gateway.url}/v1/hr/events", content=first_body, headers=captured)
    assert first.status_code == 202
    count = len(flow_runs())
    replay = httpx.post(f"{gateway.url}/v1/hr/events", content=first_body, headers=captured)
    assert replay.status_code == 409 and "replay" in replay.json()["error"]
    # ... also with the signature list padded to look different
    padded = {**captured, signature.HEADER: captured[signature.HEADER] + ",v1=" + "0" * 64}
    assert httpx.post(f"{gateway.url}/v1/hr/events", content=first_body, headers=padded).status_code == 409
    assert len(flow_runs()) == count


def test_a_rotated_secret_works_for_both_keys_during_the_overlap(hr_deployments):
    old, new = secrets.token_urlsafe(40), secrets.token_urlsafe(40)
    overlap = start_gateway(*gateway_settings(gateway_webhook_secrets=[old, new]))
    after = start_gateway(*gateway_settings(gateway_webhook_secrets=[new]))
    try:
        assert overlap.post_event(raw(hire()), secret=old).status_code == 202
        assert overlap.post_event(raw(hire()), secret=new).status_code == 202
        # A sender mid-switch signs with both keys at once.
        body = raw(hire())
        t = int(time.time())
        both = f"t={t},v1={signature.sign(old.encode(), t, body).split('v1=')[1]}," \
               f"v1={signature.sign(new.encode(), t, body).split('v1=')[1]}"
        resp = httpx.post(f"{overlap.url}/v1/hr/events", content=body,
                          headers={"Content-Type": "application/json", signature.HEADER: both})
        assert resp.status_code == 202
        # Once the old key is retired it is refused.
        assert after.post_event(raw(hire()), secret=old).status_code == 401
        assert after.post_event(raw(hire()), secret=new).status_code == 202
    finally:
        overlap.stop()
        after.stop()


def test_size_media_type_and_field_errors(gateway, hr_deployments):
    before = len(flow_runs())
    url = f"{gateway.url}/v1/hr/events"
    big = b'{"x": "' + b"a" * 70_000 + b'"}'
    resp = gateway.post_event(big)
    assert resp.status_code == 413 and "65536" in resp.json()["error"]

    def chunks():  # no Content-Length: the bound is enforced while reading
        for _ in range(20):
            yield b"a" * 8192
    resp = httpx.post(url, content=chunks(), headers={signature.HEADER: "t=1,v1=" + "0" * 64})
    assert resp.status_code == 413

    body = raw(hire())
    resp = gateway.post_event(body, headers={"Content-Type": "text/plain"})
    assert resp.status_code == 415 and "application/json" in resp.json()["error"]
    resp = gateway.post_event(b"{not json")
    assert resp.status_code == 415 and "not JSON" in resp.json()["error"]

    bad = hire(email="not-an-email", given_name="R2-D2", username="Root")
    bad["event_id"] = "../etc/passwd"
    resp = gateway.post_event(raw(bad))
    assert resp.status_code == 422
    fields = {f["field"] for f in resp.json()["fields"]}
    assert {"event_id", "employee.email", "employee.given_name", "employee.username"} <= fields
    assert len(flow_runs()) == before


def test_prefect_unreachable_answers_503_with_retry_after(hr_deployments, caplog):
    dead = f"http://127.0.0.1:{free_port()}/api"

    class DeadStarter(RunStarter):
        async def open(self):
            from prefect.client.orchestration import PrefectClient

            self._client = PrefectClient(dead, httpx_settings={"timeout": 1})
            await self._client.__aenter__()

    settings, keys, token = gateway_settings(gateway_prefect_timeout_seconds=2, gateway_retry_after_seconds=7)
    gw = start_gateway(settings, keys, token, starter=DeadStarter(timeout=2))
    try:
        before = len(flow_runs())
        started = time.monotonic()
        resp = gw.post_event(raw(hire()))
        assert resp.status_code == 503 and resp.headers["Retry-After"] == "7"
        assert "nothing was started" in resp.json()["error"]
        assert time.monotonic() - started < 15  # bounded by gateway_prefect_timeout_seconds, not by retries
        assert len(flow_runs()) == before
    finally:
        gw.stop()


def test_rate_limit_answers_429_with_retry_after(hr_deployments):
    # One token per 100 s: no refill can happen while the test runs, however slow the machine.
    gw = start_gateway(*gateway_settings(gateway_rate_per_second=0.01, gateway_rate_burst=3))
    try:
        codes = [httpx.post(f"{gw.url}/v1/hr/events", content=b"{}").status_code for _ in range(6)]
        assert codes[:3] == [401, 401, 401] and codes[3:] == [429, 429, 429]
        resp = httpx.post(f"{gw.url}/v1/hr/events", content=b"{}")
        assert 1 <= int(resp.headers["Retry-After"]) <= 100
        assert httpx.get(f"{gw.url}/healthz").status_code == 200  # probes are never limited
    finally:
        gw.stop()


def test_health_openapi_and_access_log_without_secrets(gateway, caplog):
    caplog.set_level(logging.INFO, logger="vibecode.gateway.access")
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    assert "/v1/hr/events" in spec["paths"]
    post = spec["paths"]["/v1/hr/events"]["post"]
    assert {"202", "401", "413", "415", "422", "503"} <= set(post["responses"])
    assert "employee" in json.dumps(post["requestBody"])
    body = raw(hire())
    header = gateway.sign(body)
    httpx.post(f"{gateway.url}/v1/hr/events?token=abc", content=body,
               headers={"Content-Type": "application/json", signature.HEADER: header})
    httpx.get(f"{gateway.url}/scim/v2/Users", headers=gateway.scim_headers())
    lines = [r.getMessage() for r in caplog.records if r.name == "vibecode.gateway.access"]
    assert any('"path":"/v1/hr/events"' in line and '"status":202' in line for line in lines)
    text = "\n".join(lines)
    for secret in (*gateway.secrets, gateway.scim_token, header.split("v1=")[1], "Alice", "token=abc"):
        assert secret not in text
    for line in lines:
        assert set(json.loads(line)) == {"request_id", "client", "method", "path", "status", "ms", "bytes_in"}


def test_an_answer_that_needs_no_body_waits_for_it_so_the_close_never_resets_the_answer(gateway, caplog):
    """A body posted to a wrong path (404) is read before the answer (bounded): the connection's
    close after unread bytes is a reset, on which the client's kernel drops the 404 it has not
    read yet. Sent in two halves, the answer must come after the second half, the whole body
    read (the access log's bytes_in), and the connection closed cleanly."""
    import socket
    import time

    caplog.set_level(logging.INFO, logger="vibecode.gateway.access")
    host, port = gateway.url.removeprefix("http://").split(":")
    body = b"x" * 1000
    head = (b"POST /v1/not-a-route HTTP/1.1\r\nHost: gateway.test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\nConnection: close\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + body[:400])
        time.sleep(0.5)
        s.settimeout(0.2)
        try:
            early = s.recv(1)
        except TimeoutError:
            early = b""
        assert early == b"", "answered before the body was read"
        s.settimeout(10)
        s.sendall(body[400:])
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 404")
    (line,) = [json.loads(r.getMessage()) for r in caplog.records
               if r.name == "vibecode.gateway.access" and "not-a-route" in r.getMessage()]
    assert line["status"] == 404 and line["bytes_in"] == 1000
