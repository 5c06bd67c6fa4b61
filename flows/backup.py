"""Nightly workspace backups with restic, and restores. Orchestration only.

Decisions live in pure modules (:mod:`tasks.retention`, :mod:`tasks.backup_status`,
:mod:`tasks.backup_jobs`); restic commands in :mod:`tasks.restic`. Each workspace is one
task that never raises, so one person's failure cannot stop the others; its steps are
nested tasks that retry only transient errors.
"""

from __future__ import annotations

import base64
import queue
import re
import time
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel

from tasks import kube, mail
from tasks.backup_jobs import (
    RUN_LABEL,
    WORKSPACE_POD_SELECTOR,
    backup_job,
    backup_secret,
    job_name,
    restore_job,
    restore_pvc,
    workspace_nodes,
)
from tasks.backup_status import (
    BackupReport,
    Outcome,
    WorkspaceResult,
    annotations,
    classify,
    run_outcome,
)
from flows.common import KUBE_API, Username, now as _now, run_id as _run_id, transient_retries
from tasks.errors import InvalidInput, PermanentError
from tasks.names import WORKSPACE_PVC_SELECTOR, validate_username, workspace_names
from tasks.backup_repo import AfterBackup, open_repository, record_and_expire
from tasks.backup_wait import close_waiter, waiter_for
from tasks.notify import backup_failure_notice
from tasks.retention import KeepPolicy
from tasks.settings import get_settings

RETRY = transient_retries(3)
SNAPSHOT_RE = re.compile(r"^(latest|[0-9a-f]{8,64})$")


# -- steps --------------------------------------------------------------------------
@task(name="ensure-backup-secret", tags=[KUBE_API], **RETRY)
def ensure_backup_secret() -> None:
    s = get_settings()
    manifest = backup_secret(s, s.namespace)
    if manifest is None:
        return
    client = kube.connect()
    existing = client.create(manifest)
    want = {k: base64.b64encode(v.encode()).decode() for k, v in manifest["stringData"].items()}
    if existing.get("data") != want:
        client.patch("Secret", s.namespace, s.backup_secret, {"data": want})


@task(name="list-workspace-volumes", tags=[KUBE_API], **RETRY)
def list_workspace_volumes() -> dict[str, str]:
    """username -> PVC name, from one LIST by label."""
    s = get_settings()
    found = {}
    for pvc in kube.connect().list("PersistentVolumeClaim", s.namespace, WORKSPACE_PVC_SELECTOR):
        user = (pvc["metadata"].get("labels") or {}).get("vibecode.dev/user", "")
        found[user] = pvc["metadata"]["name"]
    return found


@task(name="find-workspace-nodes", tags=[KUBE_API], **RETRY)
def find_workspace_nodes() -> dict[str, str]:
    s = get_settings()
    return workspace_nodes(kube.connect().list("Pod", s.namespace, WORKSPACE_POD_SELECTOR))


def _await_job(name: str, run_id: str) -> tuple[str, str]:
    """Wait on the run's shared Job watcher, bounded by the Job's own deadline plus a grace
    period; past that, delete the Job and call it failed."""
    s = get_settings()
    client = kube.connect()
    waiter = waiter_for(run_id, lambda: client.list_watch("Job", s.namespace, f"{RUN_LABEL}={run_id}"),
                        s.backup_poll_seconds)
    state, reason = waiter.wait(name, s.backup_timeout_seconds + 60)
    if state == "running":
        client.delete("Job", s.namespace, name)
        return "failed", f"timed out after {s.backup_timeout_seconds:.0f}s"
    return state, reason


@task(name="run-backup-job", **RETRY)
def run_backup_job(username: str, run_id: str, node: str | None) -> tuple[str, str]:
    """Create the repository on its first night, start the Job and wait for it. One task:
    each step is idempotent (a retry finds its own Job), and every task run costs Prefect
    API round trips per workspace."""
    open_repository(username).ensure_init()
    job = backup_job(workspace_names(username), get_settings(), run_id, node)
    kube.connect().create(job)
    return _await_job(job["metadata"]["name"], run_id)


@task(name="wait-for-job", tags=[KUBE_API], **RETRY)
def wait_for_job(name: str, run_id: str) -> tuple[str, str]:
    return _await_job(name, run_id)


@task(name="record-expire-verify", **RETRY)
def record_expire_verify(username: str, run_id: str, job_failed: bool) -> tuple[AfterBackup, bool | None, str]:
    """Find the run's snapshot, apply retention, then ``restic check`` what is left.
    One task: every step is idempotent, and fewer task runs keep Prefect's overhead small."""
    restic = open_repository(username)
    after = record_and_expire(restic, run_id, job_failed, KeepPolicy.from_settings(get_settings()), _now())
    if after.snapshot_id is None:
        return after, None, ""
    ok, detail = restic.check(get_settings().verify_read_data_percent)
    return after, ok, detail


