"""Tell the platform team when a backup run was not Completed.

Users of the trusted backup tools ask for this most after rotation: a silent nightly
failure is found only on the day a restore is needed. The notice names each workspace
that did not complete, its outcome and reason; it carries no secret (reasons come from
our own classification, not from restic's environment).
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate

from tasks.backup.status import BackupReport, Outcome
from tasks.core.settings import MailSettings


def backup_failure_notice(report: BackupReport, mail: MailSettings) -> EmailMessage | None:
    """The email for a run that was not Completed, or None (nothing to say, or nobody to tell)."""
    if report.outcome is Outcome.COMPLETED or not mail.ops_email:
        return None
    bad = [w for w in report.workspaces if w.outcome is not Outcome.COMPLETED]
    msg = EmailMessage()
    msg["From"] = mail.sender
    msg["To"] = mail.ops_email
    msg["Subject"] = f"[VibeCode] backup run {report.outcome.value}: {len(bad)} of {len(report.workspaces)} workspaces"
    msg["Date"] = formatdate(localtime=False)
    lines = [f"Backup run started {report.started:%Y-%m-%d %H:%M} UTC finished {report.outcome.value}.", ""]
    lines += [f"- {w.username}: {w.outcome.value}: {w.reason or 'no reason recorded'}" for w in bad]
    lines += ["", "The last good snapshot of each workspace is kept; see the workspace-backups artifact "
              "in the Prefect UI, and `vibecode restore <user> --list`."]
    msg.set_content("\n".join(lines) + "\n")
    return msg
