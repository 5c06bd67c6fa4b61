"""charts/vibecode-workspace and kind/cluster.yaml, checked with the real helm binary.

No cluster is needed: ``helm lint`` and ``helm template`` render the chart locally, and
the tests read the rendered YAML back and inspect it. Everything about the chart that
the Ops flows rely on (names, labels, the kept volumes, the HTTPRoute on the platform's
Gateway, Pod Security "restricted", the NetworkPolicy) is asserted here; the route and every
other object are also validated against Kubernetes' and the Gateway API's schemas.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.fixtures.pss import restricted_violations

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "vibecode-workspace"
KIND_CONFIG = ROOT / "kind" / "cluster.yaml"

NAMESPACE = "workspaces"
USER = "alice"

SELECTOR_LABELS = {"app.kubernetes.io/name": "code-server", "vibecode.dev/user": USER}
COMMON_LABELS = {**SELECTOR_LABELS, "app.kubernetes.io/part-of": "vibecode"}
# Present on every object, values checked loosely (they depend on the chart version).
REQUIRED_LABEL_KEYS = {"app.kubernetes.io/managed-by", "helm.sh/chart"}

# APIs served by both Kubernetes 1.20 (the test API server) and current KIND, and the
# Gateway API's (a CRD the platform's Envoy Gateway installs).
ALLOWED_API_VERSIONS = {"v1", "apps/v1", "networking.k8s.io/v1", "gateway.networking.k8s.io/v1"}

PROXY_LABELS = {"app.kubernetes.io/name": "envoy", "app.kubernetes.io/component": "proxy",
                "app.kubernetes.io/managed-by": "envoy-gateway"}


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def helm(helm_bin: Path, tmp_path_factory: pytest.TempPathFactory):
    """Run the real helm with its own config/cache dirs and no kubeconfig (no cluster)."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(helm_bin), *args], capture_output=True, text=True,
                              env=env, timeout=120)

    return run


