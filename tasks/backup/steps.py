"""Prefect steps of the nightly backup: the Jobs' Secret, the volumes to back up, one
workspace's backup, expiry and verification, the failure notice.

Decisions live in pure modules (:mod:`tasks.backup.retention`, :mod:`tasks.backup.status`,
:mod:`tasks.backup.jobs`); restic command lines in :mod:`tasks.backup.restic`, Job waiting
in :mod:`tasks.cluster.jobs`. Each workspace is one task that never raises, so one
person's failure cannot stop the others; its steps are nested tasks that retry only
transient errors.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Mapping

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.backup.jobs import RUN_LABEL, backup_job, backup_secret, workspace_nodes
from tasks.backup.notify import backup_failure_notice
from tasks.backup.repo import ensure_repository, open_repository, record_and_expire
from tasks.backup.restic import NIGHTLY_TAG
from tasks.backup.retention import KeepPolicy
from tasks.backup.rotation import secret_data_patch
from tasks.backup.status import BackupReport, Recorded, WorkspaceResult, volume_annotations, workspace_outcome
from tasks.cluster import kube
from tasks.cluster.jobs import JobResult, await_job
from tasks.core import mail
from tasks.core.names import USER_LABEL, WORKSPACE_POD_SELECTOR, WORKSPACE_PVC_SELECTOR, selector, workspace_names
from tasks.core.settings import get_settings
from tasks.core.steps import KUBE_API, transient_retries
from tasks.core.steps import now as _now

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
    manifest = backup_secret(s.backup, s.namespace)
    if manifest is None:
        return
    client = kube.connect()
    existing = client.create(manifest)
    new = s.backup.restic_new_password
    patch = secret_data_patch(manifest["stringData"], existing.get("data") or {},
                              new.get_secret_value() if new is not None else None)
    if patch is not None:
        client.patch("Secret", s.namespace, s.backup.secret, {"data": patch})


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
                       s.backup.timeout_seconds + JOB_GRACE_SECONDS, s.backup.poll_seconds, shared=shared)
    if result.state == "running":
        client.delete("Job", s.namespace, name)
        return JobResult("failed", f"timed out after {s.backup.timeout_seconds:.0f}s")
    return result


@task(name="run-backup-job", **RETRY)
def run_backup_job(username: str, run_id: str, node: str | None, kind: str = "backup",
                   tag: str = NIGHTLY_TAG, shared: bool = True) -> JobResult:
    """Create the repository on its first night, start the Job and wait for it. One task:
    each step is idempotent (a retry finds its own Job), and every task run costs Prefect
    API round trips per workspace."""
    ensure_repository(username)
    s = get_settings()
    job = backup_job(workspace_names(username), s.backup, s.namespace, run_id, node, kind=kind, tag=tag)
    kube.connect().create(job)
    return await_run_job(job["metadata"]["name"], run_id, shared)


@task(name="record-expire-verify", **RETRY)
def record_expire_verify(username: str, run_id: str, job_failed: bool, expire: bool = True) -> Recorded:
    """Find the run's snapshot, ``restic check`` the repository, then (unless ``expire`` is
    off, and only after a passing check) apply retention: see
    :func:`tasks.backup.repo.record_and_expire`. One task: every step is idempotent, and
    fewer task runs keep Prefect's overhead small."""
    s = get_settings()
    restic = open_repository(username)
    policy = KeepPolicy.from_settings(s.backup) if expire else None
    after = record_and_expire(restic, run_id, job_failed, policy, _now(), s.backup.verify_read_data_percent)
    if after.snapshot_id is None:
        return Recorded()
    return Recorded(after.snapshot_id, after.retention_error, after.verified, after.check_detail)


@task(name="notify-backup-failure", **RETRY)
def notify_backup_failure(report: BackupReport) -> str:
    msg = backup_failure_notice(report, get_settings().mail)
    if msg is None:
        return "not needed"
    mail.send(msg)
    return f"sent to {msg['To']}"


@task(name="annotate-volume", **RETRY)
def annotate_volume(pvc: str, ann: Mapping[str, str | None]) -> None:
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
        annotate_volume(pvc, volume_annotations(result, _now()))
    except Exception as exc:  # noqa: BLE001
        result.reason = f"{result.reason}; could not annotate the volume: {exc}".lstrip("; ")
    return result


def bounded(submit, items: list[tuple], limit: int) -> list:
    """Keep at most ``limit`` submissions in flight, starting the next as one finishes.

    This bound (settings.backup.concurrency) is what protects nodes, storage and the API
    server during a run, so the per-workspace tasks carry no Prefect tag limit: each tagged
    task run costs two more server round trips (slot lease and release), measured here as
    the largest part of the flow's overhead."""
    done: queue.Queue = queue.Queue()
    waiting, results = list(reversed(items)), []
    in_flight: dict = {}
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
