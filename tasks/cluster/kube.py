"""The one module that talks to the Kubernetes API (like kopf's adapter layer).

Everything above it sees plain ``dict`` manifests and the error classes of
:mod:`tasks.core.errors`; nothing else imports ``kubernetes``. That keeps retries honest
(``Conflict``/``TooManyRequests``/``ServerError`` are transient, the rest permanent) and
makes the "409 on create / 404 on delete means already done" rule live in one place.

Every call carries a client-side timeout (``settings.kube_request_timeout_seconds``): an
API server that accepts connections and never answers would otherwise hold a run forever,
and with a deployment's ``CANCEL_NEW`` every later run of it would be cancelled. A timeout
is a :class:`~tasks.core.errors.ServerError` (transient), retried by the task, never by
urllib3 inside the call (that would multiply the wait). Watches read with a timeout
longer than the server-side ``timeoutSeconds`` they ask for, so a quiet watch ends by the
server's word and only a dead one by ours.

Every LIST is read in pages (``limit``/``continue``, ``settings.kube_list_page_size``): one
unpaginated LIST of 10,000 workspaces makes the API server read and encode every object at
once (an etcd range of tens of megabytes) and the flow hold all of it. A continue token
expires once etcd compacts the list's revision (410 Gone); the list then restarts from
its first page. :meth:`Kube.pages` hands pages over as they arrive, for callers that fold
them into something smaller.
"""

from __future__ import annotations

import gc
import json
import re
import threading
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Iterator

import orjson
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from tasks.core.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    PermanentError,
    ServerError,
    TooManyRequests,
    VibecodeError,
    WatchExpired,
)
from tasks.core.retrying import retrying
from tasks.core.settings import Settings, get_settings

# kind -> (API group attribute, method suffix, namespaced)
_KINDS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("core", "namespace", False),
    "Secret": ("core", "secret", True),
    "ConfigMap": ("core", "config_map", True),
    "Service": ("core", "service", True),
    "ServiceAccount": ("core", "service_account", True),
    "PersistentVolumeClaim": ("core", "persistent_volume_claim", True),
    "Pod": ("core", "pod", True),
    "Deployment": ("apps", "deployment", True),
    "Job": ("batch", "job", True),
    "Ingress": ("networking", "ingress", True),
    "NetworkPolicy": ("networking", "network_policy", True),
    "Node": ("core", "node", False),
    "StatefulSet": ("apps", "stateful_set", True),
    "DaemonSet": ("apps", "daemon_set", True),
    "CustomResourceDefinition": ("apiextensions", "custom_resource_definition", False),
    "Role": ("rbac", "role", True),
    "RoleBinding": ("rbac", "role_binding", True),
    "ClusterRole": ("rbac", "cluster_role", False),
    "ClusterRoleBinding": ("rbac", "cluster_role_binding", False),
}

# Kinds served by a CRD: kind -> (group, version, plural, namespaced). Reached through
# CustomObjectsApi; listing one whose CRD is not installed raises NotFound.
_CUSTOM_KINDS: dict[str, tuple[str, str, str, bool]] = {
    "Certificate": ("cert-manager.io", "v1", "certificates", True),
    "ClusterIssuer": ("cert-manager.io", "v1", "clusterissuers", False),
    "Gateway": ("gateway.networking.k8s.io", "v1", "gateways", True),
    "HTTPRoute": ("gateway.networking.k8s.io", "v1", "httproutes", True),
    "GatewayClass": ("gateway.networking.k8s.io", "v1", "gatewayclasses", False),
}

# API requests made through this module, by HTTP method, since the process started (the
# bootstrap benchmark reports them; helm's own requests are not included).
CALLS: Counter[str] = Counter()
_calls_lock = threading.Lock()


