"""Pure builders and decisions for optional TOTP pre-provisioning (setting ``totp_preprovision``).

Delivery, as the team decided it:

1. The flow mints the TOTP secret itself with :mod:`secrets`, at Authelia's defaults
   (32 random bytes, base32 without padding, SHA1, 6 digits, period 30; the issuer is
   the setting ``totp_issuer``).
2. It writes the secret into a short-lived Secret ``vibecode-totp-<username>`` in the
   platform namespace (labels ``app.kubernetes.io/part-of: vibecode``,
   ``vibecode.dev/user``, ``vibecode.dev/purpose: totp-handoff``; annotation
   ``vibecode.dev/expires-at`` = now + ``totp_handoff_hours``).
3. A Job runs the Authelia CLI, ``authelia storage user totp import /handoff/totp.yml
   --config /config/configuration.yml``: the hand-off Secret also holds the secret as
   Authelia's TOTP export document (``totp.yml``, schema ``exports.totp.json``), mounted
   read-only at ``/handoff`` with only that key projected. The secret is therefore in no
   process's argv and no environment variable (``generate --secret`` would put it in the
   argv, readable through ``/proc/<pid>/cmdline`` and ``ps`` on the node by anyone who can
   list processes there; ``generate`` has no file or environment input), in no
   manifest, parameter, log line or artifact. The existing Authelia configuration Secret
   (``authelia_config_secret``) is mounted read-only at ``/config``. ``import`` writes the
   configuration as given (it is Authelia's restore path), so the flow runs the Job only
   while no completed Job exists: a completed Job is never re-run.
4. An administrator hands the secret over in person with ``vibecode totp-handoff
   <username>``, which prints the otpauth:// URI (and an ASCII QR code when ``qrcode``
   is importable) once and deletes the Secret. ``purge_offboarded`` deletes hand-off
   Secrets past their expiry (decided by :func:`expired_handoffs`).

The welcome email carries no secret either: it says an administrator will hand the
authenticator setup over in person.

The Job (kept after success, it holds no secret) is the durable record that TOTP was
pre-provisioned: a rerun finds it Complete and mints nothing. A failed Job is kept for
its logs until a rerun replaces it; its hand-off Secret is deleted at once.

Authelia's storage must be reachable from the Job (the platform chart's PostgreSQL; its
NetworkPolicy ``totp-provision`` admits these Jobs). ``configuration.yml`` in the configuration
Secret holds no secret value (charts/vibecode-platform renders it): the Job gets the storage
encryption key and the PostgreSQL password as files of the platform Secret, through Authelia's
``*_FILE`` variables, as the Authelia Deployment does (tasks.platform.values.AUTHELIA_STORAGE_SECRET_FILES).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import quote, urlencode

import yaml

from tasks.cluster.objects import restricted_job
from tasks.core.names import (
    COMPONENT_LABEL,
    EXPIRES_AT,
    PART_OF,
    PART_OF_LABEL,
    PURPOSE_LABEL,
    TOTP_HANDOFF_SELECTOR,
    TOTP_ISSUER_ANNOTATION,
    TOTP_PROVISION_COMPONENT,
    TOTP_PROVISION_JOB_SELECTOR,
    TOTP_PURPOSE,
    USER_LABEL,
    validate_username,
)
from tasks.core.settings import IdentitySettings
from tasks.core.timefmt import parse_time as _parse_time
from tasks.platform.values import AUTHELIA_STORAGE_SECRET_FILES, PLATFORM_SECRET

SECRET_BYTES = 32  # Authelia's default --secret-size
ALGORITHM = "SHA1"
DIGITS = 6
PERIOD = 30

# The hand-off's keys and selectors (defined in tasks.core.names), as this module's callers name them.
PURPOSE, PROVISION_COMPONENT, ISSUER_ANNOTATION = TOTP_PURPOSE, TOTP_PROVISION_COMPONENT, TOTP_ISSUER_ANNOTATION
HANDOFF_SELECTOR, PROVISION_JOB_SELECTOR = TOTP_HANDOFF_SELECTOR, TOTP_PROVISION_JOB_SELECTOR
SECRET_KEY = "TOTP_SECRET"  # the raw secret in the hand-off Secret (what the administrator hands over)
IMPORT_KEY = "totp.yml"  # the same secret as Authelia's import document (what the Job reads)
HANDOFF_DIR = "/handoff"
IMPORT_FILE = f"{HANDOFF_DIR}/{IMPORT_KEY}"
CONFIG_DIR = "/config"
CONFIG_FILE = f"{CONFIG_DIR}/configuration.yml"
SECRETS_DIR = "/secrets"  # the storage secrets, one file per key of the platform Secret
RUN_AS = 65534  # nobody: the CLI needs no files of its own; the config Secret is mode 0444


def mint_secret() -> str:
    """32 random bytes as base32 without padding, as ``authelia ... --secret`` expects."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii").rstrip("=")


