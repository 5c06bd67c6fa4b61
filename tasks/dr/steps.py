"""Prefect steps of the platform backup and of disaster recovery.

No step takes or returns a secret: each one that handles the platform Secrets, the users
database or a database password reads it, uses it and returns only names, ids and counts.
Every recovery step converges (a rerun finds its work done and changes nothing), and the
progress record (a ConfigMap in the platform namespace) lets a rerun skip whole steps.
"""

from __future__ import annotations

import base64
import secrets as _secrets
from datetime import datetime
from typing import Any

from prefect import task
from pydantic import BaseModel

from tasks.backup.retention import KeepPolicy
from tasks.cluster import kube
from tasks.core.errors import NotFound, PermanentError
from tasks.core.names import COMPONENT_LABEL, EMPLOYEE_INDEX_SELECTOR, LEDGER_SELECTOR, PART_OF, PART_OF_LABEL
from tasks.core.settings import Settings, get_settings
from tasks.core.steps import transient_retries
from tasks.dr import plan
from tasks.dr.stream import PlatformRepo, pg_command
from tasks.people.usersdb import USERS_KEY, checksum

RETRY = transient_retries(2)
DEFAULT_BLOCK = "vibecode-platform-backup-password"
SECRET_LABELS = {PART_OF_LABEL: PART_OF, COMPONENT_LABEL: "platform"}


class ItemResult(BaseModel):
    item: str
    snapshot: str = ""
    outcome: str  # saved, skipped, restored, unchanged, failed
    detail: str = ""


# -- the repository and its password ----------------------------------------------------
def _password(s: Settings, create: bool) -> tuple[str, str | None]:
    """(password, notice). From settings, else the Prefect Secret block; the first backup
    creates the block when neither exists and returns the one-time notice."""
    if s.recovery.password is not None:
        return s.recovery.password.get_secret_value(), None
    from prefect.blocks.system import Secret

    name = s.recovery.password_block or DEFAULT_BLOCK

    def load() -> str:
        block: Any = Secret.load(name)  # sync here; Prefect types it as maybe a coroutine
        return str(block.get())

    try:
        return load(), None
    except ValueError:  # Prefect: "Unable to find block document named ..."
        if not create:
            raise PermanentError(f"no platform repository password: set VIBECODE_RECOVERY__PASSWORD or "
                                 f"recovery.password_block (the block {name!r} does not exist)") from None
    Secret(value=_secrets.token_urlsafe(32)).save(name)
    notice = (f"The platform backup's restic password was generated and saved as the Prefect Secret block "
              f"{name!r}. Copy it NOW to a place outside this cluster and this Prefect (a password manager): "
              f"`prefect block inspect secret/{name}` shows it. Recovery needs it as VIBECODE_RECOVERY__PASSWORD; "
              f"without it the platform cannot be recovered. This notice is given once.")
    return load(), notice


def open_platform_repo(source: str | None = None, create: bool = False) -> tuple[PlatformRepo, str | None]:
    s = get_settings()
    b = s.backup
    if b.s3_access_key_id is None or b.s3_secret_access_key is None:
        raise PermanentError("the platform backup needs S3 credentials outside the cluster "
                             "(VIBECODE_BACKUP__S3_ACCESS_KEY_ID and VIBECODE_BACKUP__S3_SECRET_ACCESS_KEY)")
    password, notice = _password(s, create)
    repo = source or plan.repository(s.recovery.repository, b.s3_endpoint, b.s3_bucket)
    return PlatformRepo.open(repo, password, b.s3_access_key_id.get_secret_value(),
                             b.s3_secret_access_key.get_secret_value(), b.s3_region, b.restic_binary), notice


@task(name="ensure-platform-repository", **RETRY)
def ensure_platform_repository() -> str | None:
    """Create the repository if there is none; the one-time password notice, if any.
    One writer only: the deployment never runs twice at once (its concurrency limit)."""
    repo, notice = open_platform_repo(create=True)
    repo.restic.ensure_init()
    return notice


# -- backup ------------------------------------------------------------------------------
def _where(s: Settings) -> dict[str, tuple[str, str]]:
    from tasks.platform.ca import CA_SECRET
    from tasks.platform.releases import HR_GATEWAY_SECRET

    return {"platform": (s.platform_namespace, s.platform.secret_name), "backup": (s.namespace, s.backup.secret),
            "hr-gateway": (s.platform_namespace, HR_GATEWAY_SECRET),
            "ca": (s.platform.cert_manager_namespace, CA_SECRET)}


def _last_snapshot(repo: PlatformRepo, item: str, run_id: str) -> str:
    snaps = [x for x in repo.restic.snapshots() if plan.item_tag(item) in x.tags and plan.run_tag(run_id) in x.tags]
    return snaps[-1].id if snaps else ""


