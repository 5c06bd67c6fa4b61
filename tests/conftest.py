"""Test harness: real components on loopback, split into fixture plugins by area.

- ``fixtures.tools``    helm/kubectl binaries
- ``fixtures.kube``     a real kube-apiserver over etcd (envtest), namespaces, kubelet stand-ins
- ``fixtures.prefect``  a real Prefect server on SQLite (session scope: ~30 s to start)
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

Helpers without fixtures, imported by the tests that use them: ``fixtures.backup``,
``fixtures.objects`` (cluster objects as the product writes them), ``fixtures.pss`` (Pod Security
"restricted" checker), ``fixtures.scim_examples``, ``fixtures.concurrency``. Tests live in one
folder per domain (tests/core, tests/people, ...); no test module imports another
(tests/core/test_layout.py).
"""

pytest_plugins = [
    "tests.fixtures.tools",
    "tests.fixtures.kube",
    "tests.fixtures.prefect",
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
]


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
