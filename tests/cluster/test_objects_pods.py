"""pod_problems (tasks/cluster/objects.py): what a stuck rollout's pods say, table-tested."""

from __future__ import annotations

import pytest

from tasks.cluster.objects import pod_problems


def _pod(name="ws-a-1", phase="Pending", statuses=(), conditions=()):
    return {"metadata": {"name": name},
            "status": {"phase": phase, "containerStatuses": list(statuses), "conditions": list(conditions)}}


@pytest.mark.parametrize(("pods", "said"), [
    ([], ""),
    ([_pod(statuses=[{"name": "cs", "state": {"waiting": {"reason": "ContainerCreating"}}}])], "pod ws-a-1: phase Pending"),
    ([_pod(statuses=[{"name": "cs", "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}}])],
     "pod ws-a-1: cs ErrImagePull: not found"),
    ([_pod(phase="Running", statuses=[{"name": "cs", "restartCount": 4, "state": {"running": {}},
                                       "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}])],
     "pod ws-a-1: cs restarted 4x, last exit 1 (Error)"),
    ([_pod(phase="Running", statuses=[{"name": "cs", "state": {"running": {}}}],
           conditions=[{"type": "Ready", "status": "False", "message": "containers with unready status: [cs]"}])],
     "pod ws-a-1: Ready: containers with unready status: [cs]"),
    ([_pod(phase="Running", statuses=[{"name": "cs", "ready": True, "state": {"running": {}}}])], ""),
])
def test_pod_problems_says_what_the_kubelet_said(pods, said):
    assert pod_problems(pods) == said


def test_pod_problems_names_at_most_limit_pods():
    pods = [_pod(name=f"p{i}", phase="Failed") for i in range(5)]
    assert pod_problems(pods, limit=2) == "pod p0: phase Failed; pod p1: phase Failed"
