"""await_available (tasks/cluster/rollout.py) against the real API server.

No Deployment controller runs here: the tests write the Deployment's status as that
controller would (stand-ins for it, through the real status subresource), and the waiter
must see those writes on its watch.
"""

from __future__ import annotations

import threading
import time

import pytest

from tasks.cluster.rollout import await_available
from tasks.core.errors import PermanentError, ServerError, Timeout


def _deployment(kube, ns, name="ws-roll"):
    sel = {"app": name}
    return kube.create({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": name, "namespace": ns, "labels": {"vibecode.dev/user": "roll"}},
                        "spec": {"replicas": 1, "selector": {"matchLabels": sel},
                                 "template": {"metadata": {"labels": sel},
                                              "spec": {"containers": [{"name": "c", "image": "cs"}]}}}})


def _status(kube, ns, name, **status):
    dep = kube.get("Deployment", ns, name)
    kube.patch_status("Deployment", ns, name, {"observedGeneration": dep["metadata"]["generation"], **status})


def test_controller_stand_in_marks_it_available_later_and_the_watch_returns(kube, namespace):
    _deployment(kube, namespace)
    writer = threading.Timer(0.5, _status, (kube, namespace, "ws-roll"),
                             {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1})
    writer.start()
    try:
        got = await_available(kube, namespace, "ws-roll", "vibecode.dev/user=roll", timeout=30, retry_interval=0.1)
    finally:
        writer.join()
    assert got == "1 of 1 replicas available"


def test_controller_stand_in_reports_progress_deadline_exceeded_and_that_is_permanent(kube, namespace):
    _deployment(kube, namespace)
    _status(kube, namespace, "ws-roll", replicas=1, updatedReplicas=1, conditions=[
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "ws-roll-1" has timed out progressing.'}])
    with pytest.raises(PermanentError, match="rollout failed: ReplicaSet \"ws-roll-1\" has timed out"):
        await_available(kube, namespace, "ws-roll", "vibecode.dev/user=roll", timeout=30, retry_interval=0.1)


def test_never_available_is_a_transient_timeout_that_says_why(kube, namespace):
    _deployment(kube, namespace)
    _status(kube, namespace, "ws-roll", replicas=1, updatedReplicas=1)
    with pytest.raises(Timeout, match="ws-roll not available after 2s: 0 of 1 replicas available"):
        await_available(kube, namespace, "ws-roll", "vibecode.dev/user=roll", timeout=2, retry_interval=0.1)


def test_a_missing_deployment_is_waited_for_not_an_error(kube, namespace):
    with pytest.raises(Timeout, match="Deployment does not exist yet"):
        await_available(kube, namespace, "ws-none", "vibecode.dev/user=none", timeout=1, retry_interval=0.1)


def test_a_broken_watch_is_listed_again(kube, namespace):
    """The adapter's real watch is wrapped so its first attempt breaks as a dropped connection
    does (tasks.cluster.kube maps that to ServerError); the waiter must list again, not fail."""
    _deployment(kube, namespace)
    _status(kube, namespace, "ws-roll", replicas=1, updatedReplicas=1, readyReplicas=1, availableReplicas=1)
    calls = []

    class Breaking:
        def list_watch(self, *args, **kw):
            calls.append(time.monotonic())
            if len(calls) == 1:
                raise ServerError("watch Deployment: connection reset")
            return kube.list_watch(*args, **kw)

    got = await_available(Breaking(), namespace, "ws-roll", "vibecode.dev/user=roll", timeout=30, retry_interval=0.1)
    assert got == "1 of 1 replicas available" and len(calls) == 2


def test_kubelet_stand_in_says_the_image_is_missing_and_the_failed_rollout_names_it(kube, namespace):
    """The pod's waiting reason is written as the kubelet would (a stand-in: no kubelet here)."""
    _deployment(kube, namespace)
    # No ServiceAccount controller either: the namespace's default account, as it would make it.
    kube.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": namespace}})
    kube.create({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "ws-roll-1-abc", "namespace": namespace, "labels": {"vibecode.dev/user": "roll"}},
                 "spec": {"automountServiceAccountToken": False,
                          "containers": [{"name": "c", "image": "cs@sha256:" + "0" * 64}]}})
    kube.patch_status("Pod", namespace, "ws-roll-1-abc", {"phase": "Pending", "containerStatuses": [
        {"name": "c", "ready": False, "restartCount": 0, "image": "cs", "imageID": "",
         "state": {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "cs@sha256:000"'}}}]})
    _status(kube, namespace, "ws-roll", replicas=1, updatedReplicas=1, conditions=[
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "ws-roll-1" has timed out progressing.'}])
    with pytest.raises(PermanentError, match=r'timed out progressing\. \(pod ws-roll-1-abc: c ImagePullBackOff: '
                                             r'Back-off pulling image "cs@sha256:000"\)'):
        await_available(kube, namespace, "ws-roll", "vibecode.dev/user=roll", timeout=30, retry_interval=0.1)
