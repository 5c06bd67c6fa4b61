"""``vibecode``: the command line over the same flows the Prefect UI and schedules run.

Each command validates its input, runs one flow (on the Prefect server named by
PREFECT_API_URL, or Prefect's embedded SQLite server when none is set) and prints the
result as JSON. Exit codes: 0 done, 1 the flow failed, 2 bad input or a missing prerequisite.
"""

from __future__ import annotations

import argparse
import json
import sys

from tasks.core.errors import InvalidInput, PermanentError


def _print(result) -> None:
    if hasattr(result, "model_dump"):
        result = result.model_dump(mode="json")
    print(json.dumps(result, indent=2, default=str))


def cmd_up(args) -> int:
    from tasks.cluster import kind

    if args.kubeconfig:
        from pathlib import Path

        from flows.bootstrap import bootstrap_platform
        from tasks.core.settings import get_settings

        _print(bootstrap_platform(cluster_name=args.cluster or get_settings().kind_cluster_name,
                                  workspace_user=args.user, existing_kubeconfig=Path(args.kubeconfig)))
        return 0
    problems = kind.missing_prerequisites()
    if problems:
        print("vibecode up: cannot bring the platform up on KIND here:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 2
    from flows.bootstrap import bootstrap_platform

    from tasks.core.settings import get_settings

    _print(bootstrap_platform(cluster_name=args.cluster or get_settings().kind_cluster_name,
                              workspace_user=args.user))
    return 0


def cmd_provision(args) -> int:
    from flows.workspace import provision_workspace
    from tasks.core.names import validate_username

    validate_username(args.username)
    _print(provision_workspace(args.username, replicas=args.replicas))
    return 0


def cmd_limits(args) -> int:
    from tasks.cluster.limits import ensure_concurrency_limits

    _print(ensure_concurrency_limits())
    return 0


MAX_EVENT_BYTES = 65_536  # a real HR event is < 4 kB
HR_COMMAND_TYPES = {"onboard": ("employee.hired", "employee.updated"), "offboard": ("employee.terminated",)}


def _read_event(path: str) -> bytes:
    """The raw event from a file or ``-`` (stdin), read no further than the size limit allows."""
    try:
        if path == "-":
            return sys.stdin.buffer.read(MAX_EVENT_BYTES + 1)
        with open(path, "rb") as fh:
            return fh.read(MAX_EVENT_BYTES + 1)
    except OSError as exc:
        raise InvalidInput("event", f"cannot read {path[:200]!r}: {exc.strerror or type(exc).__name__}") from None


def parse_hr_event(raw: bytes | str, command: str):
    """Everything ``vibecode onboard|offboard`` checks before any flow starts: size, encoding,
    JSON, the HR request itself, and that the event type belongs to the command.

    Returns the validated :class:`tasks.people.hr.HRRequest`; anything else is ``InvalidInput``
    naming the field, so hostile input never surfaces as another exception type.
    """
    from tasks.people.hr import parse_request

    if isinstance(raw, str):
        try:
            raw = raw.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput("event", "is not valid UTF-8 text") from None
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidInput("event", "is larger than 64 KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("event", "is not UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput("event", f"is not JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise InvalidInput("event", "nests too deeply") from None
    except ValueError as exc:  # e.g. an integer longer than Python's digit limit
        raise InvalidInput("event", f"is not usable JSON ({str(exc)[:80]})") from None
    request = parse_request(data)
    allowed = HR_COMMAND_TYPES[command]
    if request.type not in allowed:
        raise InvalidInput("type", f"{request.type!r} does not belong to `vibecode {command}` "
                                   f"(expected {' or '.join(allowed)})")
    return request


def _hr_command(args) -> int:
    request = parse_hr_event(_read_event(args.event), args.command)  # validates before any flow runs
    from flows.onboarding import run_hr_event

    _print(run_hr_event(request.model_dump(mode="json")))
    return 0


def cmd_onboard(args) -> int:
    return _hr_command(args)


def cmd_offboard(args) -> int:
    return _hr_command(args)


def _print_qr(data: str) -> None:
    """An ASCII QR code, only if the optional ``qrcode`` package is installed."""
    try:
        import qrcode
    except ImportError:
        print("(install the `qrcode` package to also get a QR code here)")
        return
    qr = qrcode.QRCode(border=2)
    qr.add_data(data)
    qr.make(fit=True)
    qr.print_ascii(out=sys.stdout, invert=True)


def cmd_totp_handoff(args) -> int:
    """Print a pre-provisioned TOTP setup to the administrator's terminal, once (it is deleted)."""
    from tasks.people.totp_steps import totp_handoff

    handoff = totp_handoff(args.username)  # PermanentError (exit 1) when there is nothing to hand off
    print(f"TOTP setup for {handoff.username} (issuer {handoff.issuer}): scan or enter it in their "
          f"authenticator app,")
    print("in person. It is shown once: the hand-off Secret has been deleted.\n")
    print(handoff.uri)
    _print_qr(handoff.uri)
    return 0


def cmd_backup(args) -> int:
    from flows.backup import backup_workspaces
    from tasks.backup.status import Outcome
    from tasks.core.names import validate_username

    for user in args.usernames:
        validate_username(user)
    report = backup_workspaces(usernames=args.usernames or None)
    _print({"outcome": report.outcome.value, "workspaces": report.table()})
    return 0 if report.outcome is Outcome.COMPLETED else 1


def cmd_restore(args) -> int:
    from tasks.core.names import validate_username

    validate_username(args.username)
    if args.list:
        from tasks.backup.repo import list_snapshots

        _print([{"id": s.id[:8], "time": s.time.isoformat(), "tags": list(s.tags)}
                for s in list_snapshots(args.username)])
        return 0
    from tasks.core.names import validate_snapshot_id

    validate_snapshot_id(args.snapshot)
    from flows.restore import restore_workspace

    _print(restore_workspace(args.username, snapshot=args.snapshot,
                             target="in-place" if args.in_place else "new-pvc"))
    return 0


def _health_table(rows: list[dict]) -> str:
    cols = ("status", "check", "value", "message")
    widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in cols[:-1]}
    lines = ["  ".join(c.upper().ljust(widths.get(c, 0)) for c in cols).rstrip()]
    lines += ["  ".join(str(r[c]).ljust(widths.get(c, 0)) for c in cols).rstrip() for r in rows]
    return "\n".join(lines)


def cmd_health(args) -> int:
    """Run the health checks once; exit 1 when any is critical (warnings exit 0)."""
    from tasks.health.steps import PlatformUnhealthy
    from flows.health import check_platform_health
    from tasks.health.checks import Status

    try:
        report = check_platform_health()
    except PlatformUnhealthy as exc:
        report = exc.report
    if args.json:
        _print({"status": report.status.value, "checks": report.table(), "sinks": report.sinks})
    else:
        print(_health_table(report.table()))
        print(f"\noverall: {report.status.value}; sinks: "
              + ", ".join(f"{k} {v}" for k, v in report.sinks.items()))
    return 1 if report.status is Status.CRITICAL else 0


def cmd_gateway(args) -> int:
    """Serve the HR gateway (signed webhooks + SCIM) until interrupted."""
    from gateway.server import RefusedToStart, serve
    from tasks.core.settings import get_settings

    try:
        serve(get_settings(), host=args.host, port=args.port)
    except RefusedToStart as exc:
        print("vibecode gateway: refusing to start:", file=sys.stderr)
        for p in exc.problems:
            print(f"  - {p}", file=sys.stderr)
        return 2
    return 0


def cmd_rotate_restic_password(args) -> int:
    """Passwords come only from the environment (VIBECODE_RESTIC_PASSWORD, VIBECODE_RESTIC_NEW_PASSWORD)."""
    from flows.restore import rotate_restic_password

    _print(rotate_restic_password())
    return 0


def cmd_reap(args) -> int:
    from flows.reaper import reap_idle_workspaces

    report = reap_idle_workspaces(dry_run=args.dry_run)
    if args.json:
        _print(report)
    else:
        print(f"{'dry run: ' if report.dry_run else ''}{report.counts}; {report.unknown} probe(s) failed (kept)")
        for r in report.rows:
            print(f"{r.username:<24} {r.action:<15} {r.reason}{'  -> ' + r.outcome if r.outcome else ''}")
    return 1 if any(r.outcome.startswith(("failed", "backup failed")) for r in report.rows) else 0


def cmd_resume(args) -> int:
    from tasks.core.names import validate_username

    validate_username(args.username)
    from flows.reaper import resume_workspace

    _print(resume_workspace(args.username))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vibecode", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="create or reuse the KIND cluster and provision a workspace")
    up.add_argument("--cluster", default=None, help="KIND cluster name (default: setting kind_cluster_name)")
    up.add_argument("--user", default="demo", help="workspace to provision (default: demo)")
    up.add_argument("--kubeconfig", help="use this running cluster instead of KIND (scripts/up's one-node cluster)")
    up.set_defaults(func=cmd_up)
    pr = sub.add_parser("provision", help="install or upgrade one user's workspace")
    pr.add_argument("username")
    pr.add_argument("--replicas", type=int, choices=[0, 1], default=1)
    pr.set_defaults(func=cmd_provision)
    for name, func, what in (("onboard", cmd_onboard, "employee.hired or employee.updated"),
                             ("offboard", cmd_offboard, "employee.terminated")):
        hr = sub.add_parser(name, help=f"run an HR event ({what}) from a JSON file")
        hr.add_argument("event", help="path to the event JSON (the HR API's body), or - for stdin")
        hr.set_defaults(func=func)
    th = sub.add_parser("totp-handoff", help="show a pre-provisioned TOTP setup once (to hand over in "
                                             "person), then delete it; exit 1 if there is nothing to hand off")
    th.add_argument("username")
    th.set_defaults(func=cmd_totp_handoff)
    bk = sub.add_parser("backup", help="back up workspaces now (all when none is named)")
    bk.add_argument("usernames", nargs="*")
    bk.set_defaults(func=cmd_backup)
    rs = sub.add_parser("restore", help="restore a workspace snapshot (into a new volume by default)")
    rs.add_argument("username")
    rs.add_argument("--snapshot", default="latest", help="snapshot id or 'latest'")
    rs.add_argument("--in-place", action="store_true", help="overwrite the stopped workspace's own volume")
    rs.add_argument("--list", action="store_true", help="list the snapshots instead of restoring")
    rs.set_defaults(func=cmd_restore)
    he = sub.add_parser("health", help="check the platform once (exit 1 when any check is critical)")
    he.add_argument("--json", action="store_true", help="print the checks as JSON")
    he.set_defaults(func=cmd_health)
    gw = sub.add_parser("gateway", help="serve the HR gateway: signed HR webhooks and SCIM 2.0 (starts "
                                        "onboarding/offboarding runs on PREFECT_API_URL)")
    gw.add_argument("--host", default=None, help="listen address (default: setting gateway_host)")
    gw.add_argument("--port", type=int, default=None, help="listen port (default: setting gateway_port)")
    gw.set_defaults(func=cmd_gateway)
    rot = sub.add_parser("rotate-restic-password",
                         help="move every backup repository to the password in VIBECODE_RESTIC_NEW_PASSWORD "
                              "(old: VIBECODE_RESTIC_PASSWORD); then make the new one VIBECODE_RESTIC_PASSWORD")
    rot.set_defaults(func=cmd_rotate_restic_password)
    rp = sub.add_parser("reap", help="warn, then stop, idle workspaces; delete long-stopped ones after a verified "
                                     "backup")
    rp.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    rp.add_argument("--json", action="store_true", help="the whole report as JSON")
    rp.set_defaults(func=cmd_reap)
    rm = sub.add_parser("resume", help="start a stopped workspace again and wait until it serves")
    rm.add_argument("username")
    rm.set_defaults(func=cmd_resume)
    lim = sub.add_parser("limits", help="create or update Prefect tag concurrency limits from settings")
    lim.set_defaults(func=cmd_limits)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InvalidInput as exc:
        print(f"vibecode {args.command}: invalid input: {exc}", file=sys.stderr)
        return 2
    except PermanentError as exc:
        print(f"vibecode {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
