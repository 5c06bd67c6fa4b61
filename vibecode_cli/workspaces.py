"""Workspaces: ``provision``, ``resume`` and ``reap`` (idle workspaces)."""

from __future__ import annotations

from typing import Annotated

import typer

from vibecode_cli import outcomes
from vibecode_cli.output import Exit, Json, emit, examples, progress
from vibecode_cli.people import User

PANEL = "Workspaces"


def _kv(console, title: str, data: dict) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left", box=None, padding=(0, 2))
    for key, value in data.items():
        table.add_row(f"[bold]{key}[/bold]", str(value))
    console.print(table)


def _reap_table(console, report) -> None:
    from rich.table import Table

    head = "dry run: nothing written. " if report.dry_run else ""
    counts = ", ".join(f"{n} {a}" for a, n in sorted(report.counts.items())) or "no workspaces"
    table = Table(title=f"{head}Idle reaping: {counts}; {report.unknown} probe(s) failed (kept)",
                  title_justify="left")
    for col in ("workspace", "action", "idle (min)", "reason", "outcome"):
        table.add_column(col, overflow="fold")
    style = {"keep": "", "warn": "yellow", "stop": "bold yellow", "backup": "cyan", "delete": "red",
             "delete-volumes": "red", "cancel-warning": "green"}
    for r in report.rows:
        failed = r.failed
        table.add_row(r.username, f"[{style.get(r.action, '')}]{r.action}[/]" if style.get(r.action) else r.action,
                      "" if r.idle_minutes is None else f"{r.idle_minutes:g}", r.reason,
                      f"[red]{r.outcome}[/red]" if failed else r.outcome)
    console.print(table)


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel=PANEL, epilog=examples(
        ("vibecode provision alice", "install or upgrade, wait until it serves"),
        ("vibecode provision alice --replicas 0", "volumes and release, nothing running (before a restore)")))
    def provision(username: User,
                  replicas: Annotated[int, typer.Option(min=0, max=1, help="1 runs it; 0 creates it stopped.")] = 1,
                  as_json: Json = False) -> int:
        """Install or upgrade one person's workspace.

        The Helm release of charts/vibecode-workspace; waits until it serves. Rerunning with
        the same input changes nothing."""
        from tasks.core.names import validate_username

        validate_username(username)
        from flows.workspace import provision_workspace

        with progress(f"Provisioning the workspace of {username}"):
            result = provision_workspace(username, replicas=replicas)
        emit(result, as_json, lambda c: _kv(c, f"Workspace {result.username}", result.model_dump()))
        return Exit.DONE

    @app.command(rich_help_panel=PANEL, epilog=examples(("vibecode resume alice", "scale to 1 and wait until it serves")))
    def resume(username: User, as_json: Json = False) -> int:
        """Start a stopped workspace again.

        Waits until it serves. A dormant one (release uninstalled by the reaper) is
        reinstalled onto its kept volumes."""
        from tasks.core.names import validate_username

        validate_username(username)
        from flows.reaper import resume_workspace

        with progress(f"Resuming the workspace of {username}"):
            result = resume_workspace(username)
        emit(result, as_json, lambda c: _kv(c, f"Resumed {result.username}", result.model_dump()))
        return Exit.DONE

    @app.command(rich_help_panel=PANEL, epilog=examples(
        ("vibecode reap --dry-run", "what the next scheduled run would do; changes nothing"),
        ("vibecode reap --json", "do it; the decisions as JSON")))
    def reap(dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
             as_json: Json = False) -> int:
        """Warn, then stop, idle workspaces.

        Idleness is code-server's heartbeat; long-stopped workspaces are uninstalled after
        a verified backup (volumes kept). Exit 1 when a decision could not be carried out."""
        from flows.reaper import reap_idle_workspaces

        with progress("Judging idle workspaces" + (" (dry run)" if dry_run else "")):
            report = reap_idle_workspaces(dry_run=dry_run)
        emit(report, as_json, lambda c: _reap_table(c, report))
        return outcomes.reap(report)
