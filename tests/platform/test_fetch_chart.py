"""tasks.cluster.helm.fetch_chart: a pinned chart from an OCI registry or a chart repository on
loopback (the upstream charts' test stand-ins), checked against its archive digest."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import subprocess
import threading

import pytest

from tasks.cluster import helm
from tasks.cluster.localnode.envtest import free_port
from tasks.core.errors import PermanentError
from tests.fixtures.registry import TEST_CHARTS

pytestmark = pytest.mark.usefixtures("helm_bin")
WRONG = "sha256:" + "0" * 64


def test_an_oci_chart_is_pulled_at_its_version_checked_and_then_served_from_the_cache(upstream, tmp_path):
    pin = upstream.lock.chart("envoy-gateway")
    cache = tmp_path / "cache"
    pulls = helm.CALLS["pull"]
    path = helm.fetch_chart("gateway-helm", pin.repository, pin.version, pin.digest, cache_dir=cache)
    assert "sha256:" + helm.file_sha256(path) == pin.digest and path.parent == cache
    again = helm.fetch_chart("gateway-helm", pin.repository, pin.version, pin.digest, cache_dir=cache)
    assert again == path and helm.CALLS["pull"] == pulls + 1  # the second one did not pull


def test_a_chart_whose_archive_is_not_the_pinned_one_is_refused_and_not_cached(upstream, tmp_path):
    pin = upstream.lock.chart("envoy-gateway")
    with pytest.raises(PermanentError, match="not the pinned"):
        helm.fetch_chart("gateway-helm", pin.repository, pin.version, WRONG, cache_dir=tmp_path / "c")
    assert not list((tmp_path / "c").glob("*.tgz"))


def test_an_unpinned_chart_is_refused_before_anything_is_fetched(tmp_path):
    pulls = helm.CALLS["pull"]
    with pytest.raises(PermanentError, match="not pinned"):
        helm.fetch_chart("datadog", "https://helm.datadoghq.com", None, None, cache_dir=tmp_path)
    assert helm.CALLS["pull"] == pulls


def test_a_chart_repository_chart_is_pulled_by_name_and_version(helm_bin, tmp_path):
    """A chart repository (index.yaml + archives) on loopback, as charts.jetstack.io serves one."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run([str(helm_bin), "package", str(TEST_CHARTS / "cert-manager"), "-d", str(repo)], check=True,
                   capture_output=True)
    port = free_port()
    subprocess.run([str(helm_bin), "repo", "index", str(repo), "--url", f"http://127.0.0.1:{port}"], check=True)
    archive = repo / "cert-manager-v1.21.2.tgz"
    digest = "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(repo))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        path = helm.fetch_chart("cert-manager", f"http://127.0.0.1:{port}", "v1.21.2", digest,
                                cache_dir=tmp_path / "cache")
    finally:
        server.shutdown()
    assert path.read_bytes() == archive.read_bytes()


def test_a_bundle_chart_is_used_as_it_is_and_an_altered_one_refused(upstream, tmp_path):
    pin = upstream.lock.chart("envoy-gateway")
    source = helm.fetch_chart("gateway-helm", pin.repository, pin.version, pin.digest, cache_dir=tmp_path / "c")
    bundle = tmp_path / "bundle"
    (bundle / "charts").mkdir(parents=True)
    shutil.copyfile(source, bundle / "charts" / f"gateway-helm-{pin.version}.tgz")
    pulls = helm.CALLS["pull"]
    assert helm.fetch_chart("gateway-helm", "oci://nowhere.invalid/x", pin.version, pin.digest,
                            bundle_dir=bundle).parent == bundle / "charts"
    with open(bundle / "charts" / f"gateway-helm-{pin.version}.tgz", "ab") as f:
        f.write(b"\0")
    with pytest.raises(PermanentError, match="the bundle was altered"):
        helm.fetch_chart("gateway-helm", "oci://nowhere.invalid/x", pin.version, pin.digest, bundle_dir=bundle)
    assert helm.CALLS["pull"] == pulls  # a bundle never reaches the network
