"""The lock file (deployments/platform.lock.yaml) and its loader: what it pins, what it refuses,
and that every chart we install renders only images it lists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tasks.core.names import workspace_names
from tasks.core.settings import Settings
from tasks.platform.lock import (
    DEFAULT_LOCK,
    LockError,
    load_lock,
    lock_problems,
    normalise,
    parse_image,
    rehost,
    require_pinned,
    with_overrides,
)
from tasks.platform.plan import PLATFORM_PARTS, ClusterFacts, Verdict
from tasks.platform.releases import cert_manager_values, envoy_gateway_values, hr_gateway_values, platform_values
from tasks.workspace.values import workspace_values

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "a" * 64

# The entries not verified yet; adding an unpinned entry (or pinning one) must update this list.
UNVERIFIED = {
    "chart datadog (https://helm.datadoghq.com): no version and no digest pinned",
    "image restic (docker.io/restic/restic:0.14.0): no digest pinned",
    "image datadog-agent (gcr.io/datadoghq/agent:7.82.2): no digest pinned",
}


def test_the_lock_loads_and_lists_exactly_the_unverified_entries():
    lock = load_lock()
    assert set(lock_problems(lock)) == UNVERIFIED
    assert lock.kind_version == "v0.32.0" and lock.node_image.pinned
    assert lock.node_image.image == "docker.io/kindest/node:v1.36.1"
    for key in ("envoy-gateway", "cert-manager"):
        assert lock.chart(key).pinned
    assert lock.chart("envoy-gateway").name("envoy-gateway") == "gateway-helm"
    assert lock.chart("cert-manager").name("cert-manager") == "cert-manager"


def test_each_pin_is_one_line_of_the_file():
    """Upgrading an entry is a one-line change: every chart and image entry is a flow mapping
    on one line, its comment above it."""
    text = DEFAULT_LOCK.read_text()
    lock = load_lock()
    for key in {*lock.charts, *lock.images}:
        lines = [line for line in text.splitlines() if re.match(rf"\s+{re.escape(key)}: \{{", line)]
        assert len(lines) == (key in lock.charts) + (key in lock.images), key
        assert all(line.rstrip().endswith("}") for line in lines), key


@pytest.mark.parametrize("ref,expected", [
    ("postgres:17.10", "docker.io/library/postgres:17.10"),
    ("envoyproxy/gateway:v1.9.2", "docker.io/envoyproxy/gateway:v1.9.2"),
    ("index.docker.io/library/redis:8", "docker.io/library/redis:8"),
    ("quay.io/jetstack/cert-manager-webhook@" + DIGEST, "quay.io/jetstack/cert-manager-webhook@" + DIGEST),
    ("127.0.0.1:5000/library/postgres:17.10@" + DIGEST, "127.0.0.1:5000/library/postgres:17.10@" + DIGEST),
    ("localhost/x:1", "localhost/x:1"),
    ("vibecode.local/seaweedfs:4.48", "vibecode.local/seaweedfs:4.48"),
])
def test_references_normalise_as_the_runtimes_do(ref, expected):
    assert normalise(ref) == expected


@pytest.mark.parametrize("bad", ["", "UPPER/case:1", "x@sha256:short", "a//b:1"])
def test_bad_references_are_refused(bad):
    with pytest.raises(ValueError):
        parse_image(bad)


def test_find_matches_by_tag_or_by_the_pinned_digest_only():
    lock = load_lock()
    pin = lock.image("postgres")
    assert lock.find("postgres:17.10") == "postgres"
    assert lock.find(f"docker.io/library/postgres@{pin.digest}") == "postgres"
    assert lock.find(f"docker.io/library/postgres@{DIGEST}") is None  # another build: not what we pinned
    assert lock.find("postgres:16") is None
    assert lock.find("docker.io/kindest/node:v1.36.1") == "kind.node_image"


def test_rehost_keeps_the_path_tag_and_pinned_digest():
    pin = load_lock().image("cert-manager-webhook")
    assert rehost(pin, None) == f"quay.io/jetstack/cert-manager-webhook:v1.21.2@{pin.digest}"
    assert rehost(pin, "10.0.0.5:5000") == f"10.0.0.5:5000/jetstack/cert-manager-webhook:v1.21.2@{pin.digest}"


def test_require_pinned_names_each_unpinned_entry():
    lock = load_lock()
    require_pinned(lock, ["envoy-gateway"], ["postgres", "hr-gateway"], "a bundle")  # built images are not pins
    with pytest.raises(LockError) as err:
        require_pinned(lock, ["datadog"], ["restic", "postgres"], "a bundle")
    assert "chart datadog" in str(err.value) and "image restic" in str(err.value)
    assert "postgres" not in str(err.value).split("pinned by digest:")[1]


@pytest.mark.parametrize("change,message", [
    ({"images": {"postgres": {"digest": "sha256:nothex"}}}, "not a sha256 digest"),
    ({"images": {"postgres": {"image": "postgres@" + DIGEST}}}, "repository:tag"),
    ({"charts": {"cert-manager": {"repository": "ftp://x"}}}, "oci://"),
    ({"images": {"postgres": {"extra": 1}}}, "extra"),
])
def test_malformed_entries_are_refused_with_the_reason(change, message, tmp_path):
    data = yaml.safe_load(DEFAULT_LOCK.read_text())
    for section, entries in change.items():
        for key, fields in entries.items():
            data[section][key].update(fields)
    path = tmp_path / "lock.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(LockError, match=message):
        load_lock(path)


def test_with_overrides_changes_only_the_named_entries():
    lock = load_lock()
    other = with_overrides(lock, images={"redis": {"image": "127.0.0.1:5000/library/redis:8.10.2-alpine"}})
    assert other.image("redis").image.startswith("127.0.0.1:5000/") and other.image("redis").digest == lock.image("redis").digest
    assert other.image("postgres") == lock.image("postgres") and other.charts == lock.charts


# -- every image a chart renders with our values is in the lock -------------------------------
IMAGE_LINE = re.compile(r"""(?:image:\s*|-image=)["']?([a-z0-9][^\s"']+)""")


def rendered_images(helm: Path, chart: Path, values: dict, tmp_path: Path) -> set[str]:
    """Every image reference a chart renders: container images (init containers and hook Jobs
    included) and ``--*-image=`` flags and ``image:`` keys in configuration it renders."""
    values_file = tmp_path / f"{chart.name}-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    out = subprocess.run([str(helm), "template", "r", str(chart), "--namespace", "ns", "-f", str(values_file),
                          "--kube-version", "1.36.0"], capture_output=True, text=True, check=True).stdout
    return set(IMAGE_LINE.findall(out))


