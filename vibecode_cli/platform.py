"""The platform: ``up``, ``status``, ``health``, ``deploy``, ``limits`` and ``gateway``."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tasks.core.errors import InvalidInput, MissingPrerequisite
from vibecode_cli import outcomes

if TYPE_CHECKING:
    from tasks.deploy.spec import PoolType
from vibecode_cli.output import Exit, Json, emit, examples, progress

PANEL = "Platform"
STATE_STYLE = {"running": "green", "starting": "yellow", "stopped": "blue", "dormant": "magenta", "absent": "dim"}


class Pool(str, Enum):
    process = "process"
    kubernetes = "kubernetes"


def prefect_ui() -> str:
    """The Prefect UI of the configured server (PREFECT_API_URL without its /api)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return re.sub(r"/api/?$", "", str(url)) if url else "(none: PREFECT_API_URL is unset, runs use a temporary server)"


# -- status ---------------------------------------------------------------------------------
def overview_json(ov) -> dict:
    return {"at": ov.at.isoformat(), "summary": ov.summary(), "counts": ov.counts,
            "leavers": [r.person for r in ov.leavers],
            "problems": [{"person": p, "problem": m} for p, m in ov.problems],
            "workspaces": [r.model_dump(mode="json") for r in ov.rows]}


def render_overview(console, ov) -> None:
    from rich.table import Table

    table = Table(title=f"VibeCode workspaces at {ov.at:%Y-%m-%d %H:%M} UTC", title_justify="left")
    for col, kw in (("person", {"style": "bold"}), ("state", {}), ("URL", {}), ("CPU", {"justify": "right"}),
                    ("memory", {"justify": "right"}), ("storage", {"justify": "right"}), ("last active", {}),
                    ("last backup", {}), ("HR", {}), ("problems", {"style": "red"})):
        table.add_column(col, **kw)  # type: ignore[arg-type]  # style/justify strings, as rich takes them
    for row, cells in zip(ov.rows, ov.table(), strict=True):
        state = f"[{STATE_STYLE[row.state.value]}]{row.state.value}[/]"
        table.add_row(cells["person"], state, cells["url"], cells["cpu"], cells["memory"], cells["storage"],
                      cells["last_active"], cells["last_backup"], cells["hr"],
                      str(len(row.problems)) if row.problems else "")
    console.print(table)
    counts = "  ".join(f"[{STATE_STYLE[s]}]{s}[/] {n}" for s, n in ov.counts.items())
    console.print(f"\n[bold]By state[/bold]  {counts}")
    if ov.leavers:
        console.print("\n[bold]Leavers[/bold]")
        for r in ov.leavers:
            left = f", left {r.left_at:%Y-%m-%d}" if r.left_at else ""
            console.print(f"  {r.person}: {r.employment}{left}; workspace {r.state.value}", markup=False)
    notes = [r for r in ov.rows if r.note and r.state.value != "absent"]
    if notes:
        console.print("\n[bold]Notes[/bold]")
        for r in notes:
            console.print(f"  {r.person}: {r.note}", markup=False)
    console.print(f"\n[bold]Open problems[/bold] ({len(ov.problems)})" if ov.problems
                  else "\n[bold]Open problems[/bold]: none")
    for person, problem in ov.problems:
        console.print(f"  [red]![/red] {person}: {problem}", highlight=False)
    console.print(f"\n{ov.summary()}. The same list is the [bold]workspace-overview[/bold] artifact in the "
                  f"Prefect UI ({prefect_ui()}/artifacts), refreshed by every health run.", soft_wrap=True)


