"""Nightly workspace backups with restic. Orchestration only: the steps are in
:mod:`tasks.backup.steps`. Restores are :mod:`flows.restore`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.backup.plan import backup_targets
from tasks.backup.status import BackupReport, Outcome, WorkspaceResult, run_outcome
from tasks.backup.steps import (
    backup_workspace,
    bounded,
    ensure_backup_secret,
    find_workspace_nodes,
    list_workspace_volumes,
    notify_backup_failure,
    run_selector,
)
from tasks.cluster.jobs import close_waiter, shared_key
from tasks.core.names import Username, validate_username
from tasks.core.settings import get_settings
from tasks.core.steps import now as _now
from tasks.core.steps import run_id as _run_id
from tasks.core.steps import table_artifact


# The ignore: Prefect annotates task_runner invariantly, so its own ThreadPoolTaskRunner (a
# TaskRunner of PrefectConcurrentFuture) does not match TaskRunner[PrefectFuture[Any]].
@flow(name="backup-workspaces", task_runner=ThreadPoolTaskRunner(max_workers=64))  # type: ignore[arg-type]
def backup_workspaces(usernames: list[Username] | None = None) -> BackupReport:
    """Back up the named workspaces, or every workspace volume when none are named."""
    wanted = sorted({validate_username(u, "usernames") for u in usernames or []})
    s = get_settings()
    logger = get_run_logger()
    started, run_id = _now(), _run_id()

    ensure_backup_secret()
    volumes = list_workspace_volumes()
    nodes = find_workspace_nodes()
    chosen, results = backup_targets(wanted, volumes, nodes)
    targets = [(t.username, t.pvc, t.node, run_id) for t in chosen]

    try:
        for (user, pvc, *_), future in bounded(backup_workspace.submit, targets, s.backup.concurrency):
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
    if report.outcome is not Outcome.COMPLETED and s.mail.ops_email:
        try:
            notify_backup_failure(report)
        except Exception as exc:  # noqa: BLE001 - the report stands; the missed notice is logged
            logger.error("could not send the backup failure notice to %s: %s", s.mail.ops_email, exc)
    return report
