"""Thin, synchronous adapter over pyhelm3 (which drives the real ``helm`` binary).

Like :mod:`tasks.cluster.kube`, it maps failures into :mod:`tasks.core.errors`, and it makes
install-or-upgrade *idempotent*: plain ``helm upgrade --install`` writes a new revision
on every call, so we compare what is deployed first and skip the upgrade when nothing
would change. A rerun of a flow then really "changes nothing".

"What is deployed" is the chart's version, the values, and a digest of every file in the
chart directory, which each of our installs records in the release's description
(``helm history`` shows it): a template edited without a version bump changes the digest,
so it is applied. A release left ``pending-*`` (helm killed mid-operation, a lost
connection) is recovered, rolled back to its last deployed revision or, if none was ever
deployed, uninstalled, once it has been pending longer than any operation of ours takes
(``helm_pending_grace_seconds``); until then it is a transient conflict.

Upstream charts come pinned (:mod:`tasks.platform.lock`): :func:`fetch_chart` gets the archive
from an OCI registry or a chart repository at the exact version (or from an air-gapped bundle),
checks its sha256 against the lock and keeps it in a cache, so a rerun neither downloads nor
trusts anything new; the archive's sha256 is then the "chart digest" of the release.

:data:`CALLS` counts every helm invocation by subcommand (the bootstrap benchmark reports it).
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pyhelm3 import Client
from pyhelm3 import errors as helm_errors
from pyhelm3.command import Command

from tasks.core.errors import Conflict, Invalid, NotFound, PermanentError, ServerError, VibecodeError
from tasks.core.settings import Settings, get_settings

CACHE_BIN = Path.home() / ".cache" / "vibecode" / "bin" / "helm"
DIGEST_PREFIX = "vibecode chart-digest=sha256:"
PENDING = frozenset({"pending-install", "pending-upgrade", "pending-rollback"})
CHART_CACHE = Path.home() / ".cache" / "vibecode" / "charts"
CALLS: Counter[str] = Counter()  # helm invocations by subcommand, since the process started
_calls_lock = threading.Lock()


def _count(argv: list) -> None:
    with _calls_lock:
        CALLS[str(argv[0]) if argv else "?"] += 1


class _CountingCommand(Command):
    """pyhelm3's command runner, counting each helm process it starts."""

    async def run(self, command, input=None):
        _count(command)
        return await super().run(command, input)

    def client_version(self):
        _count(["version"])
        return super().client_version()


@dataclass(frozen=True)
class ReleaseResult:
    name: str
    namespace: str
    revision: int
    status: str
    changed: bool


def helm_executable(settings: Settings | None = None) -> str:
    """settings.helm_binary, else ``helm`` on PATH, else the copy scripts/install_tools.py made."""
    s = settings or get_settings()
    if s.helm_binary:
        return str(s.helm_binary)
    found = shutil.which("helm")
    if found:
        return found
    if CACHE_BIN.exists():
        return str(CACHE_BIN)
    raise PermanentError("helm not found: set VIBECODE_HELM_BINARY, put helm on PATH, "
                         "or run `python scripts/install_tools.py`")


def map_helm_error(exc: BaseException, what: str) -> VibecodeError:
    text = (getattr(exc, "stderr", b"") or b"").decode(errors="replace").strip() or str(exc)
    msg = f"{what}: {text.splitlines()[-1] if text else type(exc).__name__}"
    if isinstance(exc, helm_errors.ConnectionError):
        return ServerError(msg)
    if isinstance(exc, (helm_errors.ReleaseNotFoundError, helm_errors.ChartNotFoundError)):
        return NotFound(msg)
    if isinstance(exc, (helm_errors.FailedToRenderChartError, helm_errors.InvalidResourceError)):
        return Invalid(msg)
    if "another operation" in text and "in progress" in text:
        return Conflict(msg)  # a concurrent install/upgrade of the same release
    if "release: already exists" in text or "cannot re-use a name that is still in use" in text:
        # `upgrade --install` lost a race with another first install of the same release
        # (two runs converging on one person); a retry finds it and upgrades or does nothing
        return Conflict(msg)
    if isinstance(exc, helm_errors.Error) and ("values don't meet the specifications" in text or "schema" in text):
        return Invalid(msg)
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return ServerError(msg)
    if any(w in text.lower() for w in TRANSIENT_WORDINGS):
        return ServerError(msg)
    return PermanentError(msg)


