"""Restores of workspace snapshots, and restic password rotation. Orchestration only: the
steps are in :mod:`tasks.backup.restore_steps`.

In place, a restore replaces the volume's contents with exactly the snapshot's (the
Job's script, :func:`tasks.backup.restic.restore_script`). Nothing is deleted without a
verified backup: first a pre-restore snapshot of the current contents is taken and
checked (tagged ``pre-restore``; restorable by id, never chosen as "latest"), and the
restore Job starts only after that. For the whole restore the workspace carries the
restore guard (:mod:`tasks.backup.guard`), which provisioning and the reaper respect.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow

from tasks.backup.jobs import job_name
from tasks.backup.restore_steps import (
    RestoreResult,
    add_new_key,
    check_restore_target,
    guard_restore,
    list_repositories,
    pre_restore_backup,
    remove_old_key,
    resolve_snapshot,
    start_restore_job,
    wait_for_job,
    write_secret_password,
)
from tasks.backup.rotation import check_rotation
from tasks.backup.status import Outcome
from tasks.backup.steps import ensure_backup_secret
from tasks.core.errors import PermanentError
from tasks.core.names import Username, validate_snapshot_id, workspace_names
from tasks.core.settings import get_settings
from tasks.core.steps import run_id as _run_id
from tasks.core.steps import table_artifact


@flow(name="restore-workspace")
def restore_workspace(username: Username, snapshot: str = "latest",
                      target: Literal["new-pvc", "in-place"] = "new-pvc") -> RestoreResult:
    """Restore a snapshot into a new PVC (default) or, when the workspace is stopped, into
    its own volume, which then holds exactly the snapshot's files."""
    names = workspace_names(username)
    validate_snapshot_id(snapshot)  # full match: 'latest\n' is refused
    run_id = _run_id()
    job = job_name(names, "restore", run_id)
    in_place = target == "in-place"
    if in_place:
        guard_restore(names.username, job)
    try:
        pvc = check_restore_target(names.username, target)
        ensure_backup_secret()
        snap = resolve_snapshot(names.username, snapshot)
        safety = pre_restore_backup(names.username, run_id) if in_place else None
        claim = start_restore_job(names.username, run_id, pvc, not in_place, snap)
        done = wait_for_job(job, run_id)
    finally:
        if in_place:
            guard_restore(names.username, job, clear=True)
    result = RestoreResult(username=names.username, snapshot_id=snap.id, pvc=claim, target=target,
                           outcome=Outcome.COMPLETED if done.succeeded else Outcome.FAILED,
                           reason="" if done.succeeded else done.reason, pre_restore_snapshot=safety)
    table_artifact("workspace-restore", [result.model_dump(mode="json")], f"Restore of {names.username}")
    if not done.succeeded:
        raise PermanentError(f"restore of {names.username} failed: {done.reason}")
    return result


@flow(name="rotate-restic-password")
def rotate_restic_password() -> dict[str, str]:
    """Move every workspace repository from ``restic_password`` to ``restic_new_password``
    (both read from settings, never parameters). Order keeps every repository openable at
    every step: add the new key everywhere, then switch the backup Secret, then remove the
    old keys. A rerun converges. Afterwards set ``restic_password`` to the new value and
    unset ``restic_new_password``."""
    s = get_settings()
    old, new = s.backup.restic_password, s.backup.restic_new_password
    check_rotation(old.get_secret_value() if old else None, new.get_secret_value() if new else None)
    ensure_backup_secret()
    users = list_repositories()
    rows: dict[str, str] = {}
    for user in users:
        rows[user] = add_new_key(user)
    write_secret_password()
    for user in users:
        rows[user] = f"{rows[user]}; {remove_old_key(user)}"
    table_artifact("restic-password-rotation", rows, f"restic password rotated for {len(users)} repositories")
    return rows
