"""Prefect steps of restores of workspace snapshots, and of restic password rotation.

In place, a restore replaces the volume's contents with exactly the snapshot's (the
Job's script, :func:`tasks.backup.restic.restore_script`). Nothing is deleted without a verified
backup: first a pre-restore snapshot of the current contents is taken and checked
(tagged ``pre-restore``; restorable by id, never chosen as "latest"), and the restore
Job starts only after that. For the whole restore the workspace carries the restore
guard (:mod:`tasks.backup.guard`), which provisioning and the reaper respect.
"""

from __future__ import annotations

import base64

from prefect import get_run_logger, task
from pydantic import BaseModel

from tasks.backup.guard import guard_holds, guard_step, guard_value, guarding_job, setup_seconds
from tasks.backup.jobs import restore_job, restore_pvc
from tasks.backup.plan import in_place_refusal, pick_snapshot, pre_restore_refusal
from tasks.backup.repo import open_repository, repository_usernames
from tasks.backup.restic import PRE_RESTORE_TAG, Snapshot
from tasks.backup.rotation import PASSWORD_KEY, add_key_step, check_rotation, remove_key_step
from tasks.backup.status import Outcome
from tasks.backup.steps import RETRY, await_run_job, record_expire_verify, run_backup_job
from tasks.cluster import kube
from tasks.cluster.jobs import JobResult, job_state
from tasks.core.errors import PermanentError
from tasks.core.names import RESTORING_ANNOTATION, is_username, workspace_names
from tasks.core.settings import get_settings
from tasks.core.steps import KUBE_API
from tasks.core.steps import now as _now


class RestoreResult(BaseModel):
    username: str
    snapshot_id: str
    pvc: str
    target: str
    outcome: Outcome
    reason: str = ""
    pre_restore_snapshot: str | None = None  # in place: the verified copy of what was replaced


@task(name="guard-restore", tags=[KUBE_API], **RETRY)
def guard_restore(username: str, job: str, clear: bool = False) -> None:
    """Set (or clear, if it is still ours) the restore guard on the Deployment and the volume.
    Setting is a compare-and-swap on the version it judged: two restores starting at once, or
    two new runs taking over one lapsed guard, cannot both hold it."""
    s = get_settings()
    names = workspace_names(username)
    client = kube.connect()
    for kind, name in (("Deployment", names.deployment), ("PersistentVolumeClaim", names.workspace_pvc)):
        obj = client.get(kind, s.namespace, name)
        if obj is None:
            continue
        current: str = (obj["metadata"].get("annotations") or {}).get(RESTORING_ANNOTATION) or ""
        theirs, holds, why = bool(current) and guarding_job(current) != job, True, ""
        if theirs and not clear:  # another restore's guard: does it still hold?
            other = client.get("Job", s.namespace, guarding_job(current))
            holds, why = guard_holds(current, other, job_state(other)[0] if other else None, _now(),
                                     setup_seconds(s.backup.timeout_seconds))
        step = guard_step(current, job, clear, other_holds=holds)
        if step == "refuse":
            raise PermanentError(
                f"{kind} {name} is already being restored ({why}; {RESTORING_ANNOTATION}={current}). A restore "
                "whose run was killed can be retried as that same run; otherwise its guard lapses when its "
                "restore Job finishes, or once the pre-restore window has passed")
        if theirs and step == "set":
            get_run_logger().warning("taking over a lapsed restore guard on %s %s: %s", kind, name, why)
        if step == "set":  # on the version judged: a guard set meanwhile is a Conflict, and the retry sees it
            client.patch(kind, s.namespace, name, {"metadata": {
                "resourceVersion": obj["metadata"]["resourceVersion"],
                "annotations": {RESTORING_ANNOTATION: guard_value(job, _now())}}})
        elif step == "clear":
            client.annotate(kind, s.namespace, name, {RESTORING_ANNOTATION: None})


