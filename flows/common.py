"""What every flow module shares: the retry policy, the clock, the username parameter
type, the Prefect tag names, run ids and the table artifact helper. One definition each,
so a flow module holds only its own process.

Retry policy: only transient errors are retried (see :mod:`tasks.errors`), with exponential
backoff and jitter so that many runs failing together do not retry in lockstep. No task
result is cached: every task here changes or reads the world, and a cached answer would be
stale.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Annotated

from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from pydantic import AfterValidator, Field

from tasks.errors import retry_if_transient
from tasks.names import USERNAME_PATTERN, validate_username

# Prefect tag concurrency limits (created by tasks.limits): a task carrying one of these
# tags waits for a slot on the server. A task must never hold a slot while it waits for
# work that needs a slot of the same tag (that deadlocks once the limit is reached).
from tasks.limits import HELM, KUBE_API, RESTIC, USERS_DB  # noqa: E402,F401

Username = Annotated[str, Field(pattern=USERNAME_PATTERN, max_length=32,
                                description="Lowercase DNS label; the workspace host is <username>.<domain>"),
                     AfterValidator(validate_username)]  # full match in Python's engine too, reserved names


def transient_retries(retries: int = 3, backoff_factor: float = 2) -> dict:
    """Keyword arguments for ``@task``: retry transient errors only, backoff with jitter."""
    return dict(retries=retries, retry_delay_seconds=exponential_backoff(backoff_factor=backoff_factor),
                retry_jitter_factor=0.5, retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)


def now() -> datetime:
    """The wall clock, in one place; decisions take ``now`` as an argument instead."""
    return datetime.now(timezone.utc)


def run_id() -> str:
    """A short id for this flow run (labels Jobs and tags snapshots of one run)."""
    from prefect.runtime import flow_run

    rid = flow_run.id or uuid.uuid4().hex
    return str(rid).replace("-", "")[:8]


def table_artifact(key: str, rows: list[dict] | dict[str, str], description: str) -> None:
    """A table for humans in the Prefect UI; a dict becomes (step, outcome) rows."""
    if isinstance(rows, dict):
        rows = [{"step": k, "outcome": v} for k, v in rows.items()]
    create_table_artifact(key=key, table=rows, description=description)
