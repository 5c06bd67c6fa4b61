"""Values for ``charts/vibecode-workspace``, built from names and settings (pure).

The chart's values.schema.json is the contract: it refuses unknown keys, so a builder
that drifts from the chart fails at install, not at runtime.
"""

from __future__ import annotations

from typing import Any

from tasks.core.names import WorkspaceNames
from tasks.core.settings import Settings


def workspace_values(names: WorkspaceNames, settings: Settings, replicas: int = 1) -> dict[str, Any]:
    """Values for ``charts/vibecode-workspace``; the chart's values.schema.json is the contract."""
    name, _, digest = settings.workspace.image.partition("@")
    repository, _, tag = name.rpartition(":")
    image = {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent", **({"digest": digest} if digest else {})}
    return {
        "username": names.username,
        "domain": settings.domain,
        "replicas": replicas,
        "image": image,
        "persistence": {
            "storageClass": settings.workspace.storage_class or "",
            "workspace": {"size": settings.workspace.size},
            "extensions": {"size": settings.workspace.extensions_size},
        },
        "authelia": {"verifyUrl": settings.identity.authelia_verify_url, "signinUrl": settings.identity.authelia_url},
    }
