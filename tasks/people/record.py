"""The per-person ledger record and the decisions made on it. Pure: no I/O, no clock.

A :class:`Record` is what the platform remembers about one person between HR events:
where their employment stands (:class:`State`), the event ids already processed, whether
this employment's welcome email went out (:class:`Welcome`), when HR said the newest
hire, data change and termination happened, and when the person left (the retention
clock). :mod:`tasks.people.ledger` stores it; every change goes through one of the
functions below inside the ledger's compare-and-swap loop, so two runs never interleave
half a change.

Event order. HR retries arrive out of order, so an event is judged against the newest
*applied* event of a conflicting kind, by HR's clock (``occurred_at``), and at the very same
moment by event id (HR numbers events in the order it emits them): one total order, so the
outcome is the same whatever order the events arrive in.

* a hire older than the newest termination is stale (it would re-enable a leaver);
* a termination older than the newest hire is stale (it would lock out a re-hire);
* an update older than the newest applied hire or update is stale (it would overwrite
  newer name, email or groups); a hire that is older only than that still starts its
  employment, but keeps the newer data.

A person's data is that of the newest applied hire or update (``person``, HR's fields, no
secret), whatever arrived last, also for a leaver (an update HR made before the
termination may arrive after it); their access is that of the newest hire or termination.
A stale event is recorded (a replay stays a no-op) and changes nothing else; the reason
goes to the run's artifact. (Found by tests/resilience/test_soak.py: judged by arrival, a
late re-hire stayed locked out behind an update of its own employment, a late update was
lost for a leaver, and two events of one moment ended as whichever came last.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import Literal

KEEP_EVENTS = 200
WELCOME_CLAIM_SECONDS = 120  # a claim older than this was left by a crashed run

EventKind = Literal["hire", "update", "termination"]
EVENT_KINDS: dict[str, EventKind] = {"employee.hired": "hire", "employee.updated": "update",
                                     "employee.terminated": "termination"}


class State(str, Enum):
    ONBOARDING = "onboarding"  # a hire is in progress (or failed and awaits its rerun)
    ACTIVE = "active"
    TERMINATED = "terminated"  # access ended; the workspace is kept until retention and a backup allow
    PURGED = "purged"  # the workspace volumes were deleted; the identity is kept, disabled

    @property
    def has_left(self) -> bool:
        return self in (State.TERMINATED, State.PURGED)


class WelcomeStatus(str, Enum):
    NONE = "none"
    CLAIMED = "claimed"  # one run is sending it right now
    SENT = "sent"


@dataclass(frozen=True)
class Welcome:
    """The welcome email of the current employment: not sent, being sent by ``run``, or sent."""

    status: WelcomeStatus = WelcomeStatus.NONE
    run: str = ""
    at: datetime | None = None

    def encode(self) -> str:
        return json.dumps({"status": self.status.value, "run": self.run,
                           "at": self.at.isoformat() if self.at else ""}, sort_keys=True)

    @classmethod
    def decode(cls, raw: str) -> "Welcome":
        """Also reads the older ``claimed:<run>:<iso>`` / ``sent:<iso>`` strings."""
        if not raw:
            return cls()
        if raw.startswith("{"):
            d = json.loads(raw)
            return cls(WelcomeStatus(d["status"]), d.get("run", ""), _time(d.get("at", "")))
        if raw.startswith("sent:"):
            return cls(WelcomeStatus.SENT, "", _time(raw.split(":", 1)[1]))
        if raw.startswith("claimed:"):
            _, run, at = raw.split(":", 2)
            return cls(WelcomeStatus.CLAIMED, run, _time(at))
        return cls()


def _time(value: str) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class Record:
    username: str
    employee_id: str
    state: State = State.ONBOARDING
    events: tuple[str, ...] = ()
    welcome: Welcome = Welcome()
    terminated_at: datetime | None = None  # when we ended access: the retention clock
    purged_at: datetime | None = None
    hired_at: datetime | None = None  # HR's occurred_at of the newest hire seen (stale ones too)
    changed_at: datetime | None = None  # ... of the newest applied hire or update (the person's data)
    left_at: datetime | None = None  # ... of the newest termination seen (stale ones too)
    hired_by: str = ""  # the event ids of those three: the order at the very same moment
    changed_by: str = ""
    left_by: str = ""
    person: str = ""  # JSON: HR's fields of the person from the event of changed_at (no secret)
    last_error: str = ""
    scim_id: str = ""  # set while a SCIM user is this person (cleared by a SCIM DELETE)
    scim: str = ""  # JSON: the SCIM resource and its version, written only by the gateway
    resource_version: str = field(default="", compare=False)

    @property
    def welcome_sent(self) -> bool:
        return self.welcome.status is WelcomeStatus.SENT

    def seen(self, event_id: str) -> bool:
        return event_id in self.events

    def with_event(self, event_id: str) -> "Record":
        if event_id in self.events:
            return self
        return replace(self, events=(*self.events, event_id)[-KEEP_EVENTS:])


def untouched(rec: Record) -> bool:
    """Whether nothing has happened to a record since it was claimed: no event applied or
    recorded, no employment dates, no welcome, no error, no SCIM user. Only such a record may
    be given back (a refused create undone), because nothing could depend on it."""
    return rec == Record(rec.username, rec.employee_id)


# -- event order -----------------------------------------------------------------------------
def _before(at: datetime, event_id: str, applied: datetime | None, applied_by: str) -> bool:
    """Whether the event (at, event_id) comes before the applied one in HR's order."""
    return applied is not None and (at, event_id) < (applied, applied_by)


