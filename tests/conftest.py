"""Test harness: real components on loopback, split into fixture plugins by area.

- ``fixtures.tools``    helm/kubectl binaries
- ``fixtures.kube``     a real kube-apiserver over etcd (envtest), namespaces, kubelet stand-ins
- ``fixtures.prefect``  a real Prefect server on SQLite (session scope: ~30 s to start)
- ``fixtures.storage``  an S3 protocol server (moto) and restic
- ``fixtures.identity`` slapd (LDAP) and aiosmtpd (SMTP)
- ``fixtures.health``   a Prometheus Pushgateway; Datadog intake and Authelia health stand-ins
- ``fixtures.node``     a real one-node cluster (kubelet, containerd) for tests marked ``node``
- ``fixtures.gateway``  the HR gateway on loopback, with the HR deployments registered
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
]
