"""Waiting for a Deployment to become available, on a watch instead of a polling loop.

A resumed or new workspace is usable the moment the Deployment controller reports its
replica available; polling every few seconds added up to a whole interval to every start
(and, with many starts at once, a GET per workspace per interval). A watch is one request
and reacts at once; when the server ends it or it breaks, it is opened again after
``retry_interval``, until ``timeout``.
"""

from __future__ import annotations

import time

from tasks.cluster.objects import deployment_progress, pod_problems
from tasks.core.errors import PermanentError, Timeout, TransientError, VibecodeError


def await_available(client, namespace: str, name: str, selector: str, timeout: float,
                    retry_interval: float) -> str:
    """The reason ``deployment_progress`` gives once ready; PermanentError on a failed
    rollout, Timeout (transient) when ``timeout`` passes first. ``selector`` narrows the
    watch to the workspace's own objects."""
    deadline = time.monotonic() + timeout
    reason = "not observed yet"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout(f"{name} not available after {timeout:.0f}s: {_with_pods(client, namespace, selector, reason)}")
        try:
            for kind, obj in client.list_watch("Deployment", namespace, selector,
                                               timeout_seconds=max(1, min(int(left) + 1, 60))):
                if kind == "SYNC":
                    found = [d for d in obj if d["metadata"]["name"] == name]
                    current = found[0] if found else None
                elif obj.get("metadata", {}).get("name") == name:
                    current = None if kind == "DELETED" else obj
                else:
                    continue
                state, reason = deployment_progress(current)
                if state == "ready":
                    return reason
                if state == "failed":
                    raise PermanentError(f"{name}: rollout failed: {_with_pods(client, namespace, selector, reason)}")
                if time.monotonic() >= deadline:
                    break
        except TransientError as exc:  # a broken or expired watch, a throttled list: list again
            reason = f"watch interrupted: {exc}"
            time.sleep(min(retry_interval, max(0.0, deadline - time.monotonic())))


def _with_pods(client, namespace: str, selector: str, reason: str) -> str:
    """``reason`` and what the pods say (best effort: a failed read leaves the reason alone)."""
    try:
        said = pod_problems(client.list("Pod", namespace, selector))
    except VibecodeError:
        return reason
    return f"{reason} ({said})" if said else reason
