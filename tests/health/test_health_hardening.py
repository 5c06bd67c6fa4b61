"""Monitoring never goes silent (issue 16): every Kubernetes call has a client-side
timeout, and a health run against an API server that accepts connections and never
answers ends within its budget, critical, instead of hanging (and, with the deployment's
CANCEL_NEW, cancelling every later run). Also: health's dormancy is the reaper's.

The hung API server is a real TCP listener on loopback (tests/fixtures/silent.py).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from tasks.cluster import kube as kube_adapter
from tasks.cluster.localnode.envtest import free_port
from tasks.core.errors import ServerError, TransientError
from tasks.core.settings import Settings, get_settings
from tests.fixtures.silent import SilentServer

TIMEOUT = 1.0  # kube_request_timeout_seconds in these tests


@pytest.fixture
def silent():
    with SilentServer() as server:
        yield server


def calls(k: kube_adapter.Kube) -> dict:
    """Every verb of the adapter, as the flows use them."""
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "ns", "resourceVersion": "1"}}
    return {
        "get": lambda: k.get("Deployment", "ns", "ws-a"),
        "list": lambda: k.list("PersistentVolumeClaim", "ns", "a=b"),
        "list raw": lambda: k.list("ConfigMap", "ns", raw=True),
        "list_json": lambda: k.list_json("Deployment", "ns"),
        "list_all": lambda: k.list_all("Node"),
        "list_all custom": lambda: k.list_all("Certificate"),
        "ping": k.ping,
        "create": lambda: k.create(cm),
        "replace": lambda: k.replace(cm),
        "patch": lambda: k.patch("Deployment", "ns", "ws-a", {"spec": {"replicas": 0}}),
        "patch_status": lambda: k.patch_status("Job", "ns", "j", {"active": 1}),
        "annotate": lambda: k.annotate("Deployment", "ns", "ws-a", {"a": "b"}),
        "scale": lambda: k.scale("ns", "ws-a", 1),
        "delete": lambda: k.delete("PersistentVolumeClaim", "ns", "p"),
        "delete guarded": lambda: k.delete("PersistentVolumeClaim", "ns", "p", resource_version="5"),
        "list_watch": lambda: next(k.list_watch("Job", "ns", timeout_seconds=1)),
        "watch resumed": lambda: next(k.list_watch("Job", "ns", timeout_seconds=1, resource_version="7")),
    }


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_every_adapter_call_times_out_against_a_server_that_never_answers(silent, tmp_path, scheme):
    s = Settings(kubeconfig=silent.kubeconfig(tmp_path, scheme), kube_request_timeout_seconds=TIMEOUT)
    k = kube_adapter.connect(s)
    results: dict[str, tuple[float, BaseException | None]] = {}

    def run(name, fn):
        started = time.monotonic()
        try:
            fn()
            results[name] = (time.monotonic() - started, None)
        except BaseException as exc:  # noqa: BLE001 - judged below
            results[name] = (time.monotonic() - started, exc)

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in calls(k).items()]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    hung = sorted(set(calls(k)) - set(results))
    assert not hung, f"still waiting after 20 s on a server that never answers: {hung}"
    for name, (seconds, exc) in results.items():
        assert isinstance(exc, ServerError) and isinstance(exc, TransientError), (name, exc)
        assert seconds < 10, (name, seconds)  # one timeout, plus a busy machine's scheduling of 17 threads
    # one connection per call: a timeout is never retried inside the call (the task retries it)
    assert len(silent.accepted) == len(results), len(silent.accepted)
    kube_adapter.reset_connections()


def test_the_timeout_comes_from_settings():
    assert Settings().kube_request_timeout_seconds == 30
    with pytest.raises(ValueError, match="kube_request_timeout_seconds"):
        Settings(kube_request_timeout_seconds=0)
    assert Settings(health_budget_seconds=30).health.budget_seconds == 30


@pytest.mark.usefixtures("prefect_server")
def test_a_health_run_against_a_hung_api_server_is_critical_within_its_budget(silent, tmp_path, monkeypatch):
    from flows.health import check_platform_health
    from tasks.health.checks import Status
    from tasks.health.steps import PlatformUnhealthy

    budget = 5
    for k, v in {"VIBECODE_KUBECONFIG": str(silent.kubeconfig(tmp_path)),
                 "VIBECODE_KUBE_REQUEST_TIMEOUT_SECONDS": str(TIMEOUT),
                 "VIBECODE_HEALTH_BUDGET_SECONDS": str(budget), "VIBECODE_HEALTH_TIMEOUT_SECONDS": "1",
                 "VIBECODE_AUTHELIA_HEALTH_URL": f"http://127.0.0.1:{free_port()}/api/health",
                 "VIBECODE_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}"}.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    kube_adapter.reset_connections()
    done: dict = {}

    def run():
        started = time.monotonic()
        done["state"] = check_platform_health(return_state=True)
        done["seconds"] = time.monotonic() - started

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout=90)
    kube_adapter.reset_connections()
    assert not t.is_alive(), "the health run hangs on an API server that never answers"
    state = done["state"]
    assert state.is_failed()
    with pytest.raises(PlatformUnhealthy) as failed:
        state.result()
    checks = {c.name: c for c in failed.value.report.checks}
    assert checks["api"].status is Status.CRITICAL, checks["api"]
    assert checks["authelia"].status is Status.CRITICAL and checks["backups.bucket"].status is Status.CRITICAL
    # the budget, plus what was still in flight finishing on its own timeouts
    assert done["seconds"] < budget + 20, done["seconds"]


def test_health_counts_dormant_workspaces_with_the_reapers_dormancy():
    from tasks.core.timefmt import rfc3339
    from tasks.health.checks import counts

    now = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)

    def dep(days):
        return {"metadata": {"annotations": {"vibecode.dev/stopped-at": rfc3339(now - timedelta(days=days))}},
                "spec": {"replicas": 0}}

    def dormant(dormancy):
        return next(g.value for g in counts([dep(15), dep(45)], None, now, dormancy) if g.labels["state"] == "dormant")

    assert dormant(timedelta(days=10)) == 2 and dormant(timedelta(days=30)) == 1 and dormant(timedelta(days=60)) == 0
    assert dormant(None) == 0  # dormancy off: nothing is dormant




@pytest.mark.slow
def test_the_health_flow_takes_dormancy_from_the_reaper_settings(healthy, monkeypatch):
    from flows.health import check_platform_health

    monkeypatch.setenv("VIBECODE_REAP_DORMANCY_DAYS", "60")
    monkeypatch.setenv("VIBECODE_REAP_VOLUME_DORMANCY_DAYS", "90")
    get_settings.cache_clear()
    report = check_platform_health()
    states = {g.labels["state"]: g.value for g in report.gauges if g.name == "workspaces"}
    assert states == {"running": 1, "stopped": 1, "dormant": 0}, states  # 40 days stopped < 60 days
