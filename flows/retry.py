"""The one retry policy every lifecycle task uses.

Only transient errors are retried (see :mod:`tasks.errors`), with exponential backoff and
jitter so that many runs failing together do not retry in lockstep. No task result is
cached: every task here changes or reads the world, and a cached answer would be stale.
"""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from tasks.errors import retry_if_transient


def transient_retries(retries: int = 3, backoff_factor: float = 2) -> dict:
    return dict(retries=retries, retry_delay_seconds=exponential_backoff(backoff_factor=backoff_factor),
                retry_jitter_factor=0.5, retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