def decode_secret(secret: str) -> bytes:
    """The raw key from an unpadded base32 string; ``ValueError`` if it is not one."""
    try:
        return base64.b32decode(secret + "=" * (-len(secret) % 8), casefold=False)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not a base32 TOTP secret") from exc


def handoff_name(username: str) -> str:
    """Name of both the hand-off Secret and the provisioning Job (different kinds)."""
    return f"vibecode-totp-{validate_username(username)}"


def _labels(username: str, component: str) -> dict[str, str]:
    return {PART_OF_LABEL: PART_OF, COMPONENT_LABEL: component,
            USER_LABEL: username, PURPOSE_LABEL: PURPOSE}


def expires_at(now: datetime, identity: IdentitySettings) -> datetime:
    return now + timedelta(hours=identity.totp_handoff_hours)


def handoff_secret(username: str, secret: str, identity: IdentitySettings, namespace: str, now: datetime) -> dict:
    """The short-lived Secret the Job reads and the administrator's CLI hands over."""
    decode_secret(secret)  # refuse to store anything Authelia would reject
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": handoff_name(username), "namespace": namespace,
                         "labels": _labels(username, "totp-handoff"),
                         "annotations": {EXPIRES_AT: expires_at(now, identity).isoformat(),
                                         ISSUER_ANNOTATION: identity.totp_issuer}},
            "stringData": {SECRET_KEY: secret,
                           IMPORT_KEY: import_document(username, secret, identity.totp_issuer, now)}}


def import_document(username: str, secret: str, issuer: str, now: datetime) -> str:
    """Authelia's TOTP export format (v4.38 ``exports.totp.json``), which ``import`` reads."""
    decode_secret(secret)
    doc = {"totp_configurations": [{"created_at": now.isoformat(), "username": username, "issuer": issuer,
                                    "algorithm": ALGORITHM, "digits": DIGITS, "period": PERIOD,
                                    "secret": secret}]}
    return yaml.safe_dump(doc, sort_keys=False)


