"""Safe Kubernetes names for a user, in the spirit of kubespawner's ``slugs.py``.

The username is also a DNS label (``<username>.<domain>`` is the workspace host), so
we do not escape or hash it: we *refuse* anything that is not already safe. That keeps
names readable for operators and makes the mapping one-to-one, so two users can never
collide on the same release or volume.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, Field

from tasks.core.errors import InvalidInput

# Anchored for JSON Schema / pydantic (whose engine reads ``$`` as end of text); Python code
# must use ``fullmatch``, because Python's ``$`` also matches before a trailing newline.
USERNAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$"
_USERNAME_RE = re.compile(USERNAME_PATTERN)
SNAPSHOT_PATTERN = r"^(latest|[0-9a-f]{8,64})$"
_SNAPSHOT_RE = re.compile(SNAPSHOT_PATTERN)

# Hosts under the base domain that belong to the platform, never to a person.
RESERVED_USERNAMES = frozenset(
    {"auth", "admin", "api", "docs", "www", "grafana", "prometheus", "minio", "s3",
     "mail", "smtp", "ldap", "prefect", "ingress", "default", "root", "system",
     "hr"}  # the HR gateway's host (the platform Gateway's hr listener)
)
RESERVED_PREFIXES = ("kube-", "vibecode-", "system-")

PART_OF = "vibecode"
WORKSPACE_APP = "code-server"  # app.kubernetes.io/name of every workspace Deployment and pod


def validate_username(username: object, field: str = "username") -> str:
    """Return ``username`` if it is a safe workspace name, else raise ``InvalidInput``.

    Checked before any string test so that 10 kB inputs and look-alike unicode fail fast
    with a message naming the field and never echo the whole input back.
    """
    if not isinstance(username, str):
        raise InvalidInput(field, "must be a string")
    if len(username) > 32:
        raise InvalidInput(field, f"is {len(username)} characters long; at most 32 are allowed")
    if not username.isascii():
        raise InvalidInput(field, "must be ASCII (lowercase letters, digits and '-')")
    if "--" in username:
        raise InvalidInput(field, "must not contain '--'")
    if not _USERNAME_RE.fullmatch(username):
        raise InvalidInput(field, f"{username!r} must match {USERNAME_PATTERN}")
    if username in RESERVED_USERNAMES or username.startswith(RESERVED_PREFIXES):
        raise InvalidInput(field, f"{username!r} is reserved for a platform host")
    return username


def is_username(value: object) -> bool:
    """:func:`validate_username` as a test (for names found in the world, such as bucket prefixes)."""
    try:
        validate_username(value)
    except InvalidInput:
        return False
    return True


def validate_snapshot_id(snapshot: object, field: str = "snapshot") -> str:
    """``latest`` or a restic snapshot id (hex, 8 to 64 digits), matched in full."""
    if not isinstance(snapshot, str) or len(snapshot) > 64 or not _SNAPSHOT_RE.fullmatch(snapshot):
        raise InvalidInput(field, "must be 'latest' or a restic snapshot id (hex)")
    return snapshot


# A flow parameter: the UI renders the pattern, and Python's engine checks it in full too.
Username = Annotated[str, Field(pattern=USERNAME_PATTERN, max_length=32,
                                description="Lowercase DNS label; the workspace host is <username>.<domain>"),
                     AfterValidator(validate_username)]


def username_from_email(email: str) -> str:
    """The HR contract: the email's local part, lowercased, with ``.``, ``_`` and ``+`` as ``-``.

    Unvalidated (see :func:`derive_username`, the one rule every entry point applies);
    non-ASCII is left as it is, never folded, so the validator refuses it.
    """
    local = email.rsplit("@", 1)[0]
    return re.sub(r"[._+]", "-", local.lower() if local.isascii() else local)


def derive_username(login: object, field: str = "username") -> str:
    """The workspace username a login name gives, or ``InvalidInput`` naming ``field``.

    The one rule for every path that derives a username (an HR event's email, a SCIM
    ``userName``): an email's local part, a plain name as it is; lowercased, with ``.``,
    ``_`` and ``+`` as ``-``; then :func:`validate_username`. Anything that is not ASCII is
    refused *before* any case mapping or normalisation: NFKC turns a fullwidth ``ａ`` into
    ``a`` and ``str.lower`` turns the Kelvin sign into ``k``, so folding would hand a
    look-alike login the real person's username (and refuse the real person later).
    """
    if not isinstance(login, str):
        raise InvalidInput(field, "must be a string")
    if len(login) > 320:
        raise InvalidInput(field, f"is {len(login)} characters long; at most 320 are allowed")
    if not login.isascii():
        raise InvalidInput(field, "must be ASCII: look-alike letters are refused, not folded into ASCII")
    return validate_username(username_from_email(login), field)


@dataclass(frozen=True)
class WorkspaceNames:
    """Every Kubernetes name that belongs to one user's workspace."""

    username: str

    @property
    def release(self) -> str:
        return f"ws-{self.username}"

    @property
    def deployment(self) -> str:
        return f"ws-{self.username}"

    @property
    def service(self) -> str:
        return f"ws-{self.username}"

    @property
    def workspace_pvc(self) -> str:
        return f"ws-{self.username}-workspace"

    @property
    def extensions_pvc(self) -> str:
        return f"ws-{self.username}-extensions"

    @property
    def labels(self) -> dict[str, str]:
        return {NAME_LABEL: WORKSPACE_APP, PART_OF_LABEL: PART_OF, USER_LABEL: self.username}

    @property
    def selector(self) -> str:
        return selector(**{USER_LABEL: self.username})

    def host(self, domain: str) -> str:
        return f"{self.username}.{domain}"


