"""Backups: ``backup``, ``restore`` (and ``restore --list``), ``rotate-restic-password``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from vibecode_cli import outcomes
from vibecode_cli.output import Exit, Json, emit, examples, progress
from vibecode_cli.people import User

PANEL = "Backups"


def _backup_table(console, report) -> None:
    from rich.table import Table

    table = Table(title=f"Backup {report.outcome.value}: {len(report.workspaces)} workspace(s)", title_justify="left")
    for col in ("workspace", "outcome", "snapshot", "verified", "seconds", "reason"):
        table.add_column(col)
    colour = {"Completed": "green", "PartiallyFailed": "yellow", "Failed": "red"}
    for row in report.table():
        table.add_row(row["workspace"], f"[{colour[row['outcome']]}]{row['outcome']}[/]", row["snapshot"],
                      "yes" if row["verified"] else "no", f"{row['seconds']:g}", row["reason"])
    console.print(table)


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel=PANEL, epilog=examples(
        ("vibecode backup", "every workspace volume, as the nightly run does"),
        ("vibecode backup alice bob --json", "two of them; the outcome as JSON")))
    def backup(usernames: Annotated[list[str] | None, typer.Argument(
                   metavar="[USERNAME]...", help="Whose workspaces; none means every workspace volume.")] = None,
               as_json: Json = False) -> int:
        """Back up workspaces now.

        restic to S3, then retention and verification, as the nightly run does. Exit 1
        unless every workspace Completed (PartiallyFailed and Failed need a person)."""
        from tasks.core.names import validate_username

        for user in usernames or []:
            validate_username(user)
        from flows.backup import backup_workspaces

        with progress(f"Backing up {', '.join(usernames) if usernames else 'every workspace'}"):
            report = backup_workspaces(usernames=usernames or None)
        emit({"outcome": report.outcome.value, "workspaces": report.table()}, as_json,
             lambda c: _backup_table(c, report))
        return outcomes.backup(report)

    @app.command(rich_help_panel=PANEL, epilog=examples(
        ("vibecode restore alice --list", "her snapshots"),
        ("vibecode restore alice --snapshot 0123abcd", "into a new volume beside hers"),
        ("vibecode restore alice --in-place", "her stopped workspace gets exactly the latest snapshot")))
    def restore(username: User,
                snapshot: Annotated[str, typer.Option(help="A snapshot id (hex, from --list) or 'latest'.")] = "latest",
                in_place: Annotated[bool, typer.Option(
                    "--in-place", help="Overwrite the stopped workspace's own volume (after a verified "
                                       "pre-restore backup).")] = False,
                list_: Annotated[bool, typer.Option("--list", help="List the snapshots instead.")] = False,
                as_json: Json = False) -> int:
        """Restore a workspace snapshot (into a new volume by default).

        In place needs the workspace stopped and takes a verified pre-restore backup first;
        the volume then holds exactly the snapshot's files."""
        from tasks.core.names import validate_snapshot_id, validate_username

        validate_username(username)
        if list_:
            from tasks.backup.repo import list_snapshots

            snaps: list[dict[str, Any]] = [{"id": s.id[:8], "time": s.time.isoformat(), "tags": list(s.tags)}
                     for s in list_snapshots(username)]

            def render(console) -> None:
                from rich.table import Table

                table = Table(title=f"Snapshots of {username}", title_justify="left")
                for col in ("id", "time", "tags"):
                    table.add_column(col)
                for s in snaps:
                    table.add_row(s["id"], s["time"], ", ".join(s["tags"]))
                console.print(table)

            emit(snaps, as_json, render)
            return Exit.DONE
        validate_snapshot_id(snapshot)
        from flows.restore import restore_workspace

        with progress(f"Restoring {snapshot} of {username} {'in place' if in_place else 'into a new volume'}"):
            result = restore_workspace(username, snapshot=snapshot, target="in-place" if in_place else "new-pvc")

        def render_result(console) -> None:
            console.print(f"[bold]{result.outcome.value}[/bold]: snapshot {result.snapshot_id[:8]} of "
                          f"{result.username} restored into volume [bold]{result.pvc}[/bold] ({result.target})"
                          + (f"; pre-restore snapshot {result.pre_restore_snapshot[:8]}"
                             if result.pre_restore_snapshot else ""))

        emit(result, as_json, render_result)
        return outcomes.restore(result)

    @app.command("rotate-restic-password", rich_help_panel=PANEL, epilog=examples(
        ("VIBECODE_RESTIC_NEW_PASSWORD=... vibecode rotate-restic-password", "then make it VIBECODE_RESTIC_PASSWORD")))
    def rotate(as_json: Json = False) -> int:
        """Move every backup repository to a new restic password.

        The new one from VIBECODE_RESTIC_NEW_PASSWORD, the old from VIBECODE_RESTIC_PASSWORD:
        passwords come only from the environment, never from the command line."""
        from flows.restore import rotate_restic_password
        from tasks.core.errors import InvalidInput
        from tasks.core.settings import get_settings

        s = get_settings()  # checked here too, so a missing password never reaches a flow run
        if s.backup.restic_new_password is None or not s.backup.restic_new_password.get_secret_value():
            raise InvalidInput("restic_new_password", "is not set (environment VIBECODE_RESTIC_NEW_PASSWORD)")
        with progress("Rotating the restic password of every repository"):
            rows = rotate_restic_password()

        def render(console) -> None:
            from rich.table import Table

            table = Table(title=f"restic password rotated for {len(rows)} repositories", title_justify="left")
            table.add_column("repository")
            table.add_column("steps")
            for user, steps in rows.items():
                table.add_row(user, steps)
            console.print(table)

        emit(rows, as_json, render)
        return Exit.DONE
