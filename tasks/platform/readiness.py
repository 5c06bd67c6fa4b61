"""Is a component ready? Pure checks of the objects its release made (the readiness gates).

The same questions ``kubectl rollout status`` and ``kubectl wait --for=condition=Established``
ask, over objects listed once per kind: a Deployment with every wanted replica updated and
available, a StatefulSet with every replica ready on the current revision, a DaemonSet
available on every node it should run on, a CRD that the API server serves.
"""

from __future__ import annotations

from tasks.cluster.objects import deployment_progress

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")


def _observed(obj: dict) -> bool:
    return (obj.get("status") or {}).get("observedGeneration", 0) >= obj.get("metadata", {}).get("generation", 0)


def workload_progress(kind: str, obj: dict | None) -> tuple[str, str]:
    """(``ready`` | ``progressing`` | ``failed``, reason)."""
    if obj is None:
        return "progressing", f"{kind} does not exist yet"
    if kind == "Deployment":
        return deployment_progress(obj)
    status, spec = obj.get("status") or {}, obj.get("spec") or {}
    if not _observed(obj):
        return "progressing", "waiting for the controller to observe the new generation"
    if kind == "StatefulSet":
        want = spec.get("replicas", 1)
        if status.get("updateRevision") and status.get("currentRevision") != status.get("updateRevision"):
            return "progressing", "rolling to a new revision"
        if status.get("readyReplicas", 0) < want:
            return "progressing", f"{status.get('readyReplicas', 0)} of {want} replicas ready"
        return "ready", f"{want} of {want} replicas ready"
    if kind == "DaemonSet":
        want = status.get("desiredNumberScheduled", 0)
        if status.get("updatedNumberScheduled", 0) < want or status.get("numberAvailable", 0) < want:
            return "progressing", f"{status.get('numberAvailable', 0)} of {want} pods available"
        return "ready", f"{want} of {want} pods available"
    return "ready", f"{kind} has no readiness to wait for"


def crd_established(crd: dict | None) -> tuple[bool, str]:
    if crd is None:
        return False, "not installed"
    for cond in (crd.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Established":
            return cond.get("status") == "True", cond.get("message") or cond.get("reason") or ""
    return False, "not established yet"


def pending(objects: dict[tuple[str, str | None, str], dict | None]) -> list[str]:
    """What is not ready among ``(kind, namespace, name) -> object`` (None: absent); empty = ready.
    Raises ValueError on a rollout that failed (no point waiting)."""
    out = []
    for (kind, ns, name), obj in sorted(objects.items()):
        if kind == "CustomResourceDefinition":
            ok, why = crd_established(obj)
            if not ok:
                out.append(f"CRD {name}: {why}")
            continue
        state, why = workload_progress(kind, obj)
        if state == "failed":
            raise ValueError(f"{kind} {ns}/{name}: rollout failed: {why}")
        if state != "ready":
            out.append(f"{kind} {ns}/{name}: {why}")
    return out
