"""People: ``onboard``, ``offboard`` (an HR event from a file or stdin, exactly the body the HR
API sends) and ``totp-handoff``. Every event is checked in full before any flow starts."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from tasks.core.errors import InvalidInput
from vibecode_cli.output import Exit, Json, emit, examples, progress

MAX_EVENT_BYTES = 65_536  # a real HR event is < 4 kB
HR_COMMAND_TYPES = {"onboard": ("employee.hired", "employee.updated"), "offboard": ("employee.terminated",)}
PANEL = "People"

Event = Annotated[str, typer.Argument(metavar="EVENT", help="The HR event as JSON: a file, or - for stdin.")]
User = Annotated[str, typer.Argument(metavar="USERNAME", help="The person's username (their workspace name).")]


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


def _steps(console, title: str, result: dict) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left", box=None, padding=(0, 2))
    for key, value in result.items():
        if value not in (None, "", False):
            table.add_row(f"[bold]{key}[/bold]", str(value))
    console.print(table)


def _hr(command: str, event: str, as_json: bool) -> int:
    request = parse_hr_event(_read_event(event), command)  # validated before any flow runs
    from flows.onboarding import run_hr_event

    with progress(f"{request.type} {request.event_id} for {request.username}"):
        result = run_hr_event(request.model_dump(mode="json"))
    done = result.model_dump(mode="json") if hasattr(result, "model_dump") else dict(result)
    emit(result, as_json, lambda c: _steps(c, f"{command}: {done.get('username', request.username)}", done))
    return Exit.DONE


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel=PANEL, epilog=examples(
        ("vibecode onboard hire.json", "the HR API's body: event_id, type, occurred_at, employee"),
        ("vibecode onboard - --json < hire.json", "from stdin; the result as JSON")))
    def onboard(event: Event, as_json: Json = False) -> int:
        """Hire or update a person from an HR event.

        employee.hired or employee.updated: Authelia identity, workspace, welcome email.
        Idempotent per event id: a replay changes nothing. The event is validated in full
        (size, UTF-8, JSON, every field) before anything runs.
        """
        return _hr("onboard", event, as_json)

    @app.command(rich_help_panel=PANEL, epilog=examples(
        ("vibecode offboard termination.json", "type employee.terminated")))
    def offboard(event: Event, as_json: Json = False) -> int:
        """Offboard a person from an HR event (employee.terminated).

        Access ends at once (identity disabled, workspace stopped); the data stays until a
        verified final backup exists and the retention period has passed."""
        return _hr("offboard", event, as_json)

    @app.command("totp-handoff", rich_help_panel=PANEL, epilog=examples(
        ("vibecode totp-handoff alice", "at Alice's desk: she scans the code, it is gone")))
    def totp_handoff(username: User, as_json: Json = False) -> int:
        """Hand over a pre-provisioned TOTP setup, once.

        Shown to the administrator's terminal to hand over in person; the hand-off Secret is
        deleted as it is shown. Exit 1 when there is nothing to hand off."""
        from tasks.core.names import validate_username

        validate_username(username)
        from tasks.people.totp_steps import totp_handoff as handoff_step

        handoff = handoff_step(username)  # PermanentError (exit 1) when there is nothing to hand off

        def render(console) -> None:
            console.print(f"TOTP setup for {handoff.username} (issuer {handoff.issuer}): scan or enter it in "
                          f"their authenticator app, in person. It is shown once: the hand-off Secret has "
                          f"been deleted.\n", soft_wrap=True)
            print(handoff.uri)
            _print_qr(handoff.uri)

        emit({"username": handoff.username, "issuer": handoff.issuer, "uri": handoff.uri}, as_json, render)
        return Exit.DONE


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
