"""Hostile input, generated: thousands of HR requests through ``tasks.people.hr.parse_request`` and
through the command line's event path (``vibecode onboard|offboard``), in process.

Every answer must be either a refusal that names a field (``InvalidInput``) or a valid
request that survives a round trip through its own JSON unchanged; never another
exception type, and never a flow started for a refused event.
"""

from __future__ import annotations

import copy
import io
import json
import re
import sys
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vibecode_cli
from tasks.core.errors import InvalidInput
from tasks.core.names import RESERVED_PREFIXES, RESERVED_USERNAMES, USERNAME_PATTERN
from tasks.core.settings import Settings, get_settings
from tasks.people.hr import EMPLOYEE_ID_PATTERN, EVENT_ID_PATTERN, HRRequest, allowed_groups, parse_request

pytestmark = pytest.mark.slow  # thousands of generated requests: the full suite runs them, not the unit tier

ALLOWED = ["developers", "sre", "users"]
HR_SETTINGS = Settings(hr_allowed_groups=ALLOWED, privileged_groups=["admins", "root-ops"])
EXAMPLES = 1000
HYPOTHESIS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                             HealthCheck.data_too_large])

FIELD_ROOTS = {"request", "event", "type", "event_id", "occurred_at", "employee"}
EMPLOYEE_FIELDS = {"employee_id", "email", "given_name", "family_name", "username", "department", "groups"}

BASE = {"event_id": "evt-2026-0001", "type": "employee.hired", "occurred_at": "2026-11-28T09:00:00Z",
        "employee": {"employee_id": "E1001", "email": "alice@example.com", "given_name": "Alice",
                     "family_name": "Liddell", "username": "alice", "department": "engineering",
                     "groups": ["developers"]}}

# -- strategies ------------------------------------------------------------------------------
NASTY = ["", " ", "\n", "alice\n", "alice\r\n", "alice@example.com\n", "E1001\n", "evt-1\n",
         "developers\n", "admins", "root-ops", "wheel", "../../etc/passwd", "a/b", "$(reboot)", "`id`",
         "alice;rm -rf /", "\u0430lice", "\uff41lice", "x" * 10_000, "\x00", "alice\x00", "Zoë", "'; DROP TABLE--",
         "alice@example.com\r\nBcc: all@example.com", "alice@localhost", "alice@1.2.3.4", "auth", "admin",
         "kube-system", "2026-11-28T09:00:00", "2026-02-30T09:00:00Z", "employee.terminated", "\u2028",
         "\ud800", "-alice", "alice-", "a--b", "ALICE", "9999-12-31T23:59:59+23:59", "0001-01-01T00:00:00Z"]
SUFFIXES = ["\n", "\r\n", "\r", " ", "\t", "\x00", "\u2028", "\u0085", "\x0b", "\x0c"]

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=24))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
hostile_text = st.one_of(st.sampled_from(NASTY), st.text(max_size=70),
                         st.text(alphabet=st.characters(max_codepoint=0x7f), max_size=40))


@st.composite
def valid_requests(draw) -> dict:
    """Requests built to be valid, so the accepting branch (and its round trip) is exercised too."""
    username = draw(st.from_regex(r"[a-z][a-z0-9]{1,12}", fullmatch=True).filter(
        lambda u: u not in RESERVED_USERNAMES and not u.startswith(RESERVED_PREFIXES)))
    body = copy.deepcopy(BASE)
    body["event_id"] = draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,30}", fullmatch=True))
    body["type"] = draw(st.sampled_from(["employee.hired", "employee.updated", "employee.terminated"]))
    body["occurred_at"] = draw(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1))
                               .map(lambda d: d.isoformat() + "Z"))
    emp = body["employee"]
    emp["employee_id"] = draw(st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,20}[A-Za-z0-9])?", fullmatch=True))
    emp["username"] = draw(st.sampled_from([username, None]))
    emp["email"] = f"{username}@{draw(st.sampled_from(['example.com', 'Example.COM', 'corp.example.org']))}"
    emp["given_name"] = draw(st.sampled_from(["Alice", "Zoë", "Ó Briain", "Jean-Luc", "Łukasz", "O'Neil"]))
    emp["family_name"] = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyzÀÉÖøß", min_size=1, max_size=20))
    emp["department"] = draw(st.sampled_from([None, "engineering", "sales-emea", "r-and-d"]))
    emp["groups"] = draw(st.lists(st.sampled_from(ALLOWED), max_size=3, unique=True))
    if emp["username"] is None:
        del emp["username"]
    return body


