"""The flows' least-privilege identity: ServiceAccount ``vibecode-flows`` and its rules.

The rules live in one data file (:data:`RULES_FILE`) that both this module and the platform
chart read, so the Roles the chart installs and the ones the tests check are the same.
Three scopes:

- ``workspaces``: a Role in the workspace namespace (releases, volumes, backup Jobs);
- ``platform``: a Role in the platform namespace (Authelia's users Secret, ledger, TOTP);
- ``cluster``: a ClusterRole, only for reads a check truly needs across namespaces.

Each rule carries a ``why`` (the code path that needs it), dropped from the manifests.
The test suite runs a representative set of flow tests under this identity against the
real API server and compares the calls it audited with these rules
(tests/cluster/test_flows_rbac.py).

Builders are pure: they take the parsed rules and names, and return manifests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = ROOT / "deployments" / "flows-rbac.yaml"
SERVICE_ACCOUNT = "vibecode-flows"
FLOWS_NAMESPACE = "vibecode-ops"
SCOPES = ("workspaces", "platform", "cluster")
_RULE_KEYS = ("apiGroups", "resources", "resourceNames", "verbs")


def load_rules(path: Path = RULES_FILE) -> dict[str, list[dict[str, Any]]]:
    data = yaml.safe_load(path.read_text())
    return {scope: data.get(scope) or [] for scope in SCOPES}


def policy_rules(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules as Kubernetes PolicyRules (``why`` and any other note dropped)."""
    return [{k: r[k] for k in _RULE_KEYS if k in r} for r in rules]


def username(namespace: str = FLOWS_NAMESPACE, name: str = SERVICE_ACCOUNT) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def manifests(rules: dict[str, list[dict[str, Any]]], workspace_namespace: str, platform_namespace: str,
              flows_namespace: str = FLOWS_NAMESPACE, name: str = SERVICE_ACCOUNT,
              labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """ServiceAccount, a Role + RoleBinding per namespace, ClusterRole + ClusterRoleBinding."""
    meta_labels = {"app.kubernetes.io/part-of": "vibecode", "app.kubernetes.io/component": "flows",
                   **(labels or {})}
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": flows_namespace}]
    out: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "ServiceAccount",
                                  "metadata": {"name": name, "namespace": flows_namespace, "labels": meta_labels}}]
    for scope, ns in (("workspaces", workspace_namespace), ("platform", platform_namespace)):
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
