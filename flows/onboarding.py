"""Onboarding and offboarding from HR events. Orchestration only.

Idempotency, written down: every step converges (identity upsert/disable compare before
they write, ``provision_workspace`` is idempotent, deletes treat "already gone" as done),
and the per-person ledger (:mod:`tasks.identity.ledger`, a ConfigMap) records the
processed ``event_id``s, whether the welcome email went out for the current employment,
and when the person left. A replayed event is a no-op; a rerun after a failure resumes
where the last run stopped (nothing is rolled back: a half-made user has an unusable
password and no email, the ledger says ``onboarding`` with ``last_error``, and the run is
Failed, so it is noticed and the rerun completes it).

Secrets: the throw-away password (hashed inside :mod:`tasks.identity`, never returned),
SMTP/LDAP credentials from settings and, with ``totp_preprovision``, the TOTP secret. No
task takes or returns one, so none reaches a parameter, a result, a log line or an artifact.

TOTP pre-provisioning (optional, setting ``totp_preprovision``; the delivery is described
in :mod:`tasks.totp`): after the welcome email, ``preprovision-totp`` mints the secret
inside the task, writes it into the short-lived hand-off Secret ``vibecode-totp-<user>``
in the platform namespace, and runs a Job with the Authelia CLI (``authelia storage user
totp generate``) that reads it only through ``secretKeyRef``. The administrator hands it
over in person with ``vibecode totp-handoff <user>`` (one-time: the Secret is deleted);
``purge_offboarded`` deletes hand-off Secrets past ``vibecode.dev/expires-at``. The
completed Job is the record that TOTP is done, so a rerun mints nothing; a failed Job
deletes the hand-off Secret and fails the run (everything before it stays done, the event
is not recorded), and the rerun replaces the Job and retries with a fresh secret.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel

from flows.workspace import provision_workspace
from tasks import helm, mail, totp
from tasks.jobs import await_job, job_state
from flows.common import KUBE_API, HELM, USERS_DB as USERS_DB_TAG, now as _now, transient_retries
from tasks.errors import BackupRequired, PermanentError, Timeout, TransientError
from tasks.hr import HRRequest, effective_groups, parse_request
from tasks.identity import UserSpec, get_backend
from tasks.identity.ledger import Ledger, Record
from tasks.kube import connect
from tasks.names import workspace_names
from tasks.offboard import deletion_decision
from tasks.settings import get_settings

RETRY = transient_retries(4, backoff_factor=1)
WELCOME_CLAIM_SECONDS = 120
TOTP_WAIT_GRACE_SECONDS = 30  # past activeDeadlineSeconds, time for the job controller to say Failed


class OnboardResult(BaseModel):
    username: str
    event_id: str
    replay: bool
    identity: str
    workspace: str
    url: str
    email: str


class OffboardResult(BaseModel):
    username: str
    event_id: str
    identity: str
    workspace: str
    backup: str
    deletion: str


# -- tasks: thin wrappers over tasks.* so retries and concurrency apply per step ---------
@task(name="claim-username", tags=[KUBE_API], **RETRY)
def claim_username(request: HRRequest) -> Record:
    """The username is fixed at the first hire: later events find it by employee id."""
    ledger = Ledger()
    emp = request.employee
    existing = ledger.by_employee(emp.employee_id)
    if existing is not None:
        return existing
    if request.type == "employee.updated":
        raise PermanentError(f"employee {emp.employee_id} was never onboarded; replay after the hire")
    return ledger.claim(request.username, emp.employee_id)


@task(name="begin-employment", tags=[KUBE_API], **RETRY)
def begin_employment(username: str, event_id: str) -> Record:
    """A hire after a termination starts a new employment: new welcome, retention clock stopped."""
    def change(r: Record) -> Record:
        if r.seen(event_id) or r.state not in ("terminated", "purged"):
            return r
        return replace(r, state="onboarding", welcome="", terminated_at="", last_error="")
    return Ledger().update(username, change)


@task(name="ensure-identity", tags=[USERS_DB_TAG], **RETRY)
def ensure_identity(spec: UserSpec) -> str:
    return get_backend().upsert(spec)


@task(name="disable-identity", tags=[USERS_DB_TAG], **RETRY)
def disable_identity(username: str) -> str:
    return get_backend().disable(username)


@task(name="scale-workspace", tags=[KUBE_API], **RETRY)
def scale_workspace(username: str, replicas: int) -> str:
    s = get_settings()
    kube = connect(s)
    name = workspace_names(username).deployment
    dep = kube.get("Deployment", s.namespace, name)
    if dep is None:
        return "absent"
    if dep["spec"].get("replicas") == replicas:
        return f"already at {replicas}"
    kube.scale(s.namespace, name, replicas)
    return f"scaled to {replicas}"


@task(name="send-welcome-email", **RETRY)
def send_welcome(request: HRRequest, username: str, url: str, returning: bool) -> str:
    """At most one email per employment: claim in the ledger, send, mark sent.

    A failed send releases the claim; a claim left by a crashed run goes stale after
    WELCOME_CLAIM_SECONDS, so the email is never lost either.
    """
    ledger = Ledger()
    me = f"claimed:{flow_run.id}:{_now().isoformat()}"

    def claim(r: Record) -> Record:
        if r.welcome_sent:
            return r
        if r.welcome.startswith("claimed:"):
            _, run, at = r.welcome.split(":", 2)
            fresh = (_now() - datetime.fromisoformat(at)).total_seconds() < WELCOME_CLAIM_SECONDS
            if fresh and run != str(flow_run.id):
                return r
        return replace(r, welcome=me)

    rec = ledger.update(username, claim)
    if rec.welcome_sent:
        return "already sent"
    if rec.welcome != me:
        raise TransientError("another run is sending the welcome email")
    emp = request.employee
    msg = mail.welcome_message(to_email=emp.email, given_name=emp.given_name, family_name=emp.family_name,
                               username=username, workspace_url=url, returning=returning,
                               message_key=f"welcome.{emp.employee_id}.{request.event_id}",
                               settings=get_settings())
    try:
        mail.send(msg)
    except Exception:
        ledger.update(username, lambda r: replace(r, welcome="") if r.welcome == me else r)
        raise
    ledger.update(username, lambda r: replace(r, welcome=f"sent:{_now().isoformat()}"))
    return f"sent to {emp.email}"


def _wait_for_job(kube, ns: str, name: str, timeout: float, first_poll: float) -> tuple[str, str]:
    """Wait for one Job through the same LIST+WATCH waiter the backups use (woken by the
    status change, no polling); (succeeded | failed, reason), or a transient Timeout.
    ``first_poll`` is the pause before re-listing after a broken watch."""
    result = await_job(kube, ns, totp.PROVISION_JOB_SELECTOR, name, timeout, first_poll)
    if result.state == "running":
        raise Timeout(f"Job {ns}/{name} still running after {timeout:.0f} s ({result.reason})")
    return result.state, result.reason


@task(name="preprovision-totp", tags=[KUBE_API], **transient_retries(2))
def preprovision_totp(username: str) -> str:
    """Register a TOTP secret with Authelia through a Job; the secret lives only in the
    hand-off Secret. Converges: a completed Job means done, a running one is waited for,
    a failed one (from an earlier run) is replaced along with a fresh secret."""
    s = get_settings()
    kube = connect(s)
    ns, name = s.platform_namespace, totp.handoff_name(username)
    job = kube.get("Job", ns, name)
    state, _ = job_state(job) if job is not None else ("absent", "")
    if state == "succeeded":
        return f"already pre-provisioned (Job {name} complete)"
    if state == "failed":  # an earlier run's failure, kept for its logs: retry from scratch
        kube.delete("Job", ns, name)
        kube.delete("Secret", ns, name)
    if state != "running":
        if kube.get("Secret", ns, s.authelia_config_secret) is None:
            raise PermanentError(f"the Authelia configuration Secret {ns}/{s.authelia_config_secret} does not "
                                 f"exist (setting authelia_config_secret); TOTP not pre-provisioned")
        existing = kube.get("Secret", ns, name)
        if existing is not None and totp.is_expired(existing, _now()):
            kube.delete("Secret", ns, name)
            existing = None
        if existing is None:  # a concurrent run's Secret wins the create; its Job reads whichever exists
            kube.create(totp.handoff_secret(username, totp.mint_secret(), s, _now()))
        kube.create(totp.provision_job(username, s))
    state, reason = _wait_for_job(kube, ns, name, s.totp_job_timeout_seconds + TOTP_WAIT_GRACE_SECONDS,
                                  s.totp_poll_seconds)
    if state != "succeeded":
        kube.delete("Secret", ns, name)  # no orphaned secret: Authelia never got it
        raise PermanentError(f"TOTP pre-provisioning for {username} failed: Job {ns}/{name}: {reason}. "
                             f"The hand-off Secret was deleted; rerun the event to retry.")
    secret = kube.get("Secret", ns, name)
    expiry = ((secret or {}).get("metadata", {}).get("annotations") or {}).get(totp.EXPIRES_AT, "?")
    return (f"pre-provisioned (Job {name} complete); an administrator hands it over with "
            f"`vibecode totp-handoff {username}` before {expiry}")


@task(name="expire-totp-handoffs", tags=[KUBE_API], **RETRY)
def expire_totp_handoffs(now: datetime) -> list[str]:
    """Delete hand-off Secrets nobody collected before ``vibecode.dev/expires-at`` (one LIST)."""
    s = get_settings()
    kube = connect(s)
    found = kube.list("Secret", s.platform_namespace, totp.HANDOFF_SELECTOR)
    return [n for n in totp.expired_handoffs(found, now) if kube.delete("Secret", s.platform_namespace, n)]


@task(name="record-event", tags=[KUBE_API], **RETRY)
def record_event(username: str, event_id: str, state: str | None = None) -> Record:
    """Last step: only a run that did everything marks its event done."""
    return Ledger().update(username, lambda r: replace(r.with_event(event_id), state=state or r.state,
                                                       last_error=""))


@task(name="mark-terminated", tags=[KUBE_API], **RETRY)
def mark_terminated(username: str, employee_id: str, now: datetime) -> Record:
    """Start the retention clock once; a replay keeps the first termination time."""
    ledger = Ledger()
    ledger.claim(username, employee_id)
    return ledger.update(username, lambda r: r if r.state in ("terminated", "purged") else
                         replace(r, state="terminated", welcome="", terminated_at=now.isoformat()))


@task(name="final-backup", tags=[KUBE_API], retries=0, cache_policy=NO_CACHE)
def final_backup(username: str) -> str:
    """The backup issue's flow; it writes the vibecode.dev/last-backup-* annotations we judge."""
    try:
        from flows.backup import backup_workspaces
    except ImportError:
        raise BackupRequired("the backup flow (flows.backup.backup_workspaces) is not installed") from None
    report = backup_workspaces(usernames=[username])
    ws = report.workspaces[0] if report.workspaces else None
    if ws is None:
        return report.outcome.value
    detail = f"snapshot {ws.snapshot_id[:8]}, {'verified' if ws.verified else 'not verified'}" \
        if ws.snapshot_id else ws.reason
    return f"{ws.outcome.value} ({detail})"[:200]


