"""Run a real kube-apiserver over etcd on loopback (controller-runtime's envtest, in Python).

Certificates, the service-account key and the admin token are made fresh for every run,
so no credential ever lives in the repository.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[3]


def free_port(ip: str = "127.0.0.1") -> int:
    """A port the kernel had free on ``ip`` a moment ago (the caller binds it soon)."""
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def assets_dir() -> Path:
    """KUBEBUILDER_ASSETS if set, else what scripts/setup-envtest.sh fills (building once)."""
    env = os.environ.get("KUBEBUILDER_ASSETS")
    if env and (Path(env) / "kube-apiserver").exists():
        return Path(env)
    out = subprocess.run(["bash", str(ROOT / "scripts" / "setup-envtest.sh")], check=True,
                         stdout=subprocess.PIPE, text=True).stdout.strip()
    return Path(out.splitlines()[-1])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def new_ca(common_name: str = "envtest-ca"):
    """A throw-away CA for one run: (certificate, key)."""
    now = dt.datetime.now(dt.timezone.utc)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def issue(ca, ca_key, common_name: str, orgs: tuple[str, ...] = (), dns: tuple[str, ...] = (),
          ips: tuple[str, ...] = ()):
    """A leaf certificate signed by ``ca``: (certificate, key). Kubernetes reads the user from
    CN and the groups from O; SANs make it a serving certificate too."""
    now = dt.datetime.now(dt.timezone.utc)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    subject += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    builder = (x509.CertificateBuilder().subject_name(x509.Name(subject)).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1)))
    sans = [x509.DNSName(n) for n in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def write_pair(d: Path, stem: str, cert, key) -> None:
    (d / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / f"{stem}.key").write_bytes(_pem_key(key))
    (d / f"{stem}.key").chmod(0o600)


def _certs(d: Path):
    """CA, API server serving certificate and service-account key pair; returns (ca, ca_key)."""
    ca, ca_key = new_ca()
    (d / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    write_pair(d, "server", *issue(ca, ca_key, "kube-apiserver", dns=("localhost",), ips=("127.0.0.1",)))
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (d / "sa.key").write_bytes(_pem_key(sa))
    (d / "sa.pub").write_bytes(sa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return ca, ca_key


# The API server's own record of what service accounts did (the flows run as one): every
# request by a ServiceAccount at Metadata level (who, verb, resource, namespace, response
# code), nothing for the admin. Tests check a least-privilege Role against it.
AUDIT_POLICY = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
                "rules": [{"level": "Metadata", "userGroups": ["system:serviceaccounts"]}, {"level": "None"}]}


@dataclass
class EnvTest:
    url: str
    kubeconfig: Path
    version: str
    procs: list[subprocess.Popen]
    workdir: tempfile.TemporaryDirectory
    etcd_url: str = ""  # the etcd the API server stores into (tests compact it to expire continue tokens)

    @property
    def audit_log(self) -> Path:
        """JSON lines, one audit event each (only service-account requests are logged)."""
        return Path(self.workdir.name) / "audit.log"

    def audit_events(self, user: str | None = None, since_line: int = 0) -> list[dict]:
        """Audit events (ResponseComplete stage) from line ``since_line`` on, of ``user`` if given."""
        import json

        if not self.audit_log.exists():
            return []
        lines = self.audit_log.read_text().splitlines()[since_line:]
        events = [json.loads(line) for line in lines if line.strip()]
        return [e for e in events if e.get("stage") == "ResponseComplete"
                and (user is None or e.get("user", {}).get("username") == user)]

    def audit_lines(self) -> int:
        return len(self.audit_log.read_text().splitlines()) if self.audit_log.exists() else 0

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.workdir.cleanup()


def _wait_ready(url: str, token: str, ca: Path, procs: list[subprocess.Popen], log: Path, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                binary = p.args[0] if isinstance(p.args, (list, tuple)) else p.args
                raise RuntimeError(f"{binary!s} exited with {p.returncode}; see {log}:\n{log.read_text()[-3000:]}")
        try:
            r = httpx.get(f"{url}/readyz", headers={"Authorization": f"Bearer {token}"}, verify=str(ca), timeout=2)
            if r.status_code == 200:
                v = httpx.get(f"{url}/version", headers={"Authorization": f"Bearer {token}"},
                              verify=str(ca), timeout=2).json()
                return v["gitVersion"]
            last = r.text[-500:]
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise RuntimeError(f"kube-apiserver not ready after {timeout}s: {last}")


def start(service_ip_range: str = "10.0.0.0/24") -> EnvTest:
    """``service_ip_range``: the ClusterIPs Services draw from (a benchmark with 10,000 workspace
    Services needs more than a /24; /12 is the largest kube-apiserver accepts)."""
    assets = assets_dir()
    wd = tempfile.TemporaryDirectory(prefix="envtest-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    d = Path(wd.name)
    _certs(d)
    token = secrets.token_urlsafe(32)
    (d / "tokens.csv").write_text(f'{token},envtest-admin,envtest-admin,"system:masters"\n')
    (d / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    log = d / "envtest.log"
    logf = open(log, "ab")
    etcd = subprocess.Popen([
        str(assets / "etcd"), "--data-dir", str(d / "etcd"), "--name", "envtest",
        "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
        "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-cluster", f"envtest=http://127.0.0.1:{peer_port}",
        "--log-level", "error"], stdout=logf, stderr=logf)
    api = subprocess.Popen([
        str(assets / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}", f"--secure-port={api_port}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
        f"--tls-cert-file={d / 'server.crt'}", f"--tls-private-key-file={d / 'server.key'}",
        f"--client-ca-file={d / 'ca.crt'}", f"--token-auth-file={d / 'tokens.csv'}",
        f"--service-account-key-file={d / 'sa.pub'}", f"--service-account-signing-key-file={d / 'sa.key'}",
        "--service-account-issuer=https://kubernetes.default.svc", "--authorization-mode=RBAC",
        f"--service-cluster-ip-range={service_ip_range}", "--allow-privileged=true", "--v=0",
        f"--audit-policy-file={d / 'audit-policy.yaml'}", f"--audit-log-path={d / 'audit.log'}",
        "--audit-log-format=json", "--audit-log-mode=blocking"],
        stdout=logf, stderr=logf)
    url = f"https://127.0.0.1:{api_port}"
    try:
        version = _wait_ready(url, token, d / "ca.crt", [etcd, api], log)
    except Exception:
        for p in (api, etcd):
            p.kill()
        raise
    kubeconfig = d / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "envtest",
        "clusters": [{"name": "envtest", "cluster": {"server": url, "certificate-authority": str(d / "ca.crt")}}],
        "users": [{"name": "envtest-admin", "user": {"token": token}}],
        "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": "envtest-admin"}}],
    }))
    kubeconfig.chmod(0o600)
    print(f"[harness] kube-apiserver {version} at {url} (etcd {assets / 'etcd'})", file=sys.stderr)
    return EnvTest(url, kubeconfig, version, [etcd, api], wd, f"http://127.0.0.1:{etcd_port}")