def _newest_seen(rec: Record, kind: EventKind, at: datetime, event_id: str) -> Record:
    """The newest hire and termination seen, stale ones too: a termination that was stale
    on arrival would have applied before its re-hire had it come in time, and then made
    the hires older than it stale; remembering it judges them as HR's order would."""
    if kind == "hire" and not _before(at, event_id, rec.hired_at, rec.hired_by):
        return replace(rec, hired_at=at, hired_by=event_id)
    if kind == "termination" and not _before(at, event_id, rec.left_at, rec.left_by):
        return replace(rec, left_at=at, left_by=event_id)
    return rec


def stale_reason(rec: Record, kind: EventKind, occurred_at: datetime, event_id: str = "") -> str | None:
    """Why an event must be ignored because a newer conflicting one came first, or ``None``."""
    when = occurred_at.isoformat()
    if kind == "hire" and rec.left_at and _before(occurred_at, event_id, rec.left_at, rec.left_by):
        return f"stale: hire of {when} is older than the termination of {rec.left_at.isoformat()} already received"
    if kind == "termination" and rec.hired_at and _before(occurred_at, event_id, rec.hired_at, rec.hired_by):
        return f"stale: termination of {when} is older than the hire of {rec.hired_at.isoformat()} already received"
    if kind == "update" and rec.changed_at and _before(occurred_at, event_id, rec.changed_at, rec.changed_by):
        return (f"stale: update of {when} is older than the hire or update of "
                f"{rec.changed_at.isoformat()} already applied")
    return None


@dataclass(frozen=True)
class Admission:
    record: Record
    ignored: str | None = None  # the stale reason; the event was recorded and nothing else changed
    data: bool = True  # whether the event's data is now the person's (a hire may start an employment only)

    @property
    def applies(self) -> bool:
        return self.ignored is None


def admit(rec: Record, kind: EventKind, event_id: str, occurred_at: datetime, now: datetime,
          person: str = "") -> Admission:
    """The record once this event is accepted, or the stale verdict (event recorded only).

    A hire after a termination starts a new employment (new welcome, retention clock
    stopped); a termination starts the retention clock once (a second one keeps the
    first time); a hire or update newer than the person's data brings ``person`` (HR's
    fields in the event).
    """
    if rec.seen(event_id):
        return Admission(rec)
    reason = stale_reason(rec, kind, occurred_at, event_id)
    if reason:
        return Admission(_newest_seen(rec.with_event(event_id), kind, occurred_at, event_id), reason)
    data = kind != "termination" and not _before(occurred_at, event_id, rec.changed_at, rec.changed_by)
    new = replace(rec, changed_at=occurred_at, changed_by=event_id, person=person) if data else rec
    new = _newest_seen(new, kind, occurred_at, event_id)
    if kind == "hire":
        if rec.state.has_left:
            new = replace(new, state=State.ONBOARDING, welcome=Welcome(), terminated_at=None, last_error="")
        return Admission(new, data=data)
    if kind == "update":
        return Admission(new)
    if not rec.state.has_left:
        new = replace(new, state=State.TERMINATED, welcome=Welcome(), terminated_at=now)
    return Admission(new, data=False)


