"""The HR event, as one pydantic model: the flow parameter, the gateway's body and the CLI input.

Every string is bounded in length *before* any pattern runs, and every pattern is a
whitelist, so hostile input (path traversal, shell metacharacters, look-alike unicode,
10 kB strings) is refused with the field's name before anything is created. Error
messages never echo the whole input back.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from enum import Enum
from typing import Annotated, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tasks.core.errors import InvalidInput
from tasks.core.names import derive_username, username_from_email, validate_username
from tasks.core.settings import Settings, get_settings

EventType = Literal["employee.hired", "employee.updated", "employee.terminated"]


class Process(str, Enum):
    """The lifecycle process an HR event starts (a flow in ``flows/``, a deployment on Prefect)."""

    ONBOARDING = "onboarding"
    OFFBOARDING = "offboarding"


# The one router from HR event type to process: the gateway, SCIM and flows.onboarding use it.
PROCESSES: dict[str, Process] = {"employee.hired": Process.ONBOARDING, "employee.updated": Process.ONBOARDING,
                                 "employee.terminated": Process.OFFBOARDING}
assert set(PROCESSES) == set(get_args(EventType))


def process_for(event_type: str) -> Process:
    """The process an event type starts; ``KeyError`` for a type that is not an HR event."""
    return PROCESSES[event_type]


def deployment_for(event_type: str, settings: Settings) -> str:
    """The Prefect deployment (``flow/deployment``) that runs an event type's process."""
    gw = settings.gateway
    return {Process.ONBOARDING: gw.onboard_deployment, Process.OFFBOARDING: gw.offboard_deployment}[
        process_for(event_type)]

