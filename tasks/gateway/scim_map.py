"""SCIM 2.0 User <-> HR event: which HR event a SCIM request means, and its body.

Identity providers speak SCIM; the onboarding flows speak the HR event (:mod:`tasks.people.hr`).
This module translates, on plain JSON (the SCIM wire form, as scim2-models dumps it):

- the person's ``username`` and ``employee_id`` are fixed when the SCIM user is created
  (as the flows fix them at the first hire) and read from the ledger after that, so an
  identity provider renaming ``userName`` or ``externalId`` never forks a person;
- ``active`` going false is a termination, going true a (re-)hire; any other change to
  what the HR event carries is an update; a change to nothing HR carries (a phone
  number) starts nothing. An update that leaves ``active`` out (a PUT that replaces the
  profile without repeating it, a PATCH that removes it) keeps the current state
  (:func:`keep_active`): only an explicit ``active: true`` lets a leaver back in;
- the username comes from ``userName`` by the one rule every entry point applies
  (:func:`tasks.core.names.derive_username`: look-alike Unicode is refused, never folded);
- the HR body is then validated by :func:`tasks.people.hr.parse_request`, the one validator, and
  its error is reported against the SCIM attribute it came from.
"""

from __future__ import annotations

import re
from datetime import datetime

from tasks.core.names import derive_username

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

# HR field (as InvalidInput names it) -> the SCIM attribute it comes from.
HR_TO_SCIM = {
    "employee.email": "emails",
    "employee.given_name": "name.givenName",
    "employee.family_name": "name.familyName",
    "employee.username": "userName",
    "employee.department": f"{ENTERPRISE}:department",
    "employee.groups": "groups",
}

_DEPT_JUNK = re.compile(r"[^a-z0-9_-]+")


def scim_attribute(hr_field: str, employee_id_source: str = "externalId") -> str:
    """The SCIM attribute to blame for an invalid HR field."""
    if hr_field == "employee.employee_id":
        return employee_id_source
    for hr, scim in HR_TO_SCIM.items():
        if hr_field == hr or hr_field.startswith(hr + "."):
            return scim
    return hr_field


def is_active(user: dict) -> bool:
    """SCIM ``active`` defaults to true: identity providers create people to let them in."""
    return user.get("active") is not False


def primary_email(user: dict) -> str | None:
    """The primary email, else the first work email, else the first, else an email-like userName."""
    emails = [e for e in (user.get("emails") or []) if isinstance(e, dict) and isinstance(e.get("value"), str)]
    for pick in (lambda e: e.get("primary") is True, lambda e: e.get("type") == "work", lambda e: True):
        for e in emails:
            if pick(e):
                return e["value"]
    user_name = user.get("userName")
    if isinstance(user_name, str) and "@" in user_name:
        return user_name
    return None


def username_for(user: dict) -> str:
    """The workspace username a new SCIM user gets from its ``userName``, by the HR rule
    (:func:`~tasks.core.names.derive_username`); ``InvalidInput`` blamed on ``userName``."""
    return derive_username(user.get("userName"), "employee.username")


def keep_active(old: dict, new: dict) -> dict:
    """``new`` as stored after an update: ``active`` left out (or null) keeps ``old``'s value.

    RFC 7644 makes PUT a full replace, and an attribute left out is cleared; SCIM's default
    for ``active`` is true, so taken literally an identity provider that replaces a leaver's
    profile without repeating ``active: false`` would let them back in. Access is the one
    attribute where a silent default is dangerous, so the careful reading wins: only an
    explicit ``active: true`` re-hires, only an explicit ``false`` terminates.
    """
    if new.get("active") is None and "active" in old:
        return {**new, "active": old["active"]}
    return new


def employee_id_for(user: dict, scim_id: str) -> tuple[str, str]:
    """(employee id, the SCIM attribute it came from) for a new SCIM user.

    The enterprise ``employeeNumber`` is the HR system's id when the provider sends it;
    else ``externalId`` (the provider's stable id for the person); else one made from the
    SCIM id, which is stable for this SCIM user but means a deleted-and-recreated user
    cannot reclaim an old username (the create is refused, asking for externalId).
    """
    ext = user.get(ENTERPRISE) or {}
    number = ext.get("employeeNumber") if isinstance(ext, dict) else None
    if isinstance(number, str) and number:
        return number, f"{ENTERPRISE}:employeeNumber"
    external = user.get("externalId")
    if isinstance(external, str) and external:
        return external, "externalId"
    return f"scim-{scim_id}", "id"


def department_for(user: dict) -> str | None:
    """Departments arrive as display text ("Research & Development"); HR departments are slugs."""
    ext = user.get(ENTERPRISE) or {}
    dept = ext.get("department") if isinstance(ext, dict) else None
    if not isinstance(dept, str) or not dept.strip():
        return None
    slug = _DEPT_JUNK.sub("-", dept.strip().lower()[:200]).strip("-_")
    return slug or dept  # nothing left: send the original so validation names the field


def hr_employee(user: dict, *, username: str, employee_id: str) -> dict:
    """The HR ``employee`` object for a SCIM user (unvalidated: parse_request judges it)."""
    name: dict = user["name"] if isinstance(user.get("name"), dict) else {}
    emp: dict = {"employee_id": employee_id, "email": primary_email(user),
                 "given_name": name.get("givenName"), "family_name": name.get("familyName"),
                 "username": username}
    dept = department_for(user)
    if dept is not None:
        emp["department"] = dept
    return emp


def hr_event(user: dict, *, event_type: str, event_id: str, occurred_at: datetime, username: str,
             employee_id: str) -> dict:
    return {"event_id": event_id, "type": event_type, "occurred_at": occurred_at.isoformat(),
            "employee": hr_employee(user, username=username, employee_id=employee_id)}


def event_type_for(old: dict | None, new: dict, *, username: str, employee_id: str) -> str | None:
    """Which HR event a change from ``old`` (None: a new SCIM user) to ``new`` means, or None.

    A new user is active unless it says otherwise (identity providers create people to let
    them in); an update that leaves ``active`` out keeps the old state (:func:`keep_active`).
    """
    if old is None:
        return "employee.hired" if is_active(new) else None
    was = is_active(old)
    now = was if new.get("active") is None else is_active(new)
    if was and not now:
        return "employee.terminated"
    if now and not was:
        return "employee.hired"
    if not now:
        return None  # a departed person's record changes; their access stays off
    before = hr_employee(old, username=username, employee_id=employee_id)
    after = hr_employee(new, username=username, employee_id=employee_id)
    return "employee.updated" if before != after else None
