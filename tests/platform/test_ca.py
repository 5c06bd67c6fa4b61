"""``vibecode ca``'s function: the platform CA certificate and its fingerprint from cert-manager's
Secret (tasks.platform.ca), checked against certificates made here and openssl's fingerprint."""

from __future__ import annotations

import base64
import datetime as dt
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tasks.core.errors import PermanentError
from tasks.platform.ca import ca_from_secret


def _cert(is_ca: bool = True) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate shaped like cert-manager's for the chart's CA (ECDSA P-256, subject set)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "VibeCode"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "VibeCode Local CA")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _secret(cert, key, keys=("ca.crt", "tls.crt")) -> dict:
    pem = cert.public_bytes(serialization.Encoding.PEM)
    data = {k: base64.b64encode(pem).decode() for k in keys}
    data["tls.key"] = base64.b64encode(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption())).decode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "vibecode-ca", "namespace": "cert-manager"}, "data": data}


def test_the_ca_certificate_and_its_fingerprint_never_the_key(tmp_path):
    cert, key = _cert()
    got = ca_from_secret(_secret(cert, key))
    assert got.pem == cert.public_bytes(serialization.Encoding.PEM).decode()
    assert got.subject == "CN=VibeCode Local CA,O=VibeCode"
    assert "PRIVATE KEY" not in got.pem and "PRIVATE KEY" not in got.summary()
    assert len(got.sha256.split(":")) == 32
    if shutil.which("openssl"):  # the fingerprint as a person checks it
        (tmp_path / "ca.pem").write_text(got.pem)
        out = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "ca.pem"), "-noout", "-fingerprint", "-sha256"],
                             capture_output=True, text=True, check=True).stdout
        assert out.strip().split("=", 1)[1] == got.sha256


def test_tls_crt_is_read_when_ca_crt_is_absent():
    cert, key = _cert()
    assert ca_from_secret(_secret(cert, key, keys=("tls.crt",))).sha256 == ca_from_secret(_secret(cert, key)).sha256


@pytest.mark.parametrize("secret, message", [
    (None, "not found"),
    ({"data": {}}, "has no ca.crt or tls.crt"),
    ({"data": {"ca.crt": base64.b64encode(b"not a certificate").decode()}}, "not a PEM certificate"),
])
def test_missing_or_broken_secrets_are_explained(secret, message):
    with pytest.raises(PermanentError, match=message):
        ca_from_secret(secret)


def test_a_leaf_certificate_is_not_offered_as_a_ca():
    cert, key = _cert(is_ca=False)
    with pytest.raises(PermanentError, match="not a CA"):
        ca_from_secret(_secret(cert, key))


def test_the_flow_reads_it_from_the_api_server(kube, namespace, prefect_server):
    from flows.ca import platform_ca

    cert, key = _cert()
    secret = _secret(cert, key)
    secret["metadata"]["namespace"] = namespace
    kube.create(secret)
    got = platform_ca(namespace=namespace, name="vibecode-ca")
    assert got.sha256 == ca_from_secret(secret).sha256


def test_vibecode_ca_prints_the_fingerprint_and_writes_only_the_certificate(kube, prefect_server, tmp_path,
                                                                            capsys, monkeypatch):
    """The command reads cert-manager's Secret where the CA lives (namespace cert-manager, Secret
    vibecode-ca); the key in that Secret never leaves the cluster."""
    import json

    from tasks.platform.ca import CA_NAMESPACE, CA_SECRET
    from vibecode_cli import main

    cert, key = _cert()
    secret = _secret(cert, key)
    secret["metadata"].update(namespace=CA_NAMESPACE, name=CA_SECRET)
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CA_NAMESPACE}})
    kube.create(secret)
    try:
        out = tmp_path / "ca.pem"
        assert main(["ca", "--out", str(out), "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["sha256"] == ca_from_secret(secret).sha256 and out.read_text() == shown["pem"]
        assert "PRIVATE KEY" not in out.read_text() and "PRIVATE KEY" not in json.dumps(shown)
    finally:
        kube.delete("Secret", CA_NAMESPACE, CA_SECRET)
