"""The flows' least-privilege identity on the real API server (RBAC authorizer).

The representative flow tests run as this identity (marked ``flows_identity``; see
tests/fixtures/kube.py): here, what it must NOT be able to do, and the rules file itself."""

from __future__ import annotations

import pytest

from tasks.cluster import kube as kube_adapter
from tasks.core.errors import Forbidden
from tasks.core.settings import Settings
from tasks.platform import rbac


@pytest.fixture
def as_flows(flows_identity, kube, namespaces):
    """A client holding the flows' token, with its Roles bound in the two test namespaces."""
    workspace, platform = namespaces
    flows_identity.bind(kube, workspace, "workspaces")
    flows_identity.bind(kube, platform, "platform")
    return kube_adapter.connect(Settings(kubeconfig=flows_identity.kubeconfig))


def test_the_token_is_the_service_accounts_and_works_where_its_roles_are(as_flows, kube, namespaces):
    workspace, platform = namespaces
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "authelia-users", "namespace": platform},
                 "stringData": {"users_database.yml": "users: {}\n"}})
    assert as_flows.get("Secret", platform, "authelia-users") is not None
    assert as_flows.list("Secret", workspace) == []
    assert as_flows.get("Namespace", None, workspace)["metadata"]["name"] == workspace


@pytest.mark.parametrize("attempt, call", [
    ("read Secrets in kube-system", lambda k, ws, pf: k.get("Secret", "kube-system", "anything")),
    ("list Secrets in kube-system", lambda k, ws, pf: k.list("Secret", "kube-system")),
    ("list Secrets cluster-wide", lambda k, ws, pf: k.list_all("Secret")),
    ("create a ClusterRole", lambda k, ws, pf: k.create({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "escalate"},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]})),
    ("bind itself to cluster-admin", lambda k, ws, pf: k.create({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "escalate", "namespace": ws},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "vibecode-flows", "namespace": "vibecode-ops"}]})),
    ("create a Pod (flows make Jobs, never bare pods)", lambda k, ws, pf: k.create({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": ws},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}})),
    ("create a Namespace", lambda k, ws, pf: k.create({"apiVersion": "v1", "kind": "Namespace",
                                                       "metadata": {"name": "vibecode-escape"}})),
    ("delete its own namespace", lambda k, ws, pf: k.delete("Namespace", None, ws)),
    ("write a Node", lambda k, ws, pf: k.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}})),
    ("read Secrets of the flows' own namespace", lambda k, ws, pf: k.list("Secret", "vibecode-ops")),
    ("patch a Deployment in kube-system", lambda k, ws, pf: k.scale("kube-system", "coredns", 0)),
])
def test_what_the_flows_identity_is_refused(as_flows, namespaces, attempt, call):
    workspace, platform = namespaces
    with pytest.raises(Forbidden, match="403"):
        call(as_flows, workspace, platform)


def test_cluster_wide_rights_are_reads_and_name_no_secret():
    rules = rbac.load_rules()
    verbs = {v for r in rules["cluster"] for v in r["verbs"]}
    assert verbs <= {"get", "list", "watch"}
    granted = {(g, res) for r in rules["cluster"] for g in r["apiGroups"] for res in r["resources"]}
    assert granted == {("", "nodes"), ("apps", "deployments"), ("apps", "statefulsets"),
                       ("cert-manager.io", "certificates"), ("gateway.networking.k8s.io", "gateways")}
    for scope in rbac.SCOPES:
        for r in rules[scope]:
            assert "*" not in r["verbs"] + r["apiGroups"] + r["resources"], (scope, r)
            for group in r["apiGroups"]:
                for resource in r["resources"]:
                    assert rbac.WHY.get((scope, group, resource)), (scope, group, resource)
    named = {"platform": "authelia", "ca": "vibecode-ca"}  # the objects their resourceNames allow
    for scope, group, resource, verb in rbac.UNAUDITED:  # every waiver names a granted verb
        assert rbac.allows(rules[scope], verb, group, resource, name=named.get(scope)), (scope, group, resource, verb)
    # cert-manager's namespace: the CA's Secret, read, and nothing else of it.
    assert rules["ca"] == [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["vibecode-ca"],
                            "verbs": ["get"]}]
    assert not rbac.allows(rules["ca"], "get", "", "secrets", name="cert-manager-webhook-ca")
    for r in rules["workspaces"] + rules["platform"]:  # never the power to grant rights or run bare pods
        assert not {"roles", "rolebindings", "clusterroles", "clusterrolebindings"} & set(r["resources"])
        assert not ("pods" in r["resources"] and {"create", "update", "patch"} & set(r["verbs"])), r


@pytest.mark.parametrize("verb, group, resource, expected", [
    ("get", "", "secrets", True), ("watch", "", "secrets", False), ("get", "apps", "secrets", False),
    ("list", "", "pods", True), ("list", "", "pods/log", False), ("get", "*", "x", False),
])
def test_allows_matches_like_the_rbac_authorizer(verb, group, resource, expected):
    rules = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
             {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
    assert rbac.allows(rules, verb, group, resource) is expected
    assert rbac.allows([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}], verb, group, resource)


def test_manifests_bind_each_scope_where_it_belongs():
    out = rbac.manifests(rbac.load_rules(), "ws", "pf")
    kinds = [(m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]) for m in out]
    assert kinds == [("ServiceAccount", "vibecode-ops", "vibecode-flows"),
                     ("Role", "ws", "vibecode-flows-workspaces"), ("RoleBinding", "ws", "vibecode-flows-workspaces"),
                     ("Role", "pf", "vibecode-flows-platform"), ("RoleBinding", "pf", "vibecode-flows-platform"),
                     ("ClusterRole", None, "vibecode-flows-cluster"), ("ClusterRoleBinding", None, "vibecode-flows-cluster")]
    for m in out:
        for rule in m.get("rules", []):
            assert set(rule) <= {"apiGroups", "resources", "resourceNames", "verbs"}
    with_ca = rbac.manifests(rbac.load_rules(), "ws", "pf", ca_namespace="cm")
    assert [(m["kind"], m["metadata"]["namespace"]) for m in with_ca if m["metadata"]["name"].endswith("-ca")] == [
        ("Role", "cm"), ("RoleBinding", "cm")]