# -- health ---------------------------------------------------------------------------------
def render_health(console, report) -> None:
    from rich.table import Table

    colour = {"ok": "green", "warning": "yellow", "critical": "bold red"}
    table = Table(title=f"Platform health: {report.status.value}", title_justify="left")
    for col in ("status", "check", "value", "message"):
        table.add_column(col)
    for row in report.table():
        table.add_row(f"[{colour[row['status']]}]{row['status']}[/]", row["check"], row["value"], row["message"])
    console.print(table)
    console.print(f"\noverall: {report.status.value}; sinks: "
                  + ", ".join(f"{k} {v}" for k, v in report.sinks.items()), markup=False)


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel=PANEL, epilog=examples(
        ("vibecode up", "on KIND (needs Docker and kind)"),
        ("vibecode up --kubeconfig ~/.kube/config --user alice", "on a cluster that already runs"),
        ("vibecode up --plan", "what a run would create or upgrade, and why; changes nothing"),
        ("vibecode up --bundle /media/usb/vibecode", "no network: charts and images from `vibecode bundle`")))
    def up(cluster: Annotated[str | None, typer.Option(help="KIND cluster name (default: setting kind_cluster_name).")] = None,
           user: Annotated[str, typer.Option(help="The first workspace to provision.")] = "demo",
           kubeconfig: Annotated[Path | None, typer.Option(help="Use this running cluster instead of KIND.")] = None,
           context: Annotated[str | None, typer.Option(help="The kubeconfig's context (default: its current one).")] = None,
           bundle: Annotated[Path | None, typer.Option(help="Install from this air-gapped bundle (`vibecode bundle`).",
                                                       file_okay=False)] = None,
           plan: Annotated[bool, typer.Option("--plan", help="Say what would change and why; change nothing.")] = False,
           as_json: Json = False) -> int:
        """Create or reuse the cluster, install the platform and provision a first workspace.

        Every component in order behind a readiness gate; a rerun changes nothing and says
        so, a rerun after a failure resumes where it stopped. Summary artifact:
        bootstrap-platform in the Prefect UI."""
        from tasks.cluster import kind
        from tasks.core.names import validate_username
        from tasks.core.settings import get_settings

        validate_username(user, "user")
        name = cluster or get_settings().kind_cluster_name
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", name):
            raise InvalidInput("cluster", "must be a lowercase DNS label of at most 31 characters")
        if bundle is not None and not (bundle / "manifest.json").is_file():
            raise InvalidInput("bundle", f"{str(bundle)[:200]!r} holds no bundle (no manifest.json): "
                                         f"write one with `vibecode bundle DIR`")
        if context is not None and kubeconfig is None:
            raise InvalidInput("context", "needs --kubeconfig (KIND's cluster has one context)")
        if kubeconfig is not None:
            if not kubeconfig.is_file():
                raise InvalidInput("kubeconfig", f"{str(kubeconfig)[:200]!r} is not a file")
        else:
            problems = kind.missing_prerequisites()
            if problems:
                raise MissingPrerequisite([f"cannot bring the platform up on KIND here: {p}" for p in problems])
        from flows.bootstrap import bootstrap_platform

        where = f"cluster of {kubeconfig}" if kubeconfig else f"KIND {name}"
        with progress(f"{'Planning' if plan else 'Bringing the platform up'} ({where})"):
            result = bootstrap_platform(cluster_name=name, workspace_user=user, existing_kubeconfig=kubeconfig,
                                        kube_context=context, bundle=bundle, plan=plan)

        def render(console) -> None:
            from rich.table import Table

            table = Table(title=f"Platform {'plan' if plan else 'components'} on {result.cluster}", title_justify="left")
            for col in ("component", "action", "seconds", "detail"):
                table.add_column(col)
            for o in result.components:
                table.add_row(o.component, o.action, f"{o.seconds:.1f}", o.detail[:160])
            console.print(table)
            if plan:
                console.print("[bold]Plan only[/bold]: nothing changed.")
                return
            console.print(f"[bold green]Platform up.[/bold green] Workspace of {result.username}: "
                          f"[bold]{result.url}[/bold] (release {result.release} revision {result.revision}, "
                          f"{result.ready})\nPrefect UI: [bold]{prefect_ui()}[/bold]", soft_wrap=True)

        emit({**result.model_dump(mode="json"), "prefect_ui": prefect_ui()}, as_json, render)
        return Exit.DONE

    @app.command(rich_help_panel=PANEL, epilog=examples(
        ("vibecode status", "the table, leavers and open problems"),
        ("vibecode status --json | jq '.problems'", "for scripts")))
    def status(as_json: Json = False) -> int:
        """The platform at a glance.

        Every person's workspace (running, starting, stopped, dormant), what it requests,
        when it was last active and last backed up, leavers and open problems. Read-only:
        one LIST each of workspaces, volumes and people."""
        from flows.status import platform_status

        with progress("Listing workspaces, volumes and people"):
            ov = platform_status()
        emit(overview_json(ov), as_json, lambda c: render_overview(c, ov))
        return Exit.DONE

    @app.command(rich_help_panel=PANEL, epilog=examples(
        ("vibecode health", "every check, criticals first"),
        ("vibecode health --json | jq '.checks[] | select(.status != \"ok\")'", "only what is wrong")))
    def health(as_json: Json = False) -> int:
        """Check the platform's health once.

        Publishes to the configured sinks (Datadog, Pushgateway) and refreshes the workspace
        overview. Exit 1 when any check is critical (warnings exit 0)."""
        from flows.health import check_platform_health
        from tasks.health.steps import PlatformUnhealthy

        with progress("Checking the platform"):
            try:
                report = check_platform_health()
            except PlatformUnhealthy as exc:
                report = exc.report
        emit({"status": report.status.value, "checks": report.table(), "sinks": report.sinks}, as_json,
             lambda c: render_health(c, report))
        return outcomes.health(report)

    @app.command(rich_help_panel=PANEL, epilog=examples(
        ("export PREFECT_API_URL=http://127.0.0.1:4200/api", "the server (`prefect server start`)"),
        ("vibecode deploy", "register, then run a process worker until Ctrl-C"),
        ("vibecode deploy --no-worker", "register, print the worker command"),
        ("vibecode deploy --pool kubernetes", "runs become Kubernetes Jobs (worker in the cluster)")))
    def deploy(pool: Annotated[Pool, typer.Option(help="Which pool of prefect.yaml the deployments go to.")] = Pool.process,
               no_worker: Annotated[bool, typer.Option("--no-worker", help="Do not start a worker; print how to.")] = False,
               as_json: Json = False) -> int:
        """Register the deployments with Prefect and start a worker.

        Every deployment of prefect.yaml (schedules, parameters, limits) goes to the server
        PREFECT_API_URL names; then a process worker runs on the pool until Ctrl-C."""
        from tasks.core.settings import get_settings
        from tasks.deploy import register as reg
        from tasks.deploy.spec import load_project

        project = load_project()
        zone = get_settings().backup.timezone
        if zone != project.definitions.timezone:
            raise InvalidInput("backup.timezone", f"is {zone!r} but prefect.yaml's definitions.timezone is "
                                                  f"{project.definitions.timezone!r}: set the timezone there only "
                                                  f"(unset VIBECODE_BACKUP__TIMEZONE)")
        url = reg.check_server()
        kind: PoolType = "kubernetes" if pool is Pool.kubernetes else "process"
        pool_state = reg.ensure_pool(kind, project.pool(kind))
        registered = []
        with progress(f"Registering {len(project.deployments)} deployments with {url}"):
            for spec in project.for_pool(kind):
                registered.append(reg.register(spec, kind))
        w = reg.worker(project, kind, url)
        start = kind == "process" and not no_worker
        result = {"server": url, "ui": prefect_ui(), "pool": w.pool, "pool_type": kind, "pool_state": pool_state,
                  "deployments": [r.model_dump() for r in registered], "worker_command": w.shell,
                  "worker": "starting" if start else "in the cluster (prefect-worker chart)" if kind == "kubernetes"
                  else "not started (--no-worker)"}

        def render(console) -> None:
            from rich.table import Table

            table = Table(title=f"{len(registered)} deployments on pool {w.pool} ({kind}, {pool_state})",
                          title_justify="left")
            for col in ("deployment", "schedule", "concurrency", "parameters", "tags"):
                table.add_column(col)
            for r in registered:
                table.add_row(r.name, ", ".join(r.schedules) or "-", r.concurrency or "-",
                              ", ".join(r.parameters) or "-", ", ".join(r.tags))
            console.print(table)
            console.print(f"\nPrefect UI: [bold]{prefect_ui()}[/bold]")
            if kind == "kubernetes":
                console.print("Runs become Kubernetes Jobs; the worker runs in the cluster (Prefect's "
                              "prefect-worker chart, installed by the platform bootstrap).", soft_wrap=True)
            elif start:
                console.print("Starting a process worker (Ctrl-C stops it):", soft_wrap=True)
            else:
                console.print("Start a worker with:", soft_wrap=True)
            if kind == "process":
                console.print(f"  {w.shell}", markup=False, soft_wrap=True)

        emit(result, as_json, render)
        return reg.run_worker(w) if start else Exit.DONE

    @app.command(rich_help_panel=PANEL, epilog=examples(("vibecode limits", "kube-api, helm, restic, users-db limits from settings")))
    def limits(as_json: Json = False) -> int:
        """Create or update the Prefect tag concurrency limits.

        kube-api, helm, restic and the users database, from settings. Bootstrap does this
        too; safe to rerun."""
        from tasks.cluster.limits import ensure_concurrency_limits

        result = ensure_concurrency_limits()

        def render(console) -> None:
            for tag, n in result.items():
                console.print(f"tag [bold]{tag}[/bold]: at most {n} task runs at once")

        emit(result, as_json, render)
        return Exit.DONE

    @app.command(rich_help_panel=PANEL, epilog=examples(
        ("export VIBECODE_GATEWAY_WEBHOOK_SECRETS='[\"<at least 32 bytes>\"]'", "HMAC secrets (two in a rotation)"),
        ("export VIBECODE_GATEWAY_SCIM_TOKEN='<at least 32 bytes>'", "the identity provider's bearer token"),
        ("vibecode gateway --port 8080", "serve until Ctrl-C")))
    def gateway(host: Annotated[str | None, typer.Option(help="Listen address (default: setting gateway.host).")] = None,
                port: Annotated[int | None, typer.Option(min=1, max=65535,
                                                         help="Listen port (default: setting gateway.port).")] = None,
                as_json: Json = False) -> int:
        """Serve the HR gateway: signed HR webhooks and SCIM 2.0.

        Runs until interrupted and starts onboarding and offboarding runs on PREFECT_API_URL.
        Refuses to start (exit 2) with weak or missing secrets."""
        from gateway.server import RefusedToStart, serve
        from tasks.core.settings import get_settings

        try:
            serve(get_settings(), host=host, port=port)
        except RefusedToStart as exc:
            raise MissingPrerequisite([f"refusing to start: {p}" for p in exc.problems]) from None
        return Exit.DONE
