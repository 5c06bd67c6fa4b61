"""tasks.platform.values.platform_values: the pure builder bootstrap uses, and its contract with
charts/vibecode-platform (the chart's values.schema.json, checked by the real helm)."""

from __future__ import annotations

import pytest

from tasks.core.errors import InvalidInput
from tasks.core.settings import Settings
from tasks.platform.values import (
    COMPONENTS,
    ENVOY_PROXY_LABELS,
    FLOWS_RULES,
    GATEWAY_NAME,
    LISTENERS,
    ClusterNetwork,
    is_public_domain,
    platform_values,
    split_reference,
)
from tests.fixtures.render import PLATFORM_CHART, helm_runner, render

D = "sha256:" + "a" * 64
IMAGES = {"envoy-proxy": f"docker.io/envoyproxy/envoy:distroless-v1.39.1@{D}",
          "authelia": f"ghcr.io/authelia/authelia:4.39.20@{D}", "postgres": f"docker.io/library/postgres:17.10@{D}",
          "redis": f"docker.io/library/redis:8.10.2-alpine@{D}", "seaweedfs": f"docker.io/chrislusf/seaweedfs:4.48@{D}"}
ONE_NODE = ["seaweedfs", "networkPolicies", "rbac"]


@pytest.fixture(scope="module")
def helm(helm_bin, tmp_path_factory):
    return helm_runner(helm_bin, tmp_path_factory.mktemp("helm-home"))


@pytest.mark.parametrize("ref, parts", [
    (f"ghcr.io/authelia/authelia:4.39.20@{D}", ("ghcr.io/authelia/authelia", "4.39.20", D)),
    (f"ghcr.io/authelia/authelia@{D}", ("ghcr.io/authelia/authelia", "", D)),
    ("registry.local:5000/vibecode/seaweedfs:4.48", ("registry.local:5000/vibecode/seaweedfs", "4.48", "")),
    (f"127.0.0.1:5000/authelia@{D}", ("127.0.0.1:5000/authelia", "", D)),
])
def test_split_reference(ref, parts):
    got = split_reference(ref)
    assert (got["repository"], got["tag"], got["digest"]) == parts


@pytest.mark.parametrize("ref", ["authelia@sha256:abc", "registry.local:5000/authelia", "", "a b:1"])
def test_split_reference_refuses(ref):
    with pytest.raises(InvalidInput):
        split_reference(ref)


@pytest.mark.parametrize("domain, public", [("vibecode.dev", True), ("corp.example.org", True),
                                            ("vibecode.test", False), ("dev.local", False), ("example", False),
                                            ("box.home.arpa", False), ("10.0.0.1.nip.io", False)])
def test_is_public_domain(domain, public):
    assert is_public_domain(domain) is public


def test_every_component_with_pinned_images_follows_the_settings():
    s = Settings(domain="corp.example.org", authelia_url="https://login.corp.example.org",
                 platform_namespace="plat", namespace="ws", smtp_host="mail.corp.example.org", smtp_port=465,
                 smtp_ssl=True, smtp_username="authelia", s3_bucket="backups-1")
    v = platform_values(s, IMAGES, COMPONENTS, acme_email="ops@corp.example.org")
    assert v["domain"] == "corp.example.org" and v["portal"]["host"] == "login.corp.example.org"
    assert v["namespaces"] == {"create": True, "platform": "plat", "workspaces": "ws", "ops": "vibecode-ops"}
    assert v["certificates"]["acme"] == {"enabled": True, "email": "ops@corp.example.org"}
    assert v["authelia"]["smtp"] == {"host": "mail.corp.example.org", "port": 465, "scheme": "submissions",
                                     "username": "authelia", "sender": s.mail.sender}
    assert v["authelia"]["image"] == {"repository": "ghcr.io/authelia/authelia", "tag": "4.39.20", "digest": D}
    assert v["seaweedfs"]["bucket"] == "backups-1"
    assert all(v[c]["enabled"] for c in COMPONENTS)
    assert v["rbac"]["rules"] == FLOWS_RULES