@task(name="backup-platform-item", task_run_name="backup-{item}", **RETRY)
def backup_item(item: str, run_id: str) -> ItemResult:
    """Read one item from the cluster (or its database) and save it; a rerun of the same run
    finds its snapshot and saves nothing twice."""
    s = get_settings()
    spec = plan.ITEM_BY_NAME[item]
    repo, _ = open_platform_repo()
    done = _last_snapshot(repo, item, run_id)
    if done:
        return ItemResult(item=item, snapshot=done, outcome="saved", detail="saved earlier in this run")
    client = kube.connect()
    args = plan.backup_args(spec, run_id)
    if item == "platform-secrets":
        found = {role: client.get("Secret", ns, name) for role, (ns, name) in _where(s).items()}
        if found["platform"] is None:
            raise PermanentError(f"Secret {s.platform_namespace}/{s.platform.secret_name} does not exist: "
                                 "nothing to protect yet (run bootstrap)")
        repo.backup_text(args, plan.secrets_document(found))
        detail = f"{sum(v is not None for v in found.values())} Secrets ({', '.join(r for r, v in found.items() if v)})"
    elif item == "users-database":
        secret = client.get("Secret", s.platform_namespace, s.identity.authelia_users_secret)
        if secret is None:
            raise PermanentError(f"Secret {s.platform_namespace}/{s.identity.authelia_users_secret} does not exist")
        text = base64.b64decode((secret.get("data") or {}).get(USERS_KEY, "")).decode()
        repo.backup_text(args, text)
        detail = f"checksum {checksum(text)[:12]}"
    elif item == "ledger":
        cms = client.list("ConfigMap", s.platform_namespace, LEDGER_SELECTOR) + \
            client.list("ConfigMap", s.platform_namespace, EMPLOYEE_INDEX_SELECTOR)
        repo.backup_text(args, plan.ledger_document(cms))
        detail = f"{len(cms)} ConfigMaps"
    else:
        url = s.recovery.authelia_db_url if item == "authelia-db" else s.recovery.prefect_db_url
        if url is None:
            if spec.required:
                raise PermanentError("recovery.authelia_db_url is not set: Authelia's storage cannot be backed up")
            return ItemResult(item=item, outcome="skipped", detail="recovery.prefect_db_url is not set")
        dsn = plan.split_dsn(url.get_secret_value(), f"recovery.{item.replace('-db', '')}_db_url")
        cmd, env = pg_command(plan.pg_dump_args(dsn), s.recovery.pg_bin, dsn)
        repo.backup_from(cmd, env, args)
        detail = "pg_dump streamed into restic"
    return ItemResult(item=item, snapshot=_last_snapshot(repo, item, run_id), outcome="saved", detail=detail)


@task(name="verify-and-expire-platform-backup", **RETRY)
def verify_and_expire(now: datetime) -> tuple[bool, str, list[str]]:
    """restic check, then retention per item over what the check covered (a failed check
    expires nothing); the newest complete set is never expired."""
    s = get_settings()
    repo, _ = open_platform_repo()
    snaps = repo.restic.snapshots()
    ok, detail = repo.restic.check(s.recovery.verify_read_data_percent)
    if not ok:
        return ok, detail, []
    r = s.recovery
    forget = plan.retention_forget(snaps, KeepPolicy(daily=r.keep_daily, weekly=r.keep_weekly, monthly=r.keep_monthly,
                                                     timezone=s.backup.timezone), now)
    repo.restic.forget(forget, prune=True)
    return ok, detail, forget


# -- recovery ----------------------------------------------------------------------------
@task(name="choose-platform-backup-set", **RETRY)
def choose_backup_set(source: str, wanted: str) -> plan.BackupSet:
    repo, _ = open_platform_repo(source)
    return plan.choose_set(repo.restic.snapshots(), wanted)


def _progress_name() -> tuple[str, str]:
    s = get_settings()
    return s.platform_namespace, s.recovery.progress_configmap


@task(name="read-recovery-progress", **RETRY)
@task(name="check-recovery-target", **RETRY)
def check_target(run_id: str, force: bool) -> str:
    """Refuse, before anything is written, to recover onto a cluster that runs a platform
    (:func:`tasks.dr.plan.live_platform_refusal`); what was found, otherwise."""
    s = get_settings()
    client = kube.connect()
    try:
        people = len(client.list("ConfigMap", s.platform_namespace, LEDGER_SELECTOR))
        users = client.get("Secret", s.platform_namespace, s.identity.authelia_users_secret) is not None
    except NotFound:  # no platform namespace: an empty cluster
        people, users = 0, False
    refusal = plan.live_platform_refusal(run_id, read_progress(), people, users, force)
    if refusal:
        raise PermanentError(refusal)
    return f"{people} people in the ledger, users database {'present' if users else 'absent'}"


def read_progress() -> dict[str, str]:
    ns, name = _progress_name()
    try:
        cm = kube.connect().get("ConfigMap", ns, name)
    except NotFound:
        return {}
    return dict((cm or {}).get("data") or {})