# -- the welcome email: at most one per employment ---------------------------------------------
WelcomeStep = Literal["send", "already sent", "busy", "left"]


def claim_welcome(rec: Record, run: str, now: datetime) -> tuple[Record, WelcomeStep]:
    """Claim the right to send this employment's welcome email for ``run``.

    ``busy``: another run holds a fresh claim (retry later). A claim older than
    WELCOME_CLAIM_SECONDS was left by a crashed run and is taken over, so the email is
    never lost; the same run may re-claim (a task retry). ``left``: a termination was admitted
    while this hire's run was still going (found by the HR soak): nobody is welcomed to a job
    they have left. The claim and the termination's admission are compare-and-swaps of the
    same record, so one of them sees the other.
    """
    if rec.state.has_left:
        return rec, "left"
    w = rec.welcome
    if w.status is WelcomeStatus.SENT:
        return rec, "already sent"
    if w.status is WelcomeStatus.CLAIMED and w.run != run and w.at is not None \
            and (now - w.at).total_seconds() < WELCOME_CLAIM_SECONDS:
        return rec, "busy"
    return replace(rec, welcome=Welcome(WelcomeStatus.CLAIMED, run, now)), "send"


def release_welcome(rec: Record, run: str) -> Record:
    """A failed send gives the claim back (only our own claim)."""
    if rec.welcome.status is WelcomeStatus.CLAIMED and rec.welcome.run == run:
        return replace(rec, welcome=Welcome())
    return rec


def welcome_sent(rec: Record, now: datetime) -> Record:
    """A termination admitted between the claim and this mark has reset the welcome for the
    next employment: the mark leaves that alone."""
    if rec.state.has_left:
        return rec
    return replace(rec, welcome=Welcome(WelcomeStatus.SENT, "", now))


def finish_event(rec: Record, event_id: str, state: State | None) -> Record:
    """Last step of a run that did everything: mark the event done and clear the error; the
    run's end state only while the employment is still the one its event began (a hire's
    run does not re-activate someone a newer termination ended meanwhile, nor a
    termination's run end a re-hire admitted meanwhile: found by the soak)."""
    if state is not None and state.has_left != rec.state.has_left:
        state = None
    return replace(rec.with_event(event_id), state=state or rec.state, last_error="")


# -- wire format (a ConfigMap's data) ----------------------------------------------------------
_TIMES = ("terminated_at", "purged_at", "hired_at", "changed_at", "left_at")
_STRINGS = ("scim_id", "scim", "hired_by", "changed_by", "left_by", "person")  # written only when set


def to_data(rec: Record) -> dict[str, str]:
    data = {"username": rec.username, "employee_id": rec.employee_id, "state": rec.state.value,
            "events": json.dumps(list(rec.events)), "welcome": rec.welcome.encode(), "last_error": rec.last_error}
    data.update({k: getattr(rec, k).isoformat() if getattr(rec, k) else "" for k in _TIMES})
    data.update({k: getattr(rec, k) for k in _STRINGS if getattr(rec, k)})
    return data


def from_data(d: dict[str, str], resource_version: str = "") -> Record:
    return Record(username=d["username"], employee_id=d["employee_id"],
                  state=State(d.get("state") or State.ONBOARDING.value),
                  events=tuple(json.loads(d.get("events") or "[]")), welcome=Welcome.decode(d.get("welcome", "")),
                  last_error=d.get("last_error", ""), resource_version=resource_version,
                  scim_id=d.get("scim_id", ""), scim=d.get("scim", ""), hired_by=d.get("hired_by", ""),
                  changed_by=d.get("changed_by", ""), left_by=d.get("left_by", ""), person=d.get("person", ""),
                  **{k: _time(d.get(k, "")) for k in _TIMES})