def test_acme_needs_an_email_and_a_public_domain():
    assert not platform_values(Settings(), IMAGES, COMPONENTS)["certificates"]["acme"]["enabled"]
    s = Settings(domain="vibecode.test", authelia_url="https://auth.vibecode.test")
    assert not platform_values(s, IMAGES, COMPONENTS, acme_email="a@b.org")["certificates"]["acme"]["enabled"]


def test_a_loopback_smtp_server_means_the_filesystem_notifier():
    assert platform_values(Settings(), IMAGES, COMPONENTS)["authelia"]["smtp"]["host"] == ""


def test_the_one_node_cluster_needs_only_its_images_and_may_run_local_ones():
    v = platform_values(Settings(), {"seaweedfs": "vibecode/seaweedfs:4.48"}, ONE_NODE, allow_unpinned=True)
    assert [c for c in COMPONENTS if v[c]["enabled"]] == ONE_NODE
    assert v["seaweedfs"]["image"] == {"repository": "vibecode/seaweedfs", "tag": "4.48", "digest": ""}
    assert "image" not in v["authelia"]


@pytest.mark.parametrize("images, components, kw, field", [
    ({}, ["authelia"], {}, "images.authelia"),
    ({**IMAGES, "authelia": "ghcr.io/authelia/authelia:4.39.20"}, ["authelia"], {}, "images.authelia"),
    (IMAGES, ["ingress-nginx"], {}, "components"),
    (IMAGES, COMPONENTS, {"network": ClusterNetwork(pod_cidrs=("10.244.0.1/16",))}, "network.pod_cidrs"),
])
def test_bad_input_names_the_field(images, components, kw, field):
    with pytest.raises(InvalidInput) as err:
        platform_values(Settings(), images, components, **kw)
    assert err.value.field == field


def test_a_portal_outside_the_domain_is_refused():
    with pytest.raises(InvalidInput) as err:
        platform_values(Settings(authelia_url="https://sso.elsewhere.org"), IMAGES, COMPONENTS)
    assert err.value.field == "identity.authelia_url"


def test_an_external_s3_endpoint_disables_seaweedfs():
    v = platform_values(Settings(), IMAGES, COMPONENTS, s3_external_endpoint="https://s3.example.org")
    assert v["seaweedfs"]["enabled"] is False and v["seaweedfs"]["externalEndpoint"] == "https://s3.example.org"


@pytest.mark.parametrize("components, kw", [
    (COMPONENTS, {"acme_email": "ops@vibecode.dev"}),
    (ONE_NODE, {"allow_unpinned": True}),
    (COMPONENTS, {"s3_external_endpoint": "https://s3.example.org:9000", "create_namespaces": False}),
])
def test_the_builders_values_pass_the_charts_schema_and_render(helm, tmp_path, components, kw):
    images = IMAGES if not kw.get("allow_unpinned") else {"seaweedfs": "vibecode/seaweedfs:4.48"}
    values = platform_values(Settings(smtp_host="smtp.vibecode.dev"), images, components, **kw)
    docs = render(helm, PLATFORM_CHART, values, tmp=tmp_path)
    kinds = {d["kind"] for d in docs}
    assert ("Gateway" in kinds) is ("gateway" in components)
    assert ("Namespace" in kinds) is kw.get("create_namespaces", True)
    if "authelia" in components:
        dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "authelia")
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == f"ghcr.io/authelia/authelia@{D}"


def test_the_builders_gateway_names_are_the_charts_defaults():
    """The builder names the Gateway, its listeners, the HR host and Envoy's proxy labels (the
    HR gateway's release reads them back from its values); the chart's own defaults must say
    the same, or an install by hand and one by bootstrap would differ."""
    import yaml

    defaults = yaml.safe_load((PLATFORM_CHART / "values.yaml").read_text())
    v = platform_values(Settings(), IMAGES, COMPONENTS)
    assert v["gateway"]["name"] == defaults["gateway"]["name"] == GATEWAY_NAME
    assert v["gateway"]["listeners"] == defaults["gateway"]["listeners"] == LISTENERS
    assert v["gateway"]["proxyPodLabels"] == defaults["gateway"]["proxyPodLabels"] == ENVOY_PROXY_LABELS
    assert v["hr"]["host"] == "hr.vibecode.dev" and defaults["hr"]["host"] == ""  # "" = hr.<domain> in the chart
