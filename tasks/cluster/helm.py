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
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pyhelm3 import Client
from pyhelm3 import errors as helm_errors

from tasks.core.errors import Conflict, Invalid, NotFound, PermanentError, ServerError, VibecodeError
from tasks.core.settings import Settings, get_settings

CACHE_BIN = Path.home() / ".cache" / "vibecode" / "bin" / "helm"
DIGEST_PREFIX = "vibecode chart-digest=sha256:"
PENDING = frozenset({"pending-install", "pending-upgrade", "pending-rollback"})


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
    return PermanentError(msg)


def _client(settings: Settings) -> Client:
    return Client(executable=helm_executable(settings), kubeconfig=settings.kubeconfig,
                  kubecontext=settings.kube_context)


def _run(coro, what: str):
    try:
        return asyncio.run(coro)
    except VibecodeError:
        raise
    except Exception as exc:
        raise map_helm_error(exc, what) from exc


def chart_digest(chart: Path) -> str:
    """SHA-256 over every file of the chart directory (relative path and bytes, in path order)."""
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