def workspace_names(username: str) -> WorkspaceNames:
    return WorkspaceNames(validate_username(username))



# -- label and annotation vocabulary (every selector is built from these) --------------
# Every label and annotation key of the platform is defined here and nowhere else in the Python
# code (tests/core/test_vocabulary.py fails on a key typed out elsewhere); the charts use the
# same keys in their templates.
PART_OF_LABEL = "app.kubernetes.io/part-of"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"  # "Helm" on objects a release owns (or may adopt)
NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
USER_LABEL = "vibecode.dev/user"
VOLUME_LABEL = "vibecode.dev/volume"  # workspace | extensions | restore
BACKUP_RUN_LABEL = "vibecode.dev/backup-run"  # the run id on backup/restore Jobs, their pods and restore PVCs
JOB_NAME_LABEL = "job-name"  # set by the Job controller on every pod of a Job

# On a workspace's Deployment and volume while a restore writes into the volume: the name of
# the restore Job. Provisioning and the reaper must not start the workspace while it is set.
RESTORING_ANNOTATION = "vibecode.dev/restoring"

LAST_BACKUP_PREFIX = "vibecode.dev/last-backup-"
LAST_BACKUP_TIME = f"{LAST_BACKUP_PREFIX}time"  # RFC 3339, UTC
LAST_BACKUP_OUTCOME = f"{LAST_BACKUP_PREFIX}outcome"  # Completed | PartiallyFailed | Failed
LAST_BACKUP_SNAPSHOT = f"{LAST_BACKUP_PREFIX}snapshot"  # restic id of the last *good* snapshot
LAST_BACKUP_VERIFIED = f"{LAST_BACKUP_PREFIX}verified"  # "true" | "false"
LAST_BACKUP_REASON = f"{LAST_BACKUP_PREFIX}reason"  # set when not Completed
LAST_VERIFIED_TIME = f"{LAST_BACKUP_PREFIX}verified-time"  # RFC 3339: the last Completed + verified backup



def selector(**labels: str) -> str:
    """A label selector from label keys of this module: ``selector(**{USER_LABEL: "alice"})``."""
    return ",".join(f"{k}={v}" for k, v in labels.items())


WORKSPACE_POD_SELECTOR = selector(**{NAME_LABEL: WORKSPACE_APP, PART_OF_LABEL: PART_OF})


# Label every workspace volume carries, so backups and the reaper can list them in one call.
WORKSPACE_PVC_SELECTOR = selector(**{PART_OF_LABEL: PART_OF, VOLUME_LABEL: "workspace"})

# Every workspace Deployment carries these labels (chart: workspace.labels); the reaper lists
# them in one call.
WORKSPACE_DEPLOYMENT_SELECTOR = selector(**{NAME_LABEL: WORKSPACE_APP, PART_OF_LABEL: PART_OF})
STOPPED_AT = "vibecode.dev/stopped-at"  # RFC 3339; also copied onto the volumes when the release goes

