"""Wait for many Jobs with one LIST per interval, instead of one GET per Job per interval.

With dozens of backups in flight, per-Job polling multiplies API requests (client-go's
polite default is 5 QPS); one label-selected LIST per run keeps the load flat however
many workspaces there are, and lets the interval be short enough that finishing is
noticed promptly. Waiters share the poller through a per-process registry keyed by run.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from tasks.backup_jobs import job_state


class JobWaiter:
    def __init__(self, list_jobs: Callable[[], list[dict]], interval: float):
        self._list_jobs = list_jobs
        self._interval = interval
        self._jobs: dict[str, dict] = {}
        self._error: Exception | None = None
        self._cond = threading.Condition()
        self._waiting = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def _poll(self) -> None:
        while True:
            with self._cond:
                if self._closed or self._waiting == 0:
                    self._thread = None
                    return
            try:
                jobs, error = {j["metadata"]["name"]: j for j in self._list_jobs()}, None
            except Exception as exc:  # noqa: BLE001 - handed to the waiters, who raise it
                jobs, error = None, exc
            with self._cond:
                if jobs is not None:
                    self._jobs = jobs
                self._error = error
                self._cond.notify_all()
                self._cond.wait(self._interval)

    def wait(self, name: str, timeout: float) -> tuple[str, str]:
        """(state, reason) once the Job is no longer running; ("running", ...) on timeout.
        A LIST error is raised to the caller (whose task may retry it)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._waiting += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._poll, daemon=True, name="job-waiter")
                self._thread.start()
            try:
                seen_missing = 0
                while True:
                    self._cond.wait(max(0.0, min(self._interval * 2, deadline - time.monotonic())))
                    if self._error is not None:
                        raise self._error
                    job = self._jobs.get(name)
                    if job is None:
                        seen_missing += 1  # not in a LIST yet, or deleted under us
                        if seen_missing < 5:
                            continue
                    state, reason = job_state(job)
                    if state != "running" or time.monotonic() >= deadline:
                        return state, reason
            finally:
                self._waiting -= 1

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


_lock = threading.Lock()
_waiters: dict[str, JobWaiter] = {}


def waiter_for(key: str, list_jobs: Callable[[], list[dict]], interval: float) -> JobWaiter:
    with _lock:
        if key not in _waiters:
            _waiters[key] = JobWaiter(list_jobs, interval)
        return _waiters[key]


def close_waiter(key: str) -> None:
    with _lock:
        waiter = _waiters.pop(key, None)
    if waiter:
        waiter.close()