@task(name="restore-previous-work", retries=0, cache_policy=NO_CACHE)
def restore_previous_work(username: str) -> str:
    """Re-hire after the purge: restore the newest snapshot into the new, stopped workspace.

    ``purged_at`` stays set in the ledger until the restore succeeds, so a failed run is
    resumed by its rerun. The purge only ever ran after a verified backup, and retention
    never expires the newest good snapshot, so there is always one to restore.
    """
    from flows.restore import restore_workspace

    result = restore_workspace(username, snapshot="latest", target="in-place")
    Ledger().update(username, lambda r: replace(r, purged_at=""))
    return f"restored snapshot {result.snapshot_id[:8]} into the new workspace volume"


def _pvcs(username: str) -> list[dict]:
    s = get_settings()
    return connect(s).list("PersistentVolumeClaim", s.namespace, workspace_names(username).selector)


@task(name="judge-deletion", tags=[KUBE_API], **RETRY)
def judge_deletion(username: str, now: datetime):
    s = get_settings()
    rec = Ledger().get(username)
    terminated = rec.terminated_time() if rec and rec.state == "terminated" else None
    return deletion_decision(terminated, _pvcs(username), now, s.offboard_retention_days)


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
    deleted = [p["metadata"]["name"] for p in _pvcs(username)
               if kube.delete("PersistentVolumeClaim", s.namespace, p["metadata"]["name"])]
    Ledger().update(username, lambda r: replace(r, state="purged", purged_at=now.isoformat()))
    return f"release {'uninstalled' if uninstalled else 'absent'}; PVCs deleted: {', '.join(deleted) or 'none'}"


