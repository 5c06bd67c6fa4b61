"""The flows' least-privilege identity: ServiceAccount ``vibecode-flows`` and its rules.

The rules are :data:`tasks.platform.values.FLOWS_RULES`, the platform chart's ``rbac.rules``
default (a test keeps the two equal), so the Roles the chart installs and the ones the
tests check are the same. Three scopes:

- ``workspaces``: a Role in the workspace namespace (releases, volumes, backup Jobs);
- ``platform``: a Role in the platform namespace (Authelia's users Secret, ledger, TOTP);
- ``ca``: a Role in cert-manager's namespace, for its CA Secret only (the platform backup);
- ``cluster``: a ClusterRole, only LISTs a check truly needs across namespaces.

:data:`WHY` names the code path behind each rule. The test suite runs a representative
set of flow tests under this identity on the real API server, which audits every request;
none may be refused, and a rule's verb the audit never shows must be in :data:`UNAUDITED`
with the reason (tests/fixtures/kube.py, tests/cluster/test_flows_rbac.py).

Builders are pure: they take the rules and names, and return manifests.
"""

from __future__ import annotations

import copy
from typing import Any

from tasks.core.names import COMPONENT_LABEL, PART_OF, PART_OF_LABEL
from tasks.platform.values import FLOWS_RULES, FLOWS_SERVICE_ACCOUNT, OPS_NAMESPACE

SERVICE_ACCOUNT = FLOWS_SERVICE_ACCOUNT
FLOWS_NAMESPACE = OPS_NAMESPACE
SCOPES = ("workspaces", "platform", "ca", "cluster")
_RULE_KEYS = ("apiGroups", "resources", "resourceNames", "verbs")
_APPLY = "helm's server-side apply that creates an object needs create; the audit records it as patch"

# (scope, apiGroup, resource) -> the code paths that need it.
WHY: dict[tuple[str, str, str], str] = {
    ("workspaces", "", "namespaces"): "provision's ensure-namespace reads it (the chart creates it)",
    ("workspaces", "", "secrets"): "helm's release records; the backup Secret patched by a restic password rotation",
    ("workspaces", "", "configmaps"): "the restic repository's init claim (tasks/backup/repo.py)",
    ("workspaces", "", "persistentvolumeclaims"): "helm applies the volumes; backup annotations; restore "
                                                  "volumes; purge and the reaper's dormancy delete",
    ("workspaces", "", "pods"): "a failed Job's pod states its reason; restore checks no pod holds the volume",
    ("workspaces", "", "services"): "helm apply/uninstall of the workspace chart",
    ("workspaces", "", "serviceaccounts"): "helm apply/uninstall of the workspace chart",
    ("workspaces", "apps", "deployments"): "helm apply/uninstall; the reaper stops and resumes; rollout watches",
    ("workspaces", "batch", "jobs"): "backup, restore and purge Jobs, awaited by a watch",
    ("workspaces", "networking.k8s.io", "networkpolicies"): "helm apply/uninstall of the workspace chart",
    ("workspaces", "gateway.networking.k8s.io", "httproutes"): "helm apply/uninstall of the workspace chart",
    ("platform", "", "configmaps"): "the people ledger (tasks/people/ledger.py)",
    ("platform", "", "secrets"): "Authelia's users database (compare-and-swap replace); TOTP hand-off Secrets",
    ("platform", "", "pods"): "a failed TOTP Job's pod states its reason",
    ("platform", "batch", "jobs"): "the TOTP pre-provisioning Job, awaited by a watch",
    ("platform", "apps", "deployments"): "roll Authelia after its users Secret changed",
    ("ca", "", "secrets"): "the nightly platform backup saves cert-manager's CA (tasks/dr/steps.py)",
    ("cluster", "", "nodes"): "health's node check (nodes are cluster-scoped)",
    ("cluster", "apps", "deployments"): "health's platform components live in several namespaces",
    ("cluster", "apps", "statefulsets"): "health's platform components live in several namespaces",
    ("cluster", "cert-manager.io", "certificates"): "health's certificate expiry check",
    ("cluster", "gateway.networking.k8s.io", "gateways"): "provisioning finds the platform Gateway by label",
}