def provision_job(username: str, identity: IdentitySettings, namespace: str) -> dict:
    """The Job that runs ``authelia storage user totp import``; it holds no secret value and
    passes none through argv or environment: the CLI reads the mounted file."""
    name = handoff_name(username)
    labels = _labels(username, PROVISION_COMPONENT)
    args = ["storage", "user", "totp", "import", IMPORT_FILE, "--config", CONFIG_FILE]
    container = {
        "name": "authelia",
        "image": identity.authelia_image,
        "command": ["/app/authelia"],  # the binary itself, not the image's su-exec entrypoint
        "args": args,
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        # File paths only: the values stay in the mounted files.
        "env": [{"name": var, "value": f"{SECRETS_DIR}/{key}"} for var, key in AUTHELIA_STORAGE_SECRET_FILES.items()],
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "handoff", "mountPath": HANDOFF_DIR, "readOnly": True},
                         {"name": "storage-secrets", "mountPath": SECRETS_DIR, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    volumes = [{"name": "config", "secret": {"secretName": identity.authelia_config_secret, "defaultMode": 0o444}},
               {"name": "storage-secrets", "secret": {"secretName": PLATFORM_SECRET, "defaultMode": 0o440, "items": [
                   {"key": key, "path": key} for key in AUTHELIA_STORAGE_SECRET_FILES.values()]}},
               {"name": "handoff", "secret": {"secretName": name, "defaultMode": 0o444,
                                              "items": [{"key": IMPORT_KEY, "path": IMPORT_KEY}]}},
               {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    # A second try with the same secret fails the same way; a rerun retries.
    return restricted_job(name=name, namespace=namespace, labels=labels, container=container,
                          volumes=volumes, run_as_user=RUN_AS, run_as_group=RUN_AS, fs_group=RUN_AS,
                          deadline_seconds=int(identity.totp_job_timeout_seconds))


def otpauth_uri(username: str, secret: str, issuer: str) -> str:
    """Key URI format (Google Authenticator's, which Authelia also emits)."""
    label = quote(f"{issuer}:{username}", safe="")
    query = urlencode({"secret": secret, "issuer": issuer, "algorithm": ALGORITHM,
                       "digits": DIGITS, "period": PERIOD}, quote_via=quote)
    return f"otpauth://totp/{label}?{query}"


def is_expired(secret: dict, now: datetime) -> bool:
    """Past ``vibecode.dev/expires-at``; a missing or unreadable expiry counts as expired
    (a hand-off Secret nobody can date is not worth keeping)."""
    at = _parse_time(((secret.get("metadata") or {}).get("annotations") or {}).get(EXPIRES_AT))
    return at is None or at <= now


def expired_handoffs(secrets_: list[dict], now: datetime) -> list[str]:
    """Names of hand-off Secrets to delete: labelled as ours and past their expiry."""
    out = []
    for s in secrets_:
        meta = s.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get(PURPOSE_LABEL) != PURPOSE or labels.get(PART_OF_LABEL) != PART_OF:
            continue
        if is_expired(s, now):
            out.append(meta["name"])
    return sorted(out)


# -- decisions -------------------------------------------------------------------------------
SecretState = Literal["absent", "valid", "expired"]


def secret_state(secret: dict | None, now: datetime) -> SecretState:
    if secret is None:
        return "absent"
    return "expired" if is_expired(secret, now) else "valid"


@dataclass(frozen=True)
class ProvisionPlan:
    """What converging the hand-off Secret and the provisioning Job takes, in this order:
    delete the Job, delete the Secret, (check Authelia's config exists,) create the Secret,
    create the Job; then wait for the Job unless ``done``."""

    done: bool = False
    delete_job: bool = False
    delete_secret: bool = False
    create_secret: bool = False
    create_job: bool = False

    @property
    def creates(self) -> bool:
        return self.create_secret or self.create_job


def provision_plan(job: str, secret: SecretState) -> ProvisionPlan:
    """From the Job's state (absent | running | succeeded | failed) and the Secret's.

    A completed Job is the record that Authelia holds the secret: nothing to do. A running
    one is only waited for. A failed one (an earlier run's, kept for its logs) is replaced
    together with a fresh secret. With no Job, an unexpired Secret is reused (a concurrent
    run made it, and its Job reads whichever exists); an expired one is replaced.
    """
    if job == "succeeded":
        return ProvisionPlan(done=True)
    if job == "running":
        return ProvisionPlan()
    if job == "failed":
        return ProvisionPlan(delete_job=True, delete_secret=True, create_secret=True, create_job=True)
    if secret == "valid":
        return ProvisionPlan(create_job=True)
    return ProvisionPlan(delete_secret=secret == "expired", create_secret=True, create_job=True)


HandoffVerdict = Literal["nothing", "not registered", "expired", "hand off"]


def handoff_verdict(secret: dict | None, job: str, now: datetime) -> HandoffVerdict:
    """May the administrator's one-time hand-off show the secret now? Only when Authelia has
    registered it (the Job completed) and the hand-off has not expired (then it is deleted)."""
    if secret is None:
        return "nothing"
    if job != "succeeded":
        return "not registered"
    if is_expired(secret, now):
        return "expired"
    return "hand off"
