"""Property-based: 1,000+ malformed or hostile bodies and headers against the live gateway
(uvicorn on loopback, the real Prefect server behind it). Every answer is a 4xx with a
message that says what is wrong; never a 5xx; and not one flow run is created.

Half the examples are correctly signed, so they get past the signature and exercise the
JSON and HR validation; the others attack the signature header itself. Every HR-shaped
body is invalid by construction (one field replaced by a wrong type, a forbidden
character, an over-long string or a wrong enum), so none may start a run.
"""

from __future__ import annotations

import copy
import json
import time
import uuid

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.gateway import signature
from tests.fixtures.gateway import flow_runs

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]

VALID = {"event_id": "evt-1", "type": "employee.hired", "occurred_at": "2026-11-28T09:00:00Z",
         "employee": {"employee_id": "E1", "email": "a@example.com", "given_name": "Alice",
                      "family_name": "Liddell", "username": "alice"}}

FORBIDDEN = list("/\\;$`|&<>\x00\n\r\t\"'{}[]*?~!#%^=") + ["..", "\u202e", "\u200b", "ℂ", "ﬀ"]
wrong_type = st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.booleans(),
                       st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                            max_size=2))
bad_text = st.builds(lambda a, f, b: a + f + b, st.text(max_size=10), st.sampled_from(FORBIDDEN),
                     st.text(max_size=10))
too_long = st.integers(300, 20_000).map(lambda n: "a" * n)
hostile_value = st.one_of(wrong_type, bad_text, too_long)

FIELDS = ["event_id", "type", "occurred_at", "employee", "employee.employee_id", "employee.email",
          "employee.given_name", "employee.family_name", "employee.username", "employee.department",
          "employee.groups"]


@st.composite
def hostile_hr_body(draw) -> bytes:
    body = copy.deepcopy(VALID)
    body["event_id"] = f"evt-{uuid.uuid4().hex}"
    path = draw(st.sampled_from(FIELDS))
    value = draw(hostile_value)
    if path == "occurred_at" and isinstance(value, str):
        value = value + "T"  # never an ISO timestamp
    if path == "employee.groups":
        value = draw(st.one_of(wrong_type.filter(lambda v: not isinstance(v, list)),
                               st.lists(st.one_of(bad_text, too_long, wrong_type), min_size=1, max_size=3)))
    if path == "employee.department" and isinstance(value, str):
        value = value.upper() + "/"  # departments are lowercase slugs
    if path == "event_id" and isinstance(value, str):
        value = "/" + value
    if path == "type" and isinstance(value, str):
        value = "employee." + value + "!"
    target = body
    *parents, leaf = path.split(".")
    for p in parents:
        target = target[p]
    if draw(st.booleans()) and path not in ("employee.department", "employee.groups"):
        target.pop(leaf)  # a required field missing
    else:
        target[leaf] = value
    return json.dumps(body).encode()


raw_garbage = st.one_of(st.binary(max_size=2000), st.text(max_size=500).map(str.encode),
                        st.just(b"\xff\xfe{}"), st.just(b'{"a":' * 2000), st.just(b"[]"), st.just(b"null"),
                        st.just(b'"string"'), st.just(b"1e999999"))
bodies = st.one_of(hostile_hr_body(), hostile_hr_body(), raw_garbage)
content_types = st.one_of(st.just("application/json"), st.just("application/json"), st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", "",
                                 "application/x-www-form-urlencoded", "application/json\r\nX-Evil: 1",
                                 "application/vnd.api+json", "multipart/form-data; boundary=x"]))
bad_headers = st.one_of(
    st.just(None), st.text(max_size=200),
    st.builds(lambda t, s: f"t={t},v1={s}", st.integers(-10**15, 10**15), st.text(max_size=80)),
    st.builds(lambda t: f"t={t},v1=" + "0" * 64, st.integers(0, 2**40)),
    st.just("t=1,v1=" + "a" * 64 + ",v1=" + "b" * 64), st.just("v0=abc,t=,v1="),
)


@pytest.fixture(scope="module")
def fuzz_gateway(hr_deployments):
    from tests.fixtures.gateway import gateway_settings, start_gateway

    gw = start_gateway(*gateway_settings())
    yield gw
    gw.stop()


def test_a_thousand_hostile_requests_get_clear_4xx_and_start_nothing(fuzz_gateway, hr_deployments):
    gw = fuzz_gateway
    before = len(flow_runs())
    seen: dict[int, int] = {}
    client = httpx.Client(timeout=30)

    @settings(max_examples=1100, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(body=bodies, ctype=content_types, header=bad_headers, signed=st.sampled_from([True, True, False]),
           skew=st.sampled_from([0, 0, 0, -299, 299, -301, 301, -10**6]))
    def one(body, ctype, header, signed, skew):
        headers = {}
        if ctype and "\r" not in ctype:
            headers["Content-Type"] = ctype
        if signed:
            t = int(time.time()) + skew
            # A fresh t per example so no two signed deliveries are the same (that is a replay, 409).
            headers[signature.HEADER] = signature.sign(gw.secrets[0].encode(), t, body)
        elif header is not None:
            headers[signature.HEADER] = header.encode("utf-8", "replace")[:4000]  # raw bytes, any octet
        try:
            resp = client.post(f"{gw.url}/v1/hr/events", content=body, headers=headers)
        except (httpx.LocalProtocolError, UnicodeEncodeError):
            return  # the client itself refuses to send it (e.g. a control character in a header)
        seen[resp.status_code] = seen.get(resp.status_code, 0) + 1
        assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:300])
        msg = resp.json()["error"]
        assert isinstance(msg, str) and len(msg) > 10
        if resp.status_code == 422:
            assert resp.json()["fields"] and all(f["field"] and f["message"] for f in resp.json()["fields"])

    one()
    client.close()
    print("status counts:", dict(sorted(seen.items())))
    assert sum(seen.values()) >= 1000, seen
    assert {401, 415, 422} <= set(seen), seen  # the examples reached every layer
    assert len(flow_runs()) == before
