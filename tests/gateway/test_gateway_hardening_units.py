"""Issue 16 (HR gateway), the pure parts with plain values: which HR event a SCIM update
means when ``active`` is left out, event-id namespaces and the run-match rule, the one
username rule, the rate-limit network, the one event-type -> process router, and the
ledger's notion of a claim nothing came of."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.core.errors import InvalidInput
from tasks.core.settings import Settings
from tasks.gateway import scim_map

ROOT = pathlib.Path(__file__).resolve().parents[2]
USER = {"userName": "alice@example.com", "name": {"givenName": "Alice", "familyName": "Liddell"},
        "emails": [{"value": "alice@example.com", "primary": True}], "externalId": "00u1"}

# Anything an identity provider might put in a replacement profile, except `active` itself.
profile = st.fixed_dictionaries({}, optional={
    "name": st.fixed_dictionaries({"givenName": st.sampled_from(["Alice", "Alicia"]),
                                   "familyName": st.sampled_from(["Liddell", "Smith"])}),
    "emails": st.just([{"value": "alice.new@example.com", "type": "work"}]),
    "phoneNumbers": st.just([{"value": "+1 555 0100"}]),
    "displayName": st.text(max_size=10),
    "active": st.none(),
})


# -- a leaver stays out unless an update says active: true ---------------------------------
@settings(max_examples=300, deadline=None)
@given(change=profile, old_active=st.sampled_from([False]), explicit=st.sampled_from([None, False, True]))
def test_update_leaving_out_active_never_rehires_a_leaver(change, old_active, explicit):
    old = {**USER, "active": old_active}
    new = {**USER, **change}
    if explicit is not None:
        new["active"] = explicit
    # the request as sent: absent is "keep", never SCIM's default "true"
    raw = scim_map.event_type_for(old, new, username="alice", employee_id="00u1")
    assert raw == ("employee.hired" if explicit is True else None)
    # ... and as stored (what a later GET, and the next update, see)
    stored = scim_map.keep_active(old, new)
    assert scim_map.event_type_for(old, stored, username="alice", employee_id="00u1") == raw
    assert stored["active"] is (explicit is True)


def test_keep_active_keeps_an_active_person_active_and_follows_an_explicit_value():
    assert scim_map.keep_active({"active": True}, {"userName": "a"})["active"] is True
    assert scim_map.keep_active({"active": True}, {"active": False})["active"] is False
    assert "active" not in scim_map.keep_active({}, {"userName": "a"})  # never set: SCIM's default (true)
    assert scim_map.event_type_for({**USER, "active": True}, {**USER}, username="a", employee_id="e") is None


# -- event ids are scoped per entry point ----------------------------------------------------
def test_scim_event_ids_are_namespaced_keyed_and_refused_to_webhooks():
    from tasks.gateway.events import SCIM_PREFIX, scim_event_id, scim_event_key, webhook_event_id_problem
    from tasks.people.hr import parse_request

    key = scim_event_key("t" * 40)
    a = scim_event_id(key, "ab" * 16, 2)
    assert a.startswith(SCIM_PREFIX) and a == scim_event_id(key, "ab" * 16, 2)
    assert a != scim_event_id(key, "ab" * 16, 3) != scim_event_id(scim_event_key("u" * 40), "ab" * 16, 2)
    assert "ab" * 16 not in a  # nothing a webhook sender could compute from the SCIM id
    parse_request({"event_id": a, "type": "employee.hired", "occurred_at": "2026-11-28T09:00:00Z",
                   "employee": {"employee_id": "E1", "email": "ann@example.com", "given_name": "A",
                                "family_name": "B"}})  # a valid HR event id for the flows
    for reserved in (a, "scim:x", "SCIM:x", "Scim:anything"):
        assert "reserved for SCIM" in webhook_event_id_problem(reserved)
    for free in ("evt-1", "scim-1-v2", "scimx:1", "hr:scim:1"):
        assert webhook_event_id_problem(free) is None


HIRE = {"type": "employee.hired", "event_id": "e1", "occurred_at": "2026-11-28T09:00:00+00:00",
        "employee": {"employee_id": "E1", "username": "alice", "email": "a@example.com"}}


@pytest.mark.parametrize("found_deployment, found, exact, verdict", [
    ("onboard", HIRE, True, None),
    ("onboard", {**HIRE, "occurred_at": "2026-11-29T09:00:00+00:00"}, True, "different event"),
    ("onboard", {**HIRE, "occurred_at": "2026-11-29T09:00:00+00:00"}, False, None),  # SCIM: same person, same type
    ("offboard", {**HIRE, "type": "employee.terminated"}, True, "runs on offboard"),
    ("offboard", {**HIRE, "type": "employee.terminated"}, False, "runs on offboard"),
    ("onboard", {**HIRE, "type": "employee.updated"}, False, "another event type"),
    ("onboard", {**HIRE, "employee": {**HIRE["employee"], "employee_id": "E2"}}, False, "another person"),
    ("onboard", {**HIRE, "employee": {**HIRE["employee"], "username": "mallory"}}, False, "another person"),
    ("onboard", None, False, "another person"),
])
def test_a_run_found_under_an_event_id_must_be_the_one_the_request_meant(found_deployment, found, exact, verdict):
    from tasks.gateway.events import run_mismatch

    got = run_mismatch("onboard", HIRE, found_deployment, found, exact=exact)
    assert (got is None) if verdict is None else (verdict in got)


# -- one username rule for every path --------------------------------------------------------
LOOKALIKES = ["ａlice@example.com",  # fullwidth a: NFKC folds it to "a"
              "\u212aelly@example.com",  # KELVIN SIGN: str.lower() gives "k"
              "\u212aelly",  # ... in a plain userName
              "аlice@example.com",  # Cyrillic а (no folding makes it ASCII, still refused)
              "ﬀion@example.com",  # the "ff" ligature: NFKC gives "ff"
              "ALİCE"]  # dotted capital I: lower() gives "i̇"


@pytest.mark.parametrize("login", LOOKALIKES)
def test_lookalike_logins_are_refused_by_the_one_username_rule(login):
    with pytest.raises(InvalidInput, match="ASCII") as exc:
        scim_map.username_for({"userName": login})
    assert exc.value.field == "employee.username"
    assert scim_map.scim_attribute(exc.value.field) == "userName"
    from tasks.core.names import derive_username

    with pytest.raises(InvalidInput, match="ASCII"):
        derive_username(login)


@pytest.mark.parametrize("login, username", [
    ("alice@example.com", "alice"), ("Alice.Liddell@example.com", "alice-liddell"), ("Bob", "bob"),
    ("bob_smith+dev@example.com", "bob-smith-dev"), ("carol.jones", "carol-jones"),
])
def test_scim_and_hr_derive_the_same_username(login, username):
    from tasks.core.names import derive_username
    from tasks.people.hr import parse_request

    assert scim_map.username_for({"userName": login}) == derive_username(login) == username
    if "@" in login:
        req = parse_request({"event_id": "e1", "type": "employee.hired", "occurred_at": "2026-11-28T09:00:00Z",
                             "employee": {"employee_id": "E1", "email": login, "given_name": "A",
                                          "family_name": "B"}})
        assert req.username == username


# -- rate limiting per network ---------------------------------------------------------------
@pytest.mark.parametrize("client, v4, v6, key", [
    ("2001:db8:1:2::1", 32, 64, "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", 32, 64, "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", 32, 64, "2001:db8:1:3::/64"),
    ("2001:db8:1:2::1", 32, 128, "2001:db8:1:2::1/128"),
    ("198.51.100.7", 32, 64, "198.51.100.7/32"),
    ("198.51.100.7", 24, 64, "198.51.100.0/24"),
    ("::ffff:198.51.100.7", 24, 64, "198.51.100.0/24"),  # an IPv4-mapped address is that IPv4 address
    ("unknown", 24, 64, "unknown"),
])
def test_rate_limit_key_is_the_client_network(client, v4, v6, key):
    from tasks.gateway.ratelimit import rate_key

    assert rate_key(client, v4, v6) == key


def test_a_whole_ipv6_64_shares_one_bucket():
    from tasks.gateway.ratelimit import Limiter, rate_key

    lim = Limiter(rate=0.001, burst=3)
    answers = [lim.check(rate_key(f"2001:db8:7:7::{i:x}"), 0).allowed for i in range(1, 7)]
    assert answers == [True, True, True, False, False, False]
    assert lim.check(rate_key("2001:db8:7:8::1"), 0).allowed  # the next /64 is someone else


def test_rate_limit_prefixes_are_settings_with_flat_and_nested_names(monkeypatch):
    s = Settings()
    assert (s.gateway.rate_ipv4_prefix, s.gateway.rate_ipv6_prefix) == (32, 64)
    assert Settings(gateway_rate_ipv4_prefix=24).gateway.rate_ipv4_prefix == 24
    monkeypatch.setenv("VIBECODE_GATEWAY_RATE_IPV6_PREFIX", "56")
    assert Settings().gateway.rate_ipv6_prefix == 56
    monkeypatch.setenv("VIBECODE_GATEWAY__RATE_IPV6_PREFIX", "48")
    assert Settings().gateway.rate_ipv6_prefix == 48
    with pytest.raises(ValueError):
        Settings(gateway_rate_ipv4_prefix=33)


# -- one router from HR event type to lifecycle process --------------------------------------
def test_one_router_from_event_type_to_process_and_deployment():
    from tasks.people.hr import Process, deployment_for, process_for

    assert process_for("employee.hired") is process_for("employee.updated") is Process.ONBOARDING
    assert process_for("employee.terminated") is Process.OFFBOARDING
    with pytest.raises(KeyError):
        process_for("employee.promoted")
    s = Settings(gateway_onboard_deployment="on/x", gateway_offboard_deployment="off/y")
    assert [deployment_for(t, s) for t in ("employee.hired", "employee.updated", "employee.terminated")] == \
        ["on/x", "on/x", "off/y"]
    # ... and nobody else writes the routing out (the CLI is rewired by its own change).
    for path in ("gateway/app.py", "gateway/scim.py", "flows/onboarding.py"):
        src = (ROOT / path).read_text()
        assert "offboard_deployment" not in src and '== "employee.terminated"' not in src, path


# -- the ledger gives back only a claim nothing came of ---------------------------------------
def test_only_an_untouched_record_counts_as_a_claim_nothing_came_of():
    from datetime import datetime, timezone

    from tasks.people.record import Record, State, untouched

    assert untouched(Record("alice", "E1"))
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for touched in (Record("alice", "E1", events=("e1",)), Record("alice", "E1", state=State.ACTIVE),
                    Record("alice", "E1", hired_at=at), Record("alice", "E1", scim_id="ab" * 16),
                    Record("alice", "E1", last_error="boom")):
        assert not untouched(touched)
    assert untouched(Record("alice", "E1", resource_version="42"))  # the version is not content
