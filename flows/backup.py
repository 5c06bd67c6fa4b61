"""Nightly workspace backups with restic. Orchestration only: the steps are in
:mod:`tasks.backup.steps`. Restores are :mod:`flows.restore`.

One LIST each of volumes and pods (paged) plans the run; the workspaces then go in
batches, one task run each, and Jobs are created as slots free (``backup.concurrency``
in flight), so the cluster's nodes and the S3 store set the pace and the flow's cost per
workspace is the same at 100 and at 10,000.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.backup.plan import backup_targets
from tasks.backup.status import BackupReport, Outcome, WorkspaceResult, run_outcome
from tasks.backup.steps import (
    backup_batch,
    batches,
    bounded,
    ensure_backup_secret,
    find_workspace_nodes,
    list_workspace_volumes,
    notify_backup_failure,
    release_slots,
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
    chunks, in_flight = batches(chosen, s.backup.batch_size, s.backup.concurrency)

    try:  # one task run per batch; the run's slots keep at most backup.concurrency Jobs in flight
        for (batch, _), future in bounded(backup_batch.submit, [(b, run_id) for b in chunks], in_flight):
            try:
                results.extend(future.result())
            except Exception as exc:  # noqa: BLE001 - a crashed batch is its workspaces' failure
                results.extend(WorkspaceResult(username=t.username, pvc=t.pvc, outcome=Outcome.FAILED,
                                               reason=str(exc)) for t in batch)
    finally:
        close_waiter(shared_key(s.namespace, run_selector(run_id)))
        release_slots(run_id)

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
