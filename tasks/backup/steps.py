"""Prefect steps of the nightly backup: the Jobs' Secret, the volumes to back up, one
workspace's backup, expiry and verification, the failure notice.

Decisions live in pure modules (:mod:`tasks.backup.retention`, :mod:`tasks.backup.status`,
:mod:`tasks.backup.jobs`); restic command lines in :mod:`tasks.backup.restic`, Job waiting
in :mod:`tasks.cluster.jobs`. Workspaces are backed up in batches, one task run per
batch (``settings.backup.batch_size``), never one per workspace: Prefect costs tens of
milliseconds per task run. Inside a batch each workspace never raises, so one person's
failure cannot stop the others, and each of its steps retries only transient errors.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.backup.jobs import RUN_LABEL, backup_job, backup_secret, workspace_nodes
from tasks.backup.notify import backup_failure_notice
from tasks.backup.plan import Target
from tasks.backup.repo import ensure_repository, open_repository, record_and_expire
from tasks.backup.restic import NIGHTLY_TAG
from tasks.backup.retention import KeepPolicy
from tasks.backup.rotation import secret_data_patch
from tasks.backup.status import (
    BackupReport,
    Outcome,
    Recorded,
    WorkspaceResult,
    volume_annotations,
    workspace_outcome,
)
from tasks.cluster import kube
from tasks.cluster.jobs import JobResult, await_job
from tasks.core import mail
from tasks.core.names import USER_LABEL, WORKSPACE_POD_SELECTOR, WORKSPACE_PVC_SELECTOR, selector, workspace_names
from tasks.core.settings import get_settings
from tasks.core.steps import KUBE_API, retry_transient, transient_retries
from tasks.core.steps import now as _now

RETRY = transient_retries(3)
JOB_GRACE_SECONDS = 60  # past the Job's activeDeadlineSeconds, before we give up on it
STEP_RETRIES = 3  # of each step of one workspace's backup (transient errors only)
CREATE_RETRIES = 5  # of the Job's create inside one attempt of the step (see start_job)


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
    for page in kube.connect().pages("PersistentVolumeClaim", s.namespace, WORKSPACE_PVC_SELECTOR):
        for pvc in page:  # folded as the pages arrive: two strings per volume are kept
            user = (pvc["metadata"].get("labels") or {}).get(USER_LABEL, "")
            found[user] = pvc["metadata"]["name"]
    return found


@task(name="find-workspace-nodes", tags=[KUBE_API], **RETRY)
def find_workspace_nodes() -> dict[str, str]:
    s = get_settings()
    return workspace_nodes(p for page in kube.connect().pages("Pod", s.namespace, WORKSPACE_POD_SELECTOR) for p in page)


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


def start_job(username: str, run_id: str, node: str | None, kind: str = "backup", tag: str = NIGHTLY_TAG,
              shared: bool = True) -> JobResult:
    """Create the repository on its first night, start the Job and wait for it. Each step is
    idempotent: a retry finds its own Job."""
    ensure_repository(username)
    s = get_settings()
    job = backup_job(workspace_names(username), s.backup, s.namespace, run_id, node, kind=kind, tag=tag)
    # The create alone is retried longer, in place: it is one cheap, idempotent request (a 409 is our own
    # Job), and repeating the whole step for it also repeats the repository's restic call. Under 20% API
    # faults one workspace in ten once ran out of the step's four attempts on this create.
    retry_transient(kube.connect().create, job, retries=CREATE_RETRIES, backoff_factor=0.5)
    return await_run_job(job["metadata"]["name"], run_id, shared)


@task(name="run-backup-job", **RETRY)
def run_backup_job(username: str, run_id: str, node: str | None, kind: str = "backup",
                   tag: str = NIGHTLY_TAG, shared: bool = True) -> JobResult:
    """:func:`start_job` as a task run of its own (the restore's one pre-restore copy)."""
    return start_job(username, run_id, node, kind, tag, shared)


def record_expire_verify_now(username: str, run_id: str, job_failed: bool, expire: bool = True) -> Recorded:
    """Find the run's snapshot, ``restic check`` the repository, then (unless ``expire`` is
    off, and only after a passing check) apply retention: see
    :func:`tasks.backup.repo.record_and_expire`. Every step is idempotent."""
    s = get_settings()
    restic = open_repository(username)
    policy = KeepPolicy.from_settings(s.backup) if expire else None
    after = record_and_expire(restic, run_id, job_failed, policy, _now(), s.backup.verify_read_data_percent)
    if after.snapshot_id is None:
        return Recorded()
    return Recorded(after.snapshot_id, after.retention_error, after.verified, after.check_detail)


@task(name="record-expire-verify", **RETRY)
def record_expire_verify(username: str, run_id: str, job_failed: bool, expire: bool = True) -> Recorded:
    """:func:`record_expire_verify_now` as a task run of its own (the restore's)."""
    return record_expire_verify_now(username, run_id, job_failed, expire)


@task(name="notify-backup-failure", **RETRY)
def notify_backup_failure(report: BackupReport) -> str:
    msg = backup_failure_notice(report, get_settings().mail)
    if msg is None:
        return "not needed"
    mail.send(msg)
    return f"sent to {msg['To']}"


def annotate_volume(pvc: str, ann: Mapping[str, str | None]) -> None:
    kube.connect().annotate("PersistentVolumeClaim", get_settings().namespace, pvc, ann)


def backup_one(username: str, pvc: str, node: str | None, run_id: str) -> WorkspaceResult:
    """Back up, expire, verify, annotate one workspace. Never raises: a failure is a result.

    Plain calls, each retried on transient errors in place (:func:`retry_transient`): this
    runs inside a batch's task run, and a task run per step would cost Prefect server round
    trips per workspace (four per workspace per night before; 40,000 at 10,000 people)."""
    started = time.monotonic()
    job, recorded, error = JobResult("failed", "not started"), Recorded(), None
    try:
        job = retry_transient(start_job, username, run_id, node, retries=STEP_RETRIES)
        recorded = retry_transient(record_expire_verify_now, username, run_id, job_failed=not job.succeeded,
                                   retries=STEP_RETRIES)
    except Exception as exc:  # noqa: BLE001 - turned into this workspace's outcome
        error = str(exc) or type(exc).__name__
    outcome, reason = workspace_outcome(job.state, job.reason, recorded, error)
    result = WorkspaceResult(username=username, pvc=pvc, outcome=outcome, snapshot_id=recorded.snapshot_id,
                             verified=recorded.verified is True, reason=reason,
                             duration_seconds=time.monotonic() - started)
    try:
        retry_transient(annotate_volume, pvc, volume_annotations(result, _now()), retries=STEP_RETRIES)
    except Exception as exc:  # noqa: BLE001
        result.reason = f"{result.reason}; could not annotate the volume: {exc}".lstrip("; ")
    return result


# -- waves: the run's slots -------------------------------------------------------------
_slots_lock = threading.Lock()
_slots: dict[str, threading.BoundedSemaphore] = {}


def run_slots(run_id: str, limit: int) -> threading.BoundedSemaphore:
    """The run's workspaces in flight (so its Jobs in flight), shared by all its batches in
    this process: ``settings.backup.concurrency``, whatever the batch size."""
    with _slots_lock:
        return _slots.setdefault(run_id, threading.BoundedSemaphore(limit))


def release_slots(run_id: str) -> None:
    with _slots_lock:
        _slots.pop(run_id, None)


@task(name="backup-batch", cache_policy=NO_CACHE)
def backup_batch(targets: list[Target], run_id: str) -> list[WorkspaceResult]:
    """Up to ``settings.backup.batch_size`` workspaces in one task run, each in its own
    thread once it holds one of the run's slots; a Job is created when a slot frees, so Jobs
    start in waves that the cluster's pace sets. Never raises: a failure is a result."""
    slots = run_slots(run_id, get_settings().backup.concurrency)

    def one(t: Target) -> WorkspaceResult:
        with slots:
            try:
                return backup_one(t.username, t.pvc, t.node, run_id)
            except Exception as exc:  # noqa: BLE001 - this workspace's failure, never the batch's
                return WorkspaceResult(username=t.username, pvc=t.pvc, outcome=Outcome.FAILED, reason=str(exc))

    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=min(len(targets), get_settings().backup.concurrency),
                            thread_name_prefix="backup") as pool:
        return list(pool.map(one, targets))


def batches(targets: list[Target], size: int, concurrency: int) -> tuple[list[list[Target]], int]:
    """(the targets in batches of ``size``, batches to keep in flight): enough that the run's
    slots stay full while one batch waits on its slowest workspace."""
    chunks = [targets[i:i + size] for i in range(0, len(targets), size)]
    return chunks, max(2, -(-concurrency // size) + 1)


def bounded(submit, items: list[tuple], limit: int) -> list:
    """Keep at most ``limit`` submissions in flight, starting the next as one finishes.

    The flow keeps a few batches in flight this way; the run's slots (settings.backup.concurrency)
    bound the workspaces inside them, which is what protects nodes, storage and the API
    server, so the batch tasks carry no Prefect tag limit: each tagged task run costs two
    more server round trips (slot lease and release)."""
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
