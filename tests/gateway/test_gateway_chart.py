"""deployments/gateway, the chart that runs the HR gateway in the cluster: linted and
rendered by the real helm, every object validated against Kubernetes 1.33's and 1.37's
OpenAPI schemas (kubernetes-validate, strict), and the security-relevant parts asserted:
outside Authelia, reachable only from the ingress controller, able to reach only the
Prefect API (plus DNS, and the Kubernetes API for the ledger ConfigMaps), restricted pod
security, secrets only through secretKeyRef."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deployments" / "gateway"


@pytest.fixture(scope="module")
def helm(helm_bin: Path, tmp_path_factory):
    home = tmp_path_factory.mktemp("helm-home")
    env = {**os.environ, "HELM_CONFIG_HOME": str(home / "c"), "HELM_CACHE_HOME": str(home / "k"),
           "HELM_DATA_HOME": str(home / "d"), "KUBECONFIG": str(home / "none")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(helm_bin), *args], capture_output=True, text=True, env=env, timeout=120)

    return run


@pytest.fixture(scope="module")
def objects(helm) -> dict[str, dict]:
    proc = helm("template", "gateway", str(CHART), "--namespace", "vibecode-gateway")
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return {d["kind"]: d for d in docs}


def test_helm_lint_passes(helm):
    proc = helm("lint", "--strict", str(CHART))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("version", ["1.33.0", "1.37.0"])
def test_every_object_is_valid_for_current_kubernetes(objects, version):
    assert set(objects) == {"ServiceAccount", "Role", "RoleBinding", "Deployment", "Service", "Ingress",
                            "NetworkPolicy"}
    for obj in objects.values():
        kubernetes_validate.validate(obj, version, strict=True)
    broken = {**objects["NetworkPolicy"], "spec": {**objects["NetworkPolicy"]["spec"], "egres": []}}
    with pytest.raises(kubernetes_validate.ValidationError):  # the check can fail
        kubernetes_validate.validate(broken, version, strict=True)


def test_the_ingress_is_outside_authelia_and_publishes_only_the_api(objects):
    ing = objects["Ingress"]
    annotations = ing["metadata"].get("annotations") or {}
    assert not any("auth-url" in k or "auth-signin" in k for k in annotations)
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "64k"
    paths = [p["path"] for rule in ing["spec"]["rules"] for p in rule["http"]["paths"]]
    assert paths == ["/v1/hr/", "/scim/v2"]
    assert ing["spec"]["tls"]


def test_the_network_policy_allows_only_prefect_dns_and_the_api_server(objects):
    spec = objects["NetworkPolicy"]["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "vibecode-gateway"
    [inbound] = spec["ingress"]
    assert inbound["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    assert inbound["ports"] == [{"port": 8080, "protocol": "TCP"}]
    prefect, dns, api = spec["egress"]
    assert prefect["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prefect"}},
                              "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prefect-server"}}}]
    assert prefect["ports"] == [{"port": 4200, "protocol": "TCP"}]
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert {p["port"] for p in dns["ports"]} == {53}
    assert api["to"] == [{"ipBlock": {"cidr": "10.96.0.1/32"}}]  # no 0.0.0.0/0 anywhere
    assert {p["port"] for p in api["ports"]} == {443, 6443}


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
    """Created for real (v1.20 serves every API version used) with the Kubernetes client's
    generic create; the Role goes to the platform namespace, here the test's own."""
    from kubernetes import config, utils

    api = config.new_client_from_config(str(apiserver.kubeconfig))
    for kind in ("ServiceAccount", "Role", "RoleBinding", "Service", "Deployment", "NetworkPolicy", "Ingress"):
        obj = yaml.safe_load(yaml.safe_dump(objects[kind]))
        obj["metadata"]["namespace"] = namespace
        if kind == "RoleBinding":
            obj["subjects"][0]["namespace"] = namespace
        [created] = utils.create_from_dict(api, obj, namespace=namespace)
        assert created.metadata.uid