def _note_failure(username: str, exc: BaseException) -> None:
    try:
        Ledger().update(username, lambda r: replace(r, last_error=f"{type(exc).__name__}: {str(exc)[:300]}"))
    except Exception:  # noqa: BLE001 - the original failure is what matters
        pass


def _artifact(key: str, rows: dict, description: str) -> None:
    create_table_artifact(key=key, table=[{"step": k, "outcome": v} for k, v in rows.items()],
                          description=description)


# -- flows ---------------------------------------------------------------------------------
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
    if rec.seen(request.event_id):
        logger.info("event %s for %s was already processed: nothing to do", request.event_id, username)
        rows["result"] = "replay: nothing to do"
        _artifact(f"onboard-{username}", rows, f"Onboarding {username} (replay)")
        return OnboardResult(username=username, event_id=request.event_id, replay=True, identity="unchanged",
                             workspace="unchanged", url=url, email="unchanged")
    emp = request.employee
    spec = UserSpec(username=username, email=emp.email, given_name=emp.given_name, family_name=emp.family_name,
                    groups=tuple(effective_groups(emp, s)), employee_id=emp.employee_id)
    try:
        if request.type == "employee.updated":
            if rec.state in ("terminated", "purged"):
                rows["identity"] = "left disabled (person has left)"
            else:
                rows["identity"] = ensure_identity(spec)
            rows["workspace"] = rows["email"] = "not touched by an update"
        else:
            returning = rec.state in ("terminated", "purged")
            employment = begin_employment(username, request.event_id)
            rows["identity"] = ensure_identity(spec)
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
        record_event(username, request.event_id, "active" if request.type == "employee.hired" else None)
    except BaseException as exc:
        _note_failure(username, exc)
        raise
    logger.info("onboarded %s: %s", username, rows)
    _artifact(f"onboard-{username}", rows, f"Onboarding {username}")
    return OnboardResult(username=username, event_id=request.event_id, replay=False,
                         identity=rows["identity"], workspace=rows["workspace"], url=url, email=rows["email"])


