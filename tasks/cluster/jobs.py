"""Waiting for Jobs, and what a finished Job tells an operator: one waiter for every Job we create.

One label-selected LIST+WATCH serves every Job of a run, instead of one GET per Job per
interval: with dozens of backups in flight, per-Job polling multiplies API requests
(client-go's polite default is 5 QPS) and notices a finished Job only at the next poll.
Waiters of one run share the watcher through a per-process registry keyed by namespace
and selector.

A watch breaks (a connection reset, an API server restart) or expires (410 Gone once its
resourceVersion is compacted): both are transient, so the watcher re-lists, which also
shows what finished in between, and resumes. Only the affected Job's real outcome, or
the waiter's own deadline, ends a wait; a permanent error (RBAC, a bad selector) is
handed to the waiters, who raise it.

A failed Job's reason is what its program said: the container's termination message
(``terminationMessagePolicy: FallbackToLogsOnError`` makes that the last log lines when
the program wrote no message file), read from the Job's pods with one LIST by
``job-name`` label.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal

from tasks.core.errors import is_transient
from tasks.core.names import JOB_NAME_LABEL, selector

log = logging.getLogger(__name__)

# How long a Job may be missing from the watched set before the API server is asked. It was
# created before wait() was called, so its ADDED event normally arrives within milliseconds;
# but a watcher that is re-listing sees it only once that LIST is done, so a missing Job is
# called gone only when a GET says so (the watched set is a cache and may lag).
MISSING_GRACE_SECONDS = 10.0
MESSAGE_CHARS = 400  # of a termination message in a reason (the kubelet keeps at most 4096 bytes)

JobState = Literal["running", "succeeded", "failed"]
ListWatch = Callable[[], Iterable[tuple[str, Any]]]
Read = Callable[[str], dict | None]  # one Job by name, None when the API server has none


@dataclass(frozen=True)
class JobResult:
    state: JobState
    reason: str

    @property
    def succeeded(self) -> bool:
        return self.state == "succeeded"


def job_state(job: dict | None) -> tuple[JobState, str]:
    """(running | succeeded | failed, reason) from a Job's conditions, as ``kubectl wait`` reads them."""
    if job is None:
        return "failed", "the Job disappeared"
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return "succeeded", "Complete"
        if cond.get("type") == "Failed":
            return "failed", cond.get("message") or cond.get("reason") or "the pod failed"
    return "running", f"{status.get('active', 0)} pod(s) active"


def termination_message(pods: list[dict]) -> str:
    """What the Job's containers said when they stopped: the newest pod's terminated
    containers, as ``<container> exited <code> (<reason>): <message tail>``; "" if none did."""
    def started(p: dict) -> str:
        return (p.get("status") or {}).get("startTime") or p.get("metadata", {}).get("creationTimestamp") or ""

    for pod in sorted(pods, key=started, reverse=True):
        parts = []
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if not term or term.get("exitCode", 0) == 0 and not term.get("message"):
                continue
            msg = " ".join(_telling_lines(term.get("message") or ""))
            head = f"{cs.get('name', 'container')} exited {term.get('exitCode', '?')}"
            if term.get("reason"):
                head += f" ({term['reason']})"
            parts.append(f"{head}: {msg[-MESSAGE_CHARS:]}" if msg else head)
        if parts:
            return "; ".join(parts)
    return ""


