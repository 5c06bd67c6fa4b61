"""The workspace image: ``image build`` and ``image load`` (images/workspace, tasks/image/)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from tasks.core.errors import InvalidInput
from vibecode_cli.output import Exit, Json, emit, examples

PANEL = "Platform"
REGISTRY_RE = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The workspace image: code-server, the AI assistant and the everyday tools, "
                             "built here from images/workspace without Docker.", no_args_is_help=True)
    app.add_typer(group, name="image", rich_help_panel=PANEL)

    @group.command(epilog=examples(
        ("vibecode image build", "build (or reuse) the image; prints its digest and where it is"),
        ("vibecode image build --extensions ~/vsix", "also install every .vsix in ~/vsix"),
        ("vibecode image build --force --json | jq -r .digest", "rebuild from the caches; the same digest")))
    def build(spec: Annotated[Path, typer.Option("--spec", help="The image's folder (its spec.yaml).",
                                                 file_okay=False)] = Path("images/workspace"),
              out: Annotated[Path | None, typer.Option("--out", help="Where the image, its digest and "
                                                       "package list go (default: the cache).")] = None,
              extensions: Annotated[list[Path] | None, typer.Option(
                  "--extensions", help="Another folder of .vsix files to install.", file_okay=False)] = None,
              force: Annotated[bool, typer.Option("--force", help="Repack even if this build exists.")] = False,
              as_json: Json = False) -> int:
        """Build the workspace image into an OCI image (no Docker: mmdebstrap, npm, umoci).

        Writes beside it `digest` and `packages.txt` (every Debian package, npm package and
        extension, with versions). The same cached inputs give the same digest; a first build on
        another machine may not (native modules, the day's Debian versions). Pin the digest you
        push in deployments/platform.lock.yaml (the `code-server` entry) so workspaces run it by
        digest: the output says when the lock pins another build."""
        from tasks.image.build import build as build_image

        for folder in extensions or []:
            if not folder.is_dir():
                raise InvalidInput("extensions", f"{folder} is not a folder")
        result = build_image(spec.resolve(), out, list(extensions or []), force=force)
        pinned = _lock_digest(result.reference)

        def render(console) -> None:
            console.print(f"[bold]{result.reference}@{result.digest}[/bold]")
            console.print(f"  image   {result.layout} (OCI layout), {result.archive}")
            console.print(f"  inside  {result.packages}")
            size = result.size.get("compressed", 0) / 2**20
            console.print(f"  size    {size:.0f} MiB compressed; built in {result.seconds.get('total', 0):.0f} s"
                          f" (from cache: {', '.join(result.from_cache) or 'nothing'})")
            if pinned and pinned != result.digest:
                console.print(f"  [yellow]the lock pins {pinned}[/yellow] (another build): pin this digest in "
                              "deployments/platform.lock.yaml (`code-server`) before pushing it")
            if result.setuid_stripped:
                console.print(f"  setuid/setgid bits removed from {len(result.setuid_stripped)} files")
            for m in result.missing:
                console.print(f"  [red]declared but not installed[/red]: {m}")

        emit({**result.to_json(), "lock_digest": pinned}, as_json, render)
        return Exit.FAILED if result.missing else Exit.DONE

    @group.command(epilog=examples(
        ("vibecode image load --registry 127.0.0.1:5000 --insecure", "push to a registry (the digest is kept)"),
        ("vibecode image load --kind vibecode", "load into the KIND cluster named vibecode")))
    def load(registry: Annotated[str | None, typer.Option("--registry", help="host[:port] to push to.")] = None,
             kind: Annotated[str | None, typer.Option("--kind", help="A KIND cluster's name to load into.")] = None,
             insecure: Annotated[bool, typer.Option("--insecure", help="The registry speaks plain HTTP.")] = False,
             spec: Annotated[Path, typer.Option("--spec", file_okay=False)] = Path("images/workspace"),
             as_json: Json = False) -> int:
        """Put the built workspace image into a registry or a KIND cluster (builds it if needed)."""
        if (registry is None) == (kind is None):
            raise InvalidInput("registry", "give exactly one of --registry HOST[:PORT] or --kind CLUSTER")
        if registry is not None and not REGISTRY_RE.match(registry):
            raise InvalidInput("registry", f"{registry!r} is not host[:port]")
        from tasks.image.build import build as build_image
        from tasks.image.build import load_into_kind, load_into_registry

        result = build_image(spec.resolve())
        if registry is not None:
            where = load_into_registry(result, registry, tls_verify=not insecure)
        else:
            assert kind is not None
            load_into_kind(result, kind)
            where = f"kind cluster {kind}: {result.reference}@{result.digest}"
        emit({"reference": result.reference, "digest": result.digest, "loaded": where}, as_json,
             lambda console: console.print(f"{result.reference}@{result.digest} -> {where}"))
        return Exit.DONE


def _lock_digest(reference: str) -> str | None:
    """The digest the lock pins for this image's tag, if it pins one."""
    from tasks.platform.lock import load_lock, normalise

    for pin in load_lock().images.values():
        if normalise(pin.image) == normalise(reference):
            return pin.digest
    return None
