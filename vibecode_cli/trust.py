"""Trust: ``ca`` (the platform's local CA, for a person's browser)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vibecode_cli.output import Exit, Json, emit, examples

PANEL = "Platform"


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel=PANEL, epilog=examples(
        ("vibecode ca", "the certificate (PEM) and its SHA-256 fingerprint"),
        ("vibecode ca --out vibecode-ca.pem", "write the PEM to a file to import into a browser or OS store"),
        ("vibecode ca --json | jq -r .sha256", "the fingerprint, to compare with what the browser shows")))
    def ca(out: Annotated[Path | None, typer.Option("--out", help="Write the PEM here instead of stdout.",
                                                    dir_okay=False)] = None,
           as_json: Json = False) -> int:
        """The platform's local CA certificate, to trust.

        With a local domain, cert-manager issues the portal's and the workspaces' certificates from
        the platform's own CA; a person imports this certificate once (never the key, which stays in
        the cluster). Compare the fingerprint with the one the bootstrap summary shows."""
        from flows.ca import platform_ca

        cert = platform_ca()
        if out is not None:
            out.write_text(cert.pem)

        def render(console) -> None:
            console.print(cert.summary())
            if out is None:
                console.print(cert.pem, highlight=False, markup=False)
            else:
                console.print(f"PEM written to {out}")

        emit({"pem": cert.pem, "sha256": cert.sha256, "subject": cert.subject,
              "not_after": cert.not_after.isoformat(), "written_to": str(out) if out else None}, as_json, render)
        return Exit.DONE