def test_every_chart_renders_only_images_the_lock_lists(helm_bin, tmp_path):
    """Our charts are rendered for real, every part of the platform chart on. The upstream charts are rendered through their test
    stand-ins in tests/charts, which render the same image references the real charts render
    with our values (their Chart.yaml says how); the images the controllers start at run time
    (Envoy's proxy, named by the platform chart's EnvoyProxy) are listed in the lock as such."""
    lock = load_lock()
    s = Settings()
    facts = ClusterFacts()
    parts = {p: Verdict(True, "") for p in PLATFORM_PARTS}
    platform_chart = ROOT / "charts" / "vibecode-platform"
    charts = {
        "envoy-gateway": (ROOT / "tests" / "charts" / "gateway-helm", envoy_gateway_values(lock, facts)),
        "cert-manager": (ROOT / "tests" / "charts" / "cert-manager", cert_manager_values(lock, facts)),
        "vibecode-platform": (platform_chart, platform_values(s, lock, facts, parts)),
        "hr-gateway": (ROOT / "deployments" / "gateway",
                       hr_gateway_values(s, lock, facts, platform_values(s, lock, facts, parts))),
        "workspace": (ROOT / "charts" / "vibecode-workspace", workspace_values(workspace_names("alice"), s)),
    }
    seen: dict[str, set[str]] = {}
    for name, (chart, values) in charts.items():
        images = rendered_images(helm_bin, chart, values, tmp_path)
        assert images, f"{name} rendered no image: the scan is broken"
        seen[name] = images
        unlisted = sorted(ref for ref in images if lock.find(ref) is None)
        assert not unlisted, f"{name} renders images the lock does not list: {unlisted}"
    pinned = {ref for refs in seen.values() for ref in refs if "@sha256:" in ref}
    assert len(pinned) >= 8  # upstream images are rendered by digest, not by tag
    assert any("--acme-http01-solver-image" not in r and "acmesolver" in r for r in seen["cert-manager"])


def test_the_scan_sees_an_unlisted_image(helm_bin, tmp_path):
    values = envoy_gateway_values(load_lock(), ClusterFacts())
    values["global"]["images"]["ratelimit"]["image"] = "docker.io/envoyproxy/ratelimit:unpinned"
    images = rendered_images(helm_bin, ROOT / "tests" / "charts" / "gateway-helm", values, tmp_path)
    assert [r for r in images if load_lock().find(r) is None] == ["docker.io/envoyproxy/ratelimit:unpinned"]