@task(name="notify-backup-failure", **RETRY)
def notify_backup_failure(report: BackupReport) -> str:
    msg = backup_failure_notice(report, get_settings())
    if msg is None:
        return "not needed"
    mail.send(msg)
    return f"sent to {msg['To']}"


@task(name="annotate-volume", **RETRY)
def annotate_volume(pvc: str, ann: dict[str, str | None]) -> None:
    kube.connect().annotate("PersistentVolumeClaim", get_settings().namespace, pvc, ann)


@task(name="backup-workspace", task_run_name="backup-{username}", cache_policy=NO_CACHE)
def backup_workspace(username: str, pvc: str, node: str | None, run_id: str) -> WorkspaceResult:
    """Back up, expire, verify, annotate one workspace. Never raises: a failure is a result."""
    started = time.monotonic()
    job, snapshot, retention_error, check, error = ("failed", "not started"), None, None, (None, ""), None
    try:
        job = run_backup_job(username, run_id, node)
        after, ok, detail = record_expire_verify(username, run_id, job_failed=job[0] == "failed")
        snapshot, retention_error, check = after.snapshot_id, after.retention_error, (ok, detail)
    except Exception as exc:  # noqa: BLE001 - turned into this workspace's outcome
        error = str(exc) or type(exc).__name__
    if error and snapshot is None:
        outcome, reason = Outcome.FAILED, f"backup failed: {error}"
    else:
        outcome, reason = classify(job[0], job[1], snapshot, retention_error, check[0], check[1])
        reason = f"{reason}; {error}" if error else reason
    result = WorkspaceResult(username=username, pvc=pvc, outcome=outcome, snapshot_id=snapshot,
                             verified=check[0] is True, reason=reason,
                             duration_seconds=time.monotonic() - started)
    try:
        annotate_volume(pvc, annotations(result, _now()))
    except Exception as exc:  # noqa: BLE001
        result.reason = f"{result.reason}; could not annotate the volume: {exc}".lstrip("; ")
    return result


def _bounded(submit, items: list[tuple], limit: int) -> list:
    """Keep at most ``limit`` submissions in flight, starting the next as one finishes.

    This bound (settings.backup_concurrency) is what protects nodes, storage and the API
    server during a run, so the per-workspace tasks carry no Prefect tag limit: each tagged
    task run costs two more server round trips (slot lease and release), measured here as
    the largest part of the flow's overhead."""
    done: queue.Queue = queue.Queue()
    waiting, in_flight, results = list(reversed(items)), {}, []
    while waiting or in_flight:
        while waiting and len(in_flight) < limit:
            item = waiting.pop()
            future = submit(*item)
            in_flight[future] = item
            future.add_done_callback(done.put)
        future = done.get()
        item = in_flight.pop(future)
        results.append((item, future))
    return results


# -- flows --------------------------------------------------------------------------
@flow(name="backup-workspaces", task_runner=ThreadPoolTaskRunner(max_workers=64))
def backup_workspaces(usernames: list[Username] | None = None) -> BackupReport:
    """Back up the named workspaces, or every workspace volume when none are named."""
    wanted = sorted({validate_username(u, "usernames") for u in usernames or []})
    s = get_settings()
    logger = get_run_logger()
    started, run_id = _now(), _run_id()

    ensure_backup_secret()
    volumes = list_workspace_volumes()
    nodes = find_workspace_nodes()
    results: list[WorkspaceResult] = []
    targets = []
    for user in wanted or sorted(volumes):
        pvc = volumes.get(user)
        try:
            validate_username(user)
        except InvalidInput as exc:
            results.append(WorkspaceResult(username=user or "?", pvc=pvc or "", outcome=Outcome.FAILED,
                                           reason=f"volume has no valid vibecode.dev/user label: {exc}"))
            continue
        if pvc is None:
            results.append(WorkspaceResult(username=user, pvc="", outcome=Outcome.FAILED,
                                           reason="no workspace volume found"))
            continue
        targets.append((user, pvc, nodes.get(user), run_id))

    try:
        for (user, pvc, *_), future in _bounded(backup_workspace.submit, targets, s.backup_concurrency):
            try:
                results.append(future.result())
            except Exception as exc:  # noqa: BLE001 - a crashed task is this workspace's failure
                results.append(WorkspaceResult(username=user, pvc=pvc, outcome=Outcome.FAILED, reason=str(exc)))
    finally:
        close_waiter(run_id)

    results.sort(key=lambda r: r.username)
    report = BackupReport(outcome=run_outcome([r.outcome for r in results]), started=started,
                          finished=_now(), workspaces=results)
    for r in results:
        log = logger.info if r.outcome is Outcome.COMPLETED else logger.warning
        log("backup %s: %s %s", r.username, r.outcome.value, r.reason)
    create_table_artifact(key="workspace-backups", table=report.table(),
                          description=f"Backup run {run_id}: {report.outcome.value}")
    if report.outcome is not Outcome.COMPLETED and s.ops_email:
        try:
            notify_backup_failure(report)
        except Exception as exc:  # noqa: BLE001 - the report stands; the missed notice is logged
            logger.error("could not send the backup failure notice to %s: %s", s.ops_email, exc)
    return report


