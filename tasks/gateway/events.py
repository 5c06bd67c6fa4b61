"""Event ids per entry point, and whether a run found under one is the run a request meant.

An HR event id is the idempotency key of its flow run, so whoever uses an id first owns
it. Two entry points start runs (the signed webhook and SCIM), so each has its own
namespace and none can occupy the other's:

- SCIM derives its ids as ``scim:`` + an HMAC of (SCIM id, version) under a key derived
  from the SCIM token: nobody without the token can compute one, and the webhook refuses
  every id in the ``scim:`` namespace (any letter case) anyway;
- the webhook sender chooses its own ids, outside that namespace.

Prefect keeps one run per (flow, idempotency key), so the same id on the other flow (a
hire's id sent with a termination) would start a second run; the gateway therefore looks
the key up across flows first, and :func:`run_mismatch` decides whether the run it found
is the one the request meant: same deployment (so the same process) and the same event,
else the caller answers 409 and starts nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

SCIM_PREFIX = "scim:"


def scim_event_key(scim_token: str) -> bytes:
    """The key SCIM event ids are made with (derived, so the token itself is never a MAC key
    for anything else)."""
    return hmac.new(scim_token.encode(), b"vibecode scim event id", hashlib.sha256).digest()


def scim_event_id(key: bytes, scim_id: str, version: int) -> str:
    """One HR event id per stored version of a SCIM user: a retry of a request that stored
    nothing new reuses it, so it finds the run it started instead of starting a second one.
    Rotating the SCIM token changes the ids of versions not yet written; nothing else."""
    mac = hmac.new(key, f"{scim_id}:v{version}".encode(), hashlib.sha256).hexdigest()[:40]
    return f"{SCIM_PREFIX}{mac}"


def webhook_event_id_problem(event_id: str) -> str | None:
    """Why a webhook may not use this event id, or ``None``."""
    if event_id[: len(SCIM_PREFIX)].lower() == SCIM_PREFIX:
        return f"the {SCIM_PREFIX!r} prefix is reserved for SCIM provisioning; choose another event_id"
    return None


def _person(request: dict[str, Any]) -> tuple:
    emp = request.get("employee") or {}
    return request.get("type"), emp.get("employee_id"), emp.get("username")


def run_mismatch(asked_deployment: str, asked: dict[str, Any], found_deployment: str,
                 found: dict[str, Any] | None, *, exact: bool) -> str | None:
    """Why the run found under a request's event id is not the one it meant, or ``None``.

    ``exact`` (the webhook): the event itself must be the same, field for field, as the
    sender's retry is. Otherwise (SCIM, whose events carry the time they were made) the
    same event type for the same person is the same event.
    """
    if found_deployment != asked_deployment:
        return f"it runs on {found_deployment}, not on {asked_deployment}"
    found = found or {}
    if exact:
        return None if found == asked else "it carries a different event"
    if _person(found) != _person(asked):
        return "it is another event type, or about another person"
    return None
