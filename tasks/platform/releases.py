"""The helm releases bootstrap installs, with the values we give each (pure).

Upstream charts get only what pins their images to the lock (by digest, or the same digest
in an air-gapped install's mirror) and what our platform needs of them; everything else is
the chart's default at the pinned version. Key names follow each chart's documented values
at that version (Envoy Gateway's ``global.images.*``; cert-manager's ``image``,
``webhook.image``, ... with ``repository`` and ``digest``, and ``crds.enabled``/``crds.keep``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from tasks.core.settings import Settings
from tasks.platform.lock import Lock, parse_image
from tasks.platform.plan import ClusterFacts, Verdict, image_ref


@dataclass(frozen=True)
class DesiredRelease:
    component: str
    release: str
    namespace: str
    chart_key: str | None  # an upstream chart of the lock
    chart_path: Path | None  # one of ours
    values: dict[str, Any]


def _repo_digest(ref: str) -> dict[str, str]:
    r = parse_image(ref)
    out = {"repository": r.repository}
    if r.digest:
        out["digest"] = r.digest
    elif r.tag:
        out["tag"] = r.tag
    return out


def envoy_gateway_values(lock: Lock, facts: ClusterFacts) -> dict[str, Any]:
    return {"global": {"images": {
        "envoyGateway": {"image": image_ref(lock, "envoy-gateway", facts), "pullPolicy": "IfNotPresent"},
        "ratelimit": {"image": image_ref(lock, "envoy-ratelimit", facts), "pullPolicy": "IfNotPresent"}}}}


def cert_manager_values(lock: Lock, facts: ClusterFacts) -> dict[str, Any]:
    def image(key: str) -> dict[str, str]:
        return {**_repo_digest(image_ref(lock, key, facts)), "pullPolicy": "IfNotPresent"}

    return {"crds": {"enabled": True, "keep": True},
            "image": image("cert-manager-controller"),
            "webhook": {"image": image("cert-manager-webhook")},
            "cainjector": {"image": image("cert-manager-cainjector")},
            "startupapicheck": {"image": image("cert-manager-startupapicheck")},
            "acmesolver": {"image": image("cert-manager-acmesolver")}}


def platform_values(settings: Settings, lock: Lock, facts: ClusterFacts, parts: Mapping[str, Verdict]) -> dict:
    """Values of charts/vibecode-platform: which parts run, and the image each part runs."""
    def part(name: str, image_key: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"enabled": parts[name].run}
        if image_key:
            out["image"] = image_ref(lock, image_key, facts)
        return out

    return {
        "domain": settings.domain,
        "workspaceNamespace": settings.namespace,
        "secretName": settings.platform.secret_name,
        "usersSecret": settings.identity.authelia_users_secret,
        "certManagerNamespace": settings.platform.cert_manager_namespace,
        "envoyGatewayNamespace": settings.platform.envoy_gateway_namespace,
        "seaweedfs": part("seaweedfs", "seaweedfs"),
        "postgres": part("postgres", "postgres"),
        "redis": part("redis", "redis"),
        "authelia": part("authelia", "authelia"),
        "gateway": {**part("gateway"), "proxyImage": image_ref(lock, "envoy-proxy", facts)},
        "certificates": part("certificates"),
    }


def hr_gateway_values(settings: Settings, lock: Lock, facts: ClusterFacts) -> dict[str, Any]:
    ref = image_ref(lock, "hr-gateway", facts)
    repository, _, tag = ref.rpartition(":")
    return {"image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
            "ingress": {"enabled": False},
            "existingSecret": HR_GATEWAY_SECRET,
            "platformNamespace": settings.platform_namespace,
            "replicas": 1}


HR_GATEWAY_SECRET = "vibecode-gateway"
# On KIND the Envoy proxy Service is a NodePort on these ports, which kind/cluster.yaml maps to
# the host's 80 and 443 (no LoadBalancer there without cloud-provider-kind).
KIND_GATEWAY_NODE_PORTS = {"http": 30080, "https": 30443}


def desired_releases(settings: Settings, lock: Lock, facts: ClusterFacts,
                     parts: Mapping[str, Verdict]) -> dict[str, DesiredRelease]:
    p = settings.platform
    return {
        "cert-manager": DesiredRelease("cert-manager", "cert-manager", p.cert_manager_namespace, "cert-manager",
                                       None, cert_manager_values(lock, facts)),
        "envoy-gateway": DesiredRelease("envoy-gateway", "envoy-gateway", p.envoy_gateway_namespace,
                                        "envoy-gateway", None, envoy_gateway_values(lock, facts)),
        "vibecode-platform": DesiredRelease("vibecode-platform", p.release, settings.platform_namespace, None,
                                            p.chart, platform_values(settings, lock, facts, parts)),
        "hr-gateway": DesiredRelease("hr-gateway", p.hr_gateway_release, settings.platform_namespace, None,
                                     p.hr_gateway_chart, hr_gateway_values(settings, lock, facts)),
        "datadog": DesiredRelease("datadog", "datadog", settings.platform_namespace, "datadog", None,
                                  {"datadog": {"apiKeyExistingSecret": "vibecode-datadog"},
                                   "agents": {"image": _repo_digest(image_ref(lock, "datadog-agent", facts))}}),
    }


def namespaces(settings: Settings) -> list[str]:
    p = settings.platform
    return list(dict.fromkeys([settings.platform_namespace, settings.namespace, p.cert_manager_namespace,
                               p.envoy_gateway_namespace]))
