"""``vibecode ca``: the platform's local CA certificate and its SHA-256 fingerprint, for a person
to trust (browsers need it for the portal and the workspaces unless ACME issues them)."""

from __future__ import annotations

from prefect import flow

from tasks.platform.ca import CA_NAMESPACE, CA_SECRET, CaCertificate
from tasks.platform.ca_steps import read_platform_ca


@flow(name="platform-ca", log_prints=False)
def platform_ca(namespace: str = CA_NAMESPACE, name: str = CA_SECRET) -> CaCertificate:
    """Read the CA from cert-manager's Secret. The PEM is the result, not a log line or an artifact
    (it is public, but the caller prints it where the person asked)."""
    return read_platform_ca(namespace, name)
