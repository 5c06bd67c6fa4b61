"""Run the gateway under uvicorn, after refusing a configuration it must not run with."""

from __future__ import annotations

import logging
import os
import sys

from tasks.core.settings import Settings
from tasks.gateway.startup import config_problems


class RefusedToStart(Exception):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def check(settings: Settings) -> None:
    problems = config_problems(settings, os.environ.get("PREFECT_API_URL"))
    if problems:
        raise RefusedToStart(problems)


def configure_logging() -> None:
    """One JSON line per request on stdout (the access log); our own messages on stderr."""
    access = logging.getLogger("vibecode.gateway.access")
    if not access.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
    app_log = logging.getLogger("vibecode.gateway")
    if not app_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        app_log.addHandler(handler)
        app_log.setLevel(logging.INFO)


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    import uvicorn

    from gateway.app import create_app

    check(settings)
    configure_logging()
    app = create_app(settings)
    # uvicorn's own access log would print query strings; ours prints neither them nor headers.
    uvicorn.run(app, host=host or settings.gateway.host, port=port or settings.gateway.port,
                access_log=False, log_level="warning", proxy_headers=False, server_header=False,
                limit_concurrency=1000, timeout_keep_alive=5, h11_max_incomplete_event_size=16 * 1024)
