"""Onboarding from HR events (employee.hired, employee.updated). Orchestration only.

Idempotency, written down: every step converges (identity upsert compares before it
writes, ``provision_workspace`` is idempotent), and the per-person ledger
(:mod:`tasks.identity.ledger`, decisions in :mod:`tasks.identity.record`) records the
processed ``event_id``s, whether this employment's welcome email went out, and HR's time
of the newest applied hire, update and termination. A replayed event is a no-op; an
event older than a newer conflicting one is recorded and ignored (the artifact says
why); a rerun after a failure resumes where the last run stopped (nothing is rolled
back: a half-made user has an unusable password and no email, the ledger says
``onboarding`` with ``last_error``, and the run is Failed, so it is noticed and the rerun
completes it).

Secrets: the throw-away password (hashed inside :mod:`tasks.identity`, never returned),
SMTP/LDAP credentials from settings and, with ``totp_preprovision``, the TOTP secret
(:mod:`flows.totp`). No task takes or returns one, so none reaches a parameter, a result,
a log line or an artifact.

:func:`run_hr_event` is the one entry point for the CLI and the HR gateway: it validates
and routes terminations to :mod:`flows.offboarding`.
"""

from __future__ import annotations

from dataclasses import replace

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import BaseModel

from flows.common import KUBE_API, USERS_DB, now as _now, table_artifact, transient_retries
from flows.person import EventResult, admit_event, note_failure, record_event, scale_workspace
from flows.totp import preprovision_totp
from flows.workspace import provision_workspace
from tasks import mail
from tasks.errors import PermanentError, TransientError
from tasks.hr import HRRequest, effective_groups, parse_request
from tasks.identity import UserSpec, get_backend
from tasks.identity.ledger import Ledger
from tasks.identity.record import EVENT_KINDS, Record, State, claim_welcome, release_welcome, welcome_sent
from tasks.names import workspace_names
from tasks.settings import get_settings

RETRY = transient_retries(4, backoff_factor=1)


class OnboardResult(EventResult):
    replay: bool
    url: str
    email: str


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


@task(name="ensure-identity", tags=[USERS_DB], **RETRY)
def ensure_identity(spec: UserSpec) -> str:
    return get_backend().upsert(spec)


@task(name="send-welcome-email", **RETRY)
def send_welcome(request: HRRequest, username: str, url: str, returning: bool) -> str:
    """At most one email per employment: claim in the ledger, send, mark sent
    (:func:`tasks.identity.record.claim_welcome` says who may send)."""
    ledger = Ledger()
    run = str(flow_run.id)
    step: list[str] = []

    def claim(r: Record) -> Record:
        new, verdict = claim_welcome(r, run, _now())
        step[:] = [verdict]
        return new

    ledger.update(username, claim)
    if step[0] == "already sent":
        return "already sent"
    if step[0] == "busy":
        raise TransientError("another run is sending the welcome email")
    emp = request.employee
    msg = mail.welcome_message(to_email=emp.email, given_name=emp.given_name, family_name=emp.family_name,
                               username=username, workspace_url=url, returning=returning,
                               message_key=f"welcome.{emp.employee_id}.{request.event_id}",
                               settings=get_settings())
    try:
        mail.send(msg)
    except Exception:
        ledger.update(username, lambda r: release_welcome(r, run))
        raise
    ledger.update(username, lambda r: welcome_sent(r, _now()))
    return f"sent to {emp.email}"


@task(name="restore-previous-work", retries=0, cache_policy=NO_CACHE)
def restore_previous_work(username: str) -> str:
    """Re-hire after the purge: restore the newest snapshot into the new, stopped workspace.

    ``purged_at`` stays set in the ledger until the restore succeeds, so a failed run is
    resumed by its rerun. The purge only ever ran after a verified backup, and retention
    never expires the newest good snapshot, so there is always one to restore. Untagged:
    the restore flow's own tasks take the API slots they need.
    """
    from flows.restore import restore_workspace

    result = restore_workspace(username, snapshot="latest", target="in-place")
    Ledger().update(username, lambda r: replace(r, purged_at=None))
    return f"restored snapshot {result.snapshot_id[:8]} into the new workspace volume"


def _spec(request: HRRequest, username: str) -> UserSpec:
    emp = request.employee
    return UserSpec(username=username, email=emp.email, given_name=emp.given_name, family_name=emp.family_name,
                    groups=tuple(effective_groups(emp, get_settings())), employee_id=emp.employee_id)


@flow(name="onboard-user")
def onboard_user(request: HRRequest) -> OnboardResult:
    """employee.hired / employee.updated: identity, workspace, welcome email; safe to repeat."""
    if request.type == "employee.terminated":
        raise PermanentError("employee.terminated goes to offboard_user")
    logger = get_run_logger()
    s = get_settings()
    rec = claim_username(request)
    username = rec.username
    url = f"https://{workspace_names(username).host(s.domain)}"
    rows: dict[str, str] = {"event": f"{request.type} {request.event_id}", "username": username}

    def done(replay: bool, ignored: str = "") -> OnboardResult:
        rows["result"] = ignored or "replay: nothing to do"
        logger.info("event %s for %s changed nothing: %s", request.event_id, username, rows["result"])
        table_artifact(f"onboard-{username}", rows, f"Onboarding {username} ({'replay' if replay else 'ignored'})")
        return OnboardResult(username=username, event_id=request.event_id, replay=replay, identity="unchanged",
                             workspace="unchanged", url=url, email="unchanged", ignored=ignored)

    if rec.seen(request.event_id):
        return done(replay=True)
    try:
        admission = admit_event(username, EVENT_KINDS[request.type], request.event_id, request.occurred_at, _now())
        if not admission.applies:
            return done(replay=False, ignored=admission.ignored)
        employment = admission.record
        if request.type == "employee.updated":
            rows["identity"] = "left disabled (person has left)" if employment.state.has_left \
                else ensure_identity(_spec(request, username))
            rows["workspace"] = rows["email"] = "not touched by an update"
        else:
            returning = rec.state.has_left
            rows["identity"] = ensure_identity(_spec(request, username))
            if employment.purged_at:  # volumes were deleted after retention: bring the work back
                provision_workspace(username, replicas=0)  # fresh volumes, nothing writing to them
                rows["data"] = restore_previous_work(username)
            elif returning:
                rows["wake"] = scale_workspace(username, 1)
            ws = provision_workspace(username)
            rows["workspace"] = f"{ws.release} revision {ws.revision} ({'changed' if ws.changed else 'unchanged'})"
            rows["email"] = send_welcome(request, username, url, returning)
            if s.totp_preprovision:
                rows["totp"] = preprovision_totp(username)
        record_event(username, request.event_id, State.ACTIVE if request.type == "employee.hired" else None)
    except BaseException as exc:
        note_failure(username, exc)
        raise
    logger.info("onboarded %s: %s", username, rows)
    table_artifact(f"onboard-{username}", rows, f"Onboarding {username}")
    return OnboardResult(username=username, event_id=request.event_id, replay=False,
                         identity=rows["identity"], workspace=rows["workspace"], url=url, email=rows["email"])


def run_hr_event(body: object) -> BaseModel:
    """Entry point for the CLI and the HR gateway: validate, then route by event type."""
    request = parse_request(body)
    if request.type == "employee.terminated":
        from flows.offboarding import offboard_user

        return offboard_user(request)
    return onboard_user(request)
