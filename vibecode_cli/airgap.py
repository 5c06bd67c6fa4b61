"""Air-gapped installs: ``bundle`` (on a connected machine); ``up --bundle`` installs from it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tasks.core.errors import InvalidInput
from vibecode_cli.output import Exit, Json, emit, examples, progress

PANEL = "Platform"


def _built(pairs: list[str]) -> dict[str, str]:
    """``KEY=SOURCE`` pairs (``hr-gateway=oci:/tmp/gw:0.1.0``), validated before anything runs."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, source = pair.partition("=")
        if not sep or not key or not source:
            raise InvalidInput("built", f"{pair[:100]!r} is not KEY=SOURCE (e.g. hr-gateway=oci:DIR:TAG)")
        out[key] = source
    return out


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel=PANEL, epilog=examples(
        ("vibecode bundle /media/usb/vibecode", "every pinned chart and image, for a machine with no network"),
        ("vibecode bundle out --exclude datadog", "leave a component out"),
        ("vibecode up --bundle /media/usb/vibecode", "then, on the machine with no network")))
    def bundle(directory: Annotated[Path, typer.Argument(help="An empty or new directory to write the bundle in.",
                                                         file_okay=False)],
               exclude: Annotated[list[str] | None, typer.Option(
                   "--exclude", help="A component to leave out (repeatable), e.g. datadog.")] = None,
               built: Annotated[list[str] | None, typer.Option(
                   "--built", help="KEY=SOURCE: an image built here instead of pulled (repeatable), "
                                   "e.g. hr-gateway=oci:/tmp/gw:0.1.0.")] = None,
               as_json: Json = False) -> int:
        """Write an air-gapped bundle of the platform.

        Every chart and image the lock pins (deployments/platform.lock.yaml), images as one OCI
        layout with every architecture and its digest preserved, a manifest.json and the lock it
        was made from. Refuses, before downloading anything, entries that are not pinned: leave
        their component out with --exclude."""
        from tasks.core.settings import get_settings
        from tasks.platform.lock import load_lock

        if directory.exists() and any(directory.iterdir()):
            if not (directory / "manifest.json").is_file():
                raise InvalidInput("directory", f"{str(directory)[:200]!r} is not empty and holds no bundle")
        pairs = _built(list(built or []))
        lock = load_lock(get_settings().platform.lock_file)
        known = {p.component for p in lock.images.values()} | set(lock.charts)  # as the flow checks it
        unknown = sorted(set(exclude or []) - known)
        if unknown:
            raise InvalidInput("exclude", f"unknown component(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        unknown = sorted(set(pairs) - set(lock.images))
        if unknown:
            raise InvalidInput("built", f"not an image of the lock: {', '.join(unknown)}")
        from flows.bundle import bundle as bundle_flow

        with progress(f"Writing the bundle into {directory}"):
            manifest = bundle_flow(directory=directory, exclude=list(exclude or []), built=pairs)

        def render(console) -> None:
            console.print(f"[bold green]Bundle written[/bold green] to {directory}: {len(manifest['charts'])} charts, "
                          f"{len(manifest['images'])} images.", soft_wrap=True)
            for e in manifest.get("left_out", []):
                console.print(f"  left out: {e['entry']}: {e['reason']}", markup=False)
            console.print(f"Install with: vibecode up --bundle {directory}", markup=False)

        emit(manifest, as_json, render)
        return Exit.DONE
