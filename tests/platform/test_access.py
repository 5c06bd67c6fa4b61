"""The evaluator of Authelia's access-control semantics (tasks.platform.access) on its own.

Each case is one of Authelia 4.39's documented behaviours (first matching rule wins, the
default policy otherwise, domain wildcards and placeholders, domain_regex named groups, subjects,
methods, resources, networks, anonymous "potential" matches), so the platform's access table
(tests/platform/test_platform_chart.py) rests on an evaluator that is itself checked.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.platform.access import Subject, decide, rule_matches

ALICE2 = Subject("alice", ("dev",), 2)
ALICE1 = Subject("alice", ("dev",), 1)
BOB2 = Subject("bob", ("ops",), 2)
NOBODY = Subject()


def ac(*rules, default="deny"):
    return {"default_policy": default, "rules": list(rules)}


def test_no_rule_means_the_default_policy():
    assert decide(ac(), "https://x.example.com/", ALICE2).policy == "deny"
    d = decide(ac(default="one_factor"), "https://x.example.com/", ALICE1)
    assert (d.policy, d.rule, d.allowed) == ("one_factor", None, True)


def test_the_first_matching_rule_wins_even_if_a_later_one_is_more_permissive():
    rules = ac({"domain": "app.example.com", "policy": "deny"}, {"domain": "app.example.com", "policy": "bypass"})
    d = decide(rules, "https://app.example.com/", ALICE2)
    assert (d.policy, d.rule, d.allowed) == ("deny", 0, False)


@pytest.mark.parametrize("policy, subject, allowed", [
    ("bypass", NOBODY, True), ("bypass", ALICE1, True),
    ("one_factor", NOBODY, False), ("one_factor", ALICE1, True), ("one_factor", ALICE2, True),
    ("two_factor", NOBODY, False), ("two_factor", ALICE1, False), ("two_factor", ALICE2, True),
    ("deny", ALICE2, False), ("deny", NOBODY, False),
])
def test_policies_against_authentication_levels(policy, subject, allowed):
    d = decide(ac({"domain": "a.example.com", "policy": policy}), "https://a.example.com/", subject)
    assert d.allowed is allowed
    assert d.sign_in is (not allowed and policy != "deny")


@pytest.mark.parametrize("entry, host, match", [
    ("app.example.com", "app.example.com", True),
    ("app.example.com", "APP.example.com", True),
    ("app.example.com", "x.app.example.com", False),
    ("*.example.com", "app.example.com", True),
    ("*.example.com", "a.b.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "badexample.com", False),
])
def test_domain_entries(entry, host, match):
    assert rule_matches({"domain": entry, "policy": "bypass"}, f"https://{host}/", ALICE2) is match


def test_user_and_group_placeholders():
    user_rule = {"domain": "{user}.example.com", "policy": "two_factor"}
    assert rule_matches(user_rule, "https://alice.example.com/", ALICE2)
    assert not rule_matches(user_rule, "https://bob.example.com/", ALICE2)
    assert rule_matches(user_rule, "https://bob.example.com/", NOBODY)  # potential: sign in first
    group_rule = {"domain": "{group}.example.com", "policy": "one_factor"}
    assert rule_matches(group_rule, "https://dev.example.com/", ALICE2)
    assert not rule_matches(group_rule, "https://ops.example.com/", ALICE2)


OWN = r"^(?P<User>[a-z][a-z0-9-]{0,30}[a-z0-9])\.example\.com$"


@pytest.mark.parametrize("host, subject, match", [
    ("alice.example.com", ALICE2, True),
    ("ALICE.example.com", ALICE2, True),          # Authelia compares the group case-insensitively
    ("bob.example.com", ALICE2, False),
    ("alice.example.com", BOB2, False),
    ("alice.example.com", NOBODY, True),          # anonymous: a potential match
    ("a.b.example.com", ALICE2, False),           # the pattern has no dots in the user part
    ("alice.example.com.evil", ALICE2, False),
])
def test_domain_regex_with_the_user_group(host, subject, match):
    assert rule_matches({"domain_regex": OWN, "policy": "two_factor"}, f"https://{host}/", subject) is match


def test_domain_regex_with_the_group_group_and_without_groups():
    rule = {"domain_regex": r"^(?P<Group>[a-z]+)\.teams\.example\.com$", "policy": "one_factor"}
    assert rule_matches(rule, "https://dev.teams.example.com/", ALICE2)
    assert not rule_matches(rule, "https://ops.teams.example.com/", ALICE2)
    plain = {"domain_regex": r"^api\.example\.com$", "policy": "bypass"}
    assert rule_matches(plain, "https://api.example.com/x", BOB2)


def test_an_owner_rule_falls_through_to_the_default_for_others():
    rules = ac({"domain_regex": OWN, "policy": "two_factor"})
    assert decide(rules, "https://alice.example.com/", ALICE2).allowed
    d = decide(rules, "https://alice.example.com/", BOB2)
    assert (d.rule, d.policy, d.allowed) == (None, "deny", False)


def test_subjects_are_alternatives_of_conjunctions():
    rule = {"domain": "a.example.com", "policy": "one_factor",
            "subject": [["group:dev", "user:alice"], "user:bob"]}
    assert rule_matches(rule, "https://a.example.com/", ALICE2)
    assert rule_matches(rule, "https://a.example.com/", BOB2)
    assert not rule_matches(rule, "https://a.example.com/", Subject("carol", ("dev",), 2))
    assert rule_matches(rule, "https://a.example.com/", NOBODY)  # potential


def test_methods_resources_and_networks():
    rule = {"domain": "a.example.com", "policy": "bypass", "methods": ["GET"], "resources": [r"^/public/"],
            "networks": ["10.0.0.0/8"]}
    inside = Subject("alice", (), 1, ip="10.1.2.3")
    assert rule_matches(rule, "https://a.example.com/public/x", inside)
    assert not rule_matches(rule, "https://a.example.com/public/x", inside, method="POST")
    assert not rule_matches(rule, "https://a.example.com/private", inside)
    assert not rule_matches(rule, "https://a.example.com/public/x", Subject("alice", (), 1, ip="192.0.2.9"))
    assert rule_matches({"domain": "a.example.com", "policy": "bypass", "resources": [r"\?v=1$"]},
                        "https://a.example.com/x?v=1", inside)


def test_what_it_does_not_implement_it_refuses_to_judge():
    with pytest.raises(ValueError, match="query"):
        decide(ac({"domain": "a.example.com", "policy": "bypass", "query": [[{"key": "x"}]]}),
               "https://a.example.com/", ALICE2)
    with pytest.raises(ValueError, match="policy"):
        decide(ac({"domain": "a.example.com", "policy": "allow"}), "https://a.example.com/", ALICE2)


usernames = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)


@given(owner=usernames, other=usernames, factors=st.integers(0, 2))
def test_property_only_the_owner_with_two_factors_reaches_a_workspace(owner, other, factors):
    rules = ac({"domain": "auth.example.com", "policy": "bypass"}, {"domain_regex": OWN, "policy": "two_factor"})
    url = f"https://{owner}.example.com/"
    assert decide(rules, url, Subject(owner, ("users", "admins"), factors)).allowed is (factors == 2)
    if other != owner:
        assert not decide(rules, url, Subject(other, ("users", "admins", owner), 2)).allowed
