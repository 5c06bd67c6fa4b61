"""Safe Kubernetes names for a user, in the spirit of kubespawner's ``slugs.py``.

The username is also a DNS label (``<username>.<domain>`` is the workspace host), so
we do not escape or hash it: we *refuse* anything that is not already safe. That keeps
names readable for operators and makes the mapping one-to-one, so two users can never
collide on the same release or volume.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from tasks.errors import InvalidInput

USERNAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$"
_USERNAME_RE = re.compile(USERNAME_PATTERN)

# Hosts under the base domain that belong to the platform, never to a person.
RESERVED_USERNAMES = frozenset(
    {"auth", "admin", "api", "docs", "www", "grafana", "prometheus", "minio", "s3",
     "mail", "smtp", "ldap", "prefect", "ingress", "default", "root", "system"}
)
RESERVED_PREFIXES = ("kube-", "vibecode-", "system-")

PART_OF = "vibecode"


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
    if not _USERNAME_RE.match(username):
        raise InvalidInput(field, f"{username!r} must match {USERNAME_PATTERN}")
    if username in RESERVED_USERNAMES or username.startswith(RESERVED_PREFIXES):
        raise InvalidInput(field, f"{username!r} is reserved for a platform host")
    return username


def username_from_email(email: str) -> str:
    """The HR contract: the email's local part, lowercased, with ``.``, ``_`` and ``+`` as ``-``."""
    local = email.rsplit("@", 1)[0]
    local = unicodedata.normalize("NFKC", local).lower()
    return re.sub(r"[._+]", "-", local)


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
        return {
            "app.kubernetes.io/name": "code-server",
            "app.kubernetes.io/part-of": PART_OF,
            "vibecode.dev/user": self.username,
        }

    @property
    def selector(self) -> str:
        return f"vibecode.dev/user={self.username}"

    def host(self, domain: str) -> str:
        return f"{self.username}.{domain}"


def workspace_names(username: str) -> WorkspaceNames:
    return WorkspaceNames(validate_username(username))


# Label every workspace volume carries, so backups and the reaper can list them in one call.
WORKSPACE_PVC_SELECTOR = "app.kubernetes.io/part-of=vibecode,vibecode.dev/volume=workspace"

# Every workspace Deployment carries these labels (chart: workspace.labels); the reaper lists
# them in one call.
WORKSPACE_DEPLOYMENT_SELECTOR = f"app.kubernetes.io/name=code-server,app.kubernetes.io/part-of={PART_OF}"
# Every volume of every workspace (workspace and extensions), for dormancy.
VOLUME_LABEL = "vibecode.dev/volume"  # workspace | extensions
WORKSPACE_VOLUMES_SELECTOR = f"app.kubernetes.io/part-of={PART_OF},{VOLUME_LABEL}"
# Backup and restore Jobs (tasks.backup_jobs labels them by component and user).
RESTIC_JOBS_SELECTOR = f"app.kubernetes.io/part-of={PART_OF},app.kubernetes.io/component in (backup,restore)"
USER_LABEL = "vibecode.dev/user"

# Idle reaping (tasks.reap). On the workspace Deployment unless said otherwise.
REAP_EXEMPT = "vibecode.dev/reap"  # "false": never warned or stopped by the reaper
LAST_ACTIVITY = "vibecode.dev/last-activity"  # RFC 3339; counts as activity when newer than the heartbeat
IDLE_WARNED_AT = "vibecode.dev/idle-warned-at"  # RFC 3339: when the owner was warned
IDLE_WARNING_RULE = "vibecode.dev/idle-warning"  # which rule warned: idle | max-session
STOPPED_AT = "vibecode.dev/stopped-at"  # RFC 3339; also copied onto the volumes when the release goes
STOP_REASON = "vibecode.dev/stop-reason"
DORMANT_DELETED_AT = "vibecode.dev/dormant-deleted-at"  # on the volumes, once the release was uninstalled
# Set by the backup/restore flows while they work on a workspace: the reaper never stops it.
RESTORING = "vibecode.dev/restoring"
