"""Test harness: real components on loopback, split into fixture plugins by area.

- ``fixtures.tools``    helm/kubectl binaries
- ``fixtures.kube``     a real kube-apiserver over etcd (envtest), namespaces, kubelet stand-ins
- ``fixtures.prefect``  a real Prefect server on SQLite (session scope: ~30 s to start), or on
                        PostgreSQL with VIBECODE_TEST_PREFECT_DATABASE=postgresql
- ``fixtures.postgres`` PostgreSQL from Debian's packages and a Prefect server on it
- ``fixtures.storage``  the S3 server (SeaweedFS, ``fixtures.seaweedfs``) and restic
- ``fixtures.identity`` slapd (LDAP) and aiosmtpd (SMTP)
- ``fixtures.health``   a Prometheus Pushgateway; Datadog intake and Authelia health stand-ins
- ``fixtures.node``     a real one-node cluster (kubelet, containerd) for tests marked ``node``
- ``fixtures.gateway``  the HR gateway on loopback, with the HR deployments registered
- ``fixtures.codeserver`` real code-server processes on loopback
- ``fixtures.registry`` OCI registries on loopback with the upstream charts' stand-ins and test images
- ``fixtures.platform`` bootstrap settings and the controller stand-in
- ``fixtures.people``   the onboarding/offboarding platform (namespaces, users Secret, inbox)
- ``fixtures.reaper``   a closed port for a workspace that does not answer
- ``fixtures.secrets_hygiene`` fails the run on a generated secret found outside its Secrets

Helpers without fixtures, imported by the tests that use them: ``fixtures.backup``,
``fixtures.objects`` (cluster objects as the product writes them), ``fixtures.pss`` (Pod Security
"restricted" checker), ``fixtures.scim_examples``, ``fixtures.concurrency``. Tests live in one
folder per domain (tests/core, tests/people, ...); no test module imports another
(tests/core/test_layout.py).
"""

import pytest
from hypothesis import settings as _hypothesis

# Property tests judge results, not speed: on a shared 2-core machine a case may take longer
# than hypothesis's default 200 ms deadline without anything being wrong.
_hypothesis.register_profile("vibecode", deadline=None)
_hypothesis.load_profile("vibecode")

pytest_plugins = [
    "tests.fixtures.tools",
    "tests.fixtures.kube",
    "tests.fixtures.prefect",
    "tests.fixtures.postgres",
    "tests.fixtures.storage",
    "tests.fixtures.identity",
    "tests.fixtures.health",
    "tests.fixtures.node",
    "tests.fixtures.gateway",
    "tests.fixtures.codeserver",
    "tests.fixtures.registry",
    "tests.fixtures.platform",
    "tests.fixtures.people",
    "tests.fixtures.reaper",
    "tests.fixtures.gatewayapi",
    "tests.fixtures.secrets_hygiene",
]


# A test that needs none of these is a unit test (marker ``unit``): no server, no built binary.
# ``scripts/test`` runs ``-m unit`` first, with the static tier, before the slow stack is built.
SERVICE_FIXTURES = frozenset({
    "apiserver", "kube", "namespaces", "namespace", "platform_namespace", "job_kubelet",
    "prefect_harness", "prefect_server", "prefect_limits", "hr_deployments", "gateway", "scim_gateway",
    "s3_server", "backup_settings", "slapd", "ldap_settings", "test_ca", "smtp_server", "smtp_inbox",
    "smtp_tls_server", "authelia_users", "platform", "backup_calls", "pushgateway", "datadog_intake",
    "authelia_health", "health_env", "code_server_bin", "code_servers", "helm_bin", "kubectl_bin",
    "node_cluster", "node_kube", "node_namespace", "node_s3", "node_backup_settings",
})


# The longest tests (minutes each, several flow runs in processes of their own) go first: xdist
# hands out tests in collection order, and at the end of it they would run on one worker while
# the others sit idle. First, one worker takes them while the others share out the rest.
LONGEST_FIRST = ("tests/resilience/test_kill_boundaries.py", "tests/resilience/test_soak.py", "tests/dr/test_recovery.py")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in LONGEST_FIRST)  # stable: modules stay whole
    for item in items:
        if not SERVICE_FIXTURES.intersection(item.fixturenames) and not item.get_closest_marker("node") \
                and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.unit)


def pytest_configure(config):
    """A base temp folder of this session's own. The kubelet stand-in runs Jobs as the pod's
    uid, which must traverse down to the volume folders; under the shared
    /tmp/pytest-of-<user>, any other pytest session starting resets that folder to 0700."""
    import tempfile

    if not config.option.basetemp:
        config.option.basetemp = tempfile.mkdtemp(prefix="vibecode-pytest-")
        config._vibecode_basetemp = config.option.basetemp


def pytest_unconfigure(config):
    import shutil

    if getattr(config, "_vibecode_basetemp", None):
        shutil.rmtree(config._vibecode_basetemp, ignore_errors=True)
