"""What every command shares: exit codes, the ``--json`` switch, printing results, and the
progress line while a flow runs.

Streams: results go to stdout (a rich rendering, or with ``--json`` one JSON document and
nothing else); progress, Prefect's run logs and errors go to stderr. So
``vibecode status --json | jq`` always parses.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import contextmanager
from enum import IntEnum
from typing import Annotated, Any, Callable, Iterator

import typer
from rich.console import Console


class Exit(IntEnum):
    """The exit codes of every command (documented in ``vibecode --help``)."""

    DONE = 0  # the flow ran and did what was asked
    FAILED = 1  # the flow ran and failed (or reported a failure: a critical check, a failed backup)
    BAD_INPUT = 2  # refused before anything ran: invalid input, or a missing prerequisite


Json = Annotated[bool, typer.Option("--json", help="Print the result as one JSON document on stdout "
                                                   "(logs and progress stay on stderr).")]


def stdout() -> Console:
    """A console on the current stdout. Into a pipe or a file, lines are never wrapped (so
    grep finds whole rows) unless COLUMNS asks for a width."""
    width = None
    if not sys.stdout.isatty():
        width = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else 1000
    return Console(file=sys.stdout, width=width, soft_wrap=False, highlight=False)


def stderr() -> Console:
    return Console(file=sys.stderr, highlight=False)


def jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def emit(result: Any, as_json: bool, render: Callable[[Console], None]) -> None:
    """``--json``: the result as JSON; else ``render`` draws it for a person."""
    if as_json:
        sys.stdout.write(json.dumps(jsonable(result), indent=2, default=str) + "\n")
        sys.stdout.flush()
    else:
        render(stdout())


def fail(command: str, message: str, as_json: bool, code: Exit, **extra: Any) -> int:
    """A refusal or failure: the message on stderr, and with ``--json`` also as JSON on stdout."""
    print(f"vibecode {command}: {message}", file=sys.stderr)
    if as_json:
        sys.stdout.write(json.dumps({"ok": False, "exit": int(code), "error": message, **extra}) + "\n")
    return int(code)


class _ToStatus(logging.Handler):
    """Prefect's run log lines, shown above the spinner (and the latest one beside it)."""

    def __init__(self, status, title: str):
        super().__init__(logging.INFO)
        self.status, self.title = status, title

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage().splitlines()[0][:160]
        except Exception:  # noqa: BLE001 - a log line must never break the command
            return
        name = getattr(record, "task_run_name", None) or getattr(record, "flow_run_name", None) or ""
        self.status.console.print(f"[dim]{name}[/dim] {msg}" if name else msg, markup=False)
        self.status.update(f"{self.title} [dim]({name or 'running'})[/dim]")


@contextmanager
def progress(title: str) -> Iterator[None]:
    """A spinner with the flow's live log on stderr while a flow runs, when stderr is a
    terminal. Elsewhere (CI, pipes) Prefect's own log lines go to stderr unchanged."""
    err = stderr()
    if not err.is_terminal:
        print(f"{title} ...", file=sys.stderr)
        yield
        return
    root = logging.getLogger()
    consoles = [h for h in root.handlers if type(h).__name__ == "PrefectConsoleHandler"]
    levels = [h.level for h in consoles]
    with err.status(title) as status:
        handler = _ToStatus(status, title)
        run_loggers = [logging.getLogger(n) for n in ("prefect.flow_runs", "prefect.task_runs")]
        for h in consoles:
            h.setLevel(logging.WARNING)  # info lines come through the spinner instead
        for lg in run_loggers:
            lg.addHandler(handler)
        try:
            yield
        finally:
            for lg in run_loggers:
                lg.removeHandler(handler)
            for h, level in zip(consoles, levels, strict=True):
                h.setLevel(level)


def examples(*lines: str | tuple[str, str]) -> str:
    """A command's ``--help`` epilog: commands to copy, each under a comment saying what it does."""
    pairs = [(x, "") if isinstance(x, str) else x for x in lines]
    body = "\n".join(f"# {why}\n{cmd}" if why else cmd for cmd, why in pairs)
    return f"**Example{'s' if len(pairs) > 1 else ''}**\n\n```\n{body}\n```\n"
