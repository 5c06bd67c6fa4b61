"""Pure builders and readings of cluster objects every domain uses (like kubespawner's
``objects.py``): the one restricted Job, and where a Deployment's rollout stands.

No I/O here: given names and settings, return plain dicts. Steps pass the result to the
adapters, tests inspect it directly.
"""

from __future__ import annotations

from typing import Any


def restricted_container_security() -> dict[str, Any]:
    """Pod Security "restricted" for a container of one of our Jobs, plus a read-only root
    filesystem (Jobs write only to their mounted volumes)."""
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}


def restricted_job(*, name: str, namespace: str, labels: dict[str, str], container: dict[str, Any],
                   volumes: list[dict], run_as_user: int, run_as_group: int, deadline_seconds: int,
                   fs_group: int | None = None, node: str | None = None,
                   ttl_seconds: int | None = None) -> dict[str, Any]:
    """A one-pod, never-retried Job under Pod Security "restricted", for every Job we create.

    ``backoffLimit: 0``: a second try repeats the same failure and hides which one it was;
    the caller (a rerun, the next night) retries. The container gets the restricted
    security context and ``terminationMessagePolicy: FallbackToLogsOnError``, so a failed
    Job's pod status carries what the program said last (see :mod:`tasks.cluster.jobs`). ``node``
    pins the pod with node affinity (the scheduler still checks resources, unlike
    ``nodeName``)."""
    pod_security: dict[str, Any] = {"runAsNonRoot": True, "runAsUser": run_as_user, "runAsGroup": run_as_group,
                                    "seccompProfile": {"type": "RuntimeDefault"}}
    if fs_group is not None:
        pod_security |= {"fsGroup": fs_group, "fsGroupChangePolicy": "OnRootMismatch"}
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security,
        "containers": [{"imagePullPolicy": "IfNotPresent", **container,
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "securityContext": restricted_container_security()}],
        "volumes": volumes,
    }
    if node:
        pod["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}}
    spec: dict[str, Any] = {"backoffLimit": 0, "activeDeadlineSeconds": deadline_seconds,
                            "template": {"metadata": {"labels": labels}, "spec": pod}}
    if ttl_seconds is not None:
        spec["ttlSecondsAfterFinished"] = ttl_seconds
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": namespace, "labels": labels}, "spec": spec}


def deployment_progress(deployment: dict | None) -> tuple[str, str]:
    """Where is a Deployment's rollout? Mirrors ``kubectl rollout status``.

    Returns (state, reason) with state ``ready``, ``progressing`` or ``failed``; only
    ``failed`` (progress deadline exceeded) is worth giving up on before the timeout.
    """
    if deployment is None:
        return "progressing", "Deployment does not exist yet"
    spec, status = deployment.get("spec", {}), deployment.get("status") or {}
    generation = deployment.get("metadata", {}).get("generation", 0)
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return "failed", cond.get("message") or "progress deadline exceeded"
    if status.get("observedGeneration", 0) < generation:
        return "progressing", "waiting for the controller to observe the new generation"
    want = spec.get("replicas", 1)
    if status.get("updatedReplicas", 0) < want:
        return "progressing", f"{status.get('updatedReplicas', 0)} of {want} replicas updated"
    if status.get("availableReplicas", 0) < want:
        return "progressing", f"{status.get('availableReplicas', 0)} of {want} replicas available"
    return "ready", f"{want} of {want} replicas available"


def pod_problems(pods: list[dict], limit: int = 3) -> str:
    """Why a Deployment's pods are not ready, as the kubelet says it: each pod's waiting
    containers (``ErrImagePull: <message>``), the last exit of a restarting one, or an unready
    condition's message. "" when nothing is said. A rollout that missed its deadline names
    only the ReplicaSet; the person reading it needs the pod's reason (an image that is not
    on the node, a crash loop, a probe failing)."""
    said: list[str] = []
    for pod in pods[:limit]:
        name = pod.get("metadata", {}).get("name", "?")
        status = pod.get("status") or {}
        parts = []
        for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            state, last = cs.get("state") or {}, cs.get("lastState") or {}
            if "waiting" in state and state["waiting"].get("reason") not in (None, "ContainerCreating", "PodInitializing"):
                w = state["waiting"]
                parts.append(f"{cs.get('name')} {w.get('reason')}: {(w.get('message') or '')[:300]}".rstrip(": "))
            elif "terminated" in last and cs.get("restartCount", 0):
                t = last["terminated"]
                parts.append(f"{cs.get('name')} restarted {cs['restartCount']}x, last exit {t.get('exitCode')} "
                             f"({t.get('reason', '')})")
        if not parts:
            for cond in status.get("conditions") or []:
                if cond.get("status") != "True" and cond.get("message"):
                    parts.append(f"{cond.get('type')}: {cond['message'][:300]}")
                    break
        if not parts and status.get("phase") not in (None, "Running"):
            parts.append(f"phase {status['phase']}")
        if parts:
            said.append(f"pod {name}: " + "; ".join(parts))
    return "; ".join(said)
