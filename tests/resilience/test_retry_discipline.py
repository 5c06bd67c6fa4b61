"""Retry discipline on real answers: a transient fault injected between a task and the real API
server is retried and counted (in the run's ``<key>-retries`` artifact); the API server's own
403 and 422 fail the task at its first attempt, with the server's message."""

from __future__ import annotations

import json

import pytest
import yaml
from prefect import flow, task

from tasks.cluster import kube as kube_adapter
from tasks.core.errors import Forbidden, Invalid
from tasks.core.settings import get_settings
from tasks.core.steps import retry_counts, table_artifact, transient_retries
from tests.fixtures.faults import FaultPlan, api_proxy

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def through(apiserver, tmp_path, monkeypatch):
    """The flows' kubeconfig names a fault proxy in front of the API server (no faults yet)."""
    proxy, kubeconfig = api_proxy(apiserver.kubeconfig, tmp_path)
    monkeypatch.setenv("VIBECODE_KUBECONFIG", str(kubeconfig))
    get_settings.cache_clear()
    kube_adapter.reset_connections()
    yield proxy
    proxy.stop()
    get_settings.cache_clear()
    kube_adapter.reset_connections()


def _attempting(name: str, action):
    attempts: list[int] = []

    @task(name=name, **transient_retries(retries=3, backoff_factor=0.05))
    def step():
        attempts.append(1)
        return action(kube_adapter.connect())

    return step, attempts


def test_injected_transient_faults_are_retried_counted_and_reported(through, namespace):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    faulted: list[str] = []

    # The first two creates fail, the third goes through. A write's 500 is not retried inside
    # the call (it may have been done), so the task's policy retries it; a read's would be
    # retried in place (tasks.core.retrying) and never reach the task.
    def first_two(method, path):
        if method == "POST" and path.split("?")[0].endswith("/configmaps") and len(faulted) < 2:
            faulted.append(path)
            return True
        return False

    through.plan = FaultPlan({"500": 1.0}, eligible=first_two)
    step, attempts = _attempting("create-probe", lambda k: k.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe", "namespace": namespace}})["metadata"]["name"])

    @flow(name="retry-counting")
    def run():
        from prefect.runtime import flow_run

        value = step()
        table_artifact("retry-counting", {"created": str(value)}, "retry counting")
        return flow_run.id, retry_counts(flow_run.id)

    run_id, counted = run()
    assert len(attempts) == 3 and counted == {"create-probe": 2} and through.counts()["500"] == 2

    async def artifacts():
        async with get_client() as c:
            return await c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["retry-counting-retries"])))

    import asyncio

    arts = [a for a in asyncio.run(artifacts()) if str(a.flow_run_id) == str(run_id)]
    assert len(arts) == 1 and json.loads(arts[0].data) == [{"task": "create-probe", "retries": 2}]


def test_an_invalid_object_422_fails_at_the_first_attempt(through, namespace):
    step, attempts = _attempting("create-invalid", lambda k: k.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_A_Valid_Name", "namespace": namespace}}))
    before = retry_counts().get("create-invalid", 0)
    with pytest.raises(Invalid, match="Not_A_Valid_Name"):
        step()
    assert len(attempts) == 1 and retry_counts().get("create-invalid", 0) == before
    assert through.counts()["requests"] >= 1 and through.faults() == 0


def test_a_refused_request_403_fails_at_the_first_attempt(apiserver, namespace, tmp_path, monkeypatch):
    cfg = yaml.safe_load(apiserver.kubeconfig.read_text())
    cfg["users"] = [{"name": "nobody", "user": {}}]  # anonymous: authenticated as system:anonymous
    cfg["contexts"][0]["context"]["user"] = "nobody"
    path = tmp_path / "anonymous-kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("VIBECODE_KUBECONFIG", str(path))
    get_settings.cache_clear()
    kube_adapter.reset_connections()
    try:
        step, attempts = _attempting("read-forbidden", lambda k: k.list("Secret", namespace))
        with pytest.raises(Forbidden, match="forbidden"):
            step()
        assert len(attempts) == 1
    finally:
        get_settings.cache_clear()
        kube_adapter.reset_connections()


def test_a_read_is_retried_inside_the_call_and_counted(through, namespace):
    from tasks.core import retrying

    faulted: list[str] = []

    def first_two(method, path):
        if method == "GET" and "configmaps/absent" in path and len(faulted) < 2:
            faulted.append(path)
            return True
        return False

    # 503s: a reset of a GET is retried by urllib3 itself, below the adapter, uncounted
    through.plan = FaultPlan({"503": 1.0}, eligible=first_two, retry_after=0)
    before = retrying.counts().get("kube read", 0)
    assert kube_adapter.connect().get("ConfigMap", namespace, "absent") is None  # the answer, after two faults
    assert len(faulted) == 2 and retrying.counts()["kube read"] == before + 2