class _Retry(urllib3.Retry):
    """urllib3's retries for a dropped keep-alive connection, but none for a timeout: a server
    that did not answer in time has answered (transient, for the task's retries). A 429 or
    503 with ``Retry-After`` is not retried here either (``respect_retry_after_header``
    off): with ``status=0`` urllib3 would turn it into MaxRetryError and lose the header, so
    the task's retry policy could not honour it (found by tests/resilience/test_fault_proxy.py)."""

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if isinstance(error, urllib3.exceptions.TimeoutError):
            raise error.with_traceback(_stacktrace)
        return super().increment(method, url, response, error, _pool, _stacktrace)


def map_api_error(exc: BaseException, what: str) -> VibecodeError:
    """Translate a client exception into our taxonomy. Pure, so it is unit-tested directly."""
    if isinstance(exc, ApiException):
        status = exc.status or 0
        reason = _reason(exc)
        msg = f"{what}: HTTP {status} {reason}".rstrip()
        if status == 404:
            return NotFound(msg)
        if status == 409:
            return Conflict(msg)
        if status in (401, 403):
            return Forbidden(msg)
        if status in (400, 422):
            return Invalid(msg)
        if status == 410:  # a watch or list continuation whose resourceVersion was compacted
            return WatchExpired(msg)
        if status == 429:
            retry_after = None
            headers = exc.headers or {}
            try:
                retry_after = float(headers.get("Retry-After", ""))
            except ValueError:
                pass
            return TooManyRequests(msg, retry_after=retry_after)
        if status >= 500 or status == 0:
            return ServerError(msg)
        return PermanentError(msg)
    if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
        return ServerError(f"{what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, VibecodeError):
        return exc
    return PermanentError(f"{what}: {type(exc).__name__}: {exc}")


def _reason(exc: ApiException) -> str:
    import json

    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason or "")
    except (ValueError, TypeError):
        return str(exc.reason or "")


def watch_error(status: dict, what: str) -> VibecodeError:
    """An ERROR event's Status -> our taxonomy: 410 (expired) and 5xx are transient."""
    code = status.get("code") or 0
    msg = f"{what}: HTTP {code} {status.get('message', 'watch error')}"
    if code == 410 or status.get("reason") in ("Expired", "Gone"):
        return WatchExpired(msg)
    if code >= 500 or code == 429:
        return ServerError(msg)
    return PermanentError(msg)


@contextmanager
def api_errors(what: str) -> Iterator[None]:
    try:
        yield
    except VibecodeError:
        raise
    except Exception as exc:
        raise map_api_error(exc, what) from exc


_READ_RETRY = (ServerError, TooManyRequests)  # what a read retries in place (tasks.core.retrying)


def _timed_out(exc: BaseException) -> bool:
    """A server that did not answer in time has answered: never retried inside the call (each
    call waits one timeout at most; the task's policy retries it)."""
    return isinstance(exc.__cause__, (urllib3.exceptions.TimeoutError, TimeoutError))


def _retrying(label, once, retry_on):
    return retrying(label, once, retry_on, unless=_timed_out)
Items = list[dict]  # the items of a LIST (inside Kube, ``list`` names the method)
LIST_RESTARTS = 3  # a LIST restarted this often after expired continue tokens gives up (transient)


