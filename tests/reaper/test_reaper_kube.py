"""The reaper's two cluster-facing guarantees on the real API server: the fast LIST returns what
``list`` returns, and a stop judged on a stale LIST is refused."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tasks.core.errors import Conflict
from tasks.reaper.decide import Decision, stop_patch, workspaces_from
from tests.fixtures.reaper import add_workspace


def _strip_times(obj):
    if isinstance(obj, dict):
        return {k: _strip_times(v) for k, v in obj.items() if k not in ("creationTimestamp", "time", "managedFields")}
    if isinstance(obj, list):
        return [_strip_times(v) for v in obj]
    return obj


def test_list_json_returns_the_same_items_as_list(kube, namespace):
    add_workspace(kube, namespace, "amy", annotations={"vibecode.dev/reap": "false"})
    add_workspace(kube, namespace, "ben", replicas=0)
    sel = "app.kubernetes.io/part-of=vibecode"
    for kind in ("Deployment", "PersistentVolumeClaim"):
        fast, slow = kube.list_json(kind, namespace, sel), kube.list(kind, namespace, sel)
        assert len(fast) == 2 and _strip_times(fast) == _strip_times(slow)
        assert all(isinstance(i["metadata"]["creationTimestamp"], str) for i in fast)


def test_a_stop_judged_on_a_stale_list_is_refused(kube, namespace):
    add_workspace(kube, namespace, "cal")
    (ws,) = workspaces_from(kube.list_json("Deployment", namespace), [], [])
    # Between the reaper's LIST and its write, someone resumes it or a restore sets its guard.
    kube.annotate("Deployment", namespace, "ws-cal", {"vibecode.dev/restoring": "run-9"})
    patch = stop_patch(ws, Decision("stop", "idle 3h", "idle"), datetime.now(timezone.utc))
    with pytest.raises(Conflict):
        kube.patch("Deployment", namespace, "ws-cal", patch)
    assert kube.get("Deployment", namespace, "ws-cal")["spec"]["replicas"] == 1
    (fresh,) = workspaces_from(kube.list_json("Deployment", namespace), [], [])
    kube.patch("Deployment", namespace, "ws-cal", stop_patch(fresh, Decision("stop", "idle 3h", "idle"),
                                                              datetime.now(timezone.utc)))
    assert kube.get("Deployment", namespace, "ws-cal")["spec"]["replicas"] == 0
