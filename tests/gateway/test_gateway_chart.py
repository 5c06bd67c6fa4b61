"""deployments/gateway, the chart that runs the HR gateway in the cluster: linted and
rendered by the real helm, every Kubernetes object validated against Kubernetes 1.33's and
1.37's OpenAPI schemas (kubernetes-validate, strict) and every Gateway API / Envoy Gateway
object against its upstream CRD's schema, and the security-relevant parts asserted: an
HTTPRoute on the platform Gateway's hr listener publishing only the two API prefixes, outside
Authelia; reachable only from Envoy Gateway's proxy pods; able to reach only the Prefect API
(plus DNS, and the Kubernetes API for the ledger ConfigMaps); restricted pod security;
secrets only through secretKeyRef."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tasks.core.settings import Settings
from tests.fixtures.render import crd_problems, is_crd_kind

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deployments" / "gateway"
PNS = "vibecode-platform"
PROXY_LABELS = {"app.kubernetes.io/name": "envoy", "app.kubernetes.io/component": "proxy",
                "app.kubernetes.io/managed-by": "envoy-gateway"}


@pytest.fixture(scope="module")
def helm(helm_bin: Path, tmp_path_factory):
    home = tmp_path_factory.mktemp("helm-home")
    env = {**os.environ, "HELM_CONFIG_HOME": str(home / "c"), "HELM_CACHE_HOME": str(home / "k"),
           "HELM_DATA_HOME": str(home / "d"), "KUBECONFIG": str(home / "none")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(helm_bin), *args], capture_output=True, text=True, env=env, timeout=120)

    return run


def _render(helm, *args: str) -> dict[str, dict]:
    proc = helm("template", "vibecode-gateway", str(CHART), "--namespace", PNS, *args)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert len({d["kind"] for d in docs}) == len(docs)  # one of each kind
    return {d["kind"]: d for d in docs}


@pytest.fixture(scope="module")
def objects(helm) -> dict[str, dict]:
    return _render(helm)


def test_helm_lint_passes(helm):
    proc = helm("lint", "--strict", str(CHART))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("version", ["1.33.0", "1.37.0"])
def test_every_object_is_valid_for_current_kubernetes(objects, version):
    assert set(objects) == {"ServiceAccount", "Role", "RoleBinding", "Deployment", "Service", "HTTPRoute",
                            "BackendTrafficPolicy", "NetworkPolicy"}
    for obj in objects.values():
        if not is_crd_kind(obj):
            kubernetes_validate.validate(obj, version, strict=True)
    broken = {**objects["NetworkPolicy"], "spec": {**objects["NetworkPolicy"]["spec"], "egres": []}}
    with pytest.raises(kubernetes_validate.ValidationError):  # the check can fail
        kubernetes_validate.validate(broken, version, strict=True)


def test_the_route_and_its_policy_validate_against_the_upstream_crds(objects):
    """Skips where the upstream CRD schemas are not on the machine (they are not vendored)."""
    for kind in ("HTTPRoute", "BackendTrafficPolicy"):
        assert crd_problems(objects[kind]) == [], kind
    broken = json.loads(json.dumps(objects["HTTPRoute"]))
    broken["spec"]["rules"][0]["matches"][0]["path"]["type"] = "Glob"
    assert crd_problems(broken)  # the check can fail


def test_the_route_is_on_the_hr_listener_outside_authelia_and_publishes_only_the_api(objects):
    route = objects["HTTPRoute"]
    assert route["metadata"]["namespace"] == PNS  # the hr listener admits routes from its own namespace only
    spec = route["spec"]
    assert spec["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "vibecode",
                                   "namespace": PNS, "sectionName": "hr"}]
    assert spec["hostnames"] == ["hr.vibecode.dev"]
    paths = [(m["path"]["type"], m["path"]["value"]) for rule in spec["rules"] for m in rule["matches"]]
    assert paths == [("PathPrefix", "/v1/hr/"), ("PathPrefix", "/scim/v2")]  # no /healthz, /docs, /openapi.json
    service = objects["Service"]
    for rule in spec["rules"]:
        assert "filters" not in rule  # no ExtAuth / forward-auth of any kind on this route
        assert rule["backendRefs"] == [{"name": service["metadata"]["name"], "port": service["spec"]["ports"][0]["port"]}]
    annotations = route["metadata"].get("annotations") or {}
    assert not any("nginx" in k or "auth" in k for k in annotations)


def test_envoy_refuses_bodies_over_the_gateways_own_limit(objects):
    btp = objects["BackendTrafficPolicy"]["spec"]
    assert btp["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                                  "name": objects["HTTPRoute"]["metadata"]["name"]}]
    assert btp["requestBuffer"]["limit"] == "64Ki"
    assert 64 * 1024 == Settings().gateway.max_body_bytes  # the same limit the app enforces itself


def test_the_route_can_be_turned_off_and_the_body_limit_left_to_the_app(helm):
    assert {"HTTPRoute", "BackendTrafficPolicy"}.isdisjoint(_render(helm, "--set", "route.enabled=false"))
    objs = _render(helm, "--set-string", "route.bodyLimit=")
    assert "HTTPRoute" in objs and "BackendTrafficPolicy" not in objs


def test_the_route_follows_its_values(helm):
    objs = _render(helm, "--set-string", "host=hr.corp.example.org", "--set-string", "route.gateway.name=edge",
                   "--set-string", "route.gateway.namespace=infra", "--set-string", "route.gateway.sectionName=machines")
    spec = objs["HTTPRoute"]["spec"]
    assert spec["hostnames"] == ["hr.corp.example.org"]
    assert spec["parentRefs"][0] == {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge",
                                    "namespace": "infra", "sectionName": "machines"}


def test_the_network_policy_admits_only_envoys_proxies_and_allows_only_prefect_dns_and_the_api_server(objects):
    spec = objects["NetworkPolicy"]["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "vibecode-gateway"
    [inbound] = spec["ingress"]
    assert inbound["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "envoy-gateway-system"}},
                                "podSelector": {"matchLabels": PROXY_LABELS}}]
    assert inbound["ports"] == [{"port": 8080, "protocol": "TCP"}]
    prefect, dns, api = spec["egress"]
    assert prefect["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prefect"}},
                              "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prefect-server"}}}]
    assert prefect["ports"] == [{"port": 4200, "protocol": "TCP"}]
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert {p["port"] for p in dns["ports"]} == {53}
    assert api["to"] == [{"ipBlock": {"cidr": "10.96.0.1/32"}}]  # no 0.0.0.0/0 anywhere
    assert {p["port"] for p in api["ports"]} == {443, 6443}


def test_the_proxies_namespace_and_labels_are_values(helm):
    np = _render(helm, "--set-string", "networkPolicy.proxyNamespace=edge",
                 "--set-string", "networkPolicy.proxyPodLabels.app=proxy")["NetworkPolicy"]
    [peer] = np["spec"]["ingress"][0]["from"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "edge"}}
    assert peer["podSelector"]["matchLabels"] == {**PROXY_LABELS, "app": "proxy"}


def test_only_envoys_pods_may_name_the_client_in_x_forwarded_for(objects, helm):
    env = {e["name"]: e for e in objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["VIBECODE_GATEWAY_TRUSTED_PROXIES"]["value"]) == ["10.244.0.0/16"]  # KIND's pod range
    objs = _render(helm, "--set-json", 'trustedProxies=["10.42.0.0/16","fd00:42::/56"]')
    env = {e["name"]: e for e in objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert Settings(gateway_trusted_proxies=json.loads(env["VIBECODE_GATEWAY_TRUSTED_PROXIES"]["value"])
                    ).gateway.trusted_proxies == ["10.42.0.0/16", "fd00:42::/56"]


def test_the_pod_is_restricted_and_reads_secrets_only_by_reference(objects):
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    [c] = pod["containers"]
    assert c["command"][:2] == ["vibecode", "gateway"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert sc["readOnlyRootFilesystem"] is True
    assert all(set(v) <= {"emptyDir", "name"} for v in pod["volumes"])
    env = {e["name"]: e for e in c["env"]}
    for name, key in (("VIBECODE_GATEWAY_WEBHOOK_SECRETS", "webhook-secrets"), ("VIBECODE_GATEWAY_SCIM_TOKEN", "scim-token")):
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["key"] == key
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    role = objects["Role"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                              "verbs": ["get", "list", "create", "update", "delete"]}]


def test_the_objects_are_accepted_by_a_real_api_server(objects, apiserver, namespace):
    """Created for real (v1.20 serves every Kubernetes API version used) with the Kubernetes
    client's generic create; the Role goes to the platform namespace, here the test's own. The
    route and its policy are CRD kinds, checked against their upstream schemas above."""
    from kubernetes import config, utils

    api = config.new_client_from_config(str(apiserver.kubeconfig))
    for kind in ("ServiceAccount", "Role", "RoleBinding", "Service", "Deployment", "NetworkPolicy"):
        obj = yaml.safe_load(yaml.safe_dump(objects[kind]))
        obj["metadata"]["namespace"] = namespace
        if kind == "RoleBinding":
            obj["subjects"][0]["namespace"] = namespace
        [created] = utils.create_from_dict(api, obj, namespace=namespace)
        assert created.metadata.uid


@pytest.mark.parametrize("args, where", [
    (["--set", "ingress.enabled=false"], "at '': additional properties 'ingress' not allowed"),  # the retired Ingress
    (["--set", "route.gateway.bogus=1"], "at '/route/gateway': additional properties 'bogus' not allowed"),
    (["--set", "networkPolicy.bogus=1"], "at '/networkPolicy': additional properties 'bogus' not allowed"),
    (["--set-string", "route.gateway.sectionName=Bad_"], "/route/gateway/sectionName"),
    (["--set-string", "route.bodyLimit=64 KB"], "/route/bodyLimit"),
    (["--set-json", 'trustedProxies=["everyone"]'], "/trustedProxies/0"),
])
def test_the_values_schema_refuses_unknown_keys_and_bad_values(helm, args, where):
    proc = helm("template", "vibecode-gateway", str(CHART), *args)
    assert proc.returncode != 0 and where in proc.stderr, proc.stderr


def test_the_values_schema_describes_every_field():
    schema = json.loads((CHART / "values.schema.json").read_text())
    problems = []

    def walk(node, where):
        if node.get("type") == "object" and "properties" in node:
            if node.get("additionalProperties") is not False:
                problems.append(f"{where}: open")
            for key, sub in node["properties"].items():
                if not sub.get("description"):
                    problems.append(f"{where}.{key}: no description")
                walk(sub, f"{where}.{key}")

    walk(schema, "")
    assert problems == []
    assert set(schema["properties"]) == set(yaml.safe_load((CHART / "values.yaml").read_text()))