# Kubernetes label values carry the employee id, so it must be a valid label value.
EMPLOYEE_ID_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
EVENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
GROUP_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
DEPARTMENT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_EMAIL_LOCAL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._+-]{0,62}[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_NAME_PUNCT = frozenset(" '-.")



def _fullmatch(pattern: str) -> AfterValidator:
    """The pattern again, matched in full by Python's engine: whatever regex engine pydantic is
    configured with, a trailing newline (which ``$`` tolerates in Python) never gets through."""
    rx = re.compile(pattern)

    def check(v: str) -> str:
        if not rx.fullmatch(v):
            raise ValueError(f"must match {pattern}")
        return v

    return AfterValidator(check)


Group = Annotated[str, Field(min_length=1, max_length=63, pattern=GROUP_PATTERN), _fullmatch(GROUP_PATTERN)]


def _check_email(v: str) -> str:
    """A deliberately narrow address syntax: what a corporate HR system emits, nothing exotic."""
    if not v.isascii():
        raise ValueError("must be ASCII")
    local, sep, domain = v.rpartition("@")
    if not sep or not local or not domain:
        raise ValueError("must look like name@domain")
    if ".." in local or not _EMAIL_LOCAL.fullmatch(local):
        raise ValueError("local part may hold only letters, digits and . _ + -")
    labels = domain.lower().split(".")
    if len(labels) < 2 or not all(_DNS_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise ValueError("domain must be a DNS name")
    return f"{local}@{domain.lower()}"


def _check_person_name(v: str) -> str:
    """Letters of any script (people's names are not ASCII) plus space, apostrophe, hyphen, dot."""
    v = unicodedata.normalize("NFC", v).strip()
    if not v:
        raise ValueError("must not be empty")
    for ch in v:
        if ch in _NAME_PUNCT:
            continue
        if unicodedata.category(ch)[0] not in ("L", "M"):
            raise ValueError("may hold only letters, spaces, apostrophes, hyphens and dots")
    return v


class Employee(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)

    employee_id: Annotated[str, Field(min_length=1, max_length=63, pattern=EMPLOYEE_ID_PATTERN),
                           _fullmatch(EMPLOYEE_ID_PATTERN)]
    email: str = Field(min_length=3, max_length=254)
    given_name: str = Field(min_length=1, max_length=64)
    family_name: str = Field(min_length=1, max_length=64)
    username: str | None = Field(default=None, max_length=32,
                                 description="Optional; else the email's local part, lowercased, "
                                             "with '.', '_' and '+' as '-'")
    department: Annotated[str, Field(max_length=63, pattern=DEPARTMENT_PATTERN),
                          _fullmatch(DEPARTMENT_PATTERN)] | None = None
    groups: list[Group] = Field(default_factory=list, max_length=32)

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        return _check_email(v)

    @field_validator("groups")
    @classmethod
    def _groups_allowed(cls, v: list[str], info: ValidationInfo) -> list[str]:
        settings = (info.context or {}).get("settings") or get_settings()
        return check_requested_groups(v, settings)

    @field_validator("given_name", "family_name")
    @classmethod
    def _names(cls, v: str) -> str:
        return _check_person_name(v)

    @field_validator("username")
    @classmethod
    def _username(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return validate_username(v)
        except InvalidInput as exc:  # re-raised bare so pydantic's location names the field once
            raise ValueError(str(exc).split(": ", 1)[-1]) from None

    @model_validator(mode="after")
    def _derive_username(self) -> "Employee":
        if self.username is None:
            try:
                self.username = derive_username(self.email)
            except InvalidInput as exc:
                derived = username_from_email(self.email)
                raise ValueError(f"gives username {derived[:40]!r}, which is not usable "
                                 f"({str(exc).split(': ', 1)[-1]}); send an explicit username") from None
        return self

    @property
    def display_name(self) -> str:
        return f"{self.given_name} {self.family_name}"


class HRRequest(BaseModel):
    """An HR event. ``event_id`` makes replays no-ops; ``employee_id`` ties events to one person."""

    model_config = ConfigDict(extra="ignore")

    event_id: Annotated[str, Field(min_length=1, max_length=128, pattern=EVENT_ID_PATTERN),
                        _fullmatch(EVENT_ID_PATTERN)]
    type: EventType
    occurred_at: datetime
    employee: Employee

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("must carry a timezone (e.g. 2026-11-28T09:00:00Z)")
        return v

    @property
    def username(self) -> str:
        assert self.employee.username is not None  # filled by Employee's validator
        return self.employee.username


def _first_error(exc: ValidationError, prefix: str = "") -> InvalidInput:
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "request"
    msg = str(err["msg"]).removeprefix("Value error, ")
    # A derived-username failure is about the email the caller sent, so name that field.
    if loc == "employee" and msg.startswith("gives username"):
        loc = "employee.email"
    return InvalidInput(prefix + loc, msg)


def parse_request(data: object, settings: Settings | None = None) -> HRRequest:
    """Validate untrusted input into an :class:`HRRequest`, or raise ``InvalidInput(field, msg)``.

    ``settings`` decide which groups HR may ask for (default: the process settings).
    """
    if isinstance(data, HRRequest):
        data = data.model_dump(mode="json")  # re-checked: it may come from a caller with other settings
    try:
        return HRRequest.model_validate(data, context={"settings": settings or get_settings()})
    except ValidationError as exc:
        raise _first_error(exc) from None


def allowed_groups(settings: Settings) -> frozenset[str]:
    """The groups an HR request may name: ``hr_allowed_groups``, else the default groups plus every
    department mapping's groups; never a privileged group, whatever the lists say."""
    if settings.identity.hr_allowed_groups is not None:
        allowed = set(settings.identity.hr_allowed_groups)
    else:
        allowed = set(settings.identity.default_groups)
        for groups in settings.identity.department_groups.values():
            allowed.update(groups)
    return frozenset(allowed - set(settings.identity.privileged_groups))


def check_requested_groups(groups: list[str], settings: Settings) -> list[str]:
    """Refuse (as a ``ValueError`` pydantic turns into ``employee.groups``) any group HR may not grant.

    HR systems are a softer target than the identity platform: a privileged group
    (``settings.identity.privileged_groups``) is granted only by an administrator, never by a feed.
    """
    privileged = set(settings.identity.privileged_groups)
    allowed = allowed_groups(settings)
    for group in groups:
        if group in privileged:
            raise ValueError(f"{group!r} is a privileged group; it is never granted from HR input")
        if group not in allowed:
            raise ValueError(f"{group!r} is not a group HR may grant (allowed: {', '.join(sorted(allowed))})"[:200])
    return groups


def effective_groups(employee: Employee, settings: Settings) -> list[str]:
    """Request groups (else the defaults) plus the department's mapped groups, sorted and unique.

    The request was checked against the allowlist when it was parsed; privileged groups are
    dropped here too, so no path (a settings mistake in a department mapping included)
    grants one through HR.
    """
    groups = set(employee.groups or settings.identity.default_groups)
    if employee.department:
        groups.update(settings.identity.department_groups.get(employee.department, []))
    return sorted(groups - set(settings.identity.privileged_groups))