# How client-go (inside helm) words an API server that failed for now: its 5xx and 429 Status
# reasons, and the Go network errors of a connection that broke. Found under injected faults
# (tests/resilience/test_faults.py): each was a PermanentError, so a 500 failed onboarding.
TRANSIENT_WORDINGS = (
    "an error on the server", "internal error occurred", "the server is currently unable to handle the request",
    "too many requests", "the server has received too many requests", "kubernetes cluster unreachable",
    "connection reset by peer", "connection refused", "broken pipe", "unexpected eof", "i/o timeout",
    "tls handshake timeout", "http2: client connection lost", "server closed idle connection",
    "context deadline exceeded (client.timeout",
)


_clients: dict[tuple, Client] = {}


def _client(settings: Settings) -> Client:
    """One client per (binary, kubeconfig, context): building one runs ``helm version``."""
    exe = helm_executable(settings)
    key = (exe, str(settings.kubeconfig or ""), settings.kube_context or "")
    with _calls_lock:
        found = _clients.get(key)
    if found is None:
        command = _CountingCommand(executable=exe, kubeconfig=settings.kubeconfig,
                                   kubecontext=settings.kube_context, default_timeout="5m",
                                   history_max_revisions=10, insecure_skip_tls_verify=False,
                                   kubeapiserver=None, kubetoken=None, unpack_directory=None)
        found = Client(command, executable=exe)
        with _calls_lock:
            _clients[key] = found
    return found


