"""The Kubernetes adapter against the real API server: idempotence, errors, list+watch."""

import threading

import pytest

from tasks.core.errors import Conflict, Invalid
from tests.fixtures.kube import finish_job


def _cm(ns, name="x", **data):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": data}


def test_replace_with_a_stale_resource_version_is_a_conflict(kube, namespace):
    first = kube.create(_cm(namespace, a="1"))
    kube.replace({**first, "data": {"a": "2"}})
    with pytest.raises(Conflict):
        kube.replace({**first, "data": {"a": "3"}})  # stale resourceVersion: someone else won
    assert kube.get("ConfigMap", namespace, "x")["data"] == {"a": "2"}


def test_annotate_sets_and_removes(kube, namespace):
    kube.create({**_cm(namespace), "metadata": {"name": "x", "namespace": namespace, "annotations": {"a": "1"}}})
    got = kube.annotate("ConfigMap", namespace, "x", {"a": None, "b": "2"})
    assert got["metadata"]["annotations"] == {"b": "2"}


def test_invalid_object_is_permanent(kube, namespace):
    with pytest.raises(Invalid):
        kube.create(_cm(namespace, name="UPPER"))


def test_list_watch_sees_the_sync_then_status_changes(kube, namespace):
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "j1", "namespace": namespace, "labels": {"run": "r1"}},
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                          "containers": [{"name": "c", "image": "busybox"}]}}}}
    kube.create(job)
    stream = kube.list_watch("Job", namespace, "run=r1", timeout_seconds=5)
    kind, items = next(stream)
    assert kind == "SYNC" and [j["metadata"]["name"] for j in items] == ["j1"]
    threading.Timer(0.3, finish_job, args=(kube, namespace, "j1", True)).start()
    kind, obj = next(stream)
    assert kind == "MODIFIED" and obj["status"]["succeeded"] == 1
    stream.close()
