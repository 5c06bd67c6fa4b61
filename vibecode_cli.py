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

    _print(bootstrap_platform(cluster_name=args.cluster, workspace_user=args.user))
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vibecode", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="create or reuse the KIND cluster and provision a workspace")
    up.add_argument("--cluster", default="vibecode")
    up.add_argument("--user", default="demo", help="workspace to provision (default: demo)")
    up.set_defaults(func=cmd_up)
    pr = sub.add_parser("provision", help="install or upgrade one user's workspace")
    pr.add_argument("username")
    pr.add_argument("--replicas", type=int, choices=[0, 1], default=1)
    pr.set_defaults(func=cmd_provision)
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
