"""The pure decisions of bootstrap: which components can run here, what a release needs, the
platform secrets, readiness and the summary."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.platform import credentials
from tasks.platform.lock import load_lock, normalise, with_overrides
from tasks.platform.plan import ORDER, ClusterFacts, changed_paths, decide, image_ref, release_action
from tasks.platform.readiness import pending, workload_progress

LOCK = load_lock()
LOCAL = {"seaweedfs": "vibecode.local/seaweedfs:4.48", "postgres": "vibecode.local/postgres:15",
         "redis": "vibecode.local/redis:7", "code-server": "vibecode.local/code-server:4.139.1",
         "restic": "vibecode.local/restic:0.14.0"}


def _facts(**kw) -> ClusterFacts:
    return ClusterFacts(**kw)


def test_the_order_puts_every_component_after_what_it_needs():
    from tasks.platform.plan import components

    seen = set()
    for c in components(LOCK):
        assert set(c.needs) <= seen, c.name
        seen.add(c.name)
    assert list(ORDER[:5]) == ["namespaces", "platform-secrets", "cert-manager", "envoy-gateway", "vibecode-platform"]


def test_with_registries_everything_pinned_runs_and_datadog_waits_for_a_key():
    """The images built here (the HR gateway, the workspace image) loaded onto the nodes."""
    built = frozenset({normalise("vibecode-ops:0.1.0"), normalise(LOCK.image("code-server").image)})
    verdicts, parts = decide(LOCK, _facts(node_images=built))
    assert {n for n, v in verdicts.items() if not v.run} == {"datadog"}
    assert "no Datadog API key" in verdicts["datadog"].reason
    assert all(v.run for v in parts.values())
    assert verdicts["demo-workspace"].reason == "runnable; by tag, not pinned: docker.io/restic/restic:0.14.0"
    with_key, _ = decide(LOCK, _facts(datadog_key=True))
    assert not with_key["datadog"].run and "not pinned" in with_key["datadog"].reason  # never installed by tag


def test_the_workspace_image_is_built_not_pulled_so_a_registry_does_not_make_the_demo_workspace_runnable():
    verdicts, _ = decide(LOCK, _facts(node_images=frozenset({normalise("vibecode-ops:0.1.0")})))
    assert not verdicts["demo-workspace"].run
    assert ("vibecode.local/workspace:4.139.1-1 is built from images/workspace" in verdicts["demo-workspace"].reason
            and "load one" in verdicts["demo-workspace"].reason)
    # Pushed to the company's registry and configured there: an override, pulled from it.
    pushed, _ = decide(LOCK, _facts(image_overrides={"code-server": "registry.example.com/vibecode/workspace:4.139.1-1"}))
    assert pushed["demo-workspace"].run


def test_one_node_cluster_without_registry_runs_what_was_built_here_and_says_why_not_the_rest():
    """This machine's node: SeaweedFS, PostgreSQL, Redis and code-server built locally and on
    the node, nothing else reachable."""
    facts = _facts(registry_reachable=False, image_overrides=LOCAL,
                   node_images=frozenset(normalise(r) for r in LOCAL.values()))
    verdicts, parts = decide(LOCK, facts)
    assert {n for n, v in verdicts.items() if v.run} == {"namespaces", "platform-secrets", "vibecode-platform",
                                                         "tag-limits", "work-pools", "demo-workspace"}
    assert "quay.io/jetstack/cert-manager-controller:v1.21.2 is not on any node and no registry" in \
        verdicts["cert-manager"].reason
    assert "docker.io/envoyproxy/gateway:v1.9.2 is not on any node" in verdicts["envoy-gateway"].reason
    assert "built from this repository" in verdicts["hr-gateway"].reason
    assert {p for p, v in parts.items() if v.run} == {"seaweedfs", "networkPolicies", "rbac"}
    assert "authelia:4.39.20 is not on any node" in parts["authelia"].reason
    # the stores are built here, but the chart runs them only for Authelia
    assert parts["postgresql"].reason.startswith("runs only with Authelia, the only one that uses it, and authelia")
    assert parts["gateway"].reason.startswith("needs envoy-gateway")
    assert parts["certificates"].reason.startswith("needs cert-manager")
    assert image_ref(LOCK, "seaweedfs", facts) == LOCAL["seaweedfs"]


def test_an_image_already_on_the_node_counts_even_without_registry():
    pin = LOCK.image("authelia")
    facts = _facts(registry_reachable=False, image_overrides=LOCAL,
                   node_images=frozenset({*map(normalise, LOCAL.values()), normalise(pin.pinned_ref)}))
    _, parts = decide(LOCK, facts)
    assert parts["authelia"].run


def test_authelia_needs_its_stores():
    facts = _facts(registry_reachable=False, image_overrides={"seaweedfs": LOCAL["seaweedfs"]},
                   node_images=frozenset({normalise(LOCAL["seaweedfs"]), normalise(LOCK.image("authelia").pinned_ref)}))
    _, parts = decide(LOCK, facts)
    assert not parts["authelia"].run and parts["authelia"].reason.startswith("runs only with its stores and postgresql")


def test_the_parts_are_the_platform_charts_components_and_the_secret_keys_agree():
    from tasks.platform.plan import PLATFORM_PARTS
    from tasks.platform.values import COMPONENTS, IMAGE_KEYS, SECRET_KEYS

    assert set(PLATFORM_PARTS) == set(COMPONENTS)
    assert {i for images, _ in PLATFORM_PARTS.values() for i in images} == set(IMAGE_KEYS.values())
    assert tuple(credentials.PLATFORM_SECRET_KEYS) == SECRET_KEYS


def test_cluster_network_is_read_from_the_nodes():
    from tasks.platform.plan import cluster_network

    node = {"spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.254.254.1"},
                                     {"type": "Hostname", "address": "vibecode-node"}]}}
    net = cluster_network([node])
    assert net.pod_cidrs == ("10.244.0.0/24",) and net.node_cidrs == ("10.254.254.1/32",)
    assert cluster_network([]) is None and cluster_network([{"metadata": {}}]) is None


def test_air_gapped_refuses_unpinned_images_and_what_the_bundle_lacks():
    inside = frozenset(k for k, p in LOCK.images.items() if p.digest and p.component != "envoy-gateway")
    facts = _facts(bundle=True, mirror_registry="127.0.0.1:5000", bundle_images=inside,
                   bundle_charts=frozenset({"cert-manager", "envoy-gateway"}))
    verdicts, parts = decide(LOCK, facts)
    assert verdicts["cert-manager"].run
    assert not verdicts["envoy-gateway"].run and "not in the bundle" in verdicts["envoy-gateway"].reason
    assert "air-gapped install refuses unpinned images" in verdicts["demo-workspace"].reason
    assert not parts["gateway"].run
    ref = image_ref(LOCK, "cert-manager-webhook", facts)
    assert ref.startswith("127.0.0.1:5000/jetstack/cert-manager-webhook:v1.21.2@sha256:")


def test_a_prerequisite_that_cannot_run_blocks_what_needs_it_with_the_first_reason():
    lock = with_overrides(LOCK, images={k: {"digest": None} for k in ("seaweedfs", "postgres", "redis", "authelia")})
    verdicts, parts = decide(lock, _facts(bundle=True, bundle_images=frozenset(lock.images),
                                          bundle_charts=frozenset()))
    assert parts["certificates"].reason == "needs cert-manager: its chart cert-manager is not in the bundle"
    assert not verdicts["vibecode-platform"].run
    assert verdicts["vibecode-platform"].reason == "none of its parts can run here"
    assert verdicts["hr-gateway"].reason.startswith("needs vibecode-platform, which cannot run here")
    assert verdicts["demo-workspace"].reason.startswith("needs vibecode-platform")


# -- releases ------------------------------------------------------------------------------
def _state(**kw):
    base = dict(revision=3, status="deployed", chart_version="v1.9.2", chart_digest="d", values={"a": {"b": 1}})
    return SimpleNamespace(**{**base, **kw})


@pytest.mark.parametrize("state,version,digest,values,action,reason", [
    (None, "v1", "d", {}, "install", "not installed"),
    (_state(), "v1.9.2", "d", {"a": {"b": 1}}, "unchanged", "revision 3"),
    (_state(), "v1.9.3", "d", {"a": {"b": 1}}, "upgrade", "chart v1.9.2 -> v1.9.3"),
    (_state(), "v1.9.2", "e", {"a": {"b": 1}}, "upgrade", "chart archive changed"),
    (_state(chart_digest=None), "v1.9.2", "d", {"a": {"b": 1}}, "upgrade", "installed by something else"),
    (_state(), "v1.9.2", "d", {"a": {"b": 2}}, "upgrade", "values changed at a.b"),
    (_state(), "v1.9.2", "d", {"a": {"b": 1}, "c": 1}, "upgrade", "values changed at c (added)"),
    (_state(status="failed"), "v1.9.2", "d", {"a": {"b": 1}}, "upgrade", "release is failed"),
])
def test_release_action(state, version, digest, values, action, reason):
    decision = release_action(state, version, digest, values)
    assert decision.action == action and reason in "; ".join(decision.reasons)


def test_a_plan_reason_names_paths_never_values():
    decision = release_action(_state(values={"password": "old-secret"}), "v1.9.2", "d", {"password": "new-secret"})
    assert "password" in decision.reasons[0] and "secret" not in decision.reasons[0].replace("password", "")


trees = st.recursive(st.one_of(st.integers(), st.text(max_size=3), st.booleans()),
                     lambda children: st.dictionaries(st.text(min_size=1, max_size=3), children, max_size=3),
                     max_leaves=10)


@given(trees, trees)
def test_changed_paths_is_empty_exactly_when_the_trees_are_equal(a, b):
    assert (changed_paths(a, b) == []) == (a == b)
    assert changed_paths(a, a) == []


# -- secrets ----------------------------------------------------------------------------------
def test_only_missing_keys_are_generated_and_none_is_replaced():
    count = iter(range(100))
    full = credentials.generate(list(credentials.PLATFORM_SECRET_KEYS), lambda n: f"v{next(count)}")
    secret = credentials.platform_secret("s", "ns", full)
    assert credentials.missing_keys(secret) == [] and credentials.missing_keys(None) == list(full)
    del secret["data"]["restic-password"]
    assert credentials.missing_keys(secret) == ["restic-password"]
    patch = credentials.added_keys_patch({"restic-password": "new"})
    assert set(patch["data"]) == {"restic-password"}  # a merge patch: every other key untouched
    decoded = credentials.decode(secret)
    hr = credentials.hr_gateway_secret("g", "ns", full)
    assert credentials.decode(hr) == {"webhook-secrets": f'["{full["hr-webhook-secret"]}"]',
                                      "scim-token": full["hr-scim-token"]}
    assert decoded["postgres-password"] == full["postgres-password"]


def test_generated_secrets_are_long_enough_for_their_consumers():
    import secrets as stdlib

    values = credentials.generate(list(credentials.PLATFORM_SECRET_KEYS), stdlib.token_urlsafe)
    assert all(len(v) >= 20 for v in values.values())  # Authelia's minimum for its keys
    assert len(values["hr-webhook-secret"]) >= 32 and len(values["hr-scim-token"]) >= 32  # the gateway's
    assert len(set(values.values())) == len(values)


# -- readiness ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind,obj,state", [
    ("StatefulSet", {"metadata": {"generation": 2}, "spec": {"replicas": 1},
                     "status": {"observedGeneration": 2, "readyReplicas": 1, "currentRevision": "a", "updateRevision": "a"}},
     "ready"),
    ("StatefulSet", {"metadata": {"generation": 2}, "spec": {"replicas": 1},
                     "status": {"observedGeneration": 2, "readyReplicas": 1, "currentRevision": "a", "updateRevision": "b"}},
     "progressing"),
    ("StatefulSet", {"metadata": {"generation": 2}, "spec": {"replicas": 1}, "status": {"observedGeneration": 1}},
     "progressing"),
    ("DaemonSet", {"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "desiredNumberScheduled": 2,
                                                             "updatedNumberScheduled": 2, "numberAvailable": 1}},
     "progressing"),
    ("Deployment", None, "progressing"),
])
def test_workload_progress(kind, obj, state):
    assert workload_progress(kind, obj)[0] == state


def test_pending_lists_what_is_not_ready_and_fails_on_a_failed_rollout():
    crd_ok = {"status": {"conditions": [{"type": "Established", "status": "True"}]}}
    assert pending({("CustomResourceDefinition", "", "x"): crd_ok}) == []
    assert pending({("CustomResourceDefinition", "", "x"): None}) == ["CRD x: not installed"]
    failed = {"metadata": {"generation": 1}, "spec": {"replicas": 1},
              "status": {"conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]}}
    with pytest.raises(ValueError, match="rollout failed"):
        pending({("Deployment", "ns", "d"): failed})


def test_images_loaded_into_kind_are_run_by_tag():
    """`kind load` gives each node one architecture's image: its digest is not the index's, so
    pods name the tag (the content is the pinned index's image for that architecture)."""
    facts = _facts(bundle=True, by_tag=True, bundle_images=frozenset(LOCK.images), bundle_charts=frozenset(LOCK.charts))
    assert image_ref(LOCK, "authelia", facts) == "ghcr.io/authelia/authelia:4.39.20"


def _ns(labels=None, annotations=None) -> dict:
    return {"metadata": {"name": "vibecode-ops", "labels": labels or {}, "annotations": annotations or {}}}


OWNED = {"meta.helm.sh/release-name": "vibecode-platform", "meta.helm.sh/release-namespace": "vibecode-platform"}


@pytest.mark.parametrize("existing,want", [
    (None, "create"),
    (_ns(), "adopt"),                                                    # made by an operator first
    (_ns({"kubernetes.io/metadata.name": "vibecode-ops"}), "adopt"),
    (_ns({"app.kubernetes.io/managed-by": "Helm"}, OWNED), "ours"),
    (_ns({}, OWNED), "adopt"),                                           # annotations without the label: helm refuses it
])
def test_namespace_action_creates_adopts_or_keeps(existing, want):
    from tasks.platform.plan import namespace_action

    assert namespace_action(existing, "vibecode-platform", "vibecode-platform") == want


@pytest.mark.parametrize("annotations", [
    {"meta.helm.sh/release-name": "other", "meta.helm.sh/release-namespace": "vibecode-platform"},
    {"meta.helm.sh/release-name": "vibecode-platform", "meta.helm.sh/release-namespace": "elsewhere"},
    {"meta.helm.sh/release-namespace": "vibecode-platform"},
])
def test_a_namespace_of_another_release_is_refused_naming_its_owner(annotations):
    from tasks.platform.plan import namespace_action

    with pytest.raises(ValueError, match="belongs to helm release .* another install of the platform owns it"):
        namespace_action(_ns({"app.kubernetes.io/managed-by": "Helm"}, annotations), "vibecode-platform",
                         "vibecode-platform")
