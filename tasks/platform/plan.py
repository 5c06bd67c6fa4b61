"""What bootstrap installs, in which order, and what it would do to each component (pure).

The platform is a fixed sequence of components (:data:`ORDER`), each with the components it
needs first. For each one, two decisions, both functions of observed data only:

- :func:`runnable`: can it run on *this* cluster? Its chart and images must be pinned (an
  unpinned entry is reported, never installed by tag), and its images must be obtainable: when
  the nodes cannot pull (``registry_reachable`` false: this machine's one-node cluster), only
  images already on a node count (the kubelet reports them in ``Node.status.images``), and an
  image built here instead of the pinned one (``image_overrides``) is said so. A component
  whose prerequisite cannot run cannot run either; the reason names the first missing link.
- :func:`release_action`: install, upgrade (with the reasons: chart version, chart archive,
  which values changed) or leave it unchanged. The reasons name value *paths*, never values.

A component never half-runs: the platform chart's own parts (Gateway, certificates, Authelia,
its stores) are switched on or off as a whole by the same rule (:func:`platform_features`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping

from tasks.core.names import MANAGED_BY_LABEL
from tasks.platform.lock import Lock, normalise, rehost
from tasks.platform.values import ClusterNetwork

Action = Literal["install", "upgrade", "unchanged", "skip", "create", "update", "ensure"]

# name, kind, lock chart key, needs, the lock `component` of its images
_SPEC: tuple[tuple[str, str, str | None, tuple[str, ...], str | None], ...] = (
    ("namespaces", "namespaces", None, (), None),
    ("platform-secrets", "secrets", None, ("namespaces",), None),
    ("cert-manager", "chart", "cert-manager", ("namespaces",), "cert-manager"),
    ("envoy-gateway", "chart", "envoy-gateway", ("namespaces",), "envoy-gateway"),
    ("vibecode-platform", "chart", None, ("platform-secrets",), "vibecode-platform"),
    ("hr-gateway", "chart", None, ("vibecode-platform",), "hr-gateway"),
    ("datadog", "chart", "datadog", ("namespaces",), "datadog"),
    ("tag-limits", "limits", None, (), None),
    ("work-pools", "pools", None, (), None),
    ("demo-workspace", "workspace", None, ("vibecode-platform", "tag-limits"), "workspace"),
)
ORDER: tuple[str, ...] = tuple(spec[0] for spec in _SPEC)

# CRDs a component brings that its release manifest does not list (a chart's crds/ folder),
# so the readiness gate checks them by name.
CRDS: dict[str, tuple[str, ...]] = {
    "envoy-gateway": ("gatewayclasses.gateway.networking.k8s.io", "gateways.gateway.networking.k8s.io",
                      "httproutes.gateway.networking.k8s.io", "referencegrants.gateway.networking.k8s.io",
                      "securitypolicies.gateway.envoyproxy.io", "envoyproxies.gateway.envoyproxy.io"),
    "cert-manager": ("certificates.cert-manager.io", "issuers.cert-manager.io",
                     "clusterissuers.cert-manager.io", "certificaterequests.cert-manager.io"),
}

# Parts of the platform chart (tasks.platform.values.COMPONENTS): the lock images each runs,
# and the components it needs installed.
PLATFORM_PARTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "seaweedfs": (("seaweedfs",), ()),
    "postgresql": (("postgres",), ()),
    "redis": (("redis",), ()),
    "authelia": (("authelia",), ()),
    "gateway": (("envoy-proxy",), ("envoy-gateway",)),
    "certificates": ((), ("cert-manager",)),
    "networkPolicies": ((), ()),
    "rbac": ((), ()),
}
# Parts that run together or not at all: Authelia needs its stores, and the chart renders the
# stores only for Authelia (nothing else uses them).
PART_GROUPS: tuple[tuple[str, ...], ...] = (("authelia", "postgresql", "redis"),)


@dataclass(frozen=True)
class Component:
    name: str
    kind: str
    chart_key: str | None  # the lock's chart entry (upstream charts), None for ours
    needs: tuple[str, ...]
    images: tuple[str, ...]  # lock image keys

    @property
    def upstream(self) -> bool:
        return self.chart_key is not None


def components(lock: Lock) -> list[Component]:
    return [Component(name, kind, chart, needs, tuple(lock.images_of(images)) if images else ())
            for name, kind, chart, needs, images in _SPEC]


@dataclass(frozen=True)
class ClusterFacts:
    """What bootstrap observed or was told about the cluster (no I/O here)."""

    registry_reachable: bool = True
    node_images: frozenset[str] = frozenset()  # normalised references on the nodes
    image_overrides: Mapping[str, str] = field(default_factory=dict)
    mirror_registry: str | None = None
    datadog_key: bool = False
    bundle: bool = False  # air-gapped: every image must be pinned, and in the bundle
    bundle_images: frozenset[str] = frozenset()  # lock image keys the bundle holds
    bundle_charts: frozenset[str] = frozenset()
    network: ClusterNetwork | None = None  # address ranges read from the nodes (None: KIND's defaults)
    by_tag: bool = False  # images were `kind load`ed: one architecture, so not under the index digest


@dataclass(frozen=True)
class Verdict:
    run: bool
    reason: str


def cluster_network(nodes: list[dict]) -> ClusterNetwork | None:
    """The pod ranges and node addresses the nodes report (what "inside the cluster" is for the
    NetworkPolicies), or None when there are none to read (then KIND's defaults apply)."""
    pods = sorted({c for n in nodes for c in ((n.get("spec") or {}).get("podCIDRs")
                                              or [(n.get("spec") or {}).get("podCIDR")]) if c and ":" not in c})
    addrs = sorted({f"{a['address']}/32" for n in nodes for a in (n.get("status") or {}).get("addresses") or []
                    if a.get("type") == "InternalIP" and ":" not in a.get("address", "")})
    if not pods or not addrs:
        return None
    default = ClusterNetwork()
    return ClusterNetwork(pod_cidrs=tuple(pods), service_cidrs=default.service_cidrs, node_cidrs=tuple(addrs),
                          denied_cidrs=default.denied_cidrs)


def image_ref(lock: Lock, key: str, facts: ClusterFacts) -> str:
    """The reference pods run for lock image ``key``: a local build when one replaces it, else
    the pinned reference (in the mirror, for air-gapped installs)."""
    if key in facts.image_overrides:
        return facts.image_overrides[key]
    if facts.by_tag:
        return lock.image(key).image
    return rehost(lock.image(key), facts.mirror_registry)


def _on_node(ref: str, facts: ClusterFacts) -> bool:
    try:
        want = normalise(ref)
    except ValueError:
        return False
    repo_tag = want.split("@", 1)[0]
    return want in facts.node_images or repo_tag in facts.node_images


def image_problem(lock: Lock, key: str, facts: ClusterFacts) -> str | None:
    """Why pods could not get image ``key`` here, or None."""
    pin = lock.image(key)
    if key in facts.image_overrides:
        ref = facts.image_overrides[key]
        if not facts.registry_reachable and not _on_node(ref, facts):
            return f"its image {ref} (built here for {key}) is not on any node"
        return None
    if pin.build is not None:  # ours: in no public registry, so it must be on a node already
        if _on_node(pin.image, facts):
            return None
        return (f"its image {pin.image} is built from {pin.build} and no built copy is on any node "
                f"(load one, or set platform.image_overrides.{key} to where you pushed it)")
    if facts.bundle and pin.digest is None:
        return f"image {pin.image} is not pinned by digest, and an air-gapped install refuses unpinned images"
    if facts.bundle and key not in facts.bundle_images:
        return f"image {pin.image} is not in the bundle"
    if facts.registry_reachable:
        return None
    if _on_node(image_ref(lock, key, facts), facts):
        return None
    return f"its image {pin.image} is not on any node and no registry is reachable from this cluster"


def runnable(comps: Iterable[Component], lock: Lock, facts: ClusterFacts,
             parts: Mapping[str, Verdict] | None = None) -> dict[str, Verdict]:
    """A verdict per component, in order; each names the first reason it cannot run."""
    out: dict[str, Verdict] = {}
    for c in comps:
        blocked = [n for n in c.needs if n in out and not out[n].run]
        if blocked:
            out[c.name] = Verdict(False, f"needs {blocked[0]}, which cannot run here ({out[blocked[0]].reason})")
            continue
        if c.name == "datadog" and not facts.datadog_key:
            out[c.name] = Verdict(False, "off: no Datadog API key is configured")
            continue
        if c.chart_key is not None and not lock.chart(c.chart_key).pinned:
            pin = lock.chart(c.chart_key)
            out[c.name] = Verdict(False, f"its chart ({pin.repository}) is not pinned (version and archive digest) "
                                         f"in the lock")
            continue
        if c.chart_key is not None and facts.bundle and c.chart_key not in facts.bundle_charts:
            out[c.name] = Verdict(False, f"its chart {c.chart_key} is not in the bundle")
            continue
        if c.name == "vibecode-platform" and parts is not None:
            on = [p for p, v in parts.items() if v.run and p not in ("networkPolicies", "rbac")]
            out[c.name] = Verdict(bool(on), f"parts: {', '.join(on)}" if on else "none of its parts can run here")
            continue
        problems = [p for p in (image_problem(lock, k, facts) for k in c.images) if p]
        by_tag = [lock.image(k).image for k in c.images
                  if lock.image(k).digest is None and lock.image(k).build is None and k not in facts.image_overrides]
        note = f"runnable; by tag, not pinned: {', '.join(by_tag)}" if by_tag else "runnable"
        out[c.name] = Verdict(not problems, problems[0] if problems else note)
    return out


def platform_features(lock: Lock, facts: ClusterFacts, upstream: Mapping[str, Verdict]) -> dict[str, Verdict]:
    """Which parts of the platform chart can run, given the upstream components' verdicts."""
    out: dict[str, Verdict] = {}
    for part, (images, needs) in PLATFORM_PARTS.items():
        missing = [n for n in needs if not upstream.get(n, Verdict(False, "not planned")).run]
        if missing:
            out[part] = Verdict(False, f"needs {missing[0]}: {upstream.get(missing[0], Verdict(False, '?')).reason}")
            continue
        problems = [p for p in (image_problem(lock, k, facts) for k in images) if p]
        out[part] = Verdict(not problems, problems[0] if problems else "runnable")
    for group in PART_GROUPS:
        blocked = [p for p in group if not out[p].run]
        for part in group:
            if out[part].run and blocked:
                why = "its stores" if part == "authelia" else "Authelia, the only one that uses it,"
                out[part] = Verdict(False, f"runs only with {why} and {blocked[0]} cannot run here "
                                           f"({out[blocked[0]].reason})")
    return out


def decide(lock: Lock, facts: ClusterFacts) -> tuple[dict[str, Verdict], dict[str, Verdict]]:
    """(verdict per component, verdict per part of the platform chart)."""
    comps = components(lock)
    first = runnable(comps, lock, facts)
    parts = platform_features(lock, facts, first)
    return runnable(comps, lock, facts, parts), parts


# -- releases ---------------------------------------------------------------------------
def changed_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two values trees differ (lists compare whole); never the values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{path} (added)")
            elif key not in new:
                out.append(f"{path} (removed)")
            else:
                out.extend(changed_paths(old[key], new[key], path))
        return out
    return [] if old == new else [prefix or "(root)"]


@dataclass(frozen=True)
class Decision:
    action: Action
    reasons: tuple[str, ...]


def release_action(current: Any | None, chart_version: str, chart_digest: str, values: dict) -> Decision:
    """``current``: a :class:`tasks.cluster.helm.ReleaseState` (or None). Mirrors what
    :func:`tasks.cluster.helm.install_or_upgrade` does, so a plan says what a run would do."""
    if current is None:
        return Decision("install", ("not installed",))
    reasons = []
    if current.status != "deployed":
        reasons.append(f"release is {current.status}")
    if current.chart_version != chart_version:
        reasons.append(f"chart {current.chart_version} -> {chart_version}")
    if current.chart_digest != chart_digest:
        reasons.append("chart archive changed" if current.chart_digest else "installed by something else than bootstrap")
    paths = changed_paths(current.values, values)
    if paths:
        shown = ", ".join(paths[:8]) + (f" and {len(paths) - 8} more" if len(paths) > 8 else "")
        reasons.append(f"values changed at {shown}")
    return Decision("upgrade", tuple(reasons)) if reasons else Decision("unchanged", (f"revision {current.revision}",))


NamespaceAction = Literal["create", "adopt", "ours"]


def namespace_action(existing: Mapping[str, Any] | None, release: str, release_namespace: str) -> NamespaceAction:
    """What bootstrap does with a namespace the platform chart renders.

    helm refuses to install over an object it does not own, and an operator often creates a
    namespace first (for the Prefect worker, say): such a namespace is *adopted* (helm's own
    ownership label and annotations set on it; the chart keeps its namespaces on uninstall, so
    adopting one can never delete it). One that belongs to another release is refused: two
    platforms must not fight over one namespace.
    """
    if existing is None:
        return "create"
    meta = existing.get("metadata") or {}
    ann, labels = meta.get("annotations") or {}, meta.get("labels") or {}
    owner, owner_ns = ann.get("meta.helm.sh/release-name"), ann.get("meta.helm.sh/release-namespace")
    if owner is None and owner_ns is None:
        return "adopt"
    if (owner, owner_ns) != (release, release_namespace):
        raise ValueError(f"namespace {meta.get('name')} belongs to helm release {owner_ns}/{owner}, not "
                         f"{release_namespace}/{release}: another install of the platform owns it")
    return "ours" if labels.get(MANAGED_BY_LABEL) == "Helm" else "adopt"
