"""Property-based: the whole request is hostile, not only the JSON body. Over 1,000
generated requests go to the live gateway (uvicorn on loopback, the real Prefect server,
SCIM users in a real kube-apiserver) as raw HTTP/1.1 bytes: any method; paths that are
mutated, percent-encoded garbage, traversal, doubled slashes, control characters, overlong;
query strings of junk and hostile SCIM filters; header values of arbitrary octets (not
UTF-8, NUL, DEL, overlong, repeated), valid and invalid credentials; bodies that are valid,
invalid by construction, random bytes or nested thousands deep.

Every answer must be a 4xx that says something, or a valid outcome: a 202 whose flow run
exists with a valid HR event on the deployment its type routes to, a SCIM read, or a SCIM
write whose runs are valid. Never a 3xx, never a 5xx, and not one record at ERROR in any
log (ours, scim2-server's, uvicorn's) for the whole run.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.gateway import signature
from tasks.people.hr import deployment_for, parse_request
from tests.fixtures.gateway import gateway_settings, start_gateway
from tests.fixtures.gateway_http import (
    ENTERPRISE,
    PATCH_OP,
    all_flow_runs,
    build_request,
    error_log,
    raw_request,
    scim_client,
    scim_user,
)

pytestmark = [pytest.mark.usefixtures("prefect_server", "helm_bin"), pytest.mark.slow]

SCIM_BASE = [b"/scim/v2/Users", b"/scim/v2/Users/{id}", b"/scim/v2/ServiceProviderConfig", b"/scim/v2/Schemas",
             b"/scim/v2/ResourceTypes", b"/scim/v2/Users/.search", b"/scim/v2/Groups", b"/scim/v2/Me", b"/scim/v2/Bulk"]
BASE = [b"/v1/hr/events"] * 4 + SCIM_BASE * 2 + [b"/healthz", b"/openapi.json", b"/", b"/docs", b"/scim"]
METHODS = [b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS", b"TRACE", b"CONNECT", b"FOO",
           b"get", b"P\xc3\x96ST"]
octets = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
pct = st.binary(min_size=1, max_size=30).map(lambda b: urllib.parse.quote_from_bytes(b, safe=b"").encode())
path_mutations = st.sampled_from(["none", "none", "slash", "pct", "double", "dotdot", "ctrl", "long", "raw",
                                  "case", "scim-suffix", "semicolon", "unicode", "id-junk"])
FILTERS = ['userName eq "a"', "(" * 2000 + 'userName eq "a"' + ")" * 2000, "not(" * 200 + "x" + ")" * 200,
           'userName eq "a" or ' * 500 + 'userName eq "b"', 'emails[type eq "work" and value co "@"].value pr',
           'userName eq', '"', "\x00", "ｕserName eq \"a\"", 'meta.lastModified gt "not-a-date"',
           'userName sw "' + "a" * 5000 + '"', "name.givenName eq 1e999999", 'urn:x:y:z eq "a"']
CONTENT_TYPES = [b"application/json", b"application/scim+json", b"application/scim+json; charset=utf-8",
                 b"text/plain", b"", b"application/json; charset=latin-1", b"multipart/form-data; boundary=x",
                 b"application/x-www-form-urlencoded", b"application/json\xff", b"\x00", b"*/*"]
EXTRA_NAMES = [b"X-Forwarded-For", b"Accept", b"If-Match", b"If-None-Match", b"Accept-Encoding", b"Cookie",
               b"User-Agent", b"Content-Encoding", b"X-Request-Id", b"Forwarded", b"Origin", b"Referer",
               b"Expect", b"X-" + b"a" * 200, b"Authorization", b"Content-Type", b"Host", b"Range"]


def hr_event() -> dict:
    n = uuid.uuid4().hex[:10]
    return {"event_id": f"evt-{n}", "type": "employee.hired", "occurred_at": "2026-11-28T09:00:00Z",
            "employee": {"employee_id": f"F{n}", "email": f"f{n}@example.com", "given_name": "Fuzz",
                         "family_name": "Tester", "username": f"f{n}"}}


hostile_value = st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.booleans(), st.text(max_size=20),
                          st.lists(st.integers(), max_size=3), st.just("a" * 5000), st.just("ａdmin"),
                          st.just({"$ref": "../../etc/passwd"}), st.just("\u202e\u200b"))


@st.composite
def json_body(draw, kind: str) -> bytes:
    choice = draw(st.sampled_from(["valid", "hostile", "hostile", "garbage", "deep", "patch"]))
    if choice == "garbage":
        return draw(st.one_of(st.binary(max_size=400), st.text(max_size=200).map(str.encode),
                              st.sampled_from([b"", b"null", b"[]", b'"\\ud800"', b"\xef\xbb\xbf{}", b"1e999999"])))
    if choice == "deep":
        depth = draw(st.sampled_from([150, 500, 3000, 12000]))
        return draw(st.sampled_from([b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth]))
    if choice == "patch":
        op = draw(st.sampled_from(["replace", "Replace", "ADD", "remove", "move", "", "rEpLaCe"]))
        path = draw(st.one_of(st.sampled_from(["active", "userName", 'emails[type eq "work"].value',
                                               "name.givenName", f"{ENTERPRISE}:employeeNumber", "id",
                                               "meta.version", "groups", 'emails[value eq "x"]', "]["]),
                              st.text(max_size=30), st.none()))
        opd = {"op": op, "value": draw(hostile_value)}
        if path is not None:
            opd["path"] = path
        return json.dumps({"schemas": [PATCH_OP], "Operations": [opd]}).encode()
    body = hr_event() if kind == "hr" else scim_user()
    if choice == "hostile":
        keys = (["event_id", "type", "occurred_at", "employee"] if kind == "hr"
                else ["userName", "name", "emails", "externalId", "active", "schemas", ENTERPRISE, "id", "meta"])
        body[draw(st.sampled_from(keys))] = draw(hostile_value)
    return json.dumps(body).encode()


NATURAL = {b"/v1/hr/events": [b"POST"], b"/scim/v2/Users": [b"POST", b"GET"],
           b"/scim/v2/Users/{id}": [b"GET", b"PUT", b"PATCH", b"PATCH", b"DELETE"]}


@st.composite
def hostile_request(draw, gw, ids: list[str]) -> tuple[bytes, dict]:
    # One in five is a request a real client could send (right method, path, credentials
    # and media type) with only its extra headers and its body hostile, so the layers
    # behind the checks (and the valid outcomes) are reached too.
    clean = draw(st.integers(0, 99)) < 20
    base = draw(st.sampled_from(list(NATURAL) if clean else BASE))
    method = draw(st.sampled_from(NATURAL[base] if clean else [b"POST", b"GET", b"PUT", b"PATCH", b"DELETE"] + METHODS))
    path = base.replace(b"{id}", draw(st.sampled_from(ids)).encode() if ids else b"none")
    mutation = "none" if clean else draw(path_mutations)
    if mutation == "slash":
        path += b"/"
    elif mutation == "pct":
        path += b"/" + draw(pct)
    elif mutation == "double":
        path = path.replace(b"/", b"//", 1)
    elif mutation == "dotdot":
        path += b"/.." * draw(st.integers(1, 5)) + draw(st.sampled_from([b"", b"/etc/passwd", b"/%2e%2e/x"]))
    elif mutation == "ctrl":
        path += draw(st.sampled_from([b"%00", b"%01", b"%7f", b"%0d%0a", b"%09", b"%1b[31m", b"%c0%af"]))
    elif mutation == "long":
        path += b"/" + b"a" * draw(st.sampled_from([300, 4000, 8000]))  # the server's bound is 16 KiB a head
    elif mutation == "raw":
        path += draw(st.binary(min_size=1, max_size=10)).replace(b"\r", b"").replace(b"\n", b"").replace(b" ", b"")
    elif mutation == "case":
        path = path.upper()
    elif mutation == "scim-suffix":
        path += b".scim"
    elif mutation == "semicolon":
        path += b";jsessionid=1"
    elif mutation == "unicode":
        path += b"/" + urllib.parse.quote("ｕsers/\u202e/é").encode()
    elif mutation == "id-junk" and b"/Users" in path:
        path = b"/scim/v2/Users/" + draw(pct)
    query = b"" if clean else draw(st.one_of(st.just(b""), st.just(b""),
                           st.sampled_from(FILTERS).map(lambda f: b"?filter=" + urllib.parse.quote(f).encode()),
                           st.lists(st.tuples(pct, pct), max_size=4).map(
                               lambda kv: b"?" + b"&".join(k + b"=" + v for k, v in kv)),
                           st.sampled_from([b"?count=-1", b"?startIndex=abc", b"?count=99999999999999999999",
                                            b"?attributes=" + b"a." * 1000, b"?excludedAttributes=members",
                                            b"?sortBy=userName&sortOrder=sideways", b"?token=abc", b"?&&&=&="])))
    kind = "hr" if base.startswith(b"/v1/") else "scim"
    body = draw(json_body(kind)) if draw(st.integers(0, 9)) else b""
    headers: list[tuple[bytes, bytes]] = []
    if kind == "scim":
        auth = "good" if clean else draw(st.sampled_from(["good", "good", "good", "none", "junk", "basic", "lower"]))
        token = gw.scim_token.encode()
        headers += {"good": [(b"Authorization", b"Bearer " + token)], "none": [],
                    "junk": [(b"Authorization", draw(octets))], "basic": [(b"Authorization", b"Basic " + token)],
                    "lower": [(b"authorization", b"bearer " + token)]}[auth]
    else:
        sig = "good" if clean else draw(st.sampled_from(["good", "good", "none", "junk", "stale"]))
        t = int(time.time()) - (400 if sig == "stale" else draw(st.integers(0, 200)))
        if sig in ("good", "stale"):
            headers.append((signature.HEADER.encode(), signature.sign(gw.secrets[0].encode(), t, body).encode()))
        elif sig == "junk":
            headers.append((signature.HEADER.encode(), draw(octets)))
    headers.append((b"Content-Type", b"application/json" if clean else draw(st.sampled_from(CONTENT_TYPES))))
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(EXTRA_NAMES[:12] if clean else EXTRA_NAMES))
        value = draw(st.one_of(octets, st.text(max_size=40).map(
            lambda s: s.encode().replace(b"\r", b"").replace(b"\n", b"")), st.just(b"x" * 1500)))
        headers.append((name, value))
    if not clean and draw(st.integers(0, 19)) == 0:
        headers.append((b"Content-Length", draw(st.sampled_from([b"abc", b"-1", b"1e3", b"99999999999999",
                                                                  b"0x10", b" 5"]))))
        body = b""
    meta = {"method": method, "path": path, "base": base, "kind": kind}
    return build_request(method, path + query, headers, body), meta


def outcome_problem(resp, meta) -> str | None:
    """Why an answer is not a 4xx that says something, nor a valid outcome; ``None`` if it is."""
    status = resp.status
    if 400 <= status < 500:
        return None if (resp.body or meta["method"] == b"HEAD") else "a 4xx with an empty body"
    if not 200 <= status < 300:
        return f"status {status}"
    if meta["kind"] == "hr":
        if status != 202:
            return f"webhook answered {status}"
        return None  # the run behind it is checked with every other run at the end
    method = meta["method"].upper()  # scim2-server reads the method whatever its case, as RFC 9110 allows it not to
    if method in (b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE"):
        return None  # reads, and writes whose runs are all checked at the end
    return f"{meta['method']!r} answered {status}"


def test_over_a_thousand_hostile_requests_get_a_4xx_or_a_valid_run_and_no_error_log(namespace, hr_deployments):
    settings_, keys, token = gateway_settings(platform_namespace=namespace, namespace=namespace)
    gw = start_gateway(settings_, keys, token)
    names = {v: k for k, v in hr_deployments.items()}
    started = time.time()
    try:
        with scim_client(gw) as c:
            ids = [c.post("/Users", json=scim_user()).json()["id"] for _ in range(4)]
        before = {str(r.id) for r in all_flow_runs()}
        seen: dict[int, int] = {}
        problems: list[tuple] = []
        resets = [0]
        accepted: list[str] = []

        @settings(max_examples=1100, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(data=st.data())
        def one(data):
            request, meta = data.draw(hostile_request(gw, ids))
            resp = raw_request(gw.url, request)
            for _ in range(2):  # the server answered and closed with bytes unread: the client's
                if resp.status:  # kernel may drop the answer on the reset (a transport race)
                    break
                resets[0] += 1
                resp = raw_request(gw.url, request)
            seen[resp.status] = seen.get(resp.status, 0) + 1
            problem = outcome_problem(resp, meta)
            if resp.status == 202:
                accepted.append(json.loads(resp.body)["flow_run_id"])
            if problem:
                problems.append((problem, request[:300], resp.body[:300]))

        with error_log() as errors:
            one()
    finally:
        gw.stop()
    print(f"status counts: {dict(sorted(seen.items()))} in {time.time() - started:.0f} s; {resets[0]} resends; "
          f"{len(errors.records)} ERROR records")
    assert errors.summary() == []
    for p in problems:
        print("PROBLEM", p)
    assert problems == []
    assert sum(seen.values()) >= 1000, seen
    assert {400, 401, 404, 405, 415, 422} <= set(seen) and 202 in seen, seen  # every layer was reached
    # the gateway's runs: a flow the session runs directly (a reaper's, a backup's) has no deployment here
    fresh = [r for r in all_flow_runs() if str(r.id) not in before and str(r.deployment_id) in names]
    assert fresh, "no generated request started a run"
    assert set(accepted) <= {str(r.id) for r in fresh}  # every 202 names a run that exists
    for run in fresh:
        req = parse_request(run.parameters["request"])
        assert names[str(run.deployment_id)] == deployment_for(req.type, settings_), run.parameters