# The onboarding ledger (tasks.people.ledger): one record per person, one index entry per
# employee id, both ConfigMaps in the platform namespace.
RECORD_COMPONENT_LABEL = "vibecode.dev/component"
EMPLOYEE_ID_LABEL = "vibecode.dev/employee-id"
STATE_LABEL = "vibecode.dev/state"
LEDGER_COMPONENT = "onboarding"
EMPLOYEE_INDEX_COMPONENT = "employee-index"
SCIM_ID_LABEL = "vibecode.dev/scim-id"  # on a ledger record: the SCIM user that is this person
LEDGER_SELECTOR = f"{PART_OF_LABEL}={PART_OF},{RECORD_COMPONENT_LABEL}={LEDGER_COMPONENT}"
EMPLOYEE_INDEX_SELECTOR = f"{PART_OF_LABEL}={PART_OF},{RECORD_COMPONENT_LABEL}={EMPLOYEE_INDEX_COMPONENT}"

# Every volume of every workspace (workspace and extensions), for dormancy.
WORKSPACE_VOLUMES_SELECTOR = f"{PART_OF_LABEL}={PART_OF},{VOLUME_LABEL}"
# Backup and restore Jobs (tasks.backup.jobs labels them by component and user).
RESTIC_JOBS_SELECTOR = f"{PART_OF_LABEL}={PART_OF},{COMPONENT_LABEL} in (backup,restore)"

# Idle reaping (tasks.reaper.decide). On the workspace Deployment unless said otherwise.
REAP_EXEMPT = "vibecode.dev/reap"  # "false": never warned or stopped by the reaper; other values but "true": kept
LAST_ACTIVITY = "vibecode.dev/last-activity"  # RFC 3339; counts as activity when newer than the heartbeat
IDLE_WARNED_AT = "vibecode.dev/idle-warned-at"  # RFC 3339: when the owner was warned
IDLE_WARNING_RULE = "vibecode.dev/idle-warning"  # which rule warned: idle | max-session
IDLE_WARNING_CLAIM = "vibecode.dev/idle-warning-claim"  # RFC 3339: a run is sending the warning email
STOP_REASON = "vibecode.dev/stop-reason"
DORMANT_DELETED_AT = "vibecode.dev/dormant-deleted-at"  # on the volumes, once the release was uninstalled
# Set by the backup/restore flows while they work on a workspace: the reaper never stops it.
RESTORING = RESTORING_ANNOTATION

# Authelia's users database (tasks.people.identity.filedb): the digest of the users file on
# Authelia's pod template, so a changed file rolls Authelia exactly once.
USERS_CHECKSUM_ANNOTATION = "vibecode.dev/users-checksum"

# TOTP pre-provisioning (tasks.people.totp): the short-lived hand-off Secret and the import Job.
PURPOSE_LABEL = "vibecode.dev/purpose"
TOTP_PURPOSE = "totp-handoff"
TOTP_PROVISION_COMPONENT = "totp-provision"
TOTP_PROVISION_JOB_SELECTOR = selector(**{COMPONENT_LABEL: TOTP_PROVISION_COMPONENT})  # what the flow watches
TOTP_HANDOFF_SELECTOR = selector(**{PART_OF_LABEL: PART_OF, PURPOSE_LABEL: TOTP_PURPOSE})
EXPIRES_AT = "vibecode.dev/expires-at"  # RFC 3339: a hand-off Secret past it is deleted
TOTP_ISSUER_ANNOTATION = "vibecode.dev/totp-issuer"

# The platform's Gateway (charts/vibecode-platform): provisioning finds it by this label.
GATEWAY_LABEL = "vibecode.dev/gateway"
GATEWAY_LABEL_VALUE = "platform"
GATEWAY_SELECTOR = f"{GATEWAY_LABEL}={GATEWAY_LABEL_VALUE}"
# Envoy Gateway's labels on its proxy pods (its EnvoyAppLabel): the only peers the workspaces,
# Authelia and the HR gateway admit (the charts' gateway.proxyPodLabels / networkPolicy.*).
ENVOY_PROXY_LABELS = {NAME_LABEL: "envoy", COMPONENT_LABEL: "proxy", MANAGED_BY_LABEL: "envoy-gateway"}
