"""tasks.cluster.helm against the real helm binary and a real kube-apiserver: what "unchanged" means,
and recovery of a release left pending.

A stuck ``pending-*`` release is produced the way a helm process killed mid-operation
leaves it: helm first stores the new revision's record (a ``sh.helm.release.v1.<name>.v<N>``
Secret, status ``pending-*``) and only then applies and marks it deployed. The tests write
that record themselves (a copy of the deployed one, with the pending status in both the
payload and the ``status`` label, and an old timestamp), because killing helm between
those two steps cannot be timed reliably. That is a stand-in for the killed process, not
for anything the code under test does.
"""

from __future__ import annotations

import base64
import gzip
import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tasks.cluster import helm
from tasks.core.errors import Conflict, PermanentError
from tasks.core.names import workspace_names
from tasks.core.settings import get_settings
from tasks.workspace.values import workspace_values

pytestmark = pytest.mark.usefixtures("helm_bin")

RELEASE = "ws-alice"


@pytest.fixture
def chart(tmp_path) -> Path:
    """A private copy of the workspace chart that the test may edit."""
    dest = tmp_path / "chart"
    shutil.copytree(get_settings().workspace.chart, dest)
    return dest


@pytest.fixture
def values(namespace) -> dict:
    return workspace_values(workspace_names("alice"), get_settings())


def _release_secret(kube, ns: str, revision: int) -> dict | None:
    return kube.get("Secret", ns, f"sh.helm.release.v1.{RELEASE}.v{revision}")


def _decode(secret: dict) -> dict:
    return json.loads(gzip.decompress(base64.b64decode(base64.b64decode(secret["data"]["release"]))))


def _encode(release: dict) -> str:
    return base64.b64encode(base64.b64encode(gzip.compress(json.dumps(release).encode()))).decode()


def _leave_pending(kube, ns: str, status: str, age: timedelta, *, from_revision: int, revision: int) -> None:
    """Store revision ``revision`` as helm does before it applies anything, and never finish it."""
    source = _release_secret(kube, ns, from_revision)
    rel = _decode(source)
    when = (datetime.now(timezone.utc) - age).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    rel["version"] = revision
    rel["info"]["status"] = status
    rel["info"]["description"] = "Preparing upgrade" if status == "pending-upgrade" else "Initial install underway"
    rel["info"]["last_deployed"] = when
    labels = {**source["metadata"]["labels"], "status": status, "version": str(revision)}
    name = f"sh.helm.release.v1.{RELEASE}.v{revision}"
    manifest = {"apiVersion": "v1", "kind": "Secret", "type": source["type"],
                "metadata": {"name": name, "namespace": ns, "labels": labels}, "data": {"release": _encode(rel)}}
    if revision == from_revision:
        manifest["metadata"]["resourceVersion"] = source["metadata"]["resourceVersion"]
        kube.replace(manifest)
    else:
        kube.create(manifest, exist_ok=False)


def test_helm_applies_a_template_change_without_a_chart_version_bump(kube, namespace, chart, values):
    first = helm.install_or_upgrade(RELEASE, chart, values, namespace)
    assert first.changed and first.status == "deployed"
    again = helm.install_or_upgrade(RELEASE, chart, values, namespace)
    assert not again.changed and again.revision == first.revision  # nothing changed: no new revision

    (chart / "templates" / "probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-probe\ndata:\n  edited: \"yes\"\n")
    changed = helm.install_or_upgrade(RELEASE, chart, values, namespace)  # Chart.yaml version untouched

    assert changed.changed and changed.revision == first.revision + 1
    assert kube.get("ConfigMap", namespace, f"{RELEASE}-probe")["data"] == {"edited": "yes"}
    assert not helm.install_or_upgrade(RELEASE, chart, values, namespace).changed


def test_chart_digest_follows_every_file_and_its_name():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "templates").mkdir()
        (root / "templates" / "a.yaml").write_text("a")
        one = helm.chart_digest(root)
        assert helm.chart_digest(root) == one
        (root / "templates" / "a.yaml").write_text("b")
        two = helm.chart_digest(root)
        (root / "templates" / "a.yaml").rename(root / "templates" / "b.yaml")
        assert len({one, two, helm.chart_digest(root)}) == 3


def test_helm_recovers_a_release_stuck_in_pending_upgrade_by_rolling_back(kube, namespace, chart, values):
    first = helm.install_or_upgrade(RELEASE, chart, values, namespace)
    _leave_pending(kube, namespace, "pending-upgrade", timedelta(hours=1), from_revision=first.revision,
                   revision=first.revision + 1)
    assert helm.status(RELEASE, namespace).status == "pending-upgrade"

    result = helm.install_or_upgrade(RELEASE, chart, values, namespace)

    assert result.status == "deployed" and result.changed
    statuses = {r: _decode(_release_secret(kube, namespace, r))["info"]["status"]
                for r in range(1, result.revision + 1)}
    assert result.revision > first.revision + 1  # newer than the stuck revision (helm keeps its record as is)
    assert helm.status(RELEASE, namespace).status == "deployed"
    assert "Rollback to 1" in {_decode(_release_secret(kube, namespace, r))["info"].get("description")
                               for r in range(1, result.revision + 1)}
    assert statuses[result.revision] == "deployed"
    assert not helm.install_or_upgrade(RELEASE, chart, values, namespace).changed  # and it is stable now


