"""Exit codes from the flows' typed results, in one place (0 done, 1 failed).

Each function maps one flow's result type to :class:`vibecode_cli.output.Exit`, so the
rule a script relies on is readable here and tested once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vibecode_cli.output import Exit

if TYPE_CHECKING:
    from tasks.backup.restore_steps import RestoreResult
    from tasks.backup.status import BackupReport
    from tasks.health.checks import HealthReport
    from tasks.reaper.steps import ReapReport, ReapRow


def backup(report: "BackupReport") -> Exit:
    """Velero's outcomes: only Completed is done; PartiallyFailed and Failed need a person."""
    from tasks.backup.status import Outcome

    return Exit.DONE if report.outcome is Outcome.COMPLETED else Exit.FAILED


def restore(result: "RestoreResult") -> Exit:
    from tasks.backup.status import Outcome

    return Exit.DONE if result.outcome is Outcome.COMPLETED else Exit.FAILED


def health(report: "HealthReport") -> Exit:
    """A critical check fails; a warning does not (it is in the report)."""
    from tasks.health.checks import Status

    return Exit.FAILED if report.status is Status.CRITICAL else Exit.DONE


def reap_row_failed(row: "ReapRow") -> bool:
    """Whether the reaper could not carry out this row's decision. The reaper's outcomes are
    still strings ("failed: ...", "backup failed: ..."): this is the one place that reads
    them, to switch to a typed outcome when the reaper has one."""
    return row.outcome.startswith(("failed", "backup failed"))


def reap(report: "ReapReport") -> Exit:
    return Exit.FAILED if any(reap_row_failed(r) for r in report.rows) else Exit.DONE
