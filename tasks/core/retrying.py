"""Retrying one call in place, for what a task retry would do worse: a read the server did not
answer, or a request it refused before doing anything (429). The task-level policy
(tasks.core.steps.transient_retries) stays the rule for everything else; this is the inner loop
under it, short (a few attempts, sub-second backoff with jitter) so the two do not multiply
into long waits.

Only for calls that are safe to repeat: reads, requests refused unprocessed, and writes whose
repeat after a lost answer meets a guard (a resourceVersion precondition: Conflict, which is
not retried here). ``COUNTS`` (label -> retries in this process) is what the runs' retry
tables and the fault tests report.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from tasks.core.errors import TooManyRequests

T = TypeVar("T")

RETRY_AFTER_CAP_SECONDS = 60.0
JITTER = 0.5
COUNTS: Counter[str] = Counter()
_lock = threading.Lock()


def delay_for(attempt: int, base: float, retry_after: float | None, jitter: float) -> float:
    """Seconds before retry ``attempt`` (0 = the first retry): ``base * 2**attempt`` with
    ``jitter`` either way, but never less than a ``Retry-After`` (capped). Pure."""
    delay = base * 2 ** attempt * (1 + jitter)
    if retry_after and retry_after > 0:
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP_SECONDS))
    return delay


def retrying(label: str, fn: Callable[[], T], retry_on: tuple[type[BaseException], ...], *, attempts: int = 4,
             base: float = 0.25, on_retry: Callable[[str], None] | None = None,
             unless: Callable[[BaseException], bool] | None = None) -> T:
    """``fn()``, retried on ``retry_on`` (but not when ``unless(exc)``) up to ``attempts`` calls."""
    for attempt in range(attempts):
        try:
            return fn()
        except retry_on as exc:
            if attempt == attempts - 1 or (unless is not None and unless(exc)):
                raise
            retry_after = exc.retry_after if isinstance(exc, TooManyRequests) else None
            with _lock:
                COUNTS[label] += 1
            if on_retry:
                on_retry(label)
            time.sleep(delay_for(attempt, base, retry_after, random.uniform(-JITTER, JITTER)))
    raise AssertionError("unreachable")


def counts() -> dict[str, int]:
    with _lock:
        return dict(COUNTS)