def _render(helm, *extra: str, release: str = f"ws-{USER}", username: str | None = USER) -> list[dict]:
    args = ["template", release, str(CHART), "--namespace", NAMESPACE]
    if username is not None:
        args += ["--set-string", f"username={username}"]
    proc = helm(*args, *extra)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def _by_kind(docs: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for doc in docs:
        assert doc["kind"] not in out, f"two objects of kind {doc['kind']}"
        out[doc["kind"]] = doc
    return out


def _one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def _pvcs(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}


@pytest.fixture(scope="session")
def rendered(helm) -> list[dict]:
    """The chart rendered with nothing but username=alice (i.e. the contract defaults)."""
    return _render(helm)


@pytest.fixture(scope="session")
def objs(rendered) -> dict[str, dict]:
    """Rendered objects by kind, PVCs excluded (there are two)."""
    return _by_kind([d for d in rendered if d["kind"] != "PersistentVolumeClaim"])


def _expect_schema_error(helm, *extra: str, username: str | None = USER) -> str:
    args = ["template", "ws-x", str(CHART)]
    if username is not None:
        args += ["--set-string", f"username={username}"]
    proc = helm(*args, *extra)
    assert proc.returncode != 0, f"helm accepted {extra or username!r}:\n{proc.stdout[:500]}"
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    return proc.stderr


# ------------------------------------------------------------------- lint and shape


def test_helm_lint_strict_is_clean(helm):
    proc = helm("lint", "--strict", str(CHART), "--set", f"username={USER}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


def test_helm_lint_fails_without_username(helm):
    """username has no usable default: installing without it must fail, not make 'ws-'."""
    proc = helm("lint", "--strict", str(CHART))
    assert proc.returncode != 0
    assert "/username" in proc.stdout + proc.stderr


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "vibecode-workspace"
    assert chart["appVersion"] == "4.139.1"  # code-server's version, in the workspace image
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["tag"].startswith(chart["appVersion"] + "-")  # 4.139.1-<image revision>


def test_renders_exactly_the_expected_objects(rendered):
    got = sorted((d["kind"], d["metadata"]["name"]) for d in rendered)
    assert got == sorted([
        ("Deployment", "ws-alice"),
        ("Service", "ws-alice"),
        ("ServiceAccount", "ws-alice"),
        ("HTTPRoute", "ws-alice"),
        ("NetworkPolicy", "ws-alice"),
        ("PersistentVolumeClaim", "ws-alice-workspace"),
        ("PersistentVolumeClaim", "ws-alice-extensions"),
    ])
    for doc in rendered:
        assert doc["apiVersion"] in ALLOWED_API_VERSIONS, (doc["kind"], doc["apiVersion"])
        assert doc["metadata"]["namespace"] == NAMESPACE


def test_names_follow_username_not_release_name(helm):
    docs = _render(helm, release="some-other-release", username="bob-42")
    names = {d["metadata"]["name"] for d in docs}
    assert names == {"ws-bob-42", "ws-bob-42-workspace", "ws-bob-42-extensions"}
    assert {d["metadata"]["labels"]["vibecode.dev/user"] for d in docs} == {"bob-42"}


def test_every_object_carries_the_platform_labels(rendered):
    for doc in rendered:
        labels = doc["metadata"]["labels"]
        for key, value in COMMON_LABELS.items():
            assert labels.get(key) == value, (doc["kind"], key, labels)
        assert REQUIRED_LABEL_KEYS <= labels.keys(), (doc["kind"], labels)
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"].startswith("vibecode-workspace-")


def test_selectors_use_exactly_the_selector_labels(objs):
    dep, svc, netpol = objs["Deployment"], objs["Service"], objs["NetworkPolicy"]
    assert dep["spec"]["selector"] == {"matchLabels": SELECTOR_LABELS}
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert SELECTOR_LABELS.items() <= pod_labels.items()
    assert svc["spec"]["selector"] == SELECTOR_LABELS
    assert netpol["spec"]["podSelector"] == {"matchLabels": SELECTOR_LABELS}


# ------------------------------------------------------------------------- schema


@pytest.mark.parametrize("username", ["Alice", "a_b", "-x", "x-", "1abc", "a", "a.b", "x" * 33, ""])
def test_schema_rejects_bad_username(helm, username):
    err = _expect_schema_error(helm, username=username)
    assert "/username" in err


def test_schema_requires_username(helm):
    err = _expect_schema_error(helm, username=None)
    assert "/username" in err


@pytest.mark.parametrize("username", ["ab", "a1", "bob-smith", "x" * 32])
def test_schema_accepts_boundary_usernames(helm, username):
    docs = _render(helm, username=username)
    assert _one(docs, "Deployment")["metadata"]["name"] \
        == f"ws-{username}"


@pytest.mark.parametrize("key, where, unknown", [
    ("bogus", "", "bogus"),
    ("image.sha", "/image", "sha"),
    ("resources.requests.gpu", "/resources/requests", "gpu"),
    ("persistence.workspace.sizee", "/persistence/workspace", "sizee"),
    ("persistence.data.size", "/persistence", "data"),
    ("podSecurity.privileged", "/podSecurity", "privileged"),
    ("route.host", "/route", "host"),
    ("route.gateway.port", "/route/gateway", "port"),
    ("route.annotations.foo", "/route", "annotations"),
    ("networkPolicy.egress", "/networkPolicy", "egress"),
    ("networkPolicy.ingressNamespace", "/networkPolicy", "ingressNamespace"),
    ("ingress.enabled", "", "ingress"),
    ("authelia.verifyUrl", "", "authelia"),
    ("assistant.apiKey", "/assistant", "apiKey"),
])
def test_schema_rejects_unknown_keys_at_every_level(helm, key, where, unknown):
    err = _expect_schema_error(helm, "--set-string", f"{key}=1")
    assert f"at '{where}': additional properties '{unknown}' not allowed" in err, err


def test_an_image_digest_pins_the_pull(helm):
    digest = "sha256:" + "ab" * 32
    dep = _one(_render(helm, "--set-string", f"image.digest={digest}"), "Deployment")
    image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(f":4.139.1-1@{digest}")
    err = _expect_schema_error(helm, "--set-string", "image.digest=sha256:short")
    assert "/image/digest" in err


@pytest.mark.parametrize("replicas", ["2", "-1"])
def test_schema_bounds_replicas(helm, replicas):
    err = _expect_schema_error(helm, "--set", f"replicas={replicas}")
    assert "/replicas" in err


def test_replicas_zero_is_allowed_for_the_idle_reaper(helm):
    dep = _one(_render(helm, "--set", "replicas=0"), "Deployment")
    assert dep["spec"]["replicas"] == 0


@pytest.mark.parametrize("args, field", [
    (["--set", "resources.limits.cpu=2"], "/resources/limits/cpu"),          # number, not string
    (["--set", "persistence.workspace.size=10"], "/persistence/workspace/size"),
    (["--set-string", "persistence.extensions.size=lots"], "/persistence/extensions/size"),
    (["--set-string", "resources.requests.memory=1 Gi"], "/resources/requests/memory"),
    (["--set", "podSecurity.runAsUser=0"], "/podSecurity/runAsUser"),         # root
    (["--set-string", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
    (["--set-string", "networkPolicy.gatewayNamespace=Envoy_Gateway"], "/networkPolicy/gatewayNamespace"),
    (["--set-string", "route.enabled=yes"], "/route/enabled"),
    (["--set-string", "route.gateway.sectionName=Workspaces"], "/route/gateway/sectionName"),
    (["--set-string", "route.requestTimeout=forever"], "/route/requestTimeout"),
])
def test_schema_rejects_bad_field_values(helm, args, field):
    err = _expect_schema_error(helm, *args)
    assert field in err


def test_values_from_the_ops_builder_pass_the_schema(helm, tmp_path):
    """The Python builder (tasks.workspace.values.workspace_values) and this chart share a contract."""
    from tasks.core.names import workspace_names
    from tasks.core.settings import Settings
    from tasks.workspace.values import GatewayRef, workspace_values

    values = workspace_values(workspace_names("carol"), Settings(), replicas=0)
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values))
    docs = _render(helm, "-f", str(values_file), username=None)
    dep = _one(docs, "Deployment")
    assert dep["metadata"]["name"] == "ws-carol"
    assert dep["spec"]["replicas"] == 0
    assert "HTTPRoute" not in {d["kind"] for d in docs}  # no Gateway given: no route

    values = workspace_values(workspace_names("carol"), Settings(), gateway=GatewayRef("edge", "infra", "ws"))
    values_file.write_text(json.dumps(values))
    route = _one(_render(helm, "-f", str(values_file), username=None), "HTTPRoute")
    assert route["spec"]["parentRefs"][0]["name"] == "edge" and route["spec"]["parentRefs"][0]["sectionName"] == "ws"


# ------------------------------------------------------------- the AI assistant's key

def _container_env(dep: dict) -> list[dict]:
    return dep["spec"]["template"]["spec"]["containers"][0].get("env", [])


def test_no_assistant_key_configured_means_no_env_and_the_workspace_still_renders(objs):
    """Without a Secret configured, nothing about a key is in the pod spec: the workspace starts
    and its image says how to get one (tests/image/test_spec.py)."""
    assert _container_env(objs["Deployment"]) == []


def test_a_configured_assistant_secret_reaches_the_pod_by_reference_only(helm, tmp_path):
    """The values carry the Secret's name, never its value; the kubelet reads the key (optional,
    so a deleted Secret does not stop a workspace)."""
    from tasks.core.names import workspace_names
    from tasks.core.settings import Settings, WorkspaceSettings
    from tasks.workspace.values import workspace_values

    secret_value = "sk-ant-never-in-a-value-0123456789"
    settings = Settings(workspace=WorkspaceSettings(assistant_secret="vibecode-assistant"))
    values = workspace_values(workspace_names("carol"), settings)
    assert values["assistant"] == {"secretName": "vibecode-assistant", "secretKey": "ANTHROPIC_API_KEY"}
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values))
    proc = helm("template", "ws-carol", str(CHART), "--namespace", NAMESPACE, "-f", str(values_file))
    assert proc.returncode == 0, proc.stderr
    dep = _one([d for d in yaml.safe_load_all(proc.stdout) if d], "Deployment")
    assert _container_env(dep) == [{"name": "ANTHROPIC_API_KEY", "valueFrom": {"secretKeyRef": {
        "name": "vibecode-assistant", "key": "ANTHROPIC_API_KEY", "optional": True}}}]
    assert secret_value not in proc.stdout and "value:" not in json.dumps(_container_env(dep))
    # A key's value can't be smuggled in as the Secret's name.
    err = _expect_schema_error(helm, "--set-string", f"assistant.secretName={secret_value.upper()}")
    assert "/assistant/secretName" in err
    # Without the setting the builder leaves the key out altogether.
    assert "assistant" not in workspace_values(workspace_names("carol"), Settings())