@flow(name="offboard-user")
def offboard_user(request: HRRequest, now: datetime | None = None) -> OffboardResult:
    """employee.terminated: access ends first; data is kept until a verified backup and retention allow."""
    if request.type != "employee.terminated":
        raise PermanentError(f"{request.type} goes to onboard_user")
    now = now or _now()
    logger = get_run_logger()
    rec = Ledger().by_employee(request.employee.employee_id)
    username = rec.username if rec else request.username
    rows: dict[str, str] = {"event": f"{request.type} {request.event_id}", "username": username}
    rows["identity"] = disable_identity(username)  # first: access ends at once
    rows["workspace"] = scale_workspace(username, 0)
    mark_terminated(username, request.employee.employee_id, now)
    decision = judge_deletion(username, now)
    if decision.action == "refuse":
        try:
            rows["backup"] = final_backup(username)
        except Exception as exc:  # noqa: BLE001 - judged below: no verified backup, no deletion
            rows["backup"] = f"failed: {exc}"[:300]
        decision = judge_deletion(username, now)
    else:
        rows["backup"] = "verified backup already present"
    rows["deletion"] = f"{decision.action}: {decision.reason}"
    logger.info("offboarded %s: %s", username, rows)
    _artifact(f"offboard-{username}", rows, f"Offboarding {username}")
    if decision.action == "refuse":
        raise BackupRequired(f"{username}: access removed, but nothing deleted: {decision.reason}")
    if decision.action == "delete":
        rows["deletion"] = delete_workspace(username, now)
    record_event(username, request.event_id, "purged" if decision.action == "delete" else "terminated")
    return OffboardResult(username=username, event_id=request.event_id, identity=rows["identity"],
                          workspace=rows["workspace"], backup=rows["backup"], deletion=rows["deletion"])


@flow(name="purge-offboarded")
def purge_offboarded(now: datetime | None = None) -> dict[str, str]:
    """Scheduled (daily): delete departed people's workspaces once retention and a verified backup allow,
    and TOTP hand-off Secrets nobody collected before they expired."""
    now = now or _now()
    out: dict[str, str] = {}
    for rec in Ledger().all(state="terminated"):
        decision = judge_deletion(rec.username, now)
        if decision.action == "delete":
            out[rec.username] = delete_workspace(rec.username, now)
        else:
            out[rec.username] = f"{decision.action}: {decision.reason}"
    expired = expire_totp_handoffs(now)
    if expired:  # the key cannot be a username
        out["(expired TOTP hand-offs)"] = f"deleted: {', '.join(expired)}"
    _artifact("purge-offboarded", out, "Offboarded workspaces judged for deletion")
    return out


def run_hr_event(body: object) -> BaseModel:
    """Entry point for the CLI and the HR gateway: validate, then route by event type."""
    request = parse_request(body)
    if request.type == "employee.terminated":
        return offboard_user(request)
    return onboard_user(request)