def lean(obj: dict, *, template: str = "keep") -> dict:
    """The object without ``metadata.managedFields`` (server-side apply's bookkeeping, often a
    third of an object, read by none of our decisions). ``template``: what stays of
    ``spec.template``, a Deployment's or Job's pod template and the rest of its bulk:
    ``"keep"`` all of it, ``"requests"`` only each container's name and resource requests
    (what the workspace overview shows), ``"drop"`` nothing. Callers that keep thousands of
    objects fold each page through this before holding it."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = dict(obj, metadata={k: v for k, v in meta.items() if k != "managedFields"})
    spec = obj.get("spec")
    if template != "keep" and isinstance(spec, dict) and "template" in spec:
        rest = {k: v for k, v in spec.items() if k != "template"}
        if template == "requests":
            containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
            rest["template"] = {"spec": {"containers": [
                {"name": c.get("name", ""), "resources": {"requests": (c.get("resources") or {}).get("requests") or {}}}
                for c in containers]}}
        obj = dict(obj, spec=rest)
    return obj


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while listed objects are decoded and folded.

    A page of 500 Deployments decodes into ~150,000 containers; every 700 new ones trigger a
    collection, and the older generations, which hold everything kept from earlier pages, are
    scanned again and again. Measured at 10,000 workspaces: 70% of a listing's CPU went to
    that (a page decoded in 25 ms without, 96 ms with). Decoded JSON and the folds of it hold
    no reference cycles, so reference counting alone frees what is dropped; the collector
    resumes afterwards (and is left alone if someone else had paused it)."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def decode(data: bytes) -> dict:
    """A LIST page's JSON (see :func:`gc_paused`), by orjson: a page of 500 Deployments in
    21 ms instead of the standard library's 32, the same objects (keys are cached, so the
    repeated ones are shared)."""
    with gc_paused():
        return orjson.loads(data)


def _items(body: dict) -> tuple[Items, str, str]:
    """A LIST page's (items, continue token or "", resourceVersion)."""
    meta = body.get("metadata") or {}
    return body.get("items") or [], meta.get("continue") or "", meta.get("resourceVersion") or ""


_CONTINUE = re.compile(rb'"continue":"([^"\\]*)"')


def continue_token(data: bytes) -> str:
    """The continue token of a LIST page's JSON, read off its head without decoding the
    rest: the API server writes the list's ``metadata`` before its ``items``. "" when there
    is none (the last page) or the head is not as expected (then the caller decodes)."""
    head = data[:data.find(b'"items"')] if b'"items"' in data[:4096] else b""
    found = _CONTINUE.search(head)
    return found.group(1).decode("ascii", "replace") if found else ""


