"""What every domain's Prefect steps share: the retry policy, the tag names, the clock,
run ids and the table artifact helper. One definition each, so a ``steps`` module holds
only its own domain's work.

Retry policy: only transient errors are retried (see :mod:`tasks.core.errors`), with
exponential backoff and jitter so that many runs failing together do not retry in
lockstep. A server that says when to come back (429 with ``Retry-After``, carried by
:class:`~tasks.core.errors.TooManyRequests`) is honoured, up to
:data:`RETRY_AFTER_CAP_SECONDS`: Prefect computes the retry delay without seeing the
exception, so the retry condition waits the part of ``Retry-After`` that the shortest delay
Prefect may schedule does not cover. No task result is cached: every task here changes or
reads the world, and a cached answer would be stale.

Retries are counted (:func:`retry_counts`): per flow run and task name, in this process, as
the retry condition lets each one go ahead; :func:`table_artifact` adds a ``<key>-retries``
table to a run's artifacts when any of its tasks was retried, so a run that succeeded only
after retrying says so.

Tags: a task carrying one waits for a slot of the Prefect tag concurrency limit
(:mod:`tasks.cluster.limits` creates them). A task must never hold a slot while it waits
for work that needs a slot of the same tag (that deadlocks once the limit is reached).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone

from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from prefect.utilities.math import lower_clamp_multiple

from tasks.core.errors import ServerError, TooManyRequests, is_transient
from tasks.core.retrying import retrying

KUBE_API = "kube-api"
HELM = "helm"
RESTIC = "restic"
USERS_DB = "vibecode-users-db"


RETRY_AFTER_CAP_SECONDS = 60.0  # a longer Retry-After is not waited out inside one task run
JITTER = 0.5


def retry_transient(fn, *args, retries: int = 3, backoff_factor: float = 2, **kw):
    """``fn(*args, **kw)``, retrying transient errors only, with the policy of
    :func:`transient_retries` (exponential backoff, jitter, ``Retry-After`` up to the cap),
    inside the caller's task run: per-workspace steps batched into one task must not cost a
    task run (and its server round trips) each."""
    import random

    for attempt in range(retries + 1):
        try:
            return fn(*args, **kw)
        except Exception as exc:
            if attempt == retries or not is_transient(exc):
                raise
            delay = backoff_factor * 2 ** attempt * random.uniform(1 - JITTER, 1 + JITTER)
            retry_after = exc.retry_after if isinstance(exc, TooManyRequests) else None
            time.sleep(max(delay, min(retry_after or 0.0, RETRY_AFTER_CAP_SECONDS)))
    raise AssertionError("unreachable")


def transient_retries(retries: int = 3, backoff_factor: float = 2,
                      retry_after_cap: float = RETRY_AFTER_CAP_SECONDS) -> dict:
    """Keyword arguments for ``@task``: retry transient errors only, backoff with jitter,
    and at least ``Retry-After`` (capped at ``retry_after_cap``) before retrying a 429."""
    def retry_condition(task, task_run, state) -> bool:
        return _should_retry(task, task_run, state, retry_after_cap)

    return dict(retries=retries, retry_delay_seconds=exponential_backoff(backoff_factor=backoff_factor),
                retry_jitter_factor=JITTER, retry_condition_fn=retry_condition, cache_policy=NO_CACHE)


def extra_wait(retry_after: float | None, shortest_delay: float, cap: float) -> float:
    """Seconds to wait on top of the retry delay Prefect schedules, so that the retry starts
    no sooner than ``Retry-After`` (capped) says; 0 without one."""
    if retry_after is None or retry_after <= 0:
        return 0.0
    return max(0.0, min(retry_after, cap) - shortest_delay)


def shortest_delay(delays: float | Sequence[float] | None, attempt: int, jitter: float | None) -> float:
    """The least delay Prefect may schedule before retry ``attempt`` (0 for the first retry):
    its configured delay for that attempt, less what jitter (Prefect's clamped Poisson
    interval) may take off."""
    if not delays:
        return 0.0
    delay = delays[min(attempt, len(delays) - 1)] if isinstance(delays, Sequence) else delays
    return max(0.0, delay * lower_clamp_multiple(1 + jitter)) if jitter else float(delay)


_retries: dict[str, Counter[str]] = {}
_retries_lock = threading.Lock()


def _count_retry(task, task_run) -> None:
    run = str(getattr(task_run, "flow_run_id", None) or "")
    with _retries_lock:
        _retries.setdefault(run, Counter())[task.name] += 1


def retry_counts(flow_run_id: str | None = None) -> dict[str, int]:
    """Task name -> retries, of one flow run (its task runs in this process) or of every run."""
    with _retries_lock:
        runs = [_retries.get(str(flow_run_id), Counter())] if flow_run_id else list(_retries.values())
        total: Counter[str] = Counter()
        for c in runs:
            total.update(c)
        return dict(total)


def _should_retry(task, task_run, state, cap: float) -> bool:
    """Prefect's ``retry_condition_fn``. It runs only while retries are left, just before
    Prefect schedules the retry, so a wait here delays exactly that retry."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - we only classify it
        if not is_transient(exc):
            return False
        if isinstance(exc, TooManyRequests):
            attempt = max(0, (getattr(task_run, "run_count", 1) or 1) - 1)
            least = shortest_delay(task.retry_delay_seconds, attempt, task.retry_jitter_factor)
            wait = extra_wait(exc.retry_after, least, cap)
            if wait:
                time.sleep(wait)
        _count_retry(task, task_run)
        return True
    return False


def call_retrying(label: str, fn, *args, attempts: int = 4, base: float = 0.5, **kw):
    """``fn(*args, **kw)``, retried in place (tasks.core.retrying) on a 5xx, a dropped connection
    or a 429 (waiting at least its ``Retry-After``). For a task that makes many independent
    calls and reports each one's failure instead of failing (the reaper's writes): a task retry
    would redo the others. Only for calls safe to repeat (see tasks.core.retrying). Counted
    under ``label`` in :func:`retry_counts` for this flow run."""
    from prefect.runtime import flow_run

    run = str(flow_run.id or "")

    def count(name: str) -> None:
        with _retries_lock:
            _retries.setdefault(run, Counter())[name] += 1

    return retrying(label, lambda: fn(*args, **kw), (ServerError, TooManyRequests), attempts=attempts, base=base,
                    on_retry=count)


def retries_left() -> bool:
    """Inside a task with :func:`transient_retries`: will Prefect run it again if it fails now?
    A task that degrades gracefully on failure (returns "unknown") raises a transient error
    while retries are left, so that one 503 does not degrade the whole run."""
    from prefect.context import TaskRunContext

    ctx = TaskRunContext.get()
    if ctx is None:
        return False
    return (ctx.task_run.run_count or 1) <= (ctx.task.retries or 0)


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
    from prefect.runtime import flow_run

    retried = retry_counts(flow_run.id) if flow_run.id else {}
    if retried:
        create_table_artifact(key=f"{key}-retries", table=[{"task": t, "retries": n} for t, n in sorted(retried.items())],
                              description=f"{description}: tasks retried after transient errors")
