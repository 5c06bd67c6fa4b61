"""The Prefect step behind ``vibecode ca``: read the platform CA from cert-manager's Secret."""

from __future__ import annotations

from prefect import task

from tasks.cluster import kube
from tasks.core.steps import KUBE_API, transient_retries
from tasks.platform.ca import CA_NAMESPACE, CA_SECRET, CaCertificate, ca_from_secret


@task(name="read-platform-ca", tags=[KUBE_API], **transient_retries(3))
def read_platform_ca(namespace: str = CA_NAMESPACE, name: str = CA_SECRET) -> CaCertificate:
    """The CA certificate and its fingerprint (never the key: only the certificate is returned)."""
    return ca_from_secret(kube.connect().get("Secret", namespace, name), f"{namespace}/{name}")