def test_helm_recovers_a_release_stuck_in_pending_install_by_uninstalling(kube, namespace, chart, values):
    first = helm.install_or_upgrade(RELEASE, chart, values, namespace)
    _leave_pending(kube, namespace, "pending-install", timedelta(hours=1), from_revision=first.revision,
                   revision=first.revision)
    assert helm.status(RELEASE, namespace).status == "pending-install"

    result = helm.install_or_upgrade(RELEASE, chart, values, namespace)

    assert result.status == "deployed" and result.changed and result.revision == 1  # a fresh install
    assert kube.get("Deployment", namespace, RELEASE) is not None


def test_helm_a_fresh_pending_release_is_a_transient_conflict_and_is_left_alone(kube, namespace, chart, values):
    first = helm.install_or_upgrade(RELEASE, chart, values, namespace)
    _leave_pending(kube, namespace, "pending-upgrade", timedelta(seconds=5), from_revision=first.revision,
                   revision=first.revision + 1)
    with pytest.raises(Conflict, match="pending-upgrade"):
        helm.install_or_upgrade(RELEASE, chart, values, namespace)
    assert helm.status(RELEASE, namespace).status == "pending-upgrade"  # another run may own it: untouched


@pytest.mark.parametrize("status,age,deployed,expected", [
    ("deployed", 0, True, "proceed"), ("failed", 0, True, "proceed"),
    ("pending-upgrade", 10, True, "wait"), ("pending-upgrade", 400, True, "rollback"),
    ("pending-rollback", 400, True, "rollback"), ("pending-install", 400, False, "uninstall"),
    ("pending-upgrade", 400, False, "uninstall"),
])
def test_pending_action(status, age, deployed, expected):
    now = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
    assert helm.pending_action(status, now - timedelta(seconds=age), deployed, now, 300) == expected


def test_concurrent_first_installs_of_one_release_end_deployed_and_a_loser_is_a_transient_conflict(
        kube, namespace, chart, values):
    """Two runs converging on one person install the same new release at once (seen in the
    suite: helm's "release: already exists"). Whatever the interleaving, a loser must be a
    transient Conflict, so its task retries and finds the release, never a permanent failure."""
    from concurrent.futures import ThreadPoolExecutor

    def attempt(_):
        try:
            return helm.install_or_upgrade(RELEASE, chart, values, namespace)
        except Conflict as exc:
            return exc

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(attempt, range(4)))

    assert all(isinstance(g, (helm.ReleaseResult, Conflict)) for g in got), got
    assert any(isinstance(g, helm.ReleaseResult) for g in got)
    assert helm.status(RELEASE, namespace).status == "deployed"
    assert helm.install_or_upgrade(RELEASE, chart, values, namespace).changed is False  # what a retry finds


@pytest.mark.parametrize("stderr, kind", [
    ("Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress", Conflict),
    ("Error: release: already exists", Conflict),
    ("Error: INSTALLATION FAILED: cannot re-use a name that is still in use", Conflict),
    ("Error: INSTALLATION FAILED: Deployment.apps \"x\" is invalid: spec.replicas: Invalid value", PermanentError),
])
def test_helm_errors_map_races_to_transient_conflicts_and_the_rest_to_permanent(stderr, kind):
    from pyhelm3 import errors as helm_errors

    mapped = helm.map_helm_error(helm_errors.Error(1, b"", stderr.encode()), "helm install-or-upgrade ns/ws-x")
    assert type(mapped) is kind and mapped.transient is (kind is Conflict)
    assert mapped.args[0].startswith("helm install-or-upgrade ns/ws-x: ")


@pytest.mark.parametrize("stderr", [  # as helm printed them under tests/resilience's injected faults
    'Error: could not get server version from Kubernetes: an error on the server ("unknown") has prevented the '
    'request from succeeding',
    'Error: Patch "https://127.0.0.1:37213/apis/apps/v1/namespaces/t/deployments/ws-x?fieldManager=helm": read tcp '
    '127.0.0.1:46472->127.0.0.1:37213: read: connection reset by peer',
    "Error: kubernetes cluster unreachable: Get \"https://127.0.0.1:1/version\": dial tcp: connection refused",
    "Error: INSTALLATION FAILED: Internal error occurred: etcdserver: leader changed",
    "Error: UPGRADE FAILED: the server is currently unable to handle the request (get deployments.apps ws-x)",
    "Error: INSTALLATION FAILED: Too many requests, please try again later.",
])
def test_helm_errors_of_a_server_failing_for_now_are_transient(stderr):
    from pyhelm3 import errors as helm_errors

    from tasks.core.errors import ServerError

    mapped = helm.map_helm_error(helm_errors.Error(1, b"", stderr.encode()), "helm install-or-upgrade ns/ws-x")
    assert type(mapped) is ServerError and mapped.transient
