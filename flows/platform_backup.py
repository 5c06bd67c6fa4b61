"""The nightly backup of the platform itself (after the workspace backups): Authelia's and
Prefect's databases (pg_dump streamed into restic, no copy on disk), the users database,
the ledger and the platform Secrets, into the platform restic repository; then ``restic
check`` and retention. Orchestration only: the steps are in :mod:`tasks.dr.steps`, what is
saved and why in :mod:`tasks.dr.plan`. Recovery from it is :mod:`flows.recover`.

The repository's password is never in the cluster alone: it comes from settings or a
Prefect Secret block; when neither exists the first run generates the block and tells the
operator, once, to keep a copy outside.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from tasks.backup.status import Outcome
from tasks.core.errors import PermanentError
from tasks.core.steps import now as _now
from tasks.core.steps import run_id as _run_id
from tasks.core.steps import table_artifact
from tasks.dr.plan import ITEMS
from tasks.dr.steps import ItemResult, backup_item, ensure_platform_repository, verify_and_expire


class PlatformBackupReport(BaseModel):
    run_id: str
    outcome: Outcome
    items: list[ItemResult]
    verified: bool = False
    check_detail: str = ""
    forgotten: list[str] = []


@flow(name="backup-platform")
def backup_platform(run_id: str | None = None) -> PlatformBackupReport:
    """Every item of :data:`tasks.dr.plan.ITEMS`; ``run_id`` (only to resume a run that died)
    makes a rerun save only what that run did not."""
    logger = get_run_logger()
    rid = run_id or _run_id()
    notice = ensure_platform_repository()
    if notice:
        logger.warning(notice)
        create_markdown_artifact(key="platform-backup-password", markdown=f"**Keep this safe.** {notice}",
                                 description="Where the platform backup's password is (told once)")
    results: list[ItemResult] = []
    for item in ITEMS:
        try:
            results.append(backup_item(item.name, rid))
        except Exception as exc:  # noqa: BLE001 - one item's failure is reported; the others still run
            results.append(ItemResult(item=item.name, outcome="failed", detail=str(exc)[:300]))
    ok, detail, forgotten = verify_and_expire(_now())
    failed = [r for r in results if r.outcome == "failed" and next(i for i in ITEMS if i.name == r.item).required]
    outcome = Outcome.FAILED if failed or not ok else Outcome.COMPLETED
    report = PlatformBackupReport(run_id=rid, outcome=outcome, items=results, verified=ok, check_detail=detail,
                                  forgotten=forgotten)
    table_artifact("platform-backup", [r.model_dump() for r in results],
                   f"Platform backup {rid}: {outcome.value}; check: {detail}; expired {len(forgotten)}")
    for r in results:
        (logger.info if r.outcome != "failed" else logger.error)("%s: %s %s", r.item, r.outcome, r.detail)
    if outcome is Outcome.FAILED:
        raise PermanentError(f"platform backup {rid} failed: "
                             + "; ".join(f"{r.item}: {r.detail}" for r in failed) + ("" if ok else f"; {detail}"))
    return report
