"""What every domain's Prefect steps share: the retry policy, the tag names, the clock,
run ids and the table artifact helper. One definition each, so a ``steps`` module holds
only its own domain's work.

Retry policy: only transient errors are retried (see :mod:`tasks.core.errors`), with
exponential backoff and jitter so that many runs failing together do not retry in
lockstep. No task result is cached: every task here changes or reads the world, and a
cached answer would be stale.

Tags: a task carrying one waits for a slot of the Prefect tag concurrency limit
(:mod:`tasks.cluster.limits` creates them). A task must never hold a slot while it waits
for work that needs a slot of the same tag (that deadlocks once the limit is reached).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from tasks.core.errors import retry_if_transient

KUBE_API = "kube-api"
HELM = "helm"
RESTIC = "restic"
USERS_DB = "vibecode-users-db"


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
