"""Prefect steps of TOTP pre-provisioning, and its one-time hand-off (setting ``totp_preprovision``).

The delivery is described in :mod:`tasks.people.totp`, which also holds every decision. After
the welcome email, onboarding calls :func:`preprovision_totp`: a short tagged task
converges the hand-off Secret ``vibecode-totp-<user>`` and the Job that imports it into
Authelia (the secret is minted inside the task), an untagged task waits for the Job (a
wait holds no ``kube-api`` slot: the Job needs none, but other runs' API calls do), and a
failed Job's hand-off Secret is deleted at once. The completed Job is the record that
TOTP is done, so a rerun mints nothing.

:func:`totp_handoff` is what ``vibecode totp-handoff`` runs. It is deliberately not a
flow: its result is the secret, and a flow's result, parameters and logs go to the
Prefect server.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

from prefect import task

from tasks.cluster.jobs import await_job, job_state
from tasks.cluster.kube import connect
from tasks.core.errors import PermanentError, Timeout
from tasks.core.names import validate_username
from tasks.core.settings import get_settings
from tasks.core.steps import KUBE_API, transient_retries
from tasks.core.steps import now as _now
from tasks.people import totp

RETRY = transient_retries(4, backoff_factor=1)
TOTP_WAIT_GRACE_SECONDS = 30  # past activeDeadlineSeconds, time for the job controller to say Failed


def _wait_for_job(kube, ns: str, name: str, timeout: float, first_poll: float) -> tuple[str, str]:
    """Wait for one Job through the LIST+WATCH waiter the backups use (woken by the status
    change, no polling); (succeeded | failed, reason), or a transient Timeout.
    ``first_poll`` is the pause before re-listing after a broken watch."""
    result = await_job(kube, ns, totp.PROVISION_JOB_SELECTOR, name, timeout, first_poll)
    if result.state == "running":
        raise Timeout(f"Job {ns}/{name} still running after {timeout:.0f} s ({result.reason})")
    return result.state, result.reason


@task(name="start-totp-provisioning", tags=[KUBE_API], **RETRY)
def start_totp_provisioning(username: str) -> bool:
    """Converge the hand-off Secret and the provisioning Job; True when already done."""
    s = get_settings()
    kube = connect(s)
    ns, name = s.platform_namespace, totp.handoff_name(username)
    job = kube.get("Job", ns, name)
    plan = totp.provision_plan(job_state(job)[0] if job is not None else "absent",
                               totp.secret_state(kube.get("Secret", ns, name), _now()))
    if plan.done:
        return True
    if plan.creates and kube.get("Secret", ns, s.identity.authelia_config_secret) is None:
        raise PermanentError(f"the Authelia configuration Secret {ns}/{s.identity.authelia_config_secret} does not "
                             f"exist (setting authelia_config_secret); TOTP not pre-provisioned")
    if plan.delete_job:  # an earlier run's failure, kept for its logs until now
        kube.delete("Job", ns, name)
    if plan.delete_secret:
        kube.delete("Secret", ns, name)
    if plan.create_secret:  # a concurrent run's Secret wins the create; its Job reads whichever exists
        kube.create(totp.handoff_secret(username, totp.mint_secret(), s.identity, s.platform_namespace, _now()))
    if plan.create_job:
        kube.create(totp.provision_job(username, s.identity, s.platform_namespace))
    return False


@task(name="wait-totp-provisioning", **transient_retries(2))
def wait_totp_provisioning(username: str) -> tuple[str, str]:
    s = get_settings()
    return _wait_for_job(connect(s), s.platform_namespace, totp.handoff_name(username),
                         s.identity.totp_job_timeout_seconds + TOTP_WAIT_GRACE_SECONDS, s.identity.totp_poll_seconds)


@task(name="discard-totp-handoff", tags=[KUBE_API], **RETRY)
def discard_totp_handoff(username: str) -> None:
    """No orphaned secret: Authelia never got it."""
    s = get_settings()
    connect(s).delete("Secret", s.platform_namespace, totp.handoff_name(username))


@task(name="expire-totp-handoffs", tags=[KUBE_API], **RETRY)
def expire_totp_handoffs(now: datetime) -> list[str]:
    """Delete hand-off Secrets nobody collected before ``vibecode.dev/expires-at`` (one LIST)."""
    s = get_settings()
    kube = connect(s)
    found = kube.list("Secret", s.platform_namespace, totp.HANDOFF_SELECTOR)
    return [n for n in totp.expired_handoffs(found, now) if kube.delete("Secret", s.platform_namespace, n)]


def preprovision_totp(username: str) -> str:
    """Called inside the onboarding flow: the three steps above, and what to tell a human."""
    s = get_settings()
    ns, name = s.platform_namespace, totp.handoff_name(username)
    if start_totp_provisioning(username):
        return f"already pre-provisioned (Job {name} complete)"
    state, reason = wait_totp_provisioning(username)
    if state != "succeeded":
        discard_totp_handoff(username)
        raise PermanentError(f"TOTP pre-provisioning for {username} failed: Job {ns}/{name}: {reason}. "
                             f"The hand-off Secret was deleted; rerun the event to retry.")
    expiry = totp.expires_at(_now(), s.identity).isoformat()
    return (f"pre-provisioned (Job {name} complete); an administrator hands it over with "
            f"`vibecode totp-handoff {username}` before about {expiry}")


@dataclass(frozen=True)
class TotpHandoff:
    username: str
    issuer: str
    uri: str  # holds the secret: print it to the administrator's terminal, nowhere else

    def __repr__(self) -> str:
        return f"TotpHandoff(username={self.username!r}, issuer={self.issuer!r}, uri=<hidden>)"


def totp_handoff(username: str, now: datetime | None = None) -> TotpHandoff:
    """Read a pre-provisioned TOTP setup once and delete it. Raises ``PermanentError`` when
    there is nothing to hand off (never made, already handed off, expired, or Authelia has
    not registered it yet); an expired one is deleted on the way."""
    username = validate_username(username)
    now = now or _now()
    s = get_settings()
    kube = connect(s)
    ns, name = s.platform_namespace, totp.handoff_name(username)
    secret = kube.get("Secret", ns, name)
    job = kube.get("Job", ns, name) if secret is not None else None
    state, reason = job_state(job) if job is not None else ("absent", "no provisioning Job")
    verdict = totp.handoff_verdict(secret, state, now)
    if verdict == "nothing" or secret is None:
        raise PermanentError(f"nothing to hand off for {username} (already handed off, expired, "
                             f"or never pre-provisioned)")
    if verdict == "not registered":
        raise PermanentError(f"Authelia has not registered {username}'s TOTP yet (Job {ns}/{name}: "
                             f"{state}, {reason}); nothing handed off")
    kube.delete("Secret", ns, name)  # one-time: gone before anyone sees it, expired or not
    if verdict == "expired":
        raise PermanentError(f"{username}'s hand-off expired and was deleted; nothing handed off")
    value = base64.b64decode((secret.get("data") or {})[totp.SECRET_KEY]).decode("ascii")
    issuer = (secret["metadata"].get("annotations") or {}).get(totp.ISSUER_ANNOTATION) or s.identity.totp_issuer
    return TotpHandoff(username, issuer, totp.otpauth_uri(username, value, issuer))
