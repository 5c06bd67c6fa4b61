"""The helm releases bootstrap installs, with the values we give each (pure).

Upstream charts get only what pins their images to the lock (by digest, or the same digest
in an air-gapped install's mirror) and what our platform needs of them; everything else is
the chart's default at the pinned version. Key names follow each chart's documented values
at that version (Envoy Gateway's ``global.images.*``; cert-manager's ``image``,
``webhook.image``, ... with ``repository`` and ``digest``, and ``crds.enabled``/``crds.keep``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from tasks.core.settings import Settings
from tasks.platform.lock import Lock, parse_image
from tasks.platform.plan import ClusterFacts, Verdict, image_ref
from tasks.platform.values import COMPONENTS, IMAGE_KEYS, ClusterNetwork
from tasks.platform.values import platform_values as chart_values


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
    """Values of charts/vibecode-platform (its builder, :func:`tasks.platform.values.platform_values`),
    with the parts that can run here and the image each runs (pinned, or built here), and the
    namespaces bootstrap put cert-manager and Envoy Gateway in."""
    on = [p for p in COMPONENTS if parts.get(p, Verdict(False, "")).run]
    images = {key: image_ref(lock, key, facts) for key in IMAGE_KEYS.values()}
    used = {IMAGE_KEYS[k] for k in IMAGE_KEYS if k.split(".")[0] in on}
    values = chart_values(settings, images, on, network=facts.network or ClusterNetwork(),
                          ops_namespace=settings.platform.ops_namespace,
                          allow_unpinned=any("@" not in images[k] for k in used))
    values["namespaces"].update(gatewaySystem=settings.platform.envoy_gateway_namespace,
                                certManager=settings.platform.cert_manager_namespace)
    for store in ("seaweedfs", "postgresql", "redis"):
        storage = {}
        if settings.platform.storage_class:
            storage["storageClass"] = settings.platform.storage_class
        if store == "seaweedfs" and settings.platform.s3_store_size:
            storage["size"] = settings.platform.s3_store_size
        if storage:
            values[store]["storage"] = storage
    return values


def hr_gateway_values(settings: Settings, lock: Lock, facts: ClusterFacts,
                      platform: Mapping[str, Any]) -> dict[str, Any]:
    """Values of deployments/gateway, released in the platform namespace: its HTTPRoute on the
    Gateway that ``platform`` (the values :func:`platform_values` built for the platform chart)
    creates, on its ``hr`` listener and host, read from those values rather than named again;
    its NetworkPolicy admitting only Envoy Gateway's proxies (the namespace bootstrap put Envoy
    Gateway in, the proxy labels the platform's policies use); and the pod range as the only
    addresses whose X-Forwarded-For is believed (the proxies' pod IPs are not fixed; no other
    pod gets through the policy). No Gateway on this cluster (the one-node profile, which has
    no Gateway API CRDs): no route."""
    ref = image_ref(lock, "hr-gateway", facts)
    repository, _, tag = ref.rpartition(":")
    gateway = platform["gateway"]
    return {"image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
            "host": platform["hr"]["host"],
            "route": {"enabled": bool(gateway["enabled"]),
                      "gateway": {"name": gateway["name"], "namespace": platform["namespaces"]["platform"],
                                  "sectionName": gateway["listeners"]["hr"]}},
            "networkPolicy": {"proxyNamespace": platform["namespaces"]["gatewaySystem"],
                              "proxyPodLabels": dict(gateway["proxyPodLabels"])},
            "trustedProxies": list(platform["networkPolicies"]["podCIDRs"]),
            "kubernetesApi": {"cidrs": api_server_cidrs(platform["networkPolicies"]), "ports": [443, 6443]},
            "existingSecret": HR_GATEWAY_SECRET,
            "platformNamespace": settings.platform_namespace,
            "replicas": 1}


def api_server_cidrs(network: Mapping[str, Any]) -> list[str]:
    """Where the Kubernetes API is, for an egress rule: the ``kubernetes`` Service's address
    (the first of the service range) and the nodes' addresses. Most network plugins match an
    egress rule after the Service's address was translated to the API server's own, which
    on KIND and kubeadm clusters is a control-plane node's address on 6443: the Service
    address alone would block the ledger calls there."""
    service = [f"{ipaddress.ip_network(c)[1]}/32" for c in network["serviceCIDRs"][:1]]
    return list(dict.fromkeys([*service, *network["nodeCIDRs"]]))


HR_GATEWAY_SECRET = "vibecode-gateway"
# On KIND the Envoy proxy Service is a NodePort on these ports, which kind/cluster.yaml maps to
# the host's 80 and 443 (no LoadBalancer there without cloud-provider-kind).
KIND_GATEWAY_NODE_PORTS = {"http": 30080, "https": 30443}


def desired_releases(settings: Settings, lock: Lock, facts: ClusterFacts,
                     parts: Mapping[str, Verdict]) -> dict[str, DesiredRelease]:
    p = settings.platform
    platform = platform_values(settings, lock, facts, parts)
    return {
        "cert-manager": DesiredRelease("cert-manager", "cert-manager", p.cert_manager_namespace, "cert-manager",
                                       None, cert_manager_values(lock, facts)),
        "envoy-gateway": DesiredRelease("envoy-gateway", "envoy-gateway", p.envoy_gateway_namespace,
                                        "envoy-gateway", None, envoy_gateway_values(lock, facts)),
        "vibecode-platform": DesiredRelease("vibecode-platform", p.release, settings.platform_namespace, None,
                                            p.chart, platform),
        "hr-gateway": DesiredRelease("hr-gateway", p.hr_gateway_release, settings.platform_namespace, None,
                                     p.hr_gateway_chart, hr_gateway_values(settings, lock, facts, platform)),
        "datadog": DesiredRelease("datadog", "datadog", settings.platform_namespace, "datadog", None,
                                  {"datadog": {"apiKeyExistingSecret": "vibecode-datadog"},
                                   "agents": {"image": _repo_digest(image_ref(lock, "datadog-agent", facts))}}),
    }


def namespaces(settings: Settings) -> list[str]:
    p = settings.platform
    return list(dict.fromkeys([settings.platform_namespace, settings.namespace, p.cert_manager_namespace,
                               p.envoy_gateway_namespace]))
