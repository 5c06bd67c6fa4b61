"""Open a workspace's restic repository from this machine, with the platform Secret's keys.

The flow, the CLI and operators read the same Secret the Jobs read, so a password can
never differ between the Job that wrote a snapshot and the code that checks or restores it.
"""

from __future__ import annotations

import base64

from tasks import kube
from dataclasses import dataclass, replace
from datetime import datetime

from tasks.errors import PermanentError
from tasks.names import validate_username
from tasks.restic import PARTIAL_TAG, Restic, Snapshot, run_tag
from tasks.retention import KeepPolicy, plan_retention
from tasks.settings import Settings, get_settings


def open_repository(username: str, settings: Settings | None = None) -> Restic:
    s = settings or get_settings()
    username = validate_username(username)
    secret = kube.connect(s).get("Secret", s.namespace, s.backup_secret)
    if secret is None:
        raise PermanentError(f"Secret {s.namespace}/{s.backup_secret} does not exist")
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return Restic.for_workspace(s, username, data)


def list_snapshots(username: str, settings: Settings | None = None) -> list[Snapshot]:
    """Oldest first; what ``vibecode restore --list`` shows."""
    return open_repository(username, settings).snapshots()


@dataclass
class AfterBackup:
    snapshot_id: str | None
    forgotten: list[str]
    retention_error: str | None = None


def record_and_expire(restic: Restic, run_id: str, job_failed: bool, policy: KeepPolicy,
                      now: datetime) -> AfterBackup:
    """After a backup Job: find its snapshot, mark it partial if the Job failed, expire old ones.

    One ``snapshots`` listing serves both steps. Nothing is expired on a night that saved
    nothing: the set of snapshots did not change, so neither would the decision. A
    permanent retention error is reported, not raised - the new snapshot is still good.
    """
    snaps = restic.snapshots()
    mine = [x for x in snaps if run_tag(run_id) in x.tags]
    if not mine:
        return AfterBackup(None, [])
    if job_failed:
        restic.add_tag([x.id for x in mine], PARTIAL_TAG)
        snaps = [replace(x, tags=(*x.tags, PARTIAL_TAG)) if x in mine else x for x in snaps]
    plan = plan_retention(snaps, policy, now)
    try:
        restic.forget(plan.forget, prune=True)
    except PermanentError as exc:
        return AfterBackup(mine[-1].id, [], str(exc))
    return AfterBackup(mine[-1].id, plan.forget)