@task(name="check-restore-target", tags=[KUBE_API], **RETRY)
def check_restore_target(username: str, target: str) -> dict | None:
    """The workspace PVC (None if gone). In place only when nothing can be writing to it;
    run after the guard is set, so nothing can start it afterwards."""
    s = get_settings()
    names = workspace_names(username)
    client = kube.connect()
    pvc = client.get("PersistentVolumeClaim", s.namespace, names.workspace_pvc)
    if target == "in-place":
        dep = client.get("Deployment", s.namespace, names.deployment) if pvc is not None else None
        pods = client.list("Pod", s.namespace, names.selector) if pvc is not None else []
        refusal = in_place_refusal(username, pvc, dep, pods)
        if refusal:
            raise PermanentError(refusal)
    return pvc


@task(name="resolve-snapshot", **RETRY)
def resolve_snapshot(username: str, snapshot: str) -> Snapshot:
    """``latest`` is the newest good snapshot (not partial, not a pre-restore copy)."""
    found = pick_snapshot(open_repository(username).snapshots(), username, snapshot)
    if found is None:
        what = "good snapshot" if snapshot == "latest" else f"snapshot {snapshot!r}"
        raise PermanentError(f"no {what} for {username}")
    return found


def pre_restore_backup(username: str, run_id: str) -> str:
    """A verified snapshot of what the restore will replace; refuses (deleting nothing) otherwise."""
    job = run_backup_job(username, run_id, None, kind="prerestore", tag=PRE_RESTORE_TAG, shared=False)
    recorded = record_expire_verify(username, run_id, job_failed=not job.succeeded, expire=False)
    refusal = pre_restore_refusal(username, job.succeeded, job.reason, recorded)
    if refusal or recorded.snapshot_id is None:
        raise PermanentError(refusal or "no pre-restore snapshot")
    return recorded.snapshot_id


@task(name="start-restore-job", tags=[KUBE_API], **RETRY)
def start_restore_job(username: str, run_id: str, pvc: dict | None, new_volume: bool, snapshot: Snapshot) -> str:
    s = get_settings()
    names = workspace_names(username)
    client = kube.connect()
    claim = names.workspace_pvc
    if new_volume:
        source = pvc or {"metadata": {"namespace": s.namespace},
                         "spec": {"resources": {"requests": {"storage": s.workspace.size}},
                                  **({"storageClassName": s.workspace.storage_class} if s.workspace.storage_class else {})}}
        claim = client.create(restore_pvc(names, source, run_id))["metadata"]["name"]
    client.create(restore_job(names, s.backup, s.namespace, run_id, claim, snapshot.id, empty=snapshot.empty))
    return claim


@task(name="wait-for-job", **RETRY)
def wait_for_job(name: str, run_id: str) -> JobResult:
    return await_run_job(name, run_id, shared=False)


# -- restic password rotation ---------------------------------------------------------
def _passwords() -> tuple[str, str]:
    """(old, new) from settings; each step checks again (a step may run alone, on a retry)."""
    b = get_settings().backup
    old = b.restic_password.get_secret_value() if b.restic_password else None
    new = b.restic_new_password.get_secret_value() if b.restic_new_password else None
    return check_rotation(old, new)


@task(name="add-restic-key", **RETRY)
def add_new_key(username: str) -> str:
    """Idempotent: a repository the new password already opens is left alone."""
    old, new = _passwords()
    repo = open_repository(username).with_password(old)
    new_opens = repo.with_password(new).current_key() is not None
    if add_key_step(username, new_opens, old_opens=new_opens or repo.current_key() is not None) == "present":
        return "new key present"
    repo.add_key(new)
    return "new key added"


@task(name="remove-old-restic-key", **RETRY)
def remove_old_key(username: str) -> str:
    old, new = _passwords()
    repo = open_repository(username)
    old_key = repo.with_password(old).current_key()
    new_repo = repo.with_password(new)
    if old_key is None or remove_key_step(username, old_key, new_repo.current_key()) == "gone":
        return "old key already removed"
    new_repo.remove_key(old_key)
    return "old key removed"


@task(name="list-backup-repositories", **RETRY)
def list_repositories() -> list[str]:
    """The usernames that have a repository in the bucket (what was ever backed up)."""
    return [u for u in repository_usernames() if is_username(u)]


@task(name="write-backup-secret-password", tags=[KUBE_API], **RETRY)
def write_secret_password() -> None:
    s = get_settings()
    value = base64.b64encode(_passwords()[1].encode()).decode()
    kube.connect().patch("Secret", s.namespace, s.backup.secret, {"data": {PASSWORD_KEY: value}})
