"""The platform's local CA certificate, for a person to trust (``vibecode ca``); pure.

cert-manager keeps the CA the platform chart asks for (Certificate ``vibecode-ca``, isCA) in a
Secret in its own namespace: ``tls.crt`` is the CA certificate and, for a self-signed root,
``ca.crt`` is the same certificate. Only the certificate leaves this module, never ``tls.key``.
The fingerprint is SHA-256 over the DER encoding, written as ``openssl x509 -fingerprint
-sha256`` and browsers show it, so a person can compare it with what they are asked to trust.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tasks.core.errors import PermanentError

CA_NAMESPACE = "cert-manager"   # the chart's namespaces.certManager
CA_SECRET = "vibecode-ca"       # the chart's certificates.ca.name
KEYS = ("ca.crt", "tls.crt")    # in order of preference


@dataclass(frozen=True)
class CaCertificate:
    pem: str
    sha256: str          # AA:BB:...: 32 bytes, as openssl prints it
    subject: str         # RFC 4514
    not_after: datetime

    def summary(self) -> str:
        return f"{self.subject}\nSHA-256 fingerprint: {self.sha256}\nvalid until {self.not_after.isoformat()}"


def fingerprint(cert: x509.Certificate) -> str:
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def ca_from_secret(secret: dict | None, where: str = f"{CA_NAMESPACE}/{CA_SECRET}") -> CaCertificate:
    """The CA certificate in cert-manager's Secret (as the API returns it: base64 ``data``)."""
    if secret is None:
        raise PermanentError(f"Secret {where} not found: is cert-manager installed and the platform chart's "
                             "certificates enabled? (cert-manager writes it once the CA Certificate is issued)")
    data = secret.get("data") or {}
    raw = next((data[k] for k in KEYS if data.get(k)), None)
    if raw is None:
        raise PermanentError(f"Secret {where} has no {' or '.join(KEYS)} yet (the CA is not issued)")
    try:
        cert = x509.load_pem_x509_certificate(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise PermanentError(f"Secret {where}: not a PEM certificate ({exc})") from None
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise PermanentError(f"Secret {where} holds a certificate that is not a CA ({cert.subject.rfc4514_string()})")
    subject = cert.subject.rfc4514_string() or "(no subject)"
    return CaCertificate(pem=cert.public_bytes(serialization.Encoding.PEM).decode(), sha256=fingerprint(cert),
                         subject=subject, not_after=cert.not_valid_after_utc)
