"""Values for ``charts/vibecode-platform``, built from settings, pinned images and the components
a cluster can run (pure: no I/O; bootstrap passes what it read).

The chart's values.schema.json is the contract: it refuses unknown keys, so a builder that
drifts from the chart fails at install, not at runtime. Helm merges these values over the
chart's defaults, so only what depends on settings, the lock and the cluster is set here.

Also the names both sides agree on: the Secret keys bootstrap generates (:data:`SECRET_KEYS`),
the label provisioning finds the Gateway by (:data:`GATEWAY_LABEL`), and the flows' RBAC rules
(:data:`FLOWS_RULES`, the chart's ``rbac.rules`` default; a test keeps the two equal).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tasks.core.errors import InvalidInput
from tasks.core.names import (  # noqa: F401 - re-exported
    ENVOY_PROXY_LABELS,
    GATEWAY_LABEL,
    GATEWAY_LABEL_VALUE,
    GATEWAY_SELECTOR,
)
from tasks.core.settings import Settings

COMPONENTS = ("gateway", "certificates", "authelia", "postgresql", "redis", "seaweedfs", "networkPolicies", "rbac")

# The chart's image values -> the lock's image names (deployments/platform.lock.yaml).
IMAGE_KEYS = {
    "gateway.envoyProxy": "envoy-proxy",
    "authelia": "authelia",
    "postgresql": "postgres",
    "redis": "redis",
    "seaweedfs": "seaweedfs",
}

PLATFORM_SECRET = "vibecode-platform-secrets"
SMTP_SECRET = "vibecode-smtp"
SMTP_PASSWORD_KEY = "smtp-password"
# Every key bootstrap generates into PLATFORM_SECRET; the chart mounts the ones it needs.
SECRET_KEYS = (
    "authelia-jwt-secret", "authelia-session-secret", "authelia-storage-encryption-key",
    "postgres-password", "redis-password", "s3-access-key-id", "s3-secret-access-key",
    "restic-password", "hr-webhook-secret", "hr-scim-token",
)
# Authelia's *_FILE variables -> the key of PLATFORM_SECRET each names (mounted at /secrets/<key>).
# The TOTP import Job needs the storage two as well (it runs Authelia's CLI on the same config).
AUTHELIA_SECRET_FILES = {
    "AUTHELIA_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET_FILE": "authelia-jwt-secret",
    "AUTHELIA_SESSION_SECRET_FILE": "authelia-session-secret",
    "AUTHELIA_STORAGE_ENCRYPTION_KEY_FILE": "authelia-storage-encryption-key",
    "AUTHELIA_STORAGE_POSTGRES_PASSWORD_FILE": "postgres-password",
    "AUTHELIA_SESSION_REDIS_PASSWORD_FILE": "redis-password",
}
AUTHELIA_STORAGE_SECRET_FILES = {k: v for k, v in AUTHELIA_SECRET_FILES.items() if "_STORAGE_" in k}

# The platform Gateway and its listeners (the chart's gateway.name / gateway.listeners): the
# builder sets them, and the HR gateway's route (tasks.platform.releases) reads them back from
# the built values, so the two charts cannot disagree on a name.
GATEWAY_NAME = "vibecode"
WORKSPACES_LISTENER = "workspaces"
HR_LISTENER = "hr"
LISTENERS = {"portal": "portal", "workspaces": WORKSPACES_LISTENER, "hr": HR_LISTENER, "http": "http"}
# The HR gateway's host is hr.<domain>; "hr" is a reserved username (tasks.core.names), so no
# workspace host is ever the same name.
HR_HOST_LABEL = "hr"
OPS_NAMESPACE = "vibecode-ops"
FLOWS_SERVICE_ACCOUNT = "vibecode-flows"

# Least privilege: exactly what the flows call through tasks/cluster/kube.py and what helm's
# server-side apply and uninstall of the workspace chart need, by scope. Checked on the real
# API server against its audit of the flow tests (tasks/platform/rbac.py says why each rule
# is there; tests/fixtures/kube.py runs the flows under it). Nothing cluster-wide but LISTs.
FLOWS_RULES: dict[str, list[dict[str, Any]]] = {
    "workspaces": [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete", "get", "list", "patch", "update"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "delete", "get"]},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims"],
         "verbs": ["create", "delete", "get", "list", "patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["services", "serviceaccounts"], "verbs": ["create", "delete", "get", "patch"]},
        {"apiGroups": ["apps"], "resources": ["deployments"],
         "verbs": ["create", "delete", "get", "list", "patch", "watch"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "delete", "get", "list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
         "verbs": ["create", "delete", "get", "patch"]},
        {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"],
         "verbs": ["create", "delete", "get", "patch"]},
    ],
    "platform": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "delete", "get", "list", "update"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete", "get", "list", "update"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "delete", "get", "list", "watch"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["authelia"], "verbs": ["get", "patch"]},
    ],
    # cert-manager's namespace: only its CA Secret, read by the nightly platform backup (without
    # it a recovered platform issues a new CA, and everyone trusts again).
    "ca": [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["vibecode-ca"], "verbs": ["get"]},
    ],
    "cluster": [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]},
        {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": ["list"]},
        {"apiGroups": ["cert-manager.io"], "resources": ["certificates"], "verbs": ["list"]},
        {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["gateways"], "verbs": ["list"]},
    ],
}

# Special-use and private names: no public CA issues for them, so ACME stays off.
LOCAL_SUFFIXES = ("localhost", "local", "test", "example", "invalid", "internal", "home.arpa", "lan",
                  "localdomain", "nip.io", "sslip.io")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


@dataclass(frozen=True)
class ClusterNetwork:
    """The cluster's address ranges, for the NetworkPolicies' "outside the cluster". KIND's
    defaults; bootstrap reads the real ones where it can (kubeadm's ClusterConfiguration)."""

    pod_cidrs: tuple[str, ...] = ("10.244.0.0/16",)
    service_cidrs: tuple[str, ...] = ("10.96.0.0/12",)
    node_cidrs: tuple[str, ...] = ("172.18.0.0/16",)
    denied_cidrs: tuple[str, ...] = ("169.254.0.0/16",)


def split_reference(reference: str, field: str = "image") -> dict[str, str]:
    """``repo[:tag][@sha256:...]`` -> the chart's ``{repository, tag, digest}``."""
    ref = reference.strip()
    name, _, digest = ref.partition("@")
    if digest and not _DIGEST.match(digest):
        raise InvalidInput(field, f"{reference!r}: the digest must be sha256:<64 hex digits>")
    last = name.rsplit("/", 1)[-1]
    repository, tag = (name.rsplit(":", 1) if ":" in last else (name, ""))
    if not repository or any(c.isspace() for c in ref):
        raise InvalidInput(field, f"{reference!r} is not an image reference")
    if not digest and not tag:
        raise InvalidInput(field, f"{reference!r} has neither a tag nor a digest")
    return {"repository": repository, "tag": tag, "digest": digest}


def is_public_domain(domain: str) -> bool:
    """Whether a public CA could issue for ``domain`` (not a special-use or private name)."""
    d = domain.lower().rstrip(".")
    return not any(d == s or d.endswith("." + s) for s in LOCAL_SUFFIXES)


def _cidrs(values: Iterable[str], field: str) -> list[str]:
    out = []
    for v in values:
        try:
            out.append(str(ipaddress.IPv4Network(v, strict=True)))
        except ValueError as exc:
            raise InvalidInput(field, f"{v!r}: {exc}") from None
    return out


def _host(url: str, field: str) -> str:
    host = urlsplit(url).hostname
    if not host:
        raise InvalidInput(field, f"{url!r} has no host")
    return host


def _smtp(settings: Settings) -> dict[str, Any]:
    """Authelia's notifier from the mail settings. A loopback host is the operator's machine,
    which a pod cannot reach: then the filesystem notifier (host "")."""
    m = settings.mail
    host = m.smtp_host
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    scheme = "submissions" if m.smtp_ssl else "submission" if m.smtp_starttls else "smtp"
    return {"host": "" if loopback else host, "port": m.smtp_port, "scheme": scheme,
            "username": m.smtp_username or "", "sender": m.sender}


def platform_values(settings: Settings, images: Mapping[str, str], components: Iterable[str], *,
                    network: ClusterNetwork = ClusterNetwork(), ops_namespace: str = OPS_NAMESPACE,
                    acme_email: str | None = None, s3_external_endpoint: str | None = None,
                    allow_unpinned: bool = False, create_namespaces: bool = True) -> dict[str, Any]:
    """Values for ``charts/vibecode-platform``.

    ``images``: lock image name (:data:`IMAGE_KEYS` values) -> reference; each enabled component's
    image must be there, pinned by digest unless ``allow_unpinned`` (images built on the node).
    ``components``: the ones this cluster runs (:data:`COMPONENTS`); the others are disabled and
    say so in NOTES. ACME is on only with ``acme_email`` and a public domain.
    """
    enabled = set(components)
    unknown = enabled - set(COMPONENTS)
    if unknown:
        raise InvalidInput("components", f"unknown {sorted(unknown)}; known: {list(COMPONENTS)}")
    s = settings
    portal = _host(s.identity.authelia_url, "identity.authelia_url")
    if portal != s.domain and not portal.endswith("." + s.domain):
        raise InvalidInput("identity.authelia_url", f"the portal {portal!r} must be under the domain {s.domain!r} "
                           "(the session cookie covers the domain and the workspaces)")
    acme = bool(acme_email) and is_public_domain(s.domain)
    rules = {scope: [dict(r) for r in rs] for scope, rs in FLOWS_RULES.items()}
    for r in rules["platform"]:
        if "resourceNames" in r:
            r["resourceNames"] = [s.identity.authelia_deployment]

    def image(key: str, component: str) -> dict[str, str]:
        lock_name = IMAGE_KEYS[key]
        ref = images.get(lock_name)
        if ref is None:
            raise InvalidInput(f"images.{lock_name}", f"no image for {component}, which is enabled")
        parts = split_reference(ref, f"images.{lock_name}")
        if not parts["digest"] and not allow_unpinned:
            raise InvalidInput(f"images.{lock_name}", f"{ref!r} is not pinned by digest")
        return parts

    values: dict[str, Any] = {
        "domain": s.domain,
        "portal": {"host": portal},
        "hr": {"host": f"{HR_HOST_LABEL}.{s.domain}"},
        "namespaces": {"create": create_namespaces, "platform": s.platform_namespace,
                       "workspaces": s.namespace, "ops": ops_namespace},
        "images": {"allowUnpinned": allow_unpinned},
        "secrets": {"platform": PLATFORM_SECRET, "users": s.identity.authelia_users_secret, "smtp": SMTP_SECRET},
        "gateway": {"enabled": "gateway" in enabled, "name": GATEWAY_NAME, "listeners": dict(LISTENERS),
                    "proxyPodLabels": dict(ENVOY_PROXY_LABELS)},
        "certificates": {"enabled": "certificates" in enabled,
                         "acme": {"enabled": acme, "email": acme_email if acme else ""}},
        "authelia": {"enabled": "authelia" in enabled, "name": s.identity.authelia_deployment,
                     "configSecret": s.identity.authelia_config_secret, "totpIssuer": s.identity.totp_issuer,
                     "smtp": _smtp(s)},
        "postgresql": {"enabled": "postgresql" in enabled},
        "redis": {"enabled": "redis" in enabled},
        "seaweedfs": {"enabled": "seaweedfs" in enabled and not s3_external_endpoint,
                      "externalEndpoint": s3_external_endpoint or "", "bucket": s.backup.s3_bucket},
        "networkPolicies": {"enabled": "networkPolicies" in enabled,
                            "podCIDRs": _cidrs(network.pod_cidrs, "network.pod_cidrs"),
                            "serviceCIDRs": _cidrs(network.service_cidrs, "network.service_cidrs"),
                            "nodeCIDRs": _cidrs(network.node_cidrs, "network.node_cidrs"),
                            "deniedCIDRs": _cidrs(network.denied_cidrs, "network.denied_cidrs")},
        "rbac": {"enabled": "rbac" in enabled, "serviceAccount": FLOWS_SERVICE_ACCOUNT, "rules": rules},
    }
    if "gateway" in enabled:
        values["gateway"]["envoyProxy"] = {"enabled": True, "image": image("gateway.envoyProxy", "gateway")}
    if "authelia" in enabled:
        values["authelia"]["image"] = image("authelia", "authelia")
        for store in ("postgresql", "redis"):
            if store in enabled:
                values[store]["image"] = image(store, store)
    if values["seaweedfs"]["enabled"]:
        values["seaweedfs"]["image"] = image("seaweedfs", "seaweedfs")
    return values
