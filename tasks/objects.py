"""Pure builders for what we ask Kubernetes and Helm for (like kubespawner's ``objects.py``).

No I/O here: given names and settings, return plain dicts. Flows pass the result to the
adapters, tests inspect it directly.
"""

from __future__ import annotations

from typing import Any

from tasks.names import WorkspaceNames
from tasks.settings import Settings


def restricted_container_security() -> dict[str, Any]:
    """Pod Security "restricted" for a container of one of our Jobs, plus a read-only root
    filesystem (Jobs write only to their mounted volumes)."""
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}


def workspace_values(names: WorkspaceNames, settings: Settings, replicas: int = 1) -> dict[str, Any]:
    """Values for ``charts/vibecode-workspace``; the chart's values.schema.json is the contract."""
    repository, _, tag = settings.workspace_image.rpartition(":")
    return {
        "username": names.username,
        "domain": settings.domain,
        "replicas": replicas,
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "persistence": {
            "storageClass": settings.storage_class or "",
            "workspace": {"size": settings.workspace_size},
            "extensions": {"size": settings.extensions_size},
        },
        "authelia": {"verifyUrl": settings.authelia_verify_url, "signinUrl": settings.authelia_url},
    }


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
