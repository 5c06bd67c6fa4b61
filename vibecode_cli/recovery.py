"""Disaster recovery: ``backup-platform`` (what the nightly run does) and ``recover --from``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vibecode_cli.output import Exit, Json, emit, examples, progress

PANEL = "Disaster recovery"


def _rows_table(console, title: str, rows: list[dict[str, str]]) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    cols = list(rows[0]) if rows else ["what", "outcome"]
    for col in cols:
        table.add_column(col)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in cols))
    console.print(table)


def register(app: typer.Typer) -> None:
    @app.command("backup-platform", rich_help_panel=PANEL, epilog=examples(
        ("vibecode backup-platform", "the platform's own state into its restic repository, as at 03:00")))
    def backup_platform(as_json: Json = False) -> int:
        """Back up the platform itself now.

        Authelia's and Prefect's databases (pg_dump streamed into restic), the users database,
        the ledger and the platform Secrets; then restic check and retention. The repository's
        password comes from VIBECODE_RECOVERY__PASSWORD or a Prefect Secret block, never the cluster."""
        from flows.platform_backup import backup_platform as flow

        with progress("Backing up the platform"):
            report = flow()
        emit(report, as_json, lambda c: _rows_table(c, f"Platform backup {report.run_id}: {report.outcome.value}",
                                                    [r.model_dump() for r in report.items]))
        return Exit.DONE

    @app.command(rich_help_panel=PANEL, epilog=examples(
        ("VIBECODE_RECOVERY__PASSWORD=... vibecode recover --from s3:https://s3.example.com/vibecode-backups/_platform",
         "rebuild the platform on the (new, empty) cluster of the current kubeconfig"),
        ("vibecode recover --from s3://s3.example.com/vibecode-backups/_platform --set 1a2b3c4d --no-bootstrap",
         "one particular night's set; the charts are installed already")))
    def recover(source: Annotated[str, typer.Option("--from", help="The platform repository in S3.")],
                backup_set: Annotated[str, typer.Option("--set", help="A run id, or 'latest' (newest complete).")]
                = "latest",
                bootstrap: Annotated[bool, typer.Option(help="Install the platform with the recovered Secrets.")]
                = True,
                kubeconfig: Annotated[Path | None, typer.Option(help="Kubeconfig of the new cluster "
                                                                     "(bootstrap's --kubeconfig).")] = None,
                force: Annotated[bool, typer.Option("--force", help="Recover onto a cluster that already runs "
                                                    "a platform, replacing its Secrets, users and ledger.")]
                = False,
                as_json: Json = False) -> int:
        """Recover the whole platform on a new, empty cluster from S3.

        Secrets first (so every backup and Authelia's storage stay readable), then bootstrap,
        the databases, the users database and the ledger, then every active person's workspace
        with their newest good snapshot. Leavers stay disabled. Resumable: rerun after a failure.
        Credentials only from the environment (S3 keys, VIBECODE_RECOVERY__PASSWORD)."""
        import re

        from tasks.core.errors import InvalidInput
        from tasks.dr.plan import parse_source

        parse_source(source)
        if backup_set != "latest" and not re.fullmatch(r"[0-9a-f]{8,64}", backup_set):
            raise InvalidInput("set", "is a run id (hex) or 'latest'")
        if kubeconfig is not None and not kubeconfig.is_file():
            raise InvalidInput("kubeconfig", f"{kubeconfig} is not a file")
        from flows.recover import recover_platform

        with progress(f"Recovering the platform from {source}"):
            result = recover_platform(source, backup_set=backup_set, bootstrap=bootstrap,
                                      existing_kubeconfig=kubeconfig, force=force)
        emit(result, as_json, lambda c: _rows_table(c, f"Recovered backup set {result.set_run_id} "
                                                       f"({result.set_time})", result.rows))
        return Exit.FAILED if result.failed else Exit.DONE
