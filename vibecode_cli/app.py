"""The ``vibecode`` application: the command groups, and the one place where errors become
exit codes.

Every command validates its input before it imports or runs a flow, so a refusal (exit 2)
has changed nothing. Flows run in this process against the Prefect server PREFECT_API_URL
names (or Prefect's temporary local server when none is set), exactly as a worker would run
them, so the run, its logs and its artifacts are in the Prefect UI either way.
"""

from __future__ import annotations

import sys

import typer
from typer.exceptions import TyperException

from tasks.core.errors import InvalidInput, MissingPrerequisite, PermanentError
from vibecode_cli import airgap, backups, image, people, platform, recovery, trust, workspaces
from vibecode_cli.output import Exit, fail

HELP = """Run the VibeCode platform's lifecycle from a terminal: the same flows the Prefect UI,
the schedules and the HR gateway run. `vibecode COMMAND --help` shows each with examples.

**Exit codes**: 0 done; 1 the flow failed (or reported a failure: a critical check, a
backup that did not complete, a reaper decision not carried out); 2 refused before anything
ran (invalid input or a missing prerequisite: nothing changed).

Every command takes **--json**: one JSON document on stdout, logs and progress on stderr.
Shell completion: `vibecode --install-completion`."""

app = typer.Typer(name="vibecode", help=HELP, rich_markup_mode="markdown", no_args_is_help=True,
                  pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]})

for group in (platform, airgap, trust, image, people, workspaces, backups, recovery):  # one module per group, in --help's order
    group.register(app)


def _command(argv: list[str]) -> str:
    return next((a for a in argv if not a.startswith("-")), "")


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code (see HELP). ``argv`` without the program name."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command, as_json = _command(argv), "--json" in argv
    try:
        code = app(args=argv, prog_name="vibecode", standalone_mode=False)
    except TyperException as exc:  # usage errors (unknown option, bad value, missing argument) exit 2
        show = getattr(exc, "show", None)
        show() if show else print(f"vibecode {command}: {exc.format_message()}", file=sys.stderr)
        return int(getattr(exc, "exit_code", Exit.BAD_INPUT))
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"vibecode {command}: interrupted (a flow run that was going is marked crashed in the "
              f"Prefect UI; rerunning is safe)", file=sys.stderr)
        return 130
    except InvalidInput as exc:
        return fail(command, f"invalid input: {exc}", as_json, Exit.BAD_INPUT, field=exc.field)
    except MissingPrerequisite as exc:
        code = fail(command, exc.problems[0] if exc.problems else str(exc), as_json, Exit.BAD_INPUT,
                    problems=exc.problems)
        for p in exc.problems[1:]:
            print(f"  - {p}", file=sys.stderr)
        return code
    except PermanentError as exc:
        return fail(command, str(exc), as_json, Exit.FAILED)
    return int(code or 0)