def _telling_lines(message: str) -> list[str]:
    """The error and warning lines of a log tail (restic names each unreadable file in one),
    else its last lines: a summary line says less than the error above it."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith(("error", "fatal", "warning", "panic"))]
    return errors[-3:] or lines[-3:]


def failure_reason(job_reason: str, pods: list[dict]) -> str:
    said = termination_message(pods)
    return f"{job_reason}: {said}" if said else job_reason


def _kept(job: dict) -> dict:
    """What a wait reads of a Job (its name and status): a run's watcher holds every Job of
    the run, and the pod templates would make that grow with the fleet."""
    return {"metadata": {"name": job["metadata"]["name"]}, "status": job.get("status") or {}}


class JobWaiter:
    """Many waiters, one watcher thread over ``list_watch`` (a LIST, then a WATCH)."""

    def __init__(self, list_watch: ListWatch, retry_interval: float, read: Read | None = None):
        self._list_watch = list_watch
        self._read = read
        self._retry_interval = retry_interval
        self._jobs: dict[str, dict] = {}
        self._error: Exception | None = None
        self._cond = threading.Condition()
        self._waiting = 0
        self._thread: threading.Thread | None = None
        self._closed = False
        self.relists = 0  # watches that broke or expired and were re-listed (tests and logs read it)

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
                            self._jobs = {j["metadata"]["name"]: _kept(j) for j in obj}
                        elif kind == "DELETED":
                            self._jobs.pop(obj["metadata"]["name"], None)
                        else:
                            self._jobs[obj["metadata"]["name"]] = _kept(obj)
                        self._error = None
                        self._cond.notify_all()
                        if self._done():
                            break
            except Exception as exc:  # noqa: BLE001 - transient: re-list; permanent: the waiters raise it
                with self._cond:
                    if is_transient(exc):
                        self.relists += 1
                        log.info("Job watch broke or expired (%s); re-listing", exc)
                    else:
                        self._error = exc
                        self._cond.notify_all()
                    self._cond.wait(self._retry_interval)

    def wait(self, name: str, timeout: float) -> tuple[JobState, str]:
        """(state, reason) once the Job is no longer running; ("running", ...) on timeout.
        A permanent watch error is raised to the caller."""
        start = time.monotonic()
        deadline = start + timeout
        with self._cond:
            self._waiting += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, daemon=True, name="job-waiter")
                self._thread.start()
            try:
                missing_since = start
                while True:
                    if self._error is not None:
                        raise self._error
                    job = self._jobs.get(name)
                    now = time.monotonic()
                    grace_left = missing_since + min(MISSING_GRACE_SECONDS, timeout) - now
                    if job is None and grace_left > 0:
                        self._cond.wait(min(grace_left, max(0.0, deadline - now)))
                        continue
                    if job is None and self._read is not None and now < deadline:
                        gone, found = self._confirm_missing(name)
                        if not gone:  # judge what the GET read; the watch's copy comes later
                            missing_since = time.monotonic()
                            if found is None:  # the API server could not tell: wait on
                                continue
                            job = _kept(found)
                    state, reason = job_state(job)
                    if state != "running" or now >= deadline:
                        return state, reason
                    self._cond.wait(max(0.0, deadline - now))
            finally:
                self._waiting -= 1

    def _confirm_missing(self, name: str) -> tuple[bool, dict | None]:
        """Ask the API server for a Job the watched set lacks, with the lock released (the
        watcher must go on meanwhile): (gone, the Job if it is there); (False, None) when a
        transient error left that unknown. Called with ``self._cond`` held."""
        assert self._read is not None
        self._cond.release()
        try:
            job = self._read(name)
            return job is None, job
        except Exception as exc:  # transient: ask again after the grace; permanent: raise
            if not is_transient(exc):
                raise
            log.info("could not read Job %s to see whether it is gone (%s); waiting on", name, exc)
            return False, None
        finally:
            self._cond.acquire()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


_lock = threading.Lock()
_waiters: dict[str, JobWaiter] = {}


def waiter_for(key: str, list_watch: ListWatch, retry_interval: float, read: Read | None = None) -> JobWaiter:
    with _lock:
        if key not in _waiters:
            _waiters[key] = JobWaiter(list_watch, retry_interval, read)
        return _waiters[key]


def close_waiter(key: str) -> None:
    with _lock:
        waiter = _waiters.pop(key, None)
    if waiter:
        waiter.close()


def shared_key(namespace: str, job_selector: str) -> str:
    return f"{namespace}/{job_selector}"


def await_job(client, namespace: str, job_selector: str, name: str, timeout: float, retry_interval: float,
              shared: bool = False) -> JobResult:
    """Wait for Job ``name`` (which ``job_selector`` must match) and say how it ended.

    ``client`` is a :class:`tasks.cluster.kube.Kube`. With ``shared``, every caller with the same
    namespace and selector shares one watch until :func:`close_waiter` with
    :func:`shared_key`; otherwise the watch ends with this wait. A Job still running at
    ``timeout`` is returned as ``running``: the caller decides (delete it, or retry)."""
    def list_watch():
        return client.list_watch("Job", namespace, job_selector)

    def read(job_name: str) -> dict | None:
        return client.get("Job", namespace, job_name)

    if shared:
        waiter = waiter_for(shared_key(namespace, job_selector), list_watch, retry_interval, read)
    else:
        waiter = JobWaiter(list_watch, retry_interval, read)
    try:
        state, reason = waiter.wait(name, timeout)
    finally:
        if not shared:
            waiter.close()
    if state == "failed":
        reason = failure_reason(reason, client.list("Pod", namespace, selector(**{JOB_NAME_LABEL: name})))
    return JobResult(state, reason)
