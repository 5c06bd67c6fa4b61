"""Prefect steps on one person: their ledger record, identity and welcome mail, and the
judgement and deletion of a leaver's workspace. Onboarding and offboarding both compose
these. The decisions are pure (:mod:`tasks.people.record`, :mod:`tasks.people.deletion`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from prefect import task
from prefect.runtime import flow_run
from pydantic import BaseModel

from tasks.backup.repo import repository_word
from tasks.cluster import helm
from tasks.cluster.jobs import job_state
from tasks.cluster.kube import connect
from tasks.core import mail
from tasks.core.errors import BackupRequired, InvalidInput, PermanentError, TransientError
from tasks.core.names import workspace_names
from tasks.core.settings import get_settings
from tasks.core.steps import HELM, KUBE_API, USERS_DB, call_retrying, transient_retries
from tasks.core.steps import now as _now
from tasks.people.deletion import Decision, deletion_decision
from tasks.people.hr import Employee, HRRequest, effective_groups
from tasks.people.identity import UserSpec, get_backend
from tasks.people.ledger import Ledger
from tasks.people.record import (
    Admission,
    EventKind,
    Record,
    State,
    admit,
    claim_welcome,
    finish_event,
    release_welcome,
    welcome_sent,
)
from tasks.people.welcome import welcome_message

RETRY = transient_retries(4, backoff_factor=1)


class EventResult(BaseModel):
    """What an HR event did to one person (each process adds its own steps)."""

    username: str
    event_id: str
    identity: str
    workspace: str
    ignored: str = ""  # why a stale event changed nothing


class OnboardResult(EventResult):
    replay: bool
    url: str
    email: str


class OffboardResult(EventResult):
    backup: str
    deletion: str


# -- the ledger ---------------------------------------------------------------------
@task(name="claim-username", tags=[KUBE_API], **RETRY)
def claim_username(request: HRRequest) -> Record:
    """The username is fixed at the first hire (atomically per employee id): later events,
    and a concurrent hire under another username, find it by employee id."""
    ledger = Ledger()
    emp = request.employee
    existing = ledger.by_employee(emp.employee_id)
    if existing is not None:
        return existing
    if request.type == "employee.updated":
        raise PermanentError(f"employee {emp.employee_id} was never onboarded; replay after the hire")
    return ledger.claim(request.username, emp.employee_id)


@task(name="find-person", tags=[KUBE_API], **RETRY)
def find_person(employee_id: str) -> Record:
    """The ledger record this employee id owns; refused (nothing changed) when it owns none."""
    rec = Ledger().by_employee(employee_id)
    if rec is None:
        raise InvalidInput("employee.employee_id", f"{employee_id!r} owns no onboarded username; "
                                                   "nothing was disabled or changed")
    return rec


@task(name="admit-event", tags=[KUBE_API], **RETRY)
def admit_event(username: str, kind: EventKind, event_id: str, occurred_at: datetime, now: datetime,
                person: str = "") -> Admission:
    """Judge the event against the newest applied ones and, if it is not stale, record its
    effect on the employment and the person's data (``person``, HR's fields as JSON), in one
    compare-and-swap (a stale event is recorded only)."""
    def decision(r: Record) -> tuple[Record, Admission]:
        verdict = admit(r, kind, event_id, occurred_at, now, person)
        return verdict.record, verdict

    rec, verdict = Ledger().decide(username, decision)
    return Admission(rec, verdict.ignored, verdict.data)


@task(name="list-leavers", tags=[KUBE_API], **RETRY)
def list_leavers() -> list[Record]:
    """Everyone terminated and not yet purged (one LIST of the ledger)."""
    return Ledger().all(state=State.TERMINATED)


@task(name="record-event", tags=[KUBE_API], **RETRY)
def record_event(username: str, event_id: str, state: State | None = None) -> Record:
    """Last step: only a run that did everything marks its event done."""
    return Ledger().update(username, lambda r: finish_event(r, event_id, state))


def note_failure(username: str, exc: BaseException) -> None:
    """Leave the failure on the record, so a half-done person is noticed (best effort)."""
    try:
        Ledger().update(username, lambda r: replace(r, last_error=f"{type(exc).__name__}: {str(exc)[:300]}"))
    except Exception:  # noqa: BLE001 - the original failure is what matters
        pass


@task(name="mark-restored", tags=[KUBE_API], **RETRY)
def mark_restored(username: str) -> None:
    """A re-hire's work is back: the purge no longer stands between them and their data."""
    Ledger().update(username, lambda r: replace(r, purged_at=None))


# -- identity and welcome -------------------------------------------------------------
def person_of(request: HRRequest) -> str:
    """HR's fields of the person in an event, as the ledger keeps them (``Record.person``)."""
    return request.employee.model_dump_json(exclude_none=True)


def user_spec(request: HRRequest, username: str, person: str = "", grants_access: bool = True) -> UserSpec:
    """The directory entry for ``person`` (the ledger's newest data; else the request's)."""
    emp = Employee.model_validate_json(person) if person else request.employee
    return UserSpec(username=username, email=emp.email, given_name=emp.given_name, family_name=emp.family_name,
                    groups=tuple(effective_groups(emp, get_settings())), employee_id=emp.employee_id,
                    grants_access=grants_access)


