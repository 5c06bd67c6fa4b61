"""Wait for many Jobs through one LIST+WATCH per run, instead of one GET per Job per interval.

With dozens of backups in flight, per-Job polling multiplies API requests (client-go's
polite default is 5 QPS) and notices a finished Job only at the next poll. One
label-selected watch per run keeps the load flat however many workspaces there are, and
wakes a waiter the moment its Job's status changes. Waiters share the watcher through a
per-process registry keyed by run.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable

from tasks.backup_jobs import job_state

# How long a Job may be missing from the watched set before we call it gone. It was
# created before wait() was called, so its ADDED event normally arrives within milliseconds.
MISSING_GRACE_SECONDS = 10.0

ListWatch = Callable[[], Iterable[tuple[str, Any]]]


class JobWaiter:
    def __init__(self, list_watch: ListWatch, retry_interval: float):
        self._list_watch = list_watch
        self._retry_interval = retry_interval
        self._jobs: dict[str, dict] = {}
        self._error: Exception | None = None
        self._cond = threading.Condition()
        self._waiting = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def _done(self) -> bool:
        return self._closed or self._waiting == 0

    def _watch(self) -> None:
        while True:
            with self._cond:
                if self._done():
                    self._thread = None
                    return
            try:
                for kind, obj in self._list_watch():
                    with self._cond:
                        if kind == "SYNC":
                            self._jobs = {j["metadata"]["name"]: j for j in obj}
                        elif kind == "DELETED":
                            self._jobs.pop(obj["metadata"]["name"], None)
                        else:
                            self._jobs[obj["metadata"]["name"]] = obj
                        self._error = None
                        self._cond.notify_all()
                        if self._done():
                            break
            except Exception as exc:  # noqa: BLE001 - handed to the waiters, who raise it
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                    self._cond.wait(self._retry_interval)

    def wait(self, name: str, timeout: float) -> tuple[str, str]:
        """(state, reason) once the Job is no longer running; ("running", ...) on timeout.
        A watch error is raised to the caller (whose task may retry it)."""
        start = time.monotonic()
        deadline = start + timeout
        with self._cond:
            self._waiting += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, daemon=True, name="job-waiter")
                self._thread.start()
            try:
                while True:
                    if self._error is not None:
                        raise self._error
                    job = self._jobs.get(name)
                    now = time.monotonic()
                    if job is None and now - start < min(MISSING_GRACE_SECONDS, timeout):
                        self._cond.wait(min(1.0, deadline - now))
                        continue
                    state, reason = job_state(job)
                    if state != "running" or now >= deadline:
                        return state, reason
                    self._cond.wait(max(0.0, deadline - now))
            finally:
                self._waiting -= 1

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


_lock = threading.Lock()
_waiters: dict[str, JobWaiter] = {}


def waiter_for(key: str, list_watch: ListWatch, retry_interval: float) -> JobWaiter:
    with _lock:
        if key not in _waiters:
            _waiters[key] = JobWaiter(list_watch, retry_interval)
        return _waiters[key]


def close_waiter(key: str) -> None:
    with _lock:
        waiter = _waiters.pop(key, None)
    if waiter:
        waiter.close()
