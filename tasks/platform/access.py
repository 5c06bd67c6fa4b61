"""Authelia's access-control decision, re-implemented for tests of our rules (pure).

Authelia's binary is in no package registry this machine reaches, so the platform's
``access_control`` section is checked with this evaluator instead of
``authelia access-control check-policy``. It follows Authelia 4.39's authorizer
(internal/authorization): rules are tried in order and the first whose every criterion matches
decides; no match means ``default_policy``. A ``domain_regex`` with the named group ``User``
matches only when that group equals the username (case-insensitively), ``Group`` only when it
names one of the user's groups; for an anonymous subject such a rule (and any rule with
``subject``) is a *potential* match, so the anonymous request is asked to sign in rather than
falling through. ``domain`` entries match exactly, ``*.`` as a suffix, ``{user}``/``{group}``
as Authelia's legacy placeholders. ``methods``, ``resources`` (regexes on path and query, with
the same named groups) and ``networks`` (CIDRs) are supported; a rule using anything else
(``query``) raises, so a rule this evaluator cannot judge is never judged wrongly.

Then the policy against the session: ``bypass`` lets anyone through, ``deny`` no one,
``one_factor`` a signed-in user, ``two_factor`` a user who also passed the second factor.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

POLICIES = ("bypass", "deny", "one_factor", "two_factor")
_LEVEL = {"bypass": 0, "one_factor": 1, "two_factor": 2}
_KNOWN = {"domain", "domain_regex", "policy", "subject", "methods", "resources", "networks"}


@dataclass(frozen=True)
class Subject:
    """Who asks: ``username`` None is anonymous; ``factors`` 0, 1 (password) or 2 (and TOTP/WebAuthn)."""

    username: str | None = None
    groups: tuple[str, ...] = ()
    factors: int = 0
    ip: str = "192.0.2.1"

    @property
    def anonymous(self) -> bool:
        return not self.username and not self.groups


@dataclass(frozen=True)
class Decision:
    policy: str            # the policy that applied
    rule: int | None       # index of the rule that decided, None = default_policy
    allowed: bool          # the request reaches the backend
    sign_in: bool          # refused for now, but signing in (further) could allow it

    def __str__(self) -> str:
        by = "default_policy" if self.rule is None else f"rule #{self.rule}"
        return f"{self.policy} by {by}: {'allowed' if self.allowed else 'refused'}"


def _listify(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _regex_subject_match(pattern: str, text: str, subject: Subject) -> bool:
    compiled = re.compile(pattern)
    m = compiled.search(text)
    if m is None:
        return False
    names = compiled.groupindex
    if "User" not in names and "Group" not in names:
        return True
    if subject.anonymous:
        return True
    if "User" in names and (m.group("User") or "").lower() != (subject.username or "").lower():
        return False
    if "Group" in names and (m.group("Group") or "").lower() not in {g.lower() for g in subject.groups}:
        return False
    return True


def _domain_match(entry: str, domain: str, subject: Subject) -> bool:
    entry = entry.lower()
    if entry.startswith("*."):
        return domain.endswith(entry[1:])
    if entry.startswith("{user}") or entry.startswith("{group}"):
        suffix = entry[6:] if entry.startswith("{user}") else entry[7:]
        if subject.anonymous and domain.endswith(suffix):
            return len(domain) > len(suffix)
        if entry.startswith("{user}"):
            return domain == f"{subject.username}{suffix}"
        head, _, rest = domain.partition(".")
        return "." + rest == suffix and head in {g.lower() for g in subject.groups}
    return domain == entry


def _subject_match(rule: dict, subject: Subject) -> bool:
    subjects = rule.get("subject")
    if not subjects:
        return True
    if subject.anonymous:
        return True  # a potential match: the anonymous request must sign in first
    # A list of alternatives; each alternative a string or a list that must all hold.
    for alternative in _listify(subjects):
        conditions = _listify(alternative)
        ok = True
        for cond in conditions:
            kind, _, name = str(cond).partition(":")
            if kind == "user":
                ok &= name.lower() == (subject.username or "").lower()
            elif kind == "group":
                ok &= name.lower() in {g.lower() for g in subject.groups}
            else:
                raise ValueError(f"subject {cond!r}: this evaluator knows user: and group:")
        if ok:
            return True
    return False


def rule_matches(rule: dict, url: str, subject: Subject, method: str = "GET") -> bool:
    """Whether ``rule`` (a dict of Authelia's ``access_control.rules``) matches the request."""
    unknown = set(rule) - _KNOWN
    if unknown:
        raise ValueError(f"rule uses {sorted(unknown)}, which this evaluator does not implement")
    parts = urlsplit(url)
    domain = (parts.hostname or "").lower()
    path = parts.path or "/"
    resource = path + (f"?{parts.query}" if parts.query else "")
    domains = _listify(rule.get("domain"))
    regexes = _listify(rule.get("domain_regex"))
    if domains or regexes:
        if not (any(_domain_match(d, domain, subject) for d in domains)
                or any(_regex_subject_match(r, domain, subject) for r in regexes)):
            return False
    resources = _listify(rule.get("resources"))
    if resources and not any(_regex_subject_match(r, resource, subject) for r in resources):
        return False
    methods = _listify(rule.get("methods"))
    if methods and method.upper() not in methods:
        return False
    networks = _listify(rule.get("networks"))
    if networks and not any(ipaddress.ip_address(subject.ip) in ipaddress.ip_network(n, strict=False)
                            for n in networks):
        return False
    return _subject_match(rule, subject)


def decide(access_control: dict, url: str, subject: Subject, method: str = "GET") -> Decision:
    """Authelia's decision for ``url`` requested by ``subject`` under ``access_control``."""
    default = access_control.get("default_policy", "deny")
    if default not in POLICIES:
        raise ValueError(f"default_policy {default!r} is not one of {POLICIES}")
    policy, index = default, None
    for i, rule in enumerate(access_control.get("rules") or []):
        if rule.get("policy") not in POLICIES:
            raise ValueError(f"rule #{i}: policy {rule.get('policy')!r} is not one of {POLICIES}")
        if rule_matches(rule, url, subject, method):
            policy, index = rule["policy"], i
            break
    if policy == "deny":
        return Decision(policy, index, allowed=False, sign_in=False)
    needed = _LEVEL[policy]
    level = 0 if subject.anonymous else subject.factors
    allowed = level >= needed
    return Decision(policy, index, allowed=allowed, sign_in=not allowed)
