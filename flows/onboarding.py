"""Onboarding from HR events (employee.hired, employee.updated). Orchestration only: the
steps are in :mod:`tasks.people.steps`, the decisions in :mod:`tasks.people.record`.

Idempotency, written down: every step converges (identity upsert compares before it
writes, ``provision_workspace`` is idempotent), and the per-person ledger
(:mod:`tasks.people.ledger`) records the processed ``event_id``s, whether this
employment's welcome email went out, and HR's time of the newest applied hire, update and
termination. A replayed event is a no-op; an event older than a newer conflicting one is
recorded and ignored (the artifact says why); a rerun after a failure resumes where the
last run stopped (nothing is rolled back: a half-made user has an unusable password and
no email, the ledger says ``onboarding`` with ``last_error``, and the run is Failed, so it
is noticed and the rerun completes it).

Secrets: the throw-away password (hashed inside :mod:`tasks.people.identity`, never
returned), SMTP/LDAP credentials from settings and, with ``totp_preprovision``, the TOTP
secret (:mod:`tasks.people.totp_steps`). No task takes or returns one, so none reaches a
parameter, a result, a log line or an artifact.

:func:`run_hr_event` is the one entry point for the CLI and the HR gateway: it validates
and routes terminations to :mod:`flows.offboarding`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from pydantic import BaseModel

from flows.restore import restore_workspace
from flows.workspace import provision_workspace
from tasks.core.errors import PermanentError
from tasks.core.names import workspace_names
from tasks.core.runtime import without_flow_heartbeats
from tasks.core.settings import get_settings
from tasks.core.steps import now as _now
from tasks.core.steps import table_artifact
from tasks.people.hr import HRRequest, Process, parse_request, process_for
from tasks.people.record import EVENT_KINDS, State
from tasks.people.steps import (
    OnboardResult,
    admit_event,
    claim_username,
    ensure_identity,
    left_meanwhile,
    mark_restored,
    note_failure,
    person_of,
    record_event,
    send_welcome,
)
from tasks.people.totp_steps import preprovision_totp
from tasks.workspace.steps import scale_workspace


def restore_previous_work(username: str) -> str:
    """Re-hire after the purge: restore the newest snapshot into the new, stopped workspace.

    ``purged_at`` stays set in the ledger until the restore succeeds, so a failed run is
    resumed by its rerun. The purge only ever ran after a verified backup, and retention
    never expires the newest good snapshot, so there is always one to restore. The
    restore subflow's own tasks take the API slots they need.
    """
    result = restore_workspace(username, snapshot="latest", target="in-place")
    mark_restored(username)
    return f"restored snapshot {result.snapshot_id[:8]} into the new workspace volume"


@flow(name="onboard-user")
def onboard_user(request: HRRequest) -> OnboardResult:
    """employee.hired / employee.updated: identity, workspace, welcome email; safe to repeat."""
    if process_for(request.type) is not Process.ONBOARDING:
        raise PermanentError(f"{request.type} goes to offboard_user")
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
        admission = admit_event(username, EVENT_KINDS[request.type], request.event_id, request.occurred_at, _now(),
                                person_of(request))
        if not admission.applies:
            return done(replay=False, ignored=admission.ignored or "")
        employment = admission.record
        # The directory gets the newest data HR sent (a late hire keeps a newer update's), and a
        # leaver's late update changes their data, never their access (ensure_identity).
        if request.type == "employee.updated":
            rows["identity"] = ensure_identity(request, username)
            rows["workspace"] = rows["email"] = "not touched by an update"
        else:
            returning = rec.state.has_left
            rows["identity"] = ensure_identity(request, username)
            # Subflows without heartbeats of their own: this run's heartbeat covers the process,
            # and each subflow's would add up to 1 s of joining at its end (tasks/core/runtime.py).
            # A termination admitted meanwhile overtook this hire: it does not wake the workspace,
            # and stops it after provisioning (the release is as a serial run would leave it).
            gone = left_meanwhile(username)
            with without_flow_heartbeats():
                if employment.purged_at:  # volumes were deleted after retention: bring the work back
                    provision_workspace(username, replicas=0)  # fresh volumes, nothing writing to them
                    rows["data"] = restore_previous_work(username)
                elif returning and not gone:
                    rows["wake"] = scale_workspace(username, 1)
                ws = provision_workspace(username)
            rows["workspace"] = f"{ws.release} revision {ws.revision} ({'changed' if ws.changed else 'unchanged'})"
            if gone or left_meanwhile(username):
                rows["workspace"] += f"; {scale_workspace(username, 0)}: a termination was admitted meanwhile"
            rows["email"] = send_welcome(request, username, url, returning)
            if s.identity.totp_preprovision:
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
    """Entry point for the CLI and the HR gateway: validate, then route by event type
    (:func:`tasks.people.hr.process_for`, the one router)."""
    request = parse_request(body)
    if process_for(request.type) is Process.OFFBOARDING:
        from flows.offboarding import offboard_user

        return offboard_user(request)
    return onboard_user(request)