class RestoreResult(BaseModel):
    username: str
    snapshot_id: str
    pvc: str
    target: str
    outcome: Outcome
    reason: str = ""


@task(name="check-restore-target", tags=[KUBE_API], **RETRY)
def check_restore_target(username: str, target: str) -> dict | None:
    """The workspace PVC (None if gone). In place only when nothing can be writing to it."""
    s = get_settings()
    names = workspace_names(username)
    client = kube.connect()
    pvc = client.get("PersistentVolumeClaim", s.namespace, names.workspace_pvc)
    if target == "in-place":
        if pvc is None:
            raise PermanentError(f"{names.workspace_pvc} does not exist; restore into a new volume")
        dep = client.get("Deployment", s.namespace, names.deployment)
        if dep is not None and (dep["spec"].get("replicas", 1) or 0) > 0:
            raise PermanentError(f"refusing to overwrite running workspace {username}: scale it to zero first")
        if workspace_nodes(client.list("Pod", s.namespace, f"vibecode.dev/user={username}")):
            raise PermanentError(f"refusing to overwrite workspace {username}: a pod still uses its volume")
    return pvc


@task(name="resolve-snapshot", **RETRY)
def resolve_snapshot(username: str, snapshot: str) -> str:
    snaps = [x for x in open_repository(username).snapshots() if x.hostname == username]
    match = snaps[-1:] if snapshot == "latest" else [x for x in snaps if x.id.startswith(snapshot)]
    if not match:
        raise PermanentError(f"no snapshot {snapshot!r} for {username}")
    return match[0].id


@task(name="start-restore-job", tags=[KUBE_API], **RETRY)
def start_restore_job(username: str, run_id: str, pvc: dict | None, new_volume: bool, snapshot: str) -> str:
    s = get_settings()
    names = workspace_names(username)
    client = kube.connect()
    claim = names.workspace_pvc
    if new_volume:
        source = pvc or {"metadata": {"namespace": s.namespace},
                         "spec": {"resources": {"requests": {"storage": s.workspace_size}},
                                  **({"storageClassName": s.storage_class} if s.storage_class else {})}}
        claim = client.create(restore_pvc(names, source, run_id))["metadata"]["name"]
    client.create(restore_job(names, s, run_id, claim, snapshot))
    return claim


@flow(name="restore-workspace")
def restore_workspace(username: Username, snapshot: str = "latest",
                      target: Literal["new-pvc", "in-place"] = "new-pvc") -> RestoreResult:
    """Restore a snapshot into a new PVC (default) or, when the workspace is scaled to zero,
    into its own volume. restic 0.14 restores over existing files but does not delete files
    that are not in the snapshot."""
    names = workspace_names(username)
    if not SNAPSHOT_RE.match(snapshot or ""):
        raise InvalidInput("snapshot", "must be 'latest' or a restic snapshot id (hex)")
    run_id = _run_id()
    pvc = check_restore_target(names.username, target)
    ensure_backup_secret()
    snapshot_id = resolve_snapshot(names.username, snapshot)
    claim = start_restore_job(names.username, run_id, pvc, target == "new-pvc", snapshot_id)
    try:
        state, reason = wait_for_job(job_name(names, "restore", run_id), run_id)
    finally:
        close_waiter(run_id)
    ok = state == "succeeded"
    result = RestoreResult(username=names.username, snapshot_id=snapshot_id, pvc=claim, target=target,
                           outcome=Outcome.COMPLETED if ok else Outcome.FAILED, reason="" if ok else reason)
    create_table_artifact(key="workspace-restore", table=[result.model_dump(mode="json")],
                          description=f"Restore of {names.username}")
    if not ok:
        raise PermanentError(f"restore of {names.username} failed: {reason}")
    return result
