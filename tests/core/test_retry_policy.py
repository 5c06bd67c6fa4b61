"""The retry policy (tasks.core.steps.transient_retries): only transient errors are retried, with
backoff and jitter, and a 429's ``Retry-After`` is honoured up to a cap. The waits are measured
on real task runs against the Prefect server, between the attempts the task itself saw."""

from __future__ import annotations

import time

import pytest
from prefect import task

from tasks.core.errors import PermanentError, ServerError, TooManyRequests
from tasks.core.steps import JITTER, extra_wait, shortest_delay, transient_retries


@pytest.mark.parametrize("retry_after, least, cap, wait", [
    (None, 0.5, 60, 0.0),  # no Retry-After: the backoff alone
    (0, 0.5, 60, 0.0),
    (-3, 0.5, 60, 0.0),
    (10, 2.0, 60, 8.0),  # the scheduled delay covers 2 of the 10 s
    (1, 2.0, 60, 0.0),  # the scheduled delay is longer already
    (3600, 2.0, 60, 58.0),  # capped
    (3600, 0.0, 5, 5.0),
])
def test_extra_wait(retry_after, least, cap, wait):
    assert extra_wait(retry_after, least, cap) == pytest.approx(wait)


@pytest.mark.parametrize("delays, attempt, jitter, least", [
    (None, 0, 0.5, 0.0),
    ([], 0, 0.5, 0.0),
    ([1.0, 2.0, 4.0], 0, None, 1.0),
    ([1.0, 2.0, 4.0], 2, None, 4.0),
    ([1.0, 2.0, 4.0], 7, None, 4.0),  # past the list: its last delay, as Prefect does
    (3.0, 1, None, 3.0),
    ([2.0], 0, 0.5, 2.0 * 0.6293968),  # Prefect's clamped Poisson interval never goes below this
])
def test_shortest_delay(delays, attempt, jitter, least):
    assert shortest_delay(delays, attempt, jitter) == pytest.approx(least, rel=1e-4)


def test_jitter_never_schedules_below_the_shortest_delay():
    from prefect.utilities.math import clamped_poisson_interval

    least = shortest_delay([1.0], 0, JITTER)
    assert min(clamped_poisson_interval(1.0, clamping_factor=JITTER) for _ in range(5000)) >= least - 1e-9


def _flaky(errors: list[Exception], **policy):
    """A task that fails with ``errors`` in turn, then succeeds; returns it and its attempt times."""
    attempts: list[float] = []

    @task(name="flaky", **transient_retries(**policy))
    def flaky() -> str:
        attempts.append(time.monotonic())
        if len(attempts) <= len(errors):
            raise errors[len(attempts) - 1]
        return "ok"

    return flaky, attempts


def _gaps(attempts: list[float]) -> list[float]:
    return [b - a for a, b in zip(attempts, attempts[1:], strict=False)]


def test_retry_after_is_honoured_on_a_real_task_run(prefect_server):
    step, attempts = _flaky([TooManyRequests("429 from the API server", retry_after=2.0)], retries=2,
                            backoff_factor=0.1)
    assert step() == "ok"
    assert len(attempts) == 2
    assert 2.0 <= _gaps(attempts)[0] < 2.0 + 10  # at least Retry-After; the rest is the engine's overhead


def test_retry_after_is_capped_on_a_real_task_run(prefect_server):
    step, attempts = _flaky([TooManyRequests("429", retry_after=3600)], retries=1, backoff_factor=0.1,
                            retry_after_cap=1.5)
    started = time.monotonic()
    assert step() == "ok"
    assert 1.5 <= _gaps(attempts)[0] < 1.5 + 10 and time.monotonic() - started < 60  # not an hour


def test_other_transient_errors_wait_only_the_backoff(prefect_server):
    step, attempts = _flaky([ServerError("503"), ServerError("503")], retries=2, backoff_factor=0.1)
    assert step() == "ok"
    assert len(attempts) == 3 and all(g < 5 for g in _gaps(attempts))


def test_a_permanent_error_is_never_retried_even_with_retry_after_semantics(prefect_server):
    step, attempts = _flaky([PermanentError("403 forbidden")], retries=3, backoff_factor=0.1)
    with pytest.raises(PermanentError):
        step()
    assert len(attempts) == 1


def test_a_429_on_the_last_attempt_is_not_waited_for(prefect_server):
    """No retry follows: Prefect asks the condition only while retries are left."""
    step, attempts = _flaky([TooManyRequests("429", retry_after=30), TooManyRequests("429", retry_after=30)],
                            retries=1, backoff_factor=0.1, retry_after_cap=4)
    started = time.monotonic()
    with pytest.raises(TooManyRequests):
        step()
    assert len(attempts) == 2 and time.monotonic() - attempts[-1] < 3 and time.monotonic() - started < 30
