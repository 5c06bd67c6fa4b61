"""Nightly workspace backups with restic. Orchestration only.

Decisions live in pure modules (:mod:`tasks.retention`, :mod:`tasks.backup_status`,
:mod:`tasks.backup_jobs`); restic command lines in :mod:`tasks.restic`, Job waiting in
:mod:`tasks.jobs`. Each workspace is one task that never raises, so one person's failure
cannot stop the others; its steps are nested tasks that retry only transient errors.
Restores are :mod:`flows.restore`.
"""

from __future__ import annotations

import base64
import queue
import time

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.common import KUBE_API, Username, now as _now, run_id as _run_id, table_artifact, transient_retries
from tasks import kube, mail
from tasks.backup_jobs import RUN_LABEL, WORKSPACE_POD_SELECTOR, backup_job, backup_secret, workspace_nodes
from tasks.backup_repo import ensure_repository, open_repository, record_and_expire
from tasks.backup_status import (
    BackupReport,
    Outcome,
    Recorded,
    WorkspaceResult,
    annotations,
    run_outcome,
    workspace_outcome,
)
from tasks.errors import InvalidInput
from tasks.jobs import JobResult, await_job, close_waiter, shared_key
from tasks.names import USER_LABEL, WORKSPACE_PVC_SELECTOR, selector, validate_username, workspace_names
from tasks.notify import backup_failure_notice
from tasks.restic import NIGHTLY_TAG
from tasks.retention import KeepPolicy
from tasks.settings import get_settings

RETRY = transient_retries(3)
JOB_GRACE_SECONDS = 60  # past the Job's activeDeadlineSeconds, before we give up on it


def run_selector(run_id: str) -> str:
    return selector(**{RUN_LABEL: run_id})


# -- steps --------------------------------------------------------------------------
@task(name="ensure-backup-secret", tags=[KUBE_API], **RETRY)
def ensure_backup_secret() -> None:
    """The Jobs' Secret from settings. During a password rotation (``restic_new_password``
    set) a Secret that already holds the new password keeps it."""
    s = get_settings()
    manifest = backup_secret(s, s.namespace)
    if manifest is None:
        return
    client = kube.connect()
    existing = client.create(manifest)
    want = {k: base64.b64encode(v.encode()).decode() for k, v in manifest["stringData"].items()}
    have = existing.get("data") or {}
    if s.restic_new_password is not None and have.get("RESTIC_PASSWORD") == base64.b64encode(
            s.restic_new_password.get_secret_value().encode()).decode():
        want["RESTIC_PASSWORD"] = have["RESTIC_PASSWORD"]  # rotated already: never switch back
    if have != want:
        client.patch("Secret", s.namespace, s.backup_secret, {"data": want})


@task(name="list-workspace-volumes", tags=[KUBE_API], **RETRY)
def list_workspace_volumes() -> dict[str, str]:
    """username -> PVC name, from one LIST by label."""
    s = get_settings()
    found = {}
    for pvc in kube.connect().list("PersistentVolumeClaim", s.namespace, WORKSPACE_PVC_SELECTOR):
        user = (pvc["metadata"].get("labels") or {}).get(USER_LABEL, "")
        found[user] = pvc["metadata"]["name"]
    return found


@task(name="find-workspace-nodes", tags=[KUBE_API], **RETRY)
def find_workspace_nodes() -> dict[str, str]:
    s = get_settings()
    return workspace_nodes(kube.connect().list("Pod", s.namespace, WORKSPACE_POD_SELECTOR))


def await_run_job(name: str, run_id: str, shared: bool = True) -> JobResult:
    """Wait on the run's Job watch, bounded by the Job's own deadline plus a grace period;
    past that, delete the Job and call it failed."""
    s = get_settings()
    client = kube.connect()
    result = await_job(client, s.namespace, run_selector(run_id), name,
                       s.backup_timeout_seconds + JOB_GRACE_SECONDS, s.backup_poll_seconds, shared=shared)
    if result.state == "running":
        client.delete("Job", s.namespace, name)
        return JobResult("failed", f"timed out after {s.backup_timeout_seconds:.0f}s")
    return result


@task(name="run-backup-job", **RETRY)
def run_backup_job(username: str, run_id: str, node: str | None, kind: str = "backup",
                   tag: str = NIGHTLY_TAG, shared: bool = True) -> JobResult:
    """Create the repository on its first night, start the Job and wait for it. One task:
    each step is idempotent (a retry finds its own Job), and every task run costs Prefect
    API round trips per workspace."""
    ensure_repository(username)
    job = backup_job(workspace_names(username), get_settings(), run_id, node, kind=kind, tag=tag)
    kube.connect().create(job)
    return await_run_job(job["metadata"]["name"], run_id, shared)


@task(name="record-expire-verify", **RETRY)
def record_expire_verify(username: str, run_id: str, job_failed: bool, expire: bool = True) -> Recorded:
    """Find the run's snapshot, apply retention (unless ``expire`` is off), then ``restic
    check`` what is left. One task: every step is idempotent, and fewer task runs keep
    Prefect's overhead small."""
    restic = open_repository(username)
    policy = KeepPolicy.from_settings(get_settings()) if expire else None
    after = record_and_expire(restic, run_id, job_failed, policy, _now())
    if after.snapshot_id is None:
        return Recorded()
    ok, detail = restic.check(get_settings().verify_read_data_percent)
    return Recorded(after.snapshot_id, after.retention_error, ok, detail)


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
    job, recorded, error = JobResult("failed", "not started"), Recorded(), None
    try:
        job = run_backup_job(username, run_id, node)
        recorded = record_expire_verify(username, run_id, job_failed=not job.succeeded)
    except Exception as exc:  # noqa: BLE001 - turned into this workspace's outcome
        error = str(exc) or type(exc).__name__
    outcome, reason = workspace_outcome(job.state, job.reason, recorded, error)
    result = WorkspaceResult(username=username, pvc=pvc, outcome=outcome, snapshot_id=recorded.snapshot_id,
                             verified=recorded.verified is True, reason=reason,
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


# -- flow ---------------------------------------------------------------------------
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
                                           reason=f"volume has no valid {USER_LABEL} label: {exc}"))
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
        close_waiter(shared_key(s.namespace, run_selector(run_id)))

    results.sort(key=lambda r: r.username)
    report = BackupReport(outcome=run_outcome([r.outcome for r in results]), started=started,
                          finished=_now(), workspaces=results)
    for r in results:
        log = logger.info if r.outcome is Outcome.COMPLETED else logger.warning
        log("backup %s: %s %s", r.username, r.outcome.value, r.reason)
    table_artifact("workspace-backups", report.table(), f"Backup run {run_id}: {report.outcome.value}")
    if report.outcome is not Outcome.COMPLETED and s.ops_email:
        try:
            notify_backup_failure(report)
        except Exception as exc:  # noqa: BLE001 - the report stands; the missed notice is logged
            logger.error("could not send the backup failure notice to %s: %s", s.ops_email, exc)
    return report