# (scope, apiGroup, resource, verb) the audit of the marked flow tests does not show, and why.
UNAUDITED: dict[tuple[str, str, str, str], str] = {
    **{("workspaces", g, r, "create"): _APPLY for g, r in (
        ("", "services"), ("", "serviceaccounts"), ("apps", "deployments"), ("networking.k8s.io", "networkpolicies"),
        ("gateway.networking.k8s.io", "httproutes"))},
    ("workspaces", "", "secrets", "patch"): "the rotate-restic-password flow (not in the marked set)",
    ("workspaces", "apps", "deployments", "watch"): "rollout's watch when the Deployment is not available at the "
                                                    "first LIST (the tests' kubelet stand-in is quicker)",
    ("workspaces", "batch", "jobs", "get"): "restore's guard check of a lapsed restore Job",
    ("workspaces", "", "configmaps", "get"): "a lost race for the restic init claim reads the winner's",
    ("workspaces", "", "configmaps", "delete"): "a failed or stale restic init claim is released",
    ("workspaces", "gateway.networking.k8s.io", "httproutes", "delete"): "uninstalling a workspace whose chart "
                                                                        "rendered an HTTPRoute (the purge tests "
                                                                        "run without a Gateway)",
    ("platform", "", "secrets", "delete"): "TOTP hand-offs: an expired one, or one of a failed Job",
    ("platform", "batch", "jobs", "delete"): "a failed TOTP Job is replaced on the rerun",
    ("platform", "", "configmaps", "delete"): "a SCIM DELETE of a user (the gateway's path, tests/gateway)",
    ("platform", "", "pods", "list"): "only when a TOTP Job fails",
    ("ca", "", "secrets", "get"): "the platform backup tests (tests/dr) run as the test API server's admin",
    ("cluster", "cert-manager.io", "certificates", "list"): "no cert-manager CRD on the test API server: the "
                                                              "LIST answers 404 before RBAC is asked",
    ("cluster", "gateway.networking.k8s.io", "gateways", "list"): "no Gateway API CRD in the marked tests' runs",
}


def load_rules() -> dict[str, list[dict[str, Any]]]:
    """The flows' rules by scope (a copy: callers may adjust resourceNames)."""
    return {scope: copy.deepcopy(FLOWS_RULES.get(scope, [])) for scope in SCOPES}


def policy_rules(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules as Kubernetes PolicyRules (only the PolicyRule keys)."""
    return [{k: r[k] for k in _RULE_KEYS if k in r} for r in rules]


def username(namespace: str = FLOWS_NAMESPACE, name: str = SERVICE_ACCOUNT) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def manifests(rules: dict[str, list[dict[str, Any]]], workspace_namespace: str, platform_namespace: str,
              flows_namespace: str = FLOWS_NAMESPACE, name: str = SERVICE_ACCOUNT,
              labels: dict[str, str] | None = None, ca_namespace: str | None = None) -> list[dict[str, Any]]:
    """ServiceAccount, a Role + RoleBinding per namespace (cert-manager's only when
    ``ca_namespace`` is given), ClusterRole + ClusterRoleBinding."""
    meta_labels = {PART_OF_LABEL: PART_OF, COMPONENT_LABEL: "flows", **(labels or {})}
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": flows_namespace}]
    out: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "ServiceAccount",
                                  "metadata": {"name": name, "namespace": flows_namespace, "labels": meta_labels}}]
    scoped = [("workspaces", workspace_namespace), ("platform", platform_namespace)]
    if ca_namespace is not None and rules.get("ca"):
        scoped.append(("ca", ca_namespace))
    for scope, ns in scoped:
        role = f"{name}-{scope}"
        out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": {"name": role, "namespace": ns, "labels": meta_labels},
                    "rules": policy_rules(rules[scope])})
        out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": role, "namespace": ns, "labels": meta_labels},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                    "subjects": subject})
    if rules["cluster"]:
        role = f"{name}-cluster"
        out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": {"name": role, "labels": meta_labels}, "rules": policy_rules(rules["cluster"])})
        out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": {"name": role, "labels": meta_labels},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                    "subjects": subject})
    return out


def allows(rules: list[dict[str, Any]], verb: str, group: str, resource: str, name: str | None = None) -> bool:
    """Whether one of ``rules`` grants the request, as the RBAC authorizer matches it
    (``resource`` may be ``pods/log``-style with a subresource; ``*`` matches anything)."""
    for r in rules:
        if not ({"*", verb} & set(r.get("verbs", []))):
            continue
        if not ({"*", group} & set(r.get("apiGroups", []))):
            continue
        if not ({"*", resource} & set(r.get("resources", []))):
            continue
        if r.get("resourceNames") and name not in r["resourceNames"]:
            continue
        return True
    return False


def audited_call(event: dict[str, Any]) -> tuple[str, str, str, str | None, str | None]:
    """(verb, group, resource[/subresource], namespace, name) of one audit event."""
    ref = event.get("objectRef") or {}
    resource = ref.get("resource", "")
    if ref.get("subresource"):
        resource = f"{resource}/{ref['subresource']}"
    return event["verb"], ref.get("apiGroup", ""), resource, ref.get("namespace"), ref.get("name")
