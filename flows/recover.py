"""Disaster recovery: a whole platform rebuilt on a new, empty cluster from the S3 store alone.

Order (:data:`tasks.dr.plan.ORDER`, each with why): choose one complete backup set; the
namespaces; the platform Secrets and the users database, *before* bootstrap, so bootstrap
keeps them instead of generating new keys (every restic repository and Authelia's encrypted
storage stay readable); bootstrap; Authelia's and Prefect's databases; the ledger; then every
active person's workspace, reprovisioned stopped, their newest good snapshot restored into it
in place (:func:`flows.restore.restore_workspace`), and started. Leavers stay disabled (the
users database says so) and get no workspace; their ``terminated_at`` comes back with the
ledger, so the retention clock keeps running from the day they left.

Resumable: each step converges, and the progress record (ConfigMap
``settings.recovery.progress_configmap``) names the steps done for this set, so a rerun after
a crash carries on where it stopped. The artifact says what was recovered from which
snapshot, and what could not be.
"""

from __future__ import annotations

import contextvars
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from flows.restore import restore_workspace
from flows.workspace import provision_workspace
from tasks.core.errors import NotFound, PermanentError
from tasks.core.settings import get_settings
from tasks.dr.plan import ORDER, BackupSet, parse_source, remaining, workspace_row
from tasks.dr.steps import (
    ItemResult,
    check_target,
    choose_backup_set,
    mark_done,
    read_progress,
    recovered_people,
    restore_database,
    restore_ledger,
    restore_secrets,
    restore_users_database,
)
from tasks.platform.steps import ensure_namespaces


class RecoveryResult(BaseModel):
    source: str
    set_run_id: str
    set_time: str
    rows: list[dict[str, str]]
    failed: list[str] = []
    resumed: list[str] = []  # steps a previous run had done


def _row(r: ItemResult) -> dict[str, str]:
    return {"what": r.item, "snapshot": r.snapshot[:8], "outcome": r.outcome, "detail": r.detail}


@flow(name="recover-platform")
def recover_platform(source: str, backup_set: str = "latest", bootstrap: bool = True,
                     existing_kubeconfig: Path | None = None, workspaces: bool = True,
                     force: bool = False) -> RecoveryResult:
    """``source``: the platform repository (``s3:http://host:9000/bucket/_platform``).
    ``backup_set``: a run id, or the newest complete set. ``bootstrap`` False: the platform's
    charts are installed already (or by hand). ``force``: recover onto a cluster that already
    runs a platform (refused otherwise, before anything changes). ``existing_kubeconfig``: the
    new cluster, for every step (default: the settings' cluster). Credentials only from the
    environment."""
    logger = get_run_logger()
    repo = parse_source(source)
    kubeconfig = _one_cluster(existing_kubeconfig, bootstrap)
    chosen: BackupSet = choose_backup_set(repo, backup_set)
    snaps, rid = chosen.snapshots, chosen.run_id
    logger.info("recovering platform backup %s of %s", rid, chosen.time.isoformat())
    rows: list[dict[str, str]] = [{"what": "backup set", "snapshot": rid, "outcome": "chosen",
                                   "detail": f"{chosen.time.isoformat()}; lacks: {', '.join(chosen.missing) or 'nothing'}"}]
    result = RecoveryResult(source=repo, set_run_id=rid, set_time=chosen.time.isoformat(), rows=rows)
    rows = result.rows  # pydantic copied the list: append to the model's own
    target = check_target(rid, force)
    rows.append({"what": "target cluster", "snapshot": "", "outcome": "checked", "detail": target})
    namespaces_done = ensure_namespaces(False)  # the progress record lives in the platform namespace
    done = read_progress()
    todo = remaining(done, rid)
    result.resumed = [s for s, _ in ORDER if s not in todo]
    try:
        for step, _why in ORDER:
            if step == "choose-set":
                continue
            if step not in todo:
                rows.append({"what": step, "snapshot": snaps.get(step, "")[:8], "outcome": "done earlier",
                             "detail": "a previous run of this recovery"})
                continue
            if step == "namespaces":
                rows.append({"what": step, "snapshot": "", "outcome": namespaces_done.action,
                             "detail": namespaces_done.detail})
            elif step == "platform-secrets":
                rows.append(_row(restore_secrets(repo, snaps[step])))
            elif step == "users-database":
                rows.append(_row(restore_users_database(repo, snaps[step])))
            elif step == "bootstrap":
                if bootstrap:
                    from flows.bootstrap import bootstrap_platform

                    boot = bootstrap_platform(existing_kubeconfig=kubeconfig,
                                              kube_context=get_settings().kube_context)
                    rows.append({"what": step, "snapshot": "", "outcome": "changed" if boot.changed else "unchanged",
                                 "detail": ", ".join(f"{o.component}: {o.action}" for o in boot.components)})
                else:
                    rows.append({"what": step, "snapshot": "", "outcome": "skipped", "detail": "bootstrap=False"})
            elif step in ("authelia-db", "prefect-db"):
                rows.append(_row(restore_database(repo, snaps.get(step), step)))
            elif step == "ledger":
                rows.append(_row(restore_ledger(repo, snaps[step])))
            elif step == "workspaces":
                _workspaces(rows, rid, done, result, workspaces)
                if not workspaces:
                    continue  # not done: a rerun with workspaces does them
            mark_done(step, rid)
    finally:
        _artifact(result)
    logger.info("recovery of %s: %d steps, %d failures", rid, len(rows), len(result.failed))
    return result


