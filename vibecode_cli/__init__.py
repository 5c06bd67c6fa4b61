"""``vibecode``: the command line over the same flows the Prefect UI and schedules run.

Each command validates its input, runs one flow (on the Prefect server named by
PREFECT_API_URL, or Prefect's embedded SQLite server when none is set) and prints the
result as JSON. Exit codes: 0 done, 1 the flow failed, 2 bad input or a missing prerequisite.
"""

from __future__ import annotations

import argparse
import json
import sys

from tasks.errors import InvalidInput, PermanentError


def _print(result) -> None:
    if hasattr(result, "model_dump"):
        result = result.model_dump(mode="json")
    print(json.dumps(result, indent=2, default=str))


def cmd_up(args) -> int:
    from tasks import kind

    problems = kind.missing_prerequisites()
    if problems:
        print("vibecode up: cannot bring the platform up on KIND here:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 2
    from flows.bootstrap import bootstrap_platform

    from tasks.settings import get_settings

    _print(bootstrap_platform(cluster_name=args.cluster or get_settings().kind_cluster_name,
                              workspace_user=args.user))
    return 0


def cmd_provision(args) -> int:
    from flows.workspace import provision_workspace
    from tasks.names import validate_username

    validate_username(args.username)
    _print(provision_workspace(args.username, replicas=args.replicas))
    return 0


def cmd_limits(args) -> int:
    from tasks.limits import ensure_concurrency_limits

    _print(ensure_concurrency_limits())
    return 0


def _read_event(path: str) -> object:
    """An HR event as JSON from a file or ``-`` (stdin). Bounded: a real event is < 4 kB."""
    raw = sys.stdin.read(65_537) if path == "-" else open(path, encoding="utf-8").read(65_537)
    if len(raw) > 65_536:
        raise InvalidInput("event", "is larger than 64 KiB")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput("event", f"is not JSON ({exc.msg} at line {exc.lineno})") from None


def _hr_command(args, allowed: tuple[str, ...]) -> int:
    from flows.onboarding import run_hr_event
    from tasks.hr import parse_request

    request = parse_request(_read_event(args.event))  # validates before any flow runs
    if request.type not in allowed:
        raise InvalidInput("type", f"{request.type!r} does not belong to `vibecode {args.command}` "
                                   f"(expected {' or '.join(allowed)})")
    _print(run_hr_event(request.model_dump(mode="json")))
    return 0


def cmd_onboard(args) -> int:
    return _hr_command(args, ("employee.hired", "employee.updated"))


def cmd_offboard(args) -> int:
    return _hr_command(args, ("employee.terminated",))


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
    """Print a pre-provisioned TOTP setup to the administrator's terminal, once, then delete it."""
    import base64
    from datetime import datetime, timezone

    from tasks import totp
    from tasks.backup_jobs import job_state
    from tasks.kube import connect
    from tasks.names import validate_username
    from tasks.settings import get_settings

    username = validate_username(args.username)
    s = get_settings()
    kube = connect(s)
    ns, name = s.platform_namespace, totp.handoff_name(username)
    secret = kube.get("Secret", ns, name)
    if secret is None:
        print(f"vibecode totp-handoff: nothing to hand off for {username} (already handed off, expired, "
              f"or never pre-provisioned)", file=sys.stderr)
        return 1
    state, reason = job_state(kube.get("Job", ns, name))
    if state != "succeeded":
        print(f"vibecode totp-handoff: Authelia has not registered {username}'s TOTP yet (Job {ns}/{name}: "
              f"{state}, {reason}); nothing handed off", file=sys.stderr)
        return 1
    if totp.is_expired(secret, datetime.now(timezone.utc)):
        kube.delete("Secret", ns, name)
        print(f"vibecode totp-handoff: {username}'s hand-off expired and was deleted; nothing handed off",
              file=sys.stderr)
        return 1
    value = base64.b64decode((secret.get("data") or {})[totp.SECRET_KEY]).decode("ascii")
    issuer = (secret["metadata"].get("annotations") or {}).get(totp.ISSUER_ANNOTATION) or s.totp_issuer
    uri = totp.otpauth_uri(username, value, issuer)
    print(f"TOTP setup for {username} (issuer {issuer}): scan or enter it in their authenticator app,")
    print("in person. It is shown once: the hand-off Secret is deleted now.\n")
    print(uri)
    _print_qr(uri)
    kube.delete("Secret", ns, name)
    return 0


def cmd_backup(args) -> int:
    from flows.backup import backup_workspaces
    from tasks.backup_status import Outcome
    from tasks.names import validate_username

    for user in args.usernames:
        validate_username(user)
    report = backup_workspaces(usernames=args.usernames or None)
    _print({"outcome": report.outcome.value, "workspaces": report.table()})
    return 0 if report.outcome is Outcome.COMPLETED else 1


def cmd_restore(args) -> int:
    from tasks.names import validate_username

    validate_username(args.username)
    if args.list:
        from tasks.backup_repo import list_snapshots

        _print([{"id": s.id[:8], "time": s.time.isoformat(), "tags": list(s.tags)}
                for s in list_snapshots(args.username)])
        return 0
    from flows.backup import SNAPSHOT_RE, restore_workspace

    if not SNAPSHOT_RE.match(args.snapshot):
        raise InvalidInput("snapshot", "must be 'latest' or a restic snapshot id (hex)")
    _print(restore_workspace(args.username, snapshot=args.snapshot,
                             target="in-place" if args.in_place else "new-pvc"))
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
    from tasks.names import validate_username

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
