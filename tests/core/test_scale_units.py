"""The pure parts of scaling to 10,000 people: lean objects, backup batches, in-place retries."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.backup.plan import Target
from tasks.backup.steps import batches
from tasks.cluster.kube import lean
from tasks.core.errors import Conflict, PermanentError, TooManyRequests
from tasks.core.steps import retry_transient


def test_lean_drops_managed_fields_and_only_on_request_the_template():
    dep = {"metadata": {"name": "ws-a", "managedFields": [{"manager": "helm"}], "annotations": {"a": "1"}},
           "spec": {"replicas": 1, "template": {"spec": {"containers": []}}}, "status": {"replicas": 1}}
    kept = lean(dep)
    assert "managedFields" not in kept["metadata"] and kept["spec"]["template"] == dep["spec"]["template"]
    slim = lean(dep, template="drop")
    assert slim == {"metadata": {"name": "ws-a", "annotations": {"a": "1"}}, "spec": {"replicas": 1},
                    "status": {"replicas": 1}}
    full = {"spec": {"replicas": 1, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {
        "volumes": [{"name": "home"}], "containers": [
            {"name": "cs", "image": "code-server", "env": [{"name": "X", "value": "1"}],
             "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2"}}},
            {"name": "side"}]}}}}
    assert lean(full, template="requests")["spec"] == {"replicas": 1, "template": {"spec": {"containers": [
        {"name": "cs", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
        {"name": "side", "resources": {"requests": {}}}]}}}
    assert dep["metadata"]["managedFields"] and dep["spec"]["template"], "the original is left as it was"
    assert lean({"metadata": {"name": "x"}}) == {"metadata": {"name": "x"}}


@given(n=st.integers(0, 2000), size=st.integers(1, 300), concurrency=st.integers(1, 64))
def test_batches_cover_every_target_once_and_keep_the_slots_fillable(n, size, concurrency):
    targets = [Target(f"u{i}", f"ws-u{i}-workspace", None) for i in range(n)]
    chunks, in_flight = batches(targets, size, concurrency)
    assert [t for c in chunks for t in c] == targets
    assert all(1 <= len(c) <= size for c in chunks)
    assert len(chunks) == -(-n // size)  # task runs grow with batches, not with workspaces
    # the batches in flight hold at least the slots' worth of workspaces plus one batch
    assert in_flight >= 2 and in_flight * size >= concurrency + size


def test_retry_transient_retries_transient_errors_only(monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise Conflict("moved")
        return "ok"

    assert retry_transient(flaky, retries=3) == "ok" and len(calls) == 3
    calls.clear()

    def broken():
        calls.append(1)
        raise PermanentError("no")

    with pytest.raises(PermanentError):
        retry_transient(broken, retries=3)
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(Conflict):
        retry_transient(lambda: calls.append(1) or (_ for _ in ()).throw(Conflict("x")), retries=2)
    assert len(calls) == 3


def test_retry_transient_waits_at_least_retry_after_up_to_the_cap(monkeypatch):
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    attempts = iter([TooManyRequests("slow down", retry_after=7), TooManyRequests("again", retry_after=3600), None])

    def limited():
        exc = next(attempts)
        if exc:
            raise exc
        return "done"

    assert retry_transient(limited, retries=3, backoff_factor=0.01) == "done"
    assert slept[0] >= 7 and slept[1] == 60.0