def _one_cluster(existing_kubeconfig: Path | None, bootstrap: bool) -> Path | None:
    """The kubeconfig of the cluster being recovered, made the one every step uses. Bootstrap
    given no kubeconfig creates a KIND cluster of its own, and one given here but not to the
    other steps would install the charts where the Secrets were not restored: either way the
    keys and the charts would land on two clusters. Decided before anything changes."""
    if existing_kubeconfig is not None:
        os.environ["VIBECODE_KUBECONFIG"] = str(existing_kubeconfig)  # as bootstrap itself does
        get_settings.cache_clear()  # the cluster clients are cached per kubeconfig: new ones follow
        return existing_kubeconfig
    if not bootstrap:
        return None
    configured = get_settings().kubeconfig
    if configured is not None:
        return configured
    default = Path(os.path.expanduser(os.environ.get("KUBECONFIG", "~/.kube/config")))
    if os.pathsep in str(default) or not default.is_file():
        raise PermanentError(f"bootstrap needs the new cluster's kubeconfig file ({default} is not one): pass "
                             "--kubeconfig, or --no-bootstrap when the charts are installed already")
    return default


def _workspaces(rows: list[dict[str, str]], rid: str, done: dict[str, str], result: RecoveryResult,
                enabled: bool) -> None:
    people = recovered_people()
    for user in people.leavers:
        rows.append(workspace_row(user, None, "left", "stays disabled; no workspace; retention clock kept"))
    for user in people.pending:
        rows.append(workspace_row(user, None, "pending", "onboarding unfinished: the HR event's rerun finishes it"))
    if not enabled:
        rows.append({"what": "workspaces", "snapshot": "", "outcome": "skipped", "detail": "workspaces=False"})
        return
    todo = [u for u in people.active if done.get(f"workspace.{u}") != rid]
    for user in sorted(set(people.active) - set(todo)):
        rows.append(workspace_row(user, None, "done earlier", "a previous run of this recovery"))
    # Bounded like the nightly backups (settings.backup.concurrency): each person is a
    # provision, a restore Job and a start; the subflows keep this run as their parent.
    with ThreadPoolExecutor(max_workers=get_settings().backup.concurrency) as pool:
        futures = {u: pool.submit(contextvars.copy_context().run, _recover_one, u, rid) for u in todo}
        for user, future in futures.items():
            try:
                rows.append(future.result())
            except Exception as exc:  # noqa: BLE001 - one workspace's failure is reported; the others go on
                get_run_logger().error("workspace %s not recovered: %s: %s", user, type(exc).__name__, exc)
                rows.append(workspace_row(user, None, "failed", f"{type(exc).__name__}: {exc}"[:300]))
                result.failed.append(user)
    if result.failed:
        raise PermanentError(f"workspaces not recovered: {', '.join(result.failed)} (a rerun retries them)")


def _recover_one(user: str, rid: str) -> dict[str, str]:
    """Reprovisioned stopped (the chart makes the volume; nothing writes to it), the newest
    good snapshot restored in place, started; then marked done for this set."""
    provision_workspace(user, replicas=0)
    try:
        restored = restore_workspace(user, snapshot="latest", target="in-place")
        snapshot, detail = restored.snapshot_id, f"restored into {restored.pvc}"
    except (PermanentError, NotFound) as exc:  # no backup yet: the person gets an empty workspace
        if not isinstance(exc, NotFound) and "no good snapshot" not in str(exc):
            raise
        snapshot, detail = None, "no backup of this workspace: started empty"
    provision_workspace(user, replicas=1)
    mark_done(f"workspace.{user}", rid)
    return workspace_row(user, snapshot, "recovered", detail)


def _artifact(result: RecoveryResult) -> None:
    lines = [f"# Platform recovery from `{result.source}`", "",
             f"Backup set **{result.set_run_id}** of {result.set_time}.", "",
             "| what | snapshot | outcome | detail |", "|---|---|---|---|"]
    lines += [f"| {r['what']} | {r['snapshot']} | {r['outcome']} | {r['detail'].replace('|', '/')} |"
              for r in result.rows]
    if result.failed:
        lines += ["", f"**Not recovered**: {', '.join(result.failed)}; a rerun resumes with them."]
    create_markdown_artifact(key="platform-recovery", markdown="\n".join(lines),
                             description=f"Recovery of platform backup {result.set_run_id}")