@task(name="mark-recovery-step", **RETRY)
def mark_done(step: str, run_id: str) -> None:
    ns, name = _progress_name()
    client = kube.connect()
    if client.get("ConfigMap", ns, name) is None:
        client.create({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": name, "namespace": ns,
                                    "labels": {PART_OF_LABEL: PART_OF, COMPONENT_LABEL: "recovery"}},
                       "data": {}})
    client.patch("ConfigMap", ns, name, {"data": {step: run_id}})


def _apply_secret(client, manifest: dict) -> str:
    meta = manifest["metadata"]
    existing = client.get("Secret", meta["namespace"], meta["name"])
    action = plan.secret_action(existing, manifest)
    if action == "create":
        client.create(manifest)
    elif action == "replace":
        change: dict = {"data": manifest["data"]}
        if meta.get("annotations"):
            change["metadata"] = {"annotations": meta["annotations"]}
        client.patch("Secret", meta["namespace"], meta["name"], change)
    return f"{meta['name']} {action}"


@task(name="restore-platform-secrets", **RETRY)
def restore_secrets(source: str, snapshot: str) -> ItemResult:
    s = get_settings()
    repo, _ = open_platform_repo(source)
    doc = repo.dump_text(plan.dump_args(snapshot, plan.ITEM_BY_NAME["platform-secrets"]))
    client = kube.connect()
    done = [_apply_secret(client, m) for m in plan.secret_manifests(doc, _where(s), SECRET_LABELS)]
    return ItemResult(item="platform-secrets", snapshot=snapshot, outcome="restored", detail="; ".join(done))


@task(name="restore-users-database", **RETRY)
def restore_users_database(source: str, snapshot: str) -> ItemResult:
    """Write the users file; Authelia (if bootstrap installed it already) rolls onto it."""
    s = get_settings()
    repo, _ = open_platform_repo(source)
    text = repo.dump_text(plan.dump_args(snapshot, plan.ITEM_BY_NAME["users-database"]))
    ns, name = s.platform_namespace, s.identity.authelia_users_secret
    manifest = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": name, "namespace": ns,
                             "labels": {PART_OF_LABEL: PART_OF, COMPONENT_LABEL: "authelia"}},
                "data": {USERS_KEY: base64.b64encode(text.encode()).decode()}}
    client = kube.connect()
    action = _apply_secret(client, manifest)
    if client.get("Deployment", ns, s.identity.authelia_deployment) is not None:
        from tasks.people.identity.filedb import FileBackend

        FileBackend(s, client).roll_authelia(checksum(text))
    return ItemResult(item="users-database", snapshot=snapshot, outcome="restored", detail=action)


@task(name="restore-database", task_run_name="restore-{item}", **RETRY)
def restore_database(source: str, snapshot: str | None, item: str) -> ItemResult:
    """``restic dump | pg_restore --clean --single-transaction``: a killed restore leaves the
    database as it was, and a rerun replaces rather than duplicates."""
    s = get_settings()
    spec = plan.ITEM_BY_NAME[item]
    url = s.recovery.authelia_db_url if item == "authelia-db" else s.recovery.prefect_db_url
    if snapshot is None:
        return ItemResult(item=item, outcome="skipped", detail="not in this backup set")
    if url is None:
        if spec.required:
            raise PermanentError("recovery.authelia_db_url is not set: cannot restore Authelia's storage")
        return ItemResult(item=item, snapshot=snapshot, outcome="skipped", detail="recovery.prefect_db_url is not set")
    dsn = plan.split_dsn(url.get_secret_value(), f"recovery.{item.replace('-db', '')}_db_url")
    repo, _ = open_platform_repo(source)
    cmd, env = pg_command(plan.pg_restore_args(dsn), s.recovery.pg_bin, dsn)
    repo.dump_into(plan.dump_args(snapshot, spec), cmd, env)
    return ItemResult(item=item, snapshot=snapshot, outcome="restored", detail=f"pg_restore into {dsn.uri}")


@task(name="restore-ledger", **RETRY)
def restore_ledger(source: str, snapshot: str) -> ItemResult:
    s = get_settings()
    repo, _ = open_platform_repo(source)
    doc = repo.dump_text(plan.dump_args(snapshot, plan.ITEM_BY_NAME["ledger"]))
    client = kube.connect()
    counts: dict[str, int] = {}
    for cm in plan.ledger_manifests(doc, s.platform_namespace):
        existing = client.get("ConfigMap", s.platform_namespace, cm["metadata"]["name"])
        action = plan.configmap_action(existing, cm)
        if action == "create":
            client.create(cm)
        counts[action] = counts.get(action, 0) + 1
    return ItemResult(item="ledger", snapshot=snapshot, outcome="restored",
                      detail=", ".join(f"{n} {a}" for a, n in sorted(counts.items())))


@task(name="list-recovered-people", **RETRY)
def recovered_people() -> plan.People:
    from tasks.people.ledger import Ledger

    return plan.people([(r.username, r.state.value) for r in Ledger().all()])
