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
    from tasks.reaper.steps import ReapReport


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


def reap(report: "ReapReport") -> Exit:
    """A decision the reaper could not carry out (its typed outcome kind) fails the command."""
    return Exit.FAILED if report.failed else Exit.DONE