def _identity(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    return meta.get("uid") or f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class Kube:
    """A connected client. Build it with :func:`connect`; share it across threads."""

    def __init__(self, api_client: client.ApiClient, request_timeout: float = 30.0, page_size: int = 500):
        self.api_client = api_client
        self.page_size = page_size  # objects per LIST page (settings.kube_list_page_size)
        call_api = api_client.call_api

        def counted(method, *args, **kw):
            with _calls_lock:
                CALLS[str(method).upper()] += 1
            return call_api(method, *args, **kw)

        api_client.call_api = counted  # type: ignore[method-assign]  # counts each request for the benchmarks
        self.request_timeout = request_timeout
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.networking = client.NetworkingV1Api(api_client)
        self.apiextensions = client.ApiextensionsV1Api(api_client)
        self.rbac = client.RbacAuthorizationV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.version = client.VersionApi(api_client)

    # -- plumbing -------------------------------------------------------------
    def _method(self, verb: str, kind: str, subresource: str = ""):
        if kind in _CUSTOM_KINDS:
            return self._custom_method(verb, kind, subresource)
        try:
            group, suffix, namespaced = _KINDS[kind]
        except KeyError:
            raise PermanentError(f"kind {kind!r} is not handled by tasks.cluster.kube") from None
        name = f"{verb}_namespaced_{suffix}" if namespaced else f"{verb}_{suffix}"
        return getattr(getattr(self, group), name + subresource), namespaced

    def _custom_method(self, verb: str, kind: str, subresource: str = ""):
        """The CustomObjectsApi method with (group, version, [namespace,] plural) bound, so it
        takes (name, namespace, body) in the same order as the typed clients' methods."""
        group, version, plural, namespaced = _CUSTOM_KINDS[kind]
        scope = "namespaced" if namespaced else "cluster"
        client_verb = {"read": "get"}.get(verb, verb)  # CustomObjectsApi says get, the typed clients read
        method = getattr(self.custom, f"{client_verb}_{scope}_custom_object{subresource}")

        def call(*args: Any, **kw: Any) -> Any:
            name = args[0] if verb not in ("list", "create") else None
            rest = list(args[1:] if name is not None else args)
            ns = [rest.pop(0)] if namespaced else []
            return method(group, version, *ns, plural, *([name] if name is not None else []), *rest, **kw)

        return call, namespaced

    def _call(self, verb: str, kind: str, namespace: str | None, *, what: str, name: str | None = None,
              body: Any = None, subresource: str = "", **kw: Any) -> Any:
        """Call ``<verb>[_namespaced]_<kind>``; the client's positional order is always
        (name, namespace, body), each present only where the verb takes it."""
        method, namespaced = self._method(verb, kind, subresource)
        if namespaced and not namespace:
            raise PermanentError(f"{what}: {kind} needs a namespace")
        args = [a for a in (name, namespace if namespaced else None, body) if a is not None]

        def once():
            with api_errors(what):
                return method(*args, _request_timeout=self.request_timeout, **kw)

        # In place (tasks.core.retrying): a read on any transient failure, a write only when the
        # server refused it unprocessed (429); a write's 5xx or reset may have been done, and goes
        # to the task's retry policy, whose steps are written to be repeated.
        retry_on = _READ_RETRY if verb in ("read", "list") else (TooManyRequests,)
        result = _retrying(f"kube {verb}", once, retry_on)
        return self.api_client.sanitize_for_serialization(result) if result is not None else None

    # -- verbs ----------------------------------------------------------------
    def server_version(self) -> str:
        with api_errors("get server version"):
            return self.version.get_code(_request_timeout=self.request_timeout).git_version

    def get(self, kind: str, namespace: str | None, name: str) -> dict | None:
        """The object, or ``None`` when it does not exist."""
        try:
            return self._call("read", kind, namespace, name=name, what=f"get {kind} {namespace}/{name}")
        except NotFound:
            return None

    # -- LIST, one page at a time ------------------------------------------------
    def _lister(self, kind: str, namespace: str | None, all_namespaces: bool, what: str):
        """(the client's list method, its positional arguments) for one namespace or all."""
        if all_namespaces:
            if kind in _CUSTOM_KINDS:
                group, version, plural, _ = _CUSTOM_KINDS[kind]
                return self.custom.list_cluster_custom_object, [group, version, plural]
            group_attr, suffix, namespaced = _KINDS[kind]
            name = f"list_{suffix}_for_all_namespaces" if namespaced else f"list_{suffix}"
            return getattr(getattr(self, group_attr), name), []
        method, namespaced = self._method("list", kind)
        if namespaced and not namespace:
            raise PermanentError(f"{what}: {kind} needs a namespace")
        return method, [namespace] if namespaced else []

    def _page(self, method, args: list, kw: dict, raw: bool, what: str, token: str) -> tuple[Items, str, str]:
        """One page: (items, the continue token or "", the list's resourceVersion)."""
        if raw:
            return _items(decode(self._fetch(method, args, kw, what, token)))
        kw = dict(kw, limit=self.page_size, **({"_continue": token} if token else {}))

        def once() -> dict:
            with api_errors(what):
                return self.api_client.sanitize_for_serialization(
                    method(*args, _request_timeout=self.request_timeout, **kw))

        return _items(_retrying("kube list", once, _READ_RETRY))  # a page is a read: retried in place

    def _fetch(self, method, args: list, kw: dict, what: str, token: str) -> bytes:
        """One page's JSON as sent (building client models for 1,000 objects costs seconds),
        retried in place: a page is a read."""
        kw = dict(kw, limit=self.page_size, **({"_continue": token} if token else {}))

        def once() -> bytes:
            with api_errors(what):
                return method(*args, _preload_content=False, _request_timeout=self.request_timeout, **kw).data

        return _retrying("kube list", once, _READ_RETRY)

    def _collect(self, kind: str, namespace: str | None, selector: str | None, *, raw: bool,
                 all_namespaces: bool = False) -> tuple[Items, str]:
        """Every page of one LIST: (items, resourceVersion). A continue token that expired
        (410: etcd compacted the list's revision) restarts the whole list, so the result is
        one consistent snapshot whose resourceVersion a watch can resume from."""
        what = f"list {kind} in {'all namespaces' if all_namespaces else namespace} ({selector})"
        method, args = self._lister(kind, namespace, all_namespaces, what)
        kw = {"label_selector": selector} if selector else {}
        for attempt in range(LIST_RESTARTS + 1):
            items, token, version = self._page(method, args, kw, raw, what, "")
            try:
                while token:
                    more, token, _ = self._page(method, args, kw, raw, what, token)
                    items.extend(more)
                return items, version
            except WatchExpired:
                if attempt == LIST_RESTARTS:
                    raise
                with _calls_lock:
                    CALLS["LIST_RESTART"] += 1
        raise AssertionError("unreachable")

    def pages(self, kind: str, namespace: str | None, selector: str | None = None, *, raw: bool = True,
              all_namespaces: bool = False, ahead: bool = True) -> Iterator[Items]:
        """The LIST's pages as they arrive (``settings.kube_list_page_size`` objects each), for
        callers that fold each page into a smaller result and drop it: memory then follows the
        result, not the fleet.

        An expired continue token (410) restarts the list from the first page; objects already
        yielded (by uid) are not yielded again, so each object is seen once. The pages after a
        restart come from a newer snapshot than the ones before it: a caller that needs one
        consistent snapshot (to watch from its resourceVersion) uses :meth:`list`.

        ``ahead``: raw pages are read one ahead of the caller (see below); a caller that runs
        several LISTs at once keeps the API server busy already, and saves the page held ahead."""
        what = f"list {kind} in {'all namespaces' if all_namespaces else namespace} ({selector}), paged"
        method, args = self._lister(kind, namespace, all_namespaces, what)
        kw = {"label_selector": selector} if selector else {}
        seen: set[str] = set()
        token, restarts = "", 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kube-page") as reader:
            # Raw pages are pipelined: the next one is asked for as soon as this one's continue
            # token is read off its head, so the API server prepares it while this is decoded
            # and folded (at 10,000 workspaces the two took turns on the cores before).
            pipelined = raw and ahead
            upcoming = reader.submit(self._fetch, method, args, kw, what, token) if pipelined else None
            while True:
                try:
                    if not pipelined:
                        items, token, _ = self._page(method, args, kw, raw, what, token)
                    else:
                        data = upcoming.result()  # type: ignore[union-attr]
                        peeked, upcoming = continue_token(data), None
                        if peeked:
                            upcoming = reader.submit(self._fetch, method, args, kw, what, peeked)
                        items, token, _ = _items(decode(data))
                        if token != peeked:  # never seen: the head did not say what the body does
                            if upcoming is not None:
                                upcoming.cancel()
                            upcoming = reader.submit(self._fetch, method, args, kw, what, token) if token else None
                except WatchExpired:
                    if not token or restarts == LIST_RESTARTS:
                        raise
                    restarts, token = restarts + 1, ""
                    with _calls_lock:
                        CALLS["LIST_RESTART"] += 1
                    upcoming = reader.submit(self._fetch, method, args, kw, what, token) if pipelined else None
                    continue
                fresh = [i for i in items if _identity(i) not in seen] if restarts else items
                seen.update(_identity(i) for i in items)
                if fresh:
                    yield fresh
                if not token:
                    return

    def list(self, kind: str, namespace: str | None, selector: str | None = None, *, raw: bool = False) -> Items:
        """Every object of ``kind`` in ``namespace`` matching the label selector, read in pages;
        callers act on the result instead of N GETs.

        ``raw``: the items as the API server sent them (timestamps keep their ``Z``), without
        building client models first, which costs seconds for a thousand objects."""
        return self._collect(kind, namespace, selector, raw=raw)[0]

    def list_all(self, kind: str, selector: str | None = None) -> Items:
        """Every object across every namespace (or of a cluster-scoped kind), read in pages."""
        return self._collect(kind, None, selector, raw=True, all_namespaces=True)[0]

    def ping(self) -> float:
        """Seconds for one cheap round trip (GET /version): the API server's latency."""
        import time

        started = time.perf_counter()
        self.server_version()
        return time.perf_counter() - started

    def list_json(self, kind: str, namespace: str | None, selector: str | None = None) -> Items:
        """:meth:`list`, with the items as the API server sent them: the client's model round trip
        costs milliseconds per object, seconds for a thousand Deployments. Times stay RFC 3339
        strings, as in the API."""
        return self._collect(kind, namespace, selector, raw=True)[0]

    def list_watch(self, kind: str, namespace: str | None, selector: str | None = None,
                   timeout_seconds: int = 10, resource_version: str | None = None) -> Iterator[tuple[str, Any]]:
        """An informer's core: one LIST, then a WATCH from its resourceVersion.

        Yields ``("SYNC", items)`` first, then ``(ADDED|MODIFIED|DELETED, object)`` until the
        server ends the watch after ``timeout_seconds``; callers loop to resume. Waiting on
        events instead of polling notices a finished Job at once and costs one request.
        With ``resource_version`` there is no LIST: the watch resumes from there.

        A watch that expired (410 Gone: its version was compacted) raises :class:`WatchExpired`,
        a broken one :class:`ServerError`; both are transient, and the caller re-lists.
        """
        from kubernetes import watch

        method, namespaced = self._method("list", kind)
        args = [namespace] if namespaced else []
        kw = {"label_selector": selector} if selector else {}
        what = f"watch {kind} in {namespace} ({selector})"
        if resource_version is None:  # raw JSON, as the events are: models cost seconds per 1,000 Jobs
            items, resource_version = self._collect(kind, namespace, selector, raw=True)
            yield "SYNC", items
        # The raw event stream, not kubernetes.watch.Watch: that helper ends the stream
        # silently on a 410 Gone when a timeout is set, which would hide an expired watch.
        with api_errors(what):
            resp = method(*args, watch=True, resource_version=resource_version, timeout_seconds=timeout_seconds,
                          _preload_content=False,
                          _request_timeout=(self.request_timeout, timeout_seconds + self.request_timeout), **kw)
        try:
            lines = watch.watch.iter_resp_lines(resp)
            while True:
                with api_errors(what):
                    line = next(lines, None)
                if line is None:
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    raise watch_error(event.get("object") or {}, what)
                yield event["type"], event["object"]
        finally:
            resp.close()
            resp.release_conn()

    def create(self, manifest: dict, exist_ok: bool = True, dry_run: bool = False) -> dict:
        """Create; with ``exist_ok`` a 409 returns the existing object (idempotent create).

        ``dry_run``: the API server validates, defaults and admits the object (server-side
        dry run) and stores nothing; the object it would have stored is returned."""
        kind, meta = manifest["kind"], manifest["metadata"]
        ns, name = meta.get("namespace"), meta.get("name") or meta.get("generateName")
        if dry_run:
            return self._call("create", kind, ns, body=manifest, what=f"dry-run create {kind} {ns}/{name}",
                              dry_run="All")
        try:
            return self._call("create", kind, ns, body=manifest, what=f"create {kind} {ns}/{name}")
        except Conflict:
            if not exist_ok:
                raise
            existing = self.get(kind, ns, name)
            if existing is None:  # deleted between our create and read: let the caller retry
                raise
            return existing

    def replace(self, manifest: dict) -> dict:
        """Replace guarded by ``metadata.resourceVersion``: a moved version raises ``Conflict``."""
        kind, meta = manifest["kind"], manifest["metadata"]
        ns, name = meta.get("namespace"), meta["name"]
        return self._call("replace", kind, ns, name=name, body=manifest, what=f"replace {kind} {ns}/{name}")

    def patch(self, kind: str, namespace: str | None, name: str, patch: dict) -> dict:
        """Strategic-merge patch (JSON merge for dict-only changes such as annotations)."""
        return self._call("patch", kind, namespace, name=name, body=patch, what=f"patch {kind} {namespace}/{name}")

    def patch_status(self, kind: str, namespace: str, name: str, status: dict) -> dict:
        """Write the status subresource: what a controller or kubelet does (tests play them)."""
        return self._call("patch", kind, namespace, name=name, body={"status": status}, subresource="_status",
                          what=f"patch status {kind} {namespace}/{name}")

    def delete(self, kind: str, namespace: str | None, name: str, propagation: str = "Background",
               resource_version: str | None = None) -> bool:
        """Delete; returns ``False`` if it was already gone (idempotent delete). With
        ``resource_version`` only that version is deleted: one changed since (a restore guard
        set on it) raises ``Conflict``."""
        what = f"delete {kind} {namespace}/{name}"
        if resource_version is None:
            try:
                self._call("delete", kind, namespace, name=name, what=what, propagation_policy=propagation)
                return True
            except NotFound:
                return False
        method, namespaced = self._method("delete", kind)
        args = [name, *([namespace] if namespaced else [])]
        try:
            with api_errors(what):
                method(*args, body={"preconditions": {"resourceVersion": resource_version}},
                       propagation_policy=propagation, _request_timeout=self.request_timeout)
            return True
        except NotFound:
            return False

    def service_account_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        """A bound token of the ServiceAccount (TokenRequest, GA since 1.20: no token Secret and
        no token controller needed), for running as that identity."""
        body = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=[], expiration_seconds=seconds))
        with api_errors(f"token for ServiceAccount {namespace}/{name}"):
            status = self.core.create_namespaced_service_account_token(name, namespace, body).status
        if status is None or not status.token:
            raise PermanentError(f"token for ServiceAccount {namespace}/{name}: the API server returned none")
        return str(status.token)

    def annotate(self, kind: str, namespace: str, name: str, annotations: Mapping[str, str | None]) -> dict:
        """Set (or with ``None`` remove) annotations without touching anything else."""
        return self.patch(kind, namespace, name, {"metadata": {"annotations": dict(annotations)}})

    def scale(self, namespace: str, deployment: str, replicas: int) -> dict:
        return self.patch("Deployment", namespace, deployment, {"spec": {"replicas": replicas}})


