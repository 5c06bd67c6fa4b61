"""Open a workspace's restic repository from this machine, with the platform Secret's keys.

The flow, the CLI and operators read the same Secret the Jobs read, so a password can
never differ between the Job that wrote a snapshot and the code that checks or restores it.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from tasks.backup.restic import PARTIAL_TAG, Snapshot, repository, run_tag
from tasks.backup.retention import KeepPolicy, plan_retention
from tasks.backup.runner import Restic
from tasks.backup.status import RepositoryWord
from tasks.cluster import kube
from tasks.core.errors import Conflict, NotFound, PermanentError, TransientError
from tasks.core.names import COMPONENT_LABEL, PART_OF, PART_OF_LABEL, USER_LABEL, validate_username
from tasks.core.settings import Settings, get_settings


def backup_secret_data(settings: Settings | None = None) -> dict[str, str]:
    s = settings or get_settings()
    secret = kube.connect(s).get("Secret", s.namespace, s.backup.secret)
    if secret is None:
        raise PermanentError(f"Secret {s.namespace}/{s.backup.secret} does not exist")
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def open_repository(username: str, settings: Settings | None = None) -> Restic:
    s = settings or get_settings()
    username = validate_username(username)
    return Restic.for_workspace(s, username, backup_secret_data(s))


INIT_CLAIM_STALE_SECONDS = 120.0  # a claim this old whose repository still does not exist was abandoned
INIT_WAIT_SECONDS = 30.0


def init_claim(username: str, settings: Settings) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"vibecode-restic-init-{username}", "namespace": settings.namespace,
                         "labels": {PART_OF_LABEL: PART_OF, COMPONENT_LABEL: "backup", USER_LABEL: username}},
            "data": {"repository": repository(settings.backup, username)}}


def ensure_repository(username: str, settings: Settings | None = None) -> bool:
    """Open the workspace's repository, creating it first if there is none; True if created now.

    On S3 two ``restic init`` running at once both succeed, each writing its own master
    key and config, and the repository is left unreadable ("ciphertext verification
    failed"): S3 has no create-if-absent. So only the run that wins an atomic Kubernetes
    create (a ConfigMap per repository) may initialise; the others wait for the repository
    to appear. A claim left by a run that died is deleted once it is stale."""
    s = settings or get_settings()
    restic = open_repository(username, s)
    if restic.exists():
        return False
    client = kube.connect(s)
    claim = init_claim(username, s)
    try:
        client.create(claim, exist_ok=False)
    except Conflict:
        deadline = time.monotonic() + INIT_WAIT_SECONDS
        while time.monotonic() < deadline:
            if restic.exists():
                return False
            time.sleep(1.0)
        existing = client.get("ConfigMap", s.namespace, claim["metadata"]["name"]) or {}
        created = (existing.get("metadata") or {}).get("creationTimestamp", "")
        try:
            age = (datetime.now(timezone.utc) - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()
        except ValueError:
            age = INIT_CLAIM_STALE_SECONDS
        if age >= INIT_CLAIM_STALE_SECONDS:
            client.delete("ConfigMap", s.namespace, claim["metadata"]["name"])
        raise TransientError(f"the repository of {username} is being initialised by another run") from None
    try:
        return restic.ensure_init()
    except Exception:
        client.delete("ConfigMap", s.namespace, claim["metadata"]["name"])  # let the next attempt init
        raise


def repository_usernames(settings: Settings | None = None) -> list[str]:
    """Every workspace repository in the bucket (one top-level prefix each), including
    those of people whose volumes are gone: what a password rotation must reach."""
    import boto3

    s = settings or get_settings()
    data = backup_secret_data(s)
    s3 = boto3.client("s3", endpoint_url=s.backup.s3_endpoint, region_name=s.backup.s3_region,
                      aws_access_key_id=data["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=data["AWS_SECRET_ACCESS_KEY"])
    found: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=s.backup.s3_bucket, Delimiter="/"):
        found += [p["Prefix"].rstrip("/") for p in page.get("CommonPrefixes") or []]
    return sorted(found)


def list_snapshots(username: str, settings: Settings | None = None) -> list[Snapshot]:
    """Oldest first; what ``vibecode restore --list`` shows."""
    return open_repository(username, settings).snapshots()


def repository_word(username: str, settings: Settings | None = None) -> RepositoryWord:
    """What the repository itself holds for ``username``: the ids of its good snapshots, for
    the deletion rule to check a volume's annotation against. No repository at all holds
    nothing; a transient failure (storage down) is raised for the caller's retries; any
    other failure is the word's ``error``, so the rule defers instead of deciding blind."""
    try:
        snaps = open_repository(username, settings).snapshots()
    except NotFound:
        return RepositoryWord()
    except TransientError:
        raise
    except PermanentError as exc:
        return RepositoryWord(error=str(exc)[:300])
    return RepositoryWord(frozenset(x.id for x in snaps if x.hostname == username and x.good))


@dataclass
class AfterBackup:
    snapshot_id: str | None
    forgotten: list[str]
    retention_error: str | None = None
    verified: bool | None = None  # None: not checked (no snapshot)
    check_detail: str = ""


def record_and_expire(restic: Restic, run_id: str, job_failed: bool, policy: KeepPolicy | None,
                      now: datetime, read_data_percent: int | None = None) -> AfterBackup:
    """After a backup Job: find its snapshot, mark it partial if the Job failed, verify the
    repository, and only then expire old snapshots.

    Retention runs after a passing ``restic check`` and over the snapshots listed before it,
    so it counts only verified snapshots: a new snapshot nobody has verified can never push
    out the last verified one (which the volume's annotation names). A failed check expires
    nothing - a repository that cannot be trusted is not pruned. Nothing is expired on a
    night that saved nothing either. A permanent retention error is reported, not raised:
    the new snapshot is still good.
    """
    snaps = restic.snapshots()
    mine = [x for x in snaps if run_tag(run_id) in x.tags]
    if not mine:
        return AfterBackup(None, [])
    if job_failed:
        restic.add_tag([x.id for x in mine if PARTIAL_TAG not in x.tags], PARTIAL_TAG)
        snaps = restic.snapshots()  # tagging rewrites a snapshot under a new id
        mine = [x for x in snaps if run_tag(run_id) in x.tags]
    percent = get_settings().backup.verify_read_data_percent if read_data_percent is None else read_data_percent
    ok, detail = restic.check(percent)
    if not ok or policy is None:  # policy None: a safety copy (pre-restore); expiring could drop the one restored
        return AfterBackup(mine[-1].id, [], None, ok, detail)
    plan = plan_retention(snaps, policy, now, verified={x.id for x in snaps})
    try:
        restic.forget(plan.forget, prune=True)
    except PermanentError as exc:
        return AfterBackup(mine[-1].id, [], str(exc), ok, detail)
    return AfterBackup(mine[-1].id, plan.forget, None, ok, detail)