def _run(coro, what: str):
    try:
        return asyncio.run(coro)
    except VibecodeError:
        raise
    except Exception as exc:
        raise map_helm_error(exc, what) from exc


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def chart_digest(chart: Path) -> str:
    """SHA-256 of a chart archive (.tgz), or over every file of a chart directory (relative
    path and bytes, in path order)."""
    if Path(chart).is_file():
        return file_sha256(chart)
    h = hashlib.sha256()
    for path in sorted(p for p in Path(chart).rglob("*") if p.is_file()):
        rel = path.relative_to(chart).as_posix().encode()
        data = path.read_bytes()
        h.update(len(rel).to_bytes(8, "big") + rel + len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


def pending_action(status: str, updated: datetime, has_deployed_revision: bool, now: datetime,
                   grace_seconds: float) -> str:
    """What to do with a release in ``status``: "proceed", "wait" (someone may still be working
    on it), "rollback" (to the last deployed revision) or "uninstall" (nothing ever deployed)."""
    if status not in PENDING:
        return "proceed"
    if (now - updated).total_seconds() < grace_seconds:
        return "wait"
    return "rollback" if has_deployed_revision else "uninstall"


async def _recover_pending(client: Client, current, release: str, namespace: str, s: Settings):
    """Bring a release out of a stuck ``pending-*``; returns the revision to continue from (or None)."""
    history = list(await current.release.history())
    deployed = [r.revision for r in history
                if r.status.value in ("deployed", "superseded") and r.revision != current.revision]
    action = pending_action(current.status.value, current.updated, bool(deployed), datetime.now(timezone.utc),
                            s.helm_pending_grace_seconds)
    if action == "wait":
        raise Conflict(f"helm release {namespace}/{release} is {current.status.value} since "
                       f"{current.updated.isoformat()}: another operation may still be running")
    if action == "uninstall":
        await client.uninstall_release(release, namespace=namespace)
        return None
    # the newest revision that was ever live: deployed if helm got that far, else superseded
    live = [r for r in history if r.revision in deployed]
    target = max(live, key=lambda r: (r.status.value == "deployed", r.revision)).revision
    await current.release.rollback(target, wait=False)
    return await client.get_current_revision(release, namespace=namespace)


def install_or_upgrade(release: str, chart: Path, values: dict[str, Any], namespace: str,
                       settings: Settings | None = None) -> ReleaseResult:
    """Install or upgrade ``release``; a no-op when chart version, chart files and values already match.

    A release stuck in ``pending-*`` is recovered first (see the module docstring).
    """
    s = settings or get_settings()
    description = DIGEST_PREFIX + chart_digest(chart)

    async def go() -> ReleaseResult:
        client = _client(s)
        loaded = await client.get_chart(chart)
        try:
            current = await client.get_current_revision(release, namespace=namespace)
        except helm_errors.ReleaseNotFoundError:
            current = None
        if current is not None and current.status.value in PENDING:
            current = await _recover_pending(client, current, release, namespace, s)
        if current is not None and current.status.value == "deployed" and current.description == description:
            meta = await current.chart_metadata()
            if meta.version == loaded.metadata.version and (await current.values()) == values:
                return ReleaseResult(release, namespace, current.revision, "deployed", changed=False)
        rev = await client.install_or_upgrade_release(release, loaded, values, namespace=namespace,
                                                      create_namespace=False, wait=False,
                                                      description=description)
        return ReleaseResult(release, namespace, rev.revision, rev.status.value, changed=True)

    return _run(go(), f"helm install-or-upgrade {namespace}/{release}")


def uninstall(release: str, namespace: str, settings: Settings | None = None) -> bool:
    """Uninstall; ``False`` if there was no such release (idempotent)."""
    s = settings or get_settings()

    async def go() -> bool:
        try:
            await _client(s).uninstall_release(release, namespace=namespace)
            return True
        except helm_errors.ReleaseNotFoundError:
            return False

    return _run(go(), f"helm uninstall {namespace}/{release}")


def status(release: str, namespace: str, settings: Settings | None = None) -> ReleaseResult | None:
    s = settings or get_settings()

    async def go() -> ReleaseResult | None:
        try:
            rev = await _client(s).get_current_revision(release, namespace=namespace)
        except helm_errors.ReleaseNotFoundError:
            return None
        return ReleaseResult(release, namespace, rev.revision, rev.status.value, changed=False)

    return _run(go(), f"helm status {namespace}/{release}")


# -- pinned upstream charts ------------------------------------------------------------
def _loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in ("127.0.0.1", "localhost", "[::1]", "::1")


def pull_args(repository: str, name: str, version: str, destination: Path) -> list[str]:
    """``helm pull`` of one exact version, for an OCI reference or a chart repository. A registry
    on loopback speaks plain HTTP (the one-node cluster's and the tests' registry)."""
    if repository.startswith("oci://"):
        args = ["pull", repository, "--version", version, "--destination", str(destination)]
        if _loopback(repository.removeprefix("oci://").split("/", 1)[0]):
            args.append("--plain-http")
        return args
    return ["pull", name, "--repo", repository, "--version", version, "--destination", str(destination)]


def fetch_chart(name: str, repository: str, version: str | None, digest: str | None, *,
                bundle_dir: Path | None = None, cache_dir: Path | None = None,
                settings: Settings | None = None) -> Path:
    """The chart archive ``name``-``version``, checked against ``digest`` (sha256:...).

    From ``bundle_dir/charts`` when given (never the network), else from the cache, else pulled
    from ``repository`` into the cache. An archive whose digest differs from the pin is
    refused and never cached; an unpinned chart is refused before anything is fetched."""
    if version is None or digest is None:
        raise PermanentError(f"chart {name} from {repository} is not pinned (version and archive digest); "
                             f"refusing to install it")
    want = digest.removeprefix("sha256:")
    file_name = f"{name}-{version}.tgz"
    if bundle_dir is not None:
        path = Path(bundle_dir) / "charts" / file_name
        if not path.is_file():
            raise PermanentError(f"the bundle {bundle_dir} has no {file_name}")
        got = file_sha256(path)
        if got != want:
            raise PermanentError(f"{path}: sha256 {got} is not the pinned {digest}; the bundle was altered")
        return path
    cache = Path(cache_dir or CHART_CACHE)
    cached = cache / f"{name}-{version}-{want[:16]}.tgz"
    if cached.is_file() and file_sha256(cached) == want:
        return cached
    cache.mkdir(parents=True, exist_ok=True)
    s = settings or get_settings()
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        argv = pull_args(repository, name, version, Path(tmp))
        _count(argv)
        proc = subprocess.run([helm_executable(s), *argv], capture_output=True, text=True)
        if proc.returncode != 0:
            text = proc.stderr.strip()
            msg = f"helm pull {name} {version} from {repository}: {text.splitlines()[-1] if text else proc.returncode}"
            if "not found" in text.lower():
                raise NotFound(msg)
            raise ServerError(msg)  # a registry that did not answer: transient
        pulled = list(Path(tmp).glob("*.tgz"))
        if len(pulled) != 1:
            raise PermanentError(f"helm pull {name} {version} left {len(pulled)} archives")
        got = file_sha256(pulled[0])
        if got != want:
            raise PermanentError(f"chart {name} {version} from {repository} has sha256 {got}, not the pinned "
                                 f"{digest}: refusing it (a re-published chart, or not the chart we pinned)")
        pulled[0].replace(cached)
    return cached


@dataclass(frozen=True)
class ReleaseState:
    """What is deployed, for a plan (nothing here changes the cluster)."""

    revision: int
    status: str
    chart_version: str
    chart_digest: str | None  # from our description; None when installed by someone else
    values: dict
    resources: tuple[tuple[str, str | None, str], ...]  # (kind, namespace, name) of its manifest


def decode_release(secret: dict) -> dict:
    """helm's record of one revision, from the Secret its default storage driver keeps it in
    (``sh.helm.release.v1.<name>.v<revision>``: base64 of gzipped JSON, base64 again by the API)."""
    import base64
    import gzip
    import json

    return json.loads(gzip.decompress(base64.b64decode(base64.b64decode(secret["data"]["release"]))))


def release_state(release: str, namespace: str, settings: Settings | None = None) -> ReleaseState | None:
    """The current revision of ``release``, or None when there is none.

    Read from helm's own record (one LIST of its Secrets by label) rather than from three helm
    processes (status, get metadata, get values): the same data, and a no-op bootstrap asks for it
    once per release. A release kept by another storage driver (HELM_DRIVER) is not seen here,
    so it is planned as an install and helm itself then finds it."""
    from tasks.cluster import kube

    s = settings or get_settings()
    records = kube.connect(s).list("Secret", namespace, f"owner=helm,name={release}")
    if not records:
        return None
    latest = max(records, key=lambda r: int((r["metadata"].get("labels") or {}).get("version", 0)))
    rel = decode_release(latest)
    info = rel.get("info") or {}
    desc = info.get("description") or ""
    digest = desc.removeprefix(DIGEST_PREFIX) if desc.startswith(DIGEST_PREFIX) else None
    import yaml

    resources = tuple((r.get("kind", ""), (r.get("metadata") or {}).get("namespace") or namespace,
                       (r.get("metadata") or {}).get("name", ""))
                      for r in yaml.safe_load_all(rel.get("manifest") or "") if isinstance(r, dict))
    return ReleaseState(int(rel.get("version", 0)), str(info.get("status", "unknown")),
                        str(((rel.get("chart") or {}).get("metadata") or {}).get("version", "")), digest,
                        rel.get("config") or {}, resources)