def test_the_builder_runs_the_lock_image_by_digest(helm, tmp_path):
    """The setting names the lock's workspace image entry by tag; provisioning runs it by the lock's digest."""
    from tasks.core.names import workspace_names
    from tasks.core.settings import Settings, WorkspaceSettings
    from tasks.platform.lock import load_lock, pinned_for
    from tasks.workspace.values import workspace_values

    pin = load_lock().image("code-server")
    s = Settings(workspace=WorkspaceSettings(image=pin.image))
    image = pinned_for(load_lock(), "code-server", s.workspace.image)
    assert image == pin.pinned_ref and image.endswith(f"@{pin.digest}")
    assert pinned_for(load_lock(), "code-server", "elsewhere/code-server:1") == "elsewhere/code-server:1"
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(workspace_values(workspace_names("carol"), s, image=image)))
    dep = _one(_render(helm, "-f", str(values_file), username=None), "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == f"{pin.image}@{pin.digest}"


# ------------------------------------------------------------- Pod Security restricted


def test_restricted_checker_catches_violations():
    """The checker itself must notice a broken pod, or the next test proves nothing."""
    bad = {
        "hostNetwork": True,
        "securityContext": {"runAsUser": 0},
        "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80}],
                        "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}],
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
    }
    problems = " | ".join(restricted_violations(bad))
    for fragment in ("hostNetwork", "runAsUser 0", "runAsNonRoot", "allowPrivilegeEscalation",
                     "drop lacks ALL", "SYS_ADMIN", "seccompProfile", "hostPort", "hostPath"):
        assert fragment in problems, fragment


def test_pod_meets_pod_security_restricted(objs):
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    # Explicit, not merely inherited from the image or a default.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["containers"]:
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert c["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_pod_ids_come_from_values(helm):
    dep = _one(_render(helm, "--set", "podSecurity.runAsUser=2001",
                       "--set", "podSecurity.runAsGroup=2002", "--set", "podSecurity.fsGroup=2003"), "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert {k: pod["securityContext"][k] for k in ("runAsUser", "runAsGroup", "fsGroup")} == \
        {"runAsUser": 2001, "runAsGroup": 2002, "fsGroup": 2003}
    sc = pod["containers"][0]["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"]) == (2001, 2002)
    assert restricted_violations(pod) == []


# --------------------------------------------------------------------------- objects


def test_deployment_runs_code_server_as_specified(objs):
    dep = objs["Deployment"]
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "ws-alice"
    [c] = pod["containers"]
    assert c["image"] == "vibecode.local/workspace:4.139.1-1"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["args"] == ["--bind-addr", "0.0.0.0:8080", "--auth", "none", "/workspace"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"},
                              "limits": {"cpu": "2", "memory": "4Gi"}}


def test_deployment_mounts_both_kept_volumes(objs, rendered):
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    mounts = {m["mountPath"]: claims[m["name"]] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts == {
        "/workspace": "ws-alice-workspace",
        "/home/coder/.local/share/code-server": "ws-alice-extensions",
    }
    assert set(mounts.values()) == set(_pvcs(rendered))


def test_resources_and_image_come_from_values(helm):
    dep = _one(_render(
        helm, "--set-string", "resources.limits.cpu=4,resources.limits.memory=8Gi",
        "--set-string", "image.repository=registry.local:5000/code-server,image.tag=4.102.0",
    ), "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"] == {"cpu": "4", "memory": "8Gi"}
    assert c["image"] == "registry.local:5000/code-server:4.102.0"


def test_service_account_has_no_token(objs):
    assert objs["ServiceAccount"]["automountServiceAccountToken"] is False


def test_service_is_cluster_ip_80_to_http(objs):
    spec = objs["Service"]["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]


def test_route_attaches_to_the_platform_gateway_for_the_owners_host(objs):
    route = objs["HTTPRoute"]
    spec = route["spec"]
    assert spec["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "vibecode",
                                   "namespace": "vibecode-platform", "sectionName": "workspaces"}]
    assert spec["hostnames"] == ["alice.vibecode.dev"]
    [rule] = spec["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert rule["backendRefs"] == [{"name": objs["Service"]["metadata"]["name"], "port": 80}]
    # The editor's websockets: no request deadline (Envoy's default route timeout is 15 s).
    assert rule["timeouts"] == {"request": "0s"}
    # Sign-in is the Gateway's (Authelia ExtAuthz): no proxy annotations of any kind.
    assert "annotations" not in route["metadata"]


def test_route_follows_domain_and_gateway_values(helm):
    route = _one(_render(
        helm, "--set-string", "domain=dev.example.org",
        "--set-string", "route.gateway.name=edge,route.gateway.namespace=infra,route.gateway.sectionName=ws",
        "--set-string", "route.requestTimeout=2h",
    ), "HTTPRoute")
    assert route["spec"]["hostnames"] == ["alice.dev.example.org"]
    assert route["spec"]["parentRefs"][0] == {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                                   "name": "edge", "namespace": "infra", "sectionName": "ws"}
    assert route["spec"]["rules"][0]["timeouts"] == {"request": "2h"}


def test_route_can_be_disabled(helm):
    kinds = {d["kind"] for d in _render(helm, "--set", "route.enabled=false")}
    assert "HTTPRoute" not in kinds and "Deployment" in kinds


def test_no_ingress_nginx_left_anywhere():
    """ingress-nginx was retired in March 2026: no chart of ours (the workspace and platform
    charts, the HR gateway's in deployments/) may route through it or admit its namespace."""
    root = CHART.parents[1]
    files = [p for top in (root / "charts", root / "deployments") for p in top.rglob("*") if p.is_file()]
    assert CHART / "templates" / "httproute.yaml" in files and root / "deployments" / "gateway" / "values.yaml" in files
    for path in files:
        text = path.read_text()
        for needle in ("nginx.ingress.kubernetes.io", "kind: Ingress", "ingress-nginx", "ingressClassName"):
            assert needle not in text, f"{needle!r} in {path.relative_to(root)}"


@pytest.mark.parametrize("version", ["1.33.0", "1.37.0"])
def test_every_kubernetes_object_validates_against_kubernetes_schemas(rendered, version):
    from tests.fixtures.render import is_crd_kind, kubernetes_problems

    assert [p for doc in rendered if not is_crd_kind(doc) for p in kubernetes_problems(doc, version)] == []


def test_the_httproute_validates_against_the_upstream_gateway_api_schema(rendered):
    """Skips where the upstream CRD schemas are not on the machine (they are not vendored)."""
    from tests.fixtures.render import crd_problems, is_crd_kind

    custom = [doc for doc in rendered if is_crd_kind(doc)]
    assert {d["kind"] for d in custom} == {"HTTPRoute"}
    assert [p for doc in custom for p in crd_problems(doc)] == []


def test_pvcs_are_kept_and_labelled(rendered):
    pvcs = _pvcs(rendered)
    expected_sizes = {"workspace": "10Gi", "extensions": "2Gi"}
    assert set(pvcs) == {f"ws-alice-{v}" for v in expected_sizes}
    for volume, size in expected_sizes.items():
        pvc = pvcs[f"ws-alice-{volume}"]
        assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert pvc["metadata"]["labels"]["vibecode.dev/volume"] == volume
        assert COMMON_LABELS.items() <= pvc["metadata"]["labels"].items()
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert pvc["spec"]["resources"]["requests"]["storage"] == size
        # "" = the cluster default StorageClass, which needs the field absent (not "").
        assert "storageClassName" not in pvc["spec"]


def test_pvc_storage_class_and_sizes_from_values(helm):
    pvcs = _pvcs(_render(helm, "--set-string", "persistence.storageClass=fast-ssd",
                         "--set-string", "persistence.workspace.size=50Gi",
                         "--set-string", "persistence.extensions.size=5Gi"))
    assert {n: p["spec"]["storageClassName"] for n, p in pvcs.items()} == \
        {"ws-alice-workspace": "fast-ssd", "ws-alice-extensions": "fast-ssd"}
    assert pvcs["ws-alice-workspace"]["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert pvcs["ws-alice-extensions"]["spec"]["resources"]["requests"]["storage"] == "5Gi"


def test_network_policy_admits_only_the_gateway_proxies_and_ops_on_8080(objs):
    np = objs["NetworkPolicy"]["spec"]
    # Only Ingress here; egress is the platform chart's (default deny, outside the cluster and DNS).
    assert np["policyTypes"] == ["Ingress"]
    assert "egress" not in np
    [rule] = np["ingress"]
    assert rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
    container_port = objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["ports"][0]
    assert rule["ports"][0]["port"] == container_port["containerPort"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "envoy-gateway-system"}},
         "podSelector": {"matchLabels": PROXY_LABELS}},
        {"namespaceSelector": {"matchLabels": {"vibecode.dev/ops": "true"}}},
    ]
    # The policy must select the pod it protects.
    pod_labels = objs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert np["podSelector"]["matchLabels"].items() <= pod_labels.items()


def test_network_policy_values(helm):
    np = _one(_render(helm, "--set-string", "networkPolicy.gatewayNamespace=edge",
                      "--set-string", "networkPolicy.gatewayPodLabels.app=proxy"), "NetworkPolicy")
    peers = np["spec"]["ingress"][0]["from"]
    assert peers[0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "edge"}
    assert peers[0]["podSelector"]["matchLabels"]["app"] == "proxy"
    kinds = {d["kind"] for d in _render(helm, "--set", "networkPolicy.enabled=false")}
    assert "NetworkPolicy" not in kinds and "Deployment" in kinds


def test_notes_give_url_status_and_keep_warning(helm):
    proc = helm("install", "ws-alice", str(CHART), "--dry-run=client", "--namespace", NAMESPACE,
                "--set", f"username={USER}", "--set", "replicas=0")
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "https://alice.vibecode.dev/" in notes
    assert "Gateway vibecode-platform/vibecode (listener workspaces)" in notes
    assert f"kubectl -n {NAMESPACE} rollout status deployment/ws-alice" in notes
    assert "STOPPED" in notes  # replicas=0
    assert "ws-alice-workspace" in notes and "keep" in notes


# ----------------------------------------------------------------------------- kind


def test_kind_cluster_config():
    """KIND v0.32: three nodes; the control plane maps host 80/443 to the Envoy proxy's NodePorts
    (no ingress-nginx: it was retired), the node image comes from the lock (not named here)."""
    cfg = yaml.safe_load(KIND_CONFIG.read_text())
    assert cfg["kind"] == "Cluster"
    assert cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert cfg["name"] == "vibecode"
    nodes = cfg["nodes"]
    assert [n["role"] for n in nodes] == ["control-plane", "worker", "worker"]
    cp = nodes[0]
    assert "kubeadmConfigPatches" not in cp  # no ingress-ready label: nothing selects it any more
    ports = {(m["containerPort"], m["hostPort"], m.get("protocol", "TCP")) for m in cp["extraPortMappings"]}
    assert ports == {(30080, 80, "TCP"), (30443, 443, "TCP")}
    assert sorted(n["labels"]["tier"] for n in nodes[1:]) == ["code-server", "platform"]