@task(name="ensure-identity", tags=[USERS_DB], **RETRY)
def ensure_identity(request: HRRequest, username: str) -> str:
    """The directory entry as the ledger says now, read just before the write: a run whose event
    was overtaken meanwhile (a newer update, a termination) writes what the newer one decided,
    not its own request's data or access."""
    rec = Ledger().get(username)
    person, left = (rec.person, rec.state.has_left) if rec else ("", False)
    return get_backend().upsert(user_spec(request, username, person, grants_access=not left))


@task(name="check-left-meanwhile", **RETRY)
def left_meanwhile(username: str) -> bool:
    """Whether the ledger now says the person has left: a termination admitted while this
    hire's run went on. Found by the soak: an overtaken hire, redelivered, woke the leaver's
    workspace after the termination's run had stopped it. The hire asks before it wakes or
    starts the workspace, and again after, stopping it then (the termination's own run scales
    down after its admission, so between the two every order ends stopped)."""
    rec = Ledger().get(username)
    return rec is not None and rec.state.has_left


REHIRED = "kept: a newer hire was admitted meanwhile"


@task(name="disable-identity", tags=[USERS_DB], **RETRY)
def disable_identity(username: str) -> str:
    """Disable, unless the ledger says a newer hire was admitted while this termination's run
    went on (a duplicate or slow run would otherwise lock out the re-hire: found by the soak)."""
    rec = Ledger().get(username)
    if rec is not None and not rec.state.has_left:
        return REHIRED
    return get_backend().disable(username)


@task(name="send-welcome-email", **RETRY)
def send_welcome(request: HRRequest, username: str, url: str, returning: bool) -> str:
    """At most one email per employment: claim in the ledger, send, mark sent
    (:func:`tasks.people.record.claim_welcome` says who may send)."""
    ledger = Ledger()
    run = str(flow_run.id)
    _, step = ledger.decide(username, lambda r: claim_welcome(r, run, _now()))
    if step == "already sent":
        return "already sent"
    if step == "busy":
        raise TransientError("another run is sending the welcome email")
    if step == "left":
        return f"not sent: {username} left while this hire was in progress"
    emp = request.employee
    msg = welcome_message(to_email=emp.email, given_name=emp.given_name, family_name=emp.family_name,
                          username=username, workspace_url=url, returning=returning,
                          message_key=f"welcome.{emp.employee_id}.{request.event_id}",
                          settings=get_settings())
    try:
        mail.send(msg)
    except Exception:
        ledger.update(username, lambda r: release_welcome(r, run))
        raise
    # Sent: from here a task retry would send again (the same run may re-claim), so the mark is
    # retried in place instead (a compare-and-swap: a repeat after a lost answer re-reads and
    # finds it SENT), and if it still cannot be written the task fails without a retry.
    # Found by tests/resilience/test_faults.py: a 500 on this write sent a second email.
    try:
        call_retrying("send-welcome-email", ledger.update, username, lambda r: welcome_sent(r, _now()), attempts=8)
    except TransientError as exc:
        raise PermanentError(f"welcome email for {username} was sent but could not be recorded ({exc}); "
                             "not retried, so it is not sent twice") from exc
    return f"sent to {emp.email}"


# -- a leaver's workspace -------------------------------------------------------------
def _pvcs(username: str) -> list[dict]:
    s = get_settings()
    return connect(s).list("PersistentVolumeClaim", s.namespace, workspace_names(username).selector)


@task(name="judge-deletion", tags=[KUBE_API], **RETRY)
def judge_deletion(username: str, now: datetime) -> Decision:
    """The deletion rule on what the ledger, the volumes and (only once a deletion is due)
    the restic repository itself say."""
    s = get_settings()
    rec = Ledger().get(username)
    terminated = rec.terminated_at if rec and rec.state is State.TERMINATED else None
    pvcs = _pvcs(username)
    decision = deletion_decision(terminated, pvcs, now, s.identity.offboard_retention_days)
    if decision.action == "confirm":
        decision = deletion_decision(terminated, pvcs, now, s.identity.offboard_retention_days,
                                     repository=repository_word(username, s))
    return decision


@task(name="delete-workspace", tags=[KUBE_API, HELM], **RETRY)
def delete_workspace(username: str, now: datetime) -> str:
    """Release first, then the kept PVCs; re-judged here so nothing is deleted on a stale verdict."""
    decision = judge_deletion.fn(username, now)
    if decision.action != "delete":
        raise BackupRequired(f"{username}: deletion refused: {decision.reason}")
    s = get_settings()
    names = workspace_names(username)
    kube = connect(s)
    uninstalled = helm.uninstall(names.release, s.namespace, s)
    # Finished Jobs (the final backup among them) keep pods that name the claims, and the PVC
    # protection controller holds a claim while any pod names it; a Job's TTL clean-up is not
    # there on every cluster (alpha before 1.21). A running Job is left to finish.
    for job in kube.list("Job", s.namespace, names.selector):
        if job_state(job)[0] != "running":
            kube.delete("Job", s.namespace, job["metadata"]["name"])
    deleted = [p["metadata"]["name"] for p in _pvcs(username)
               if kube.delete("PersistentVolumeClaim", s.namespace, p["metadata"]["name"])]
    Ledger().update(username, lambda r: replace(r, state=State.PURGED, purged_at=now))
    return f"release {'uninstalled' if uninstalled else 'absent'}; PVCs deleted: {', '.join(deleted) or 'none'}"
