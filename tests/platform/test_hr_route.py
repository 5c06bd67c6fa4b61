"""The HR gateway on the bootstrapped platform, as bootstrap builds both releases
(tasks.platform.releases.desired_releases) and the real helm renders them: its HTTPRoute
attaches to the Gateway and listener the platform chart creates (names read back from the
platform's values, not typed twice), and health's default components are exactly the
workloads the platform's charts render, so the two cannot drift apart again."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.settings import Settings
from tasks.platform.lock import load_lock
from tasks.platform.plan import PLATFORM_PARTS, ClusterFacts, Verdict
from tasks.platform.releases import desired_releases
from tasks.platform.values import ClusterNetwork
from tests.fixtures.render import ROOT, helm_runner, render

# The upstream charts' test stand-ins (same names and versions as the pins; tests/charts/*/Chart.yaml
# says what each reproduces of the real chart, here the workload names).
STAND_INS = {"envoy-gateway": ROOT / "tests" / "charts" / "gateway-helm",
             "cert-manager": ROOT / "tests" / "charts" / "cert-manager"}


@pytest.fixture(scope="module")
def helm(helm_bin, tmp_path_factory):
    return helm_runner(helm_bin, tmp_path_factory.mktemp("helm-home"))


def _releases(settings: Settings, parts_on: bool = True, facts: ClusterFacts | None = None):
    parts = {p: Verdict(parts_on or p in ("seaweedfs", "networkPolicies", "rbac"), "") for p in PLATFORM_PARTS}
    return desired_releases(settings, load_lock(), facts or ClusterFacts(), parts)


def _render(helm, release, tmp: Path) -> list[dict]:
    chart = release.chart_path or STAND_INS[release.component]
    return render(helm, chart, release.values, release=release.release, namespace=release.namespace, tmp=tmp)


def test_the_hr_route_attaches_to_the_gateway_the_platform_chart_creates(helm, tmp_path):
    releases = _releases(Settings())
    platform = _render(helm, releases["vibecode-platform"], tmp_path)
    hr = _render(helm, releases["hr-gateway"], tmp_path)
    [gateway] = [d for d in platform if d["kind"] == "Gateway"]
    [route] = [d for d in hr if d["kind"] == "HTTPRoute"]
    [parent] = route["spec"]["parentRefs"]
    assert (parent["name"], parent["namespace"]) == (gateway["metadata"]["name"], gateway["metadata"]["namespace"])
    [listener] = [lst for lst in gateway["spec"]["listeners"] if lst["name"] == parent["sectionName"]]
    assert listener["name"] == "hr" and listener["protocol"] == "HTTPS"
    assert route["spec"]["hostnames"] == [listener["hostname"]] == ["hr.vibecode.dev"]
    # The listener admits routes from its own namespace: the HR gateway is released there.
    assert listener["allowedRoutes"]["namespaces"] == {"from": "Same"}
    assert route["metadata"]["namespace"] == gateway["metadata"]["namespace"] == releases["hr-gateway"].namespace
    # Nothing sends this listener to Authelia.
    assert all(ref.get("sectionName") != listener["name"]
               for d in platform if d["kind"] == "SecurityPolicy" for ref in d["spec"]["targetRefs"])
    # The NetworkPolicy admits the proxies the platform's own policies admit, in the same namespace.
    [hr_policy] = [d for d in hr if d["kind"] == "NetworkPolicy"]
    [peer] = hr_policy["spec"]["ingress"][0]["from"]
    ws_policy = next(d for d in platform if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "workspaces")
    assert peer == ws_policy["spec"]["ingress"][0]["from"][0]


def test_the_hr_release_follows_the_settings_and_the_cluster(helm, tmp_path):
    s = Settings(domain="corp.example.org", authelia_url="https://auth.corp.example.org", platform_namespace="plat",
                 platform={"envoy_gateway_namespace": "edge-system"})
    facts = ClusterFacts(network=ClusterNetwork(pod_cidrs=("10.42.0.0/16",), service_cidrs=("10.43.0.0/16",),
                                                node_cidrs=("192.168.5.10/32", "192.168.5.11/32")))
    values = _releases(s, facts=facts)["hr-gateway"].values
    assert values["host"] == "hr.corp.example.org"
    assert values["route"] == {"enabled": True, "gateway": {"name": "vibecode", "namespace": "plat", "sectionName": "hr"}}
    assert values["networkPolicy"]["proxyNamespace"] == "edge-system"
    assert values["trustedProxies"] == ["10.42.0.0/16"]  # Envoy's pods have addresses of the pod range
    # the ledger calls: the kubernetes Service's address and, after the plugin's translation, the nodes'
    assert values["kubernetesApi"] == {"cidrs": ["10.43.0.1/32", "192.168.5.10/32", "192.168.5.11/32"],
                                       "ports": [443, 6443]}
    [route] = [d for d in render(helm, ROOT / "deployments" / "gateway", values, namespace="plat", tmp=tmp_path)
               if d["kind"] == "HTTPRoute"]
    assert route["spec"]["hostnames"] == ["hr.corp.example.org"]


def test_without_a_gateway_the_hr_gateway_renders_no_gateway_api_object(helm, tmp_path):
    """The one-node cluster runs no Envoy Gateway, so it has no Gateway API CRDs: an HTTPRoute
    there would fail the HR gateway's install."""
    releases = _releases(Settings(), parts_on=False)
    assert releases["vibecode-platform"].values["gateway"]["enabled"] is False
    kinds = {d["kind"] for d in _render(helm, releases["hr-gateway"], tmp_path)}
    assert "Deployment" in kinds and "NetworkPolicy" in kinds
    assert not kinds & {"HTTPRoute", "BackendTrafficPolicy"}


def test_health_checks_exactly_the_workloads_the_platform_renders(helm, tmp_path):
    """Every Deployment and StatefulSet of the platform's releases with everything on (the
    upstream charts through their stand-ins, ours for real) is a default health component, and
    every default component is one of them (an ingress-nginx or MinIO left in the list fails)."""
    releases = _releases(Settings())
    rendered = set()
    for name in ("cert-manager", "envoy-gateway", "vibecode-platform", "hr-gateway"):
        for d in _render(helm, releases[name], tmp_path):
            if d["kind"] in ("Deployment", "StatefulSet"):
                rendered.add(f"{d['metadata'].get('namespace') or releases[name].namespace}/{d['metadata']['name']}")
    assert sorted(Settings().health.components) == sorted(rendered)
    assert {"envoy-gateway-system/envoy-gateway", "vibecode-platform/seaweedfs"} <= rendered
