"""Test harness: real components on loopback, split into fixture plugins by area.

- ``fixtures.tools``    helm/kubectl binaries
- ``fixtures.kube``     a real kube-apiserver over etcd (envtest), namespaces, kubelet stand-ins
- ``fixtures.prefect``  a real Prefect server on SQLite (session scope: ~30 s to start)
- ``fixtures.storage``  an S3 protocol server (moto) and restic
- ``fixtures.identity`` slapd (LDAP) and aiosmtpd (SMTP)
- ``fixtures.codeserver`` real code-server processes on loopback
"""

pytest_plugins = [
    "tests.fixtures.tools",
    "tests.fixtures.kube",
    "tests.fixtures.prefect",
    "tests.fixtures.storage",
    "tests.fixtures.identity",
    "tests.fixtures.codeserver",
]