@st.composite
def hostile_requests(draw) -> object:
    """A valid request with 1-3 fields broken, removed or retyped; or something else entirely."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    body = draw(valid_requests())
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["envelope", "employee"]))
        target = body if where == "envelope" or not isinstance(body.get("employee"), dict) else body["employee"]
        key = draw(st.sampled_from(sorted(FIELD_ROOTS - {"request", "event"}) if target is body
                                   else sorted(EMPLOYEE_FIELDS)))
        how = draw(st.sampled_from(["text", "suffix", "json", "delete", "groups"]))
        if how == "text":
            target[key] = draw(hostile_text)
        elif how == "suffix" and isinstance(target.get(key), str):
            target[key] = target[key] + draw(st.sampled_from(SUFFIXES))
        elif how == "json":
            target[key] = draw(json_values)
        elif how == "delete":
            target.pop(key, None)
        elif how == "groups" and target is not body:
            target["groups"] = draw(st.lists(st.one_of(st.sampled_from(ALLOWED + ["admins", "root-ops", "wheel"]),
                                                       hostile_text), max_size=4))
    return body


requests_ = st.one_of(valid_requests(), hostile_requests(), hostile_requests())


# -- the property -----------------------------------------------------------------------------
def _check_answer(call, data) -> str:
    """Run ``call(data)``; assert it refused naming a field or accepted something valid. Returns which."""
    try:
        r = call(data)
    except InvalidInput as exc:
        root = exc.field.split(".")[0]
        assert root in FIELD_ROOTS, exc.field
        if root == "employee" and "." in exc.field:
            assert exc.field.split(".")[1] in EMPLOYEE_FIELDS, exc.field
        assert str(exc).startswith(exc.field + ": ") and len(str(exc)) < 400  # never echoes 10 kB back
        return "refused"
    assert isinstance(r, HRRequest)
    again = parse_request(r.model_dump(mode="json"), HR_SETTINGS)
    assert again == r and again.model_dump(mode="json") == r.model_dump(mode="json")
    assert re.fullmatch(USERNAME_PATTERN, r.username)
    assert re.fullmatch(EVENT_ID_PATTERN, r.event_id) and re.fullmatch(EMPLOYEE_ID_PATTERN, r.employee.employee_id)
    assert set(r.employee.groups) <= allowed_groups(HR_SETTINGS)
    for text in (r.employee.email, r.employee.given_name, r.employee.family_name, r.username, r.event_id):
        assert not any(ch in text for ch in "\n\r\x00\u2028"), text
    assert r.occurred_at.tzinfo is not None
    return "accepted"


@pytest.fixture
def hr_env(monkeypatch):
    monkeypatch.setenv("VIBECODE_HR_ALLOWED_GROUPS", json.dumps(ALLOWED))
    monkeypatch.setenv("VIBECODE_PRIVILEGED_GROUPS", json.dumps(["admins", "root-ops"]))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def no_flow_may_start(monkeypatch):
    """Any attempt to run an HR flow from here is recorded; validation must never get that far."""
    import flows.offboarding
    import flows.onboarding

    started: list = []

    def refuse(*args, **kwargs):
        started.append(args)
        raise AssertionError("a flow was started")

    for module, name in ((flows.onboarding, "run_hr_event"), (flows.onboarding, "onboard_user"),
                         (flows.offboarding, "offboard_user")):
        monkeypatch.setattr(module, name, refuse)
    return started


def test_hostile_requests_through_parse_request_refuse_naming_a_field_or_round_trip(hr_env, no_flow_may_start):
    seen = {"refused": 0, "accepted": 0}

    @HYPOTHESIS
    @given(requests_)
    def prop(data):
        seen[_check_answer(lambda d: parse_request(d, HR_SETTINGS), data)] += 1

    prop()
    assert sum(seen.values()) >= EXAMPLES, seen
    assert seen["refused"] >= EXAMPLES // 4 and seen["accepted"] >= EXAMPLES // 10, seen  # both branches ran
    assert no_flow_may_start == []


raw_events = st.one_of(
    requests_.map(lambda d: json.dumps(d, allow_nan=True)),
    # a lone surrogate (hostile strings hold them) passes as bytes no UTF-8 decoder accepts
    requests_.map(lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.binary(max_size=200),
    st.text(max_size=200),
    st.integers(1, 200_000).map(lambda n: "[" * n),  # deep nesting
    st.integers(4_400, 6_000).map(lambda n: '{"event_id": ' + "9" * n + "}"),  # past the int digit limit
    st.integers(60_000, 70_000).map(lambda n: json.dumps({**BASE, "pad": "x" * n})),  # around the size limit
    requests_.map(lambda d: json.dumps(d)[:-1]),  # truncated
    requests_.map(lambda d: json.dumps(d).encode("utf-16")),
)


@pytest.mark.parametrize("command", ["onboard", "offboard"])
def test_hostile_events_through_the_cli_validation_refuse_naming_a_field_or_round_trip(hr_env, no_flow_may_start,
                                                                                     command):
    seen = {"refused": 0, "accepted": 0}

    @HYPOTHESIS
    @given(raw_events)
    def prop(raw):
        outcome = _check_answer(lambda d: vibecode_cli.parse_hr_event(d, command), raw)
        seen[outcome] += 1
        if outcome == "accepted":
            r = vibecode_cli.parse_hr_event(raw, command)
            assert r.type in vibecode_cli.HR_COMMAND_TYPES[command]

    prop()
    assert sum(seen.values()) >= EXAMPLES, seen
    assert seen["refused"] >= EXAMPLES // 4 and seen["accepted"] >= 20, seen
    assert no_flow_may_start == []


def test_hostile_events_through_the_cli_main_exit_2_and_start_no_flow(hr_env, monkeypatch, tmp_path, capsys):
    """The whole ``vibecode onboard - --json`` path in process (stdin, Typer, exit code, stdout), with the
    flow runner replaced by a recorder: a refused event exits 2 and reaches no flow; an accepted
    one reaches the flow exactly as validated."""
    import flows.onboarding

    started: list = []
    monkeypatch.setattr(flows.onboarding, "run_hr_event", lambda body: started.append(body) or {"ok": True})
    counts = {"refused": 0, "accepted": 0}

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(raw_events)
    def prop(raw):
        data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
        before = len(started)
        code = vibecode_cli.main(["onboard", "-", "--json"])
        captured = capsys.readouterr()
        out = json.loads(captured.out)  # with --json, stdout is one JSON document, refused or not
        if code == 2:
            assert "invalid input: " in captured.err and len(started) == before
            assert out["ok"] is False and out["exit"] == 2 and out["field"].split(".")[0] in FIELD_ROOTS, out
            assert len(captured.out) < 1000  # never echoes the event back
            counts["refused"] += 1
        else:
            assert code == 0 and len(started) == before + 1, captured.err
            assert out == {"ok": True}  # the flow's result, exactly
            r = parse_request(started[-1], HR_SETTINGS)
            assert r.type in ("employee.hired", "employee.updated")
            counts["accepted"] += 1

    prop()
    assert counts["refused"] >= 100 and counts["accepted"] >= 1, counts
