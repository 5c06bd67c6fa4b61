"""Values for ``charts/vibecode-workspace``, built from names and settings (pure).

The chart's values.schema.json is the contract: it refuses unknown keys, so a builder that
drifts from the chart fails at install, not at runtime.

The workspace's HTTPRoute attaches to the platform's Gateway, which provisioning reads from
the cluster (:func:`platform_gateway` picks it from the Gateways labelled
``vibecode.dev/gateway=platform``) instead of assuming its name; with none, the route is off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasks.core.errors import PermanentError
from tasks.core.names import WorkspaceNames
from tasks.core.settings import Settings
from tasks.platform.values import GATEWAY_SELECTOR, WORKSPACES_LISTENER


@dataclass(frozen=True)
class GatewayRef:
    """Where a workspace's HTTPRoute attaches: a Gateway and its wildcard listener."""

    name: str
    namespace: str
    section_name: str

    def __str__(self) -> str:
        return f"Gateway {self.namespace}/{self.name} (listener {self.section_name})"


def platform_gateway(gateways: list[dict], settings: Settings) -> GatewayRef | None:
    """The platform's Gateway among ``gateways`` (already selected by :data:`GATEWAY_SELECTOR`).

    The listener is the one serving ``*.<domain>`` (else the one named ``workspaces``). Several
    labelled Gateways: the one in the platform namespace wins; otherwise it is ambiguous, and
    guessing would publish someone's editor on the wrong Gateway."""
    if not gateways:
        return None
    ours = [g for g in gateways if g["metadata"].get("namespace") == settings.platform_namespace]
    if len(ours) != 1 and len(gateways) != 1:
        names = sorted(f"{g['metadata'].get('namespace')}/{g['metadata']['name']}" for g in gateways)
        raise PermanentError(f"several Gateways are labelled {GATEWAY_SELECTOR} ({', '.join(names)}) and none "
                             f"alone in the platform namespace {settings.platform_namespace}: label only one")
    gw = ours[0] if len(ours) == 1 else gateways[0]
    listeners = (gw.get("spec") or {}).get("listeners") or []
    wildcard = f"*.{settings.domain}"
    section = next((lst["name"] for lst in listeners if lst.get("hostname") == wildcard),
                   next((lst["name"] for lst in listeners if lst.get("name") == WORKSPACES_LISTENER), None))
    if section is None:
        raise PermanentError(f"Gateway {gw['metadata'].get('namespace')}/{gw['metadata']['name']} has no listener "
                             f"for {wildcard} (nor one named {WORKSPACES_LISTENER!r}): workspaces cannot attach")
    return GatewayRef(gw["metadata"]["name"], gw["metadata"]["namespace"], section)


def workspace_values(names: WorkspaceNames, settings: Settings, replicas: int = 1,
                     gateway: GatewayRef | None = None, image: str | None = None) -> dict[str, Any]:
    """Values for ``charts/vibecode-workspace``; the chart's values.schema.json is the contract.
    ``gateway`` None: no HTTPRoute (the cluster has no platform Gateway). ``image``: the reference
    to run (the lock's, by digest: :func:`tasks.platform.lock.Lock.find`); default the setting's.

    The AI assistant's key is named, never carried: the values hold the Secret's name and key
    (``assistant``), only when one is configured, and the pod reads the value from the Secret."""
    name, _, digest = (image or settings.workspace.image).partition("@")
    repository, _, tag = name.rpartition(":")
    pull: dict[str, str] = {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent", **({"digest": digest} if digest else {})}
    route: dict[str, Any] = {"enabled": gateway is not None}
    if gateway is not None:
        route["gateway"] = {"name": gateway.name, "namespace": gateway.namespace, "sectionName": gateway.section_name}
    return {
        "username": names.username,
        "domain": settings.domain,
        "replicas": replicas,
        "image": pull,
        "persistence": {
            "storageClass": settings.workspace.storage_class or "",
            "workspace": {"size": settings.workspace.size},
            "extensions": {"size": settings.workspace.extensions_size},
        },
        "resources": {
            "requests": {"cpu": settings.workspace.cpu_request, "memory": settings.workspace.memory_request},
            "limits": {"cpu": settings.workspace.cpu_limit, "memory": settings.workspace.memory_limit},
        },
        "route": route,
        **({"assistant": {"secretName": settings.workspace.assistant_secret,
                          "secretKey": settings.workspace.assistant_secret_key}}
           if settings.workspace.assistant_secret else {}),
    }
