"""provision_workspace end to end: real helm, real kube-apiserver, real Prefect server."""

from __future__ import annotations

import threading
import time

import pytest
from prefect.exceptions import ParameterTypeError

from flows.workspace import provision_workspace
from tasks.cluster import helm
from tasks.core.errors import Invalid, InvalidInput
from tasks.core.settings import get_settings
from tasks.platform.lock import load_lock
from tests.fixtures.kube import mark_deployment_available

pytestmark = pytest.mark.usefixtures("prefect_server", "helm_bin")


@pytest.fixture
def platform_gateway(kube, platform_namespace, gateway_api_crds_standin):
    """A Gateway as the platform chart makes it (its name is not the default, so provisioning
    must read it rather than assume it); deleted afterwards so other tests see none."""
    gw = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
          "metadata": {"name": "edge", "namespace": platform_namespace,
                       "labels": {"vibecode.dev/gateway": "platform"}},
          "spec": {"gatewayClassName": "vibecode", "listeners": [
              {"name": "portal", "protocol": "HTTPS", "port": 443, "hostname": "auth.vibecode.dev",
               "tls": {"certificateRefs": [{"name": "vibecode-portal-tls"}]}},
              {"name": "wildcard", "protocol": "HTTPS", "port": 443, "hostname": "*.vibecode.dev",
               "tls": {"certificateRefs": [{"name": "vibecode-workspaces-tls"}]}}]}}
    yield kube.create(gw)
    kube.delete("Gateway", platform_namespace, "edge")


def _kubelet(kube, ns, name, stop: threading.Event):
    """Mark the Deployment available as soon as it exists (playing controller + kubelet)."""
    while not stop.is_set():
        dep = kube.get("Deployment", ns, name)
        if dep is not None and (dep.get("status") or {}).get("observedGeneration") != dep["metadata"]["generation"]:
            mark_deployment_available(kube, ns, name)
        time.sleep(0.2)


@pytest.fixture
def kubelet(kube, namespace):
    stop = threading.Event()
    threads = []

    def start(name):
        t = threading.Thread(target=_kubelet, args=(kube, namespace, name, stop), daemon=True)
        t.start()
        threads.append(t)

    yield start
    stop.set()
    for t in threads:
        t.join(timeout=5)


@pytest.mark.flows_identity  # runs as the flows' ServiceAccount (tests/fixtures/kube.py)
def test_provision_installs_a_restricted_authelia_protected_workspace(kube, namespace, platform_namespace,
                                                                     platform_gateway, kubelet, monkeypatch):
    monkeypatch.setenv("VIBECODE_READY_POLL_SECONDS", "0.2")
    get_settings.cache_clear()
    kubelet("ws-alice")

    result = provision_workspace("alice")

    assert result.changed is True and result.url == "https://alice.vibecode.dev"
    assert "1 of 1 replicas available" in result.ready

    dep = kube.get("Deployment", namespace, "ws-alice")
    pod = dep["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (container,) = pod["containers"]
    pin = load_lock().image("code-server")  # the default: the workspace image, by the lock's digest
    assert container["image"] == f"{pin.image}@{pin.digest}"
    csc = container["securityContext"]
    assert csc["allowPrivilegeEscalation"] is False and csc["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["limits"] and container["resources"]["requests"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    assert claims == {"ws-alice-workspace", "ws-alice-extensions"}

    svc = kube.get("Service", namespace, "ws-alice")
    assert svc["spec"]["selector"]["vibecode.dev/user"] == "alice"

    # The route attaches to the Gateway read from the cluster: its name, namespace and listener.
    route = kube.get("HTTPRoute", namespace, "ws-alice")
    assert route["spec"]["hostnames"] == ["alice.vibecode.dev"]
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge",
                                            "namespace": platform_namespace, "sectionName": "wildcard"}]
    assert route["spec"]["rules"][0]["backendRefs"][0]["name"] == "ws-alice"
    assert result.route == f"HTTPRoute on Gateway {platform_namespace}/edge (listener wildcard)"

    pvcs = {p["metadata"]["name"]: p for p in kube.list("PersistentVolumeClaim", namespace, "vibecode.dev/user=alice")}
    assert set(pvcs) == {"ws-alice-workspace", "ws-alice-extensions"}
    assert pvcs["ws-alice-workspace"]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvcs["ws-alice-workspace"]["metadata"]["labels"]["vibecode.dev/volume"] == "workspace"

    netpol = kube.get("NetworkPolicy", namespace, "ws-alice")
    assert netpol["spec"]["podSelector"]["matchLabels"]["vibecode.dev/user"] == "alice"
    assert netpol["spec"]["ingress"][0]["ports"][0]["port"] == 8080
    assert netpol["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == \
        {"kubernetes.io/metadata.name": "envoy-gateway-system"}

    # A second run with the same input changes nothing: same revision, same objects.
    rv_before = dep["metadata"]["resourceVersion"]
    again = provision_workspace("alice")
    assert again.changed is False and again.revision == result.revision
    assert kube.get("Deployment", namespace, "ws-alice")["metadata"]["resourceVersion"] == rv_before
    assert helm.status("ws-alice", namespace).revision == result.revision


def test_without_a_platform_gateway_the_workspace_has_no_route_and_says_so(kube, namespace, gateway_api_crds_standin,
                                                                         kubelet, monkeypatch):
    monkeypatch.setenv("VIBECODE_READY_POLL_SECONDS", "0.2")
    get_settings.cache_clear()
    assert kube.list_all("Gateway", "vibecode.dev/gateway=platform") == []
    kubelet("ws-dora")
    result = provision_workspace("dora")
    assert result.route.startswith("no route: the cluster has no Gateway labelled vibecode.dev/gateway=platform")
    assert kube.get("HTTPRoute", namespace, "ws-dora") is None
    assert kube.get("Deployment", namespace, "ws-dora") is not None


@pytest.mark.parametrize("bad", ["Alice", "a_b", "../../etc", "x" * 100, "auth", "kube-dns", "аlice"])
def test_invalid_username_is_refused_before_anything_is_created(kube, namespace, bad):
    with pytest.raises((InvalidInput, ParameterTypeError)) as err:
        provision_workspace(bad)
    assert "username" in str(err.value)
    assert kube.list("Deployment", namespace) == []
    assert kube.list("PersistentVolumeClaim", namespace) == []
    assert kube.list("Secret", namespace) == []  # helm keeps release records in Secrets


def test_api_server_rejects_what_a_cluster_rejects(kube, namespace):
    with pytest.raises(Invalid) as err:
        kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": "Not_A_DNS_Name", "namespace": namespace}})
    assert "Not_A_DNS_Name" in str(err.value)
    assert kube.list("ConfigMap", namespace, "app=none") == []


def test_idempotent_create_and_delete(kube, namespace):
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": namespace},
          "data": {"a": "1"}}
    first = kube.create(cm)
    second = kube.create({**cm, "data": {"a": "2"}})  # 409 -> the existing object
    assert second["metadata"]["uid"] == first["metadata"]["uid"] and second["data"] == {"a": "1"}
    assert kube.delete("ConfigMap", namespace, "x") is True
    assert kube.delete("ConfigMap", namespace, "x") is False  # 404 -> already done
