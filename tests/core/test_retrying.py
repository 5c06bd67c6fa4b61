"""The in-place retry loop (tasks.core.retrying): what it retries, how long it waits, and that
it gives up."""

from __future__ import annotations

import pytest

from tasks.core import retrying as r
from tasks.core.errors import Conflict, ServerError, TooManyRequests


@pytest.mark.parametrize("attempt, base, retry_after, jitter, want", [
    (0, 0.25, None, 0.0, 0.25),
    (2, 0.25, None, 0.0, 1.0),
    (1, 0.25, None, 0.5, 0.75),
    (0, 0.25, 2.0, 0.0, 2.0),  # Retry-After wins over a shorter backoff
    (3, 1.0, 0.5, 0.0, 8.0),  # ... but not over a longer one
    (0, 0.25, 3600, 0.0, r.RETRY_AFTER_CAP_SECONDS),
    (0, 0.25, -1, 0.0, 0.25),
])
def test_delay_for(attempt, base, retry_after, jitter, want):
    assert r.delay_for(attempt, base, retry_after, jitter) == pytest.approx(want)


def _failing(errors):
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    return fn, calls


def test_retries_what_it_is_told_and_counts(monkeypatch):
    monkeypatch.setattr(r.time, "sleep", lambda s: None)
    before = r.counts().get("t-count", 0)
    fn, calls = _failing([ServerError("503"), TooManyRequests("429", retry_after=1)])
    assert r.retrying("t-count", fn, (ServerError, TooManyRequests)) == "ok"
    assert len(calls) == 3 and r.counts()["t-count"] == before + 2


def test_does_not_retry_a_conflict_or_an_error_it_was_not_told(monkeypatch):
    monkeypatch.setattr(r.time, "sleep", lambda s: None)
    for err in (Conflict("409: the guard says skip"), ServerError("500 on a write")):
        fn, calls = _failing([err])
        with pytest.raises(type(err)):
            r.retrying("t-no", fn, (TooManyRequests,))
        assert len(calls) == 1


def test_gives_up_after_its_attempts(monkeypatch):
    slept = []
    monkeypatch.setattr(r.time, "sleep", slept.append)
    fn, calls = _failing([ServerError("503")] * 10)
    with pytest.raises(ServerError):
        r.retrying("t-up", fn, (ServerError,), attempts=3, base=0.1)
    assert len(calls) == 3 and len(slept) == 2 and all(0.05 <= s <= 0.6 for s in slept)


def test_unless_stops_at_once(monkeypatch):
    monkeypatch.setattr(r.time, "sleep", lambda s: None)
    fn, calls = _failing([ServerError("timed out")] * 3)
    with pytest.raises(ServerError):
        r.retrying("t-unless", fn, (ServerError,), unless=lambda e: "timed out" in str(e))
    assert len(calls) == 1