_lock = threading.Lock()
_cache: dict[tuple, Kube] = {}


def connect(settings: Settings | None = None) -> Kube:
    """In-cluster config first (flows running as a Pod), then kubeconfig/context from settings."""
    s = settings or get_settings()
    key = (str(s.kubeconfig or ""), s.kube_context or "", s.kube_concurrency, s.kube_request_timeout_seconds,
           s.kube_list_page_size)
    with _lock:
        if key in _cache:
            return _cache[key]
        cfg = client.Configuration()
        try:
            if s.kubeconfig:
                raise ConfigException("explicit kubeconfig wins")
            config.load_incluster_config(client_configuration=cfg)
        except ConfigException:
            with api_errors("load kubeconfig"):
                config.load_kube_config(config_file=str(s.kubeconfig) if s.kubeconfig else None,
                                        context=s.kube_context, client_configuration=cfg)
        cfg.connection_pool_maxsize = max(4, s.kube_concurrency)
        cfg.retries = _Retry(total=3, redirect=0, status=0, respect_retry_after_header=False)
        kube = Kube(client.ApiClient(cfg), s.kube_request_timeout_seconds, s.kube_list_page_size)
        _cache[key] = kube
        return kube


def reset_connections() -> None:
    """Forget cached clients (tests switch API servers; settings may change)."""
    with _lock:
        _cache.clear()
