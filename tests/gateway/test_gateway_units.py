"""The gateway's pure parts with plain values: signatures, the rate-limit bucket, the
SCIM -> HR mapping, the startup refusal (and `vibecode gateway` honouring it)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timezone

import pytest

from tasks.core.settings import Settings
from tasks.gateway import scim_map, signature
from tasks.gateway.ratelimit import Bucket, Limiter, client_key, take
from tasks.gateway.startup import config_problems

KEY = b"k" * 32
BODY = b'{"event_id": "e1"}'


# -- signatures --------------------------------------------------------------------
def test_sign_is_hmac_sha256_over_timestamp_dot_body():
    header = signature.sign(KEY, 1700000000, BODY)
    expected = hmac.new(KEY, b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert signature.verify(header, BODY, [KEY], now=1700000000).timestamp == 1700000000


@pytest.mark.parametrize("now, ok", [(1700000300, True), (1699999700, True), (1700000301, False),
                                     (1699999699, False)])
def test_the_window_is_300_seconds_either_way(now, ok):
    header = signature.sign(KEY, 1700000000, BODY)
    if ok:
        signature.verify(header, BODY, [KEY], now=now)
    else:
        with pytest.raises(signature.SignatureError, match="300 s"):
            signature.verify(header, BODY, [KEY], now=now)


def test_any_configured_secret_verifies_and_others_do_not():
    old, new, other = (secrets.token_bytes(32) for _ in range(3))
    for key in (old, new):
        signature.verify(signature.sign(key, 100, BODY), BODY, [old, new], now=100)
    with pytest.raises(signature.SignatureError, match="does not match"):
        signature.verify(signature.sign(other, 100, BODY), BODY, [old, new], now=100)
    with pytest.raises(signature.SignatureError, match="does not match"):
        signature.verify(signature.sign(old, 100, BODY), BODY + b" ", [old, new], now=100)
    with pytest.raises(signature.SignatureError, match="no webhook secret"):
        signature.verify(signature.sign(old, 100, BODY), BODY, [], now=100)


@pytest.mark.parametrize("header, message", [
    (None, "missing"), ("", "missing"), ("v1=" + "a" * 64, "no t="), ("t=100", "no v1="),
    ("t=abc,v1=" + "a" * 64, "unix seconds"), ("t=100,v1=XYZ", "64 lowercase hex"),
    ("t=100,v1=" + "A" * 64, "64 lowercase hex"), ("garbage", "must look like"),
    ("t=1,t=2,v1=" + "a" * 64, "more than one t="), ("t=1," + ",".join(["v1=" + "a" * 64] * 5), "more than 4"),
    ("t=1,v1=" + "a" * 2000, "too long"), ("t=１００,v1=" + "a" * 64, "unix seconds"),
])
def test_malformed_headers_are_refused_with_a_reason_that_does_not_echo_them(header, message):
    with pytest.raises(signature.SignatureError, match=message) as exc:
        signature.verify(header, BODY, [KEY], now=100)
    if header:
        assert header not in str(exc.value)


def test_replay_guard_remembers_deliveries_for_twice_the_window():
    guard = signature.ReplayGuard(tolerance=300)
    parsed = signature.parse_header(signature.sign(KEY, 1000, BODY))
    assert not guard.is_replay(parsed, BODY, now=1000)
    guard.remember(parsed, BODY, now=1000)
    assert guard.is_replay(parsed, BODY, now=1500)
    assert not guard.is_replay(parsed, BODY + b"x", now=1500)
    assert not guard.is_replay(parsed, BODY, now=1601)  # forgotten once no clock could accept it


def test_replay_guard_is_bounded():
    guard = signature.ReplayGuard(tolerance=300, max_entries=10)
    for t in range(100):
        guard.remember(signature.ParsedHeader(t, ("a" * 64,)), BODY, now=100)
    assert len(guard._seen) <= 10


# -- rate limit ----------------------------------------------------------------------
def test_bucket_refills_at_rate_up_to_burst():
    d = take(None, now=0, rate=2, burst=3)
    assert d.allowed and d.bucket == Bucket(2, 0)
    d = take(d.bucket, 0, 2, 3)
    d = take(d.bucket, 0, 2, 3)
    assert d.allowed and d.bucket.tokens == 0
    refused = take(d.bucket, 0.1, 2, 3)
    assert not refused.allowed and refused.retry_after == 1
    assert take(refused.bucket, 0.5, 2, 3).allowed  # 0.2 + 0.4*2 = 1.0 token
    assert take(Bucket(0, 100), 10_000, 2, 3).bucket.tokens == 2  # capped at burst, minus this one
    assert not take(Bucket(0, 100), 50, 2, 3).allowed  # a clock step back refills nothing


def test_limiter_is_per_client_and_bounded():
    lim = Limiter(rate=1, burst=1, max_clients=3)
    assert lim.check("a", 0).allowed and not lim.check("a", 0).allowed
    assert lim.check("b", 0).allowed
    for c in "cdefg":
        lim.check(c, 0)
    assert len(lim._buckets) == 3


def test_forwarded_for_is_believed_only_from_trusted_proxies():
    trusted = ["10.0.0.0/8"]
    assert client_key("203.0.113.9", "1.2.3.4", trusted) == "203.0.113.9"
    assert client_key("10.1.2.3", "1.2.3.4, 198.51.100.7", trusted) == "198.51.100.7"
    assert client_key("10.1.2.3", "198.51.100.7, 10.9.9.9", trusted) == "198.51.100.7"
    assert client_key("10.1.2.3", "not-an-ip", trusted) == "10.1.2.3"
    assert client_key(None, None, trusted) == "unknown"


# -- SCIM -> HR ------------------------------------------------------------------------
USER = {"userName": "alice.liddell@example.com", "name": {"givenName": "Alice", "familyName": "Liddell"},
        "emails": [{"value": "home@example.org", "type": "home"}, {"value": "alice@example.com", "primary": True}],
        "externalId": "00u1abc", scim_map.ENTERPRISE: {"employeeNumber": "E1001", "department": "Research & Development"}}


def test_a_new_scim_user_maps_to_a_hire():
    assert scim_map.username_for(USER) == "alice-liddell"
    assert scim_map.username_for({"userName": "Bob"}) == "bob"
    assert scim_map.employee_id_for(USER, "ff") == ("E1001", f"{scim_map.ENTERPRISE}:employeeNumber")
    assert scim_map.employee_id_for({"externalId": "x1"}, "ff") == ("x1", "externalId")
    assert scim_map.employee_id_for({}, "ff") == ("scim-ff", "id")
    at = datetime(2026, 11, 29, tzinfo=timezone.utc)
    body = scim_map.hr_event(USER, event_type="employee.hired", event_id="scim-ff-v1", occurred_at=at,
                             username="alice-liddell", employee_id="E1001")
    assert body["employee"] == {"employee_id": "E1001", "email": "alice@example.com", "given_name": "Alice",
                                "family_name": "Liddell", "username": "alice-liddell",
                                "department": "research-development"}
    assert scim_map.event_type_for(None, USER, username="a", employee_id="e") == "employee.hired"
    assert scim_map.event_type_for(None, {**USER, "active": False}, username="a", employee_id="e") is None


@pytest.mark.parametrize("old, new, event", [
    ({"active": True}, {"active": False}, "employee.terminated"),
    ({"active": False}, {"active": True}, "employee.hired"),
    ({"active": False}, {"active": False}, None),
    ({}, {"phoneNumbers": [{"value": "123"}]}, None),
    ({}, {"name": {"givenName": "Alicia", "familyName": "Liddell"}}, "employee.updated"),
])
def test_which_hr_event_a_change_means(old, new, event):
    assert scim_map.event_type_for({**USER, **old}, {**USER, **new}, username="a", employee_id="e") == event


def test_hr_fields_are_blamed_on_scim_attributes():
    assert scim_map.scim_attribute("employee.given_name") == "name.givenName"
    assert scim_map.scim_attribute("employee.groups.0") == "groups"
    assert scim_map.scim_attribute("employee.employee_id", "externalId") == "externalId"
    assert scim_map.primary_email({"userName": "x@y.z"}) == "x@y.z"
    assert scim_map.primary_email({"emails": [{"value": "w@y.z", "type": "work"}, {"value": "o@y.z"}]}) == "w@y.z"


# -- startup -----------------------------------------------------------------------------
def test_startup_refuses_missing_empty_short_or_duplicate_secrets():
    good = secrets.token_urlsafe(32)
    ok = Settings(gateway_webhook_secrets=[good], gateway_scim_token=secrets.token_urlsafe(32))
    assert config_problems(ok, "http://prefect:4200/api") == []
    assert any("PREFECT_API_URL" in p for p in config_problems(ok, None))
    cases = [
        (Settings(gateway_scim_token=good), "WEBHOOK_SECRETS is empty"),
        (Settings(gateway_webhook_secrets=[""], gateway_scim_token=good), "[0] is 0 bytes"),
        (Settings(gateway_webhook_secrets=[good, "x" * 31], gateway_scim_token=good), "[1] is 31 bytes"),
        (Settings(gateway_webhook_secrets=[good, good], gateway_scim_token=good), "same secret twice"),
        (Settings(gateway_webhook_secrets=[good]), "SCIM_TOKEN is unset"),
        (Settings(gateway_webhook_secrets=[good], gateway_scim_token=""), "SCIM_TOKEN is 0 bytes"),
        (Settings(gateway_webhook_secrets=[good], gateway_scim_token="t" * 31), "SCIM_TOKEN is 31 bytes"),
    ]
    for settings, message in cases:
        problems = config_problems(settings, "http://prefect:4200/api")
        assert any(message in p for p in problems), (message, problems)
        assert good not in " ".join(problems)


def test_vibecode_gateway_refuses_to_start_with_a_short_secret(monkeypatch, capsys):
    from tasks.core.settings import get_settings
    from vibecode_cli import main

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setenv("VIBECODE_GATEWAY_WEBHOOK_SECRETS", '["too-short"]')
    monkeypatch.setenv("VIBECODE_GATEWAY_SCIM_TOKEN", "also-short")
    get_settings.cache_clear()
    try:
        assert main(["gateway", "--port", "1"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert "refusing to start" in err and "WEBHOOK_SECRETS[0] is 9 bytes" in err and "SCIM_TOKEN is 10 bytes" in err
    assert "too-short" not in err and "also-short" not in err


# -- ledger fields (additive) ------------------------------------------------------------
def test_ledger_records_without_scim_are_written_as_before_and_scim_fields_round_trip():
    from tasks.core.names import SCIM_ID_LABEL
    from tasks.people.ledger import Record, from_manifest, to_manifest

    plain = to_manifest(Record("alice", "E1"), "ns")
    assert "scim" not in plain["data"] and "scim_id" not in plain["data"]
    assert SCIM_ID_LABEL not in plain["metadata"]["labels"]
    rec = Record("alice", "E1", scim_id="ab" * 16, scim='{"version": 1}')
    cm = to_manifest(rec, "ns")
    assert cm["metadata"]["labels"][SCIM_ID_LABEL] == "ab" * 16
    cm["metadata"]["resourceVersion"] = "7"
    back = from_manifest(cm)
    assert (back.scim_id, back.scim) == (rec.scim_id, rec.scim)
    assert from_manifest(plain).scim == ""
