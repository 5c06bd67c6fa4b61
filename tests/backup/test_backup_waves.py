"""The nightly backup over 500 volumes on the real API server: Jobs go in waves under
``backup.concurrency``, the Prefect cost is one task run per batch, and every Job completes.

Two stand-ins, both named as such:
- ``JobControllerStandIn``: a thread that plays the job controller and kubelet (no pods run
  here): it watches the namespace's Jobs, counts those created and not yet complete (the
  Jobs in flight, as the API server holds them) and, a moment later, writes each one's
  ``Complete`` condition through the real status subresource.
- the repository steps (``ensure_repository``, ``record_expire_verify_now``): real restic
  derives its key with scrypt calibrated to ~0.5 s of CPU per open, so 500 repositories
  cost minutes of this 2-core machine; here they answer "exists" and "snapshot recorded,
  verified". They run for real, Jobs, S3 and all, in test_backup_flow.py.
Everything else is the real flow: the paged LISTs, the batches, the run's slots, the Job
manifests, the shared Job watch and the volume annotations.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import tasks.backup.steps as backup_steps
from flows.backup import backup_workspaces
from tasks.backup.status import LAST_BACKUP_OUTCOME, LAST_BACKUP_SNAPSHOT, Outcome, Recorded
from tasks.core.names import workspace_names
from tasks.core.settings import get_settings
from tests.fixtures.kube import finish_job

pytestmark = pytest.mark.usefixtures("prefect_server")

VOLUMES = 500
CONCURRENCY = 8
BATCH = 40


class JobControllerStandIn:
    """Stand-in for the job controller and kubelet: completes every Job it sees after 5-40 ms,
    and records the most Jobs that were ever created and not yet complete at once."""

    def __init__(self, kube, namespace: str):
        self.kube, self.namespace = kube, namespace
        self.in_flight: set[str] = set()
        self.completed: set[str] = set()
        self.peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="job-stand-in")
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=True)

    def _complete(self, name: str) -> None:
        time.sleep(random.uniform(0.005, 0.04))
        with self._lock:  # out of flight before the write: the flow may create the next at once
            self.in_flight.discard(name)
            self.completed.add(name)
        finish_job(self.kube, self.namespace, name, succeeded=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for kind, obj in self.kube.list_watch("Job", self.namespace, timeout_seconds=1):
                for job in obj if kind == "SYNC" else [] if kind == "DELETED" else [obj]:
                    name = job["metadata"]["name"]
                    with self._lock:
                        if name in self.in_flight or name in self.completed:
                            continue
                        self.in_flight.add(name)
                        self.peak = max(self.peak, len(self.in_flight))
                    self._pool.submit(self._complete, name)
                if self._stop.is_set():
                    return


def _volumes(kube, ns: str, n: int) -> list[str]:
    def one(i: int) -> str:
        user = f"user{i:04d}"
        names = workspace_names(user)
        kube.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                     "metadata": {"name": names.workspace_pvc, "namespace": ns,
                                  "labels": {"vibecode.dev/user": user, "vibecode.dev/volume": "workspace",
                                             "app.kubernetes.io/part-of": "vibecode"}},
                     "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
        return user

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(n)))


def test_nightly_backup_of_500_volumes_never_has_more_jobs_in_flight_than_the_setting(
        kube, namespace, monkeypatch):
    monkeypatch.setenv("VIBECODE_BACKUP_CONCURRENCY", str(CONCURRENCY))
    monkeypatch.setenv("VIBECODE_BACKUP_BATCH_SIZE", str(BATCH))
    monkeypatch.setenv("VIBECODE_KUBE_LIST_PAGE_SIZE", "100")
    get_settings.cache_clear()
    users = _volumes(kube, namespace, VOLUMES)
    # The repository steps' stand-ins (see the module docstring): no restic, no S3.
    monkeypatch.setattr(backup_steps, "ensure_repository", lambda username: False)
    monkeypatch.setattr(backup_steps, "record_expire_verify_now",
                        lambda username, run_id, job_failed, expire=True:
                        Recorded() if job_failed else Recorded(f"stand-in-{username}", None, True, "stand-in"))

    task_runs: list[str] = []
    real_submit = backup_steps.backup_batch.submit

    def counted_submit(*args, **kw):
        task_runs.append(args[0][0].username)
        return real_submit(*args, **kw)

    monkeypatch.setattr(backup_steps.backup_batch, "submit", counted_submit)
    import flows.backup as flow_module

    monkeypatch.setattr(flow_module, "backup_batch", backup_steps.backup_batch)
    with JobControllerStandIn(kube, namespace) as controller:
        report = backup_workspaces()

    assert report.outcome is Outcome.COMPLETED, [w for w in report.workspaces if w.outcome is not Outcome.COMPLETED]
    assert sorted(w.username for w in report.workspaces) == sorted(users)
    assert controller.peak <= CONCURRENCY, f"{controller.peak} Jobs in flight, the setting is {CONCURRENCY}"
    assert controller.peak == CONCURRENCY, "the slots were never all used: the bound was not exercised"
    assert len(controller.completed) == VOLUMES
    jobs = kube.list("Job", namespace)
    assert len(jobs) == VOLUMES
    assert all(any(c["type"] == "Complete" and c["status"] == "True" for c in j["status"]["conditions"])
               for j in jobs)
    assert len(task_runs) == -(-VOLUMES // BATCH), "one task run per batch, never per workspace"
    pvcs = {p["metadata"]["labels"]["vibecode.dev/user"]: p["metadata"]["annotations"]
            for p in kube.list("PersistentVolumeClaim", namespace)}
    assert all(pvcs[u][LAST_BACKUP_OUTCOME] == "Completed" and pvcs[u][LAST_BACKUP_SNAPSHOT] == f"stand-in-{u}"
               for u in users)
