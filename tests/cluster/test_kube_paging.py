"""Paged LISTs against the real API server: every read pages, an expired continue token restarts.

The continue tokens are expired for real: kube-apiserver v1.20.2 serves a continuation from
etcd at the first page's revision, and answers 410 Gone ("continue parameter is too old")
only once etcd has compacted that revision. So these tests compact the fixture's own etcd
(its v3 JSON gateway, ``/v3/kv/compaction``, what ``etcdctl compact`` sends over gRPC)
between two pages; nothing stands in for the API server or its answer.
"""

from __future__ import annotations

import base64
import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from tasks.cluster import kube as kube_adapter

LABEL = "vibecode.dev/paging-test"


def _make(kube, ns: str, n: int, value: str) -> set[str]:
    def one(i: int) -> str:
        name = f"cm-{i:04d}"
        kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": name, "namespace": ns, "labels": {LABEL: value}}, "data": {"i": str(i)}})
        return name

    with ThreadPoolExecutor(max_workers=8) as pool:
        return set(pool.map(one, range(n)))


def compact_etcd(kube, etcd_url: str, ns: str) -> int:
    """Write once (so the revision moves past the list's), then compact etcd to its newest
    revision, physically: every continue token issued before is now expired."""
    kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"generateName": "revision-bump-", "namespace": ns}})
    rev = int(httpx.post(f"{etcd_url}/v3/kv/range", json={"key": base64.b64encode(b"/").decode()},
                         timeout=10).json()["header"]["revision"])
    r = httpx.post(f"{etcd_url}/v3/kv/compaction", json={"revision": rev, "physical": True}, timeout=30)
    r.raise_for_status()
    return rev


def _requests() -> int:
    return kube_adapter.CALLS["GET"]


def test_every_list_form_reads_in_pages_of_the_setting(kube, namespace, monkeypatch):
    """250 objects at 7 per page: each form makes ceil(250/7) = 36 requests and returns each
    object once; one unpaginated LIST would have been one request."""
    names = _make(kube, namespace, 250, "many")
    monkeypatch.setattr(kube, "page_size", 7)
    pages = math.ceil(250 / 7)
    sel = f"{LABEL}=many"
    forms = {
        "list": lambda: kube.list("ConfigMap", namespace, sel),
        "list raw": lambda: kube.list("ConfigMap", namespace, sel, raw=True),
        "list_json": lambda: kube.list_json("ConfigMap", namespace, sel),
        "list_all": lambda: [c for c in kube.list_all("ConfigMap", sel) if c["metadata"]["namespace"] == namespace],
        "pages": lambda: [c for page in kube.pages("ConfigMap", namespace, sel) for c in page],
    }
    for form, read in forms.items():
        before = _requests()
        items = read()
        made = _requests() - before
        seen = Counter(c["metadata"]["name"] for c in items)
        assert set(seen) == names and set(seen.values()) == {1}, form
        assert made == pages, f"{form}: {made} requests, expected {pages}"


def test_page_size_is_a_setting(apiserver, monkeypatch):
    monkeypatch.setenv("VIBECODE_KUBE_LIST_PAGE_SIZE", "42")
    from tasks.core.settings import get_settings

    get_settings.cache_clear()
    try:
        assert kube_adapter.connect().page_size == 42
    finally:
        get_settings.cache_clear()


def test_pages_are_read_one_ahead_of_the_caller_and_no_further(kube, namespace, monkeypatch):
    """The iterator form asks for the next page as soon as it holds one (the API server
    prepares it while the caller folds this one), and never for two ahead."""
    import time

    _make(kube, namespace, 30, "lazy")
    monkeypatch.setattr(kube, "page_size", 10)
    before = _requests()
    pages = kube.pages("ConfigMap", namespace, f"{LABEL}=lazy")
    first = next(pages)
    deadline = time.monotonic() + 10
    while _requests() - before < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(first) == 10 and _requests() - before == 2  # the second page asked for, not yet taken
    time.sleep(0.3)
    assert _requests() - before == 2  # and not the third
    assert sum(len(p) for p in pages) == 20 and _requests() - before == 3

    before = _requests()  # ahead=False (a caller running several LISTs at once): only when wanted
    pages = kube.pages("ConfigMap", namespace, f"{LABEL}=lazy", ahead=False)
    assert len(next(pages)) == 10
    time.sleep(0.3)
    assert _requests() - before == 1
    assert sum(len(p) for p in pages) == 20 and _requests() - before == 3


def test_the_continue_token_is_read_off_a_pages_head():
    from tasks.cluster.kube import continue_token

    page = (b'{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"77","continue":"eyJ2IjoibWV0YS5r'
            b'OHMuaW8vdjEifQ","remainingItemCount":3},"items":[{"metadata":{"annotations":{"continue":"x"}}}]}')
    assert continue_token(page) == "eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ"
    last = b'{"kind":"ConfigMapList","metadata":{"resourceVersion":"77"},"items":[{"data":{"continue":"not me"}}]}'
    assert continue_token(last) == ""  # an item's own "continue" is never taken for the list's
    assert continue_token(b'{"items":[]}') == ""
    assert continue_token(b"not json at all") == ""  # then the caller decodes and uses the body's


def test_expired_continue_token_restarts_the_pages_and_sees_every_object_once(kube, apiserver, namespace,
                                                                             monkeypatch):
    """Real expiry (etcd compacted between page 1 and page 2): the API server answers 410, the
    iterator restarts from the first page and skips the objects it already handed over."""
    names = _make(kube, namespace, 60, "expire")
    monkeypatch.setattr(kube, "page_size", 10)
    restarts = kube_adapter.CALLS["LIST_RESTART"]
    pages = kube.pages("ConfigMap", namespace, f"{LABEL}=expire")
    seen = Counter(c["metadata"]["name"] for c in next(pages))
    compact_etcd(kube, apiserver.etcd_url, namespace)
    for page in pages:
        seen.update(c["metadata"]["name"] for c in page)
    assert kube_adapter.CALLS["LIST_RESTART"] - restarts == 1, "the 410 did not happen: nothing was tested"
    assert set(seen) == names and set(seen.values()) == {1}


def test_expired_continue_token_restarts_the_list_as_one_snapshot(kube, apiserver, namespace, monkeypatch):
    """The list form discards what it had and reads again from the first page: each object once,
    and a resourceVersion a watch can resume from (list_watch's SYNC)."""
    names = _make(kube, namespace, 45, "snapshot")
    monkeypatch.setattr(kube, "page_size", 10)
    real_page, calls = kube._page, []

    def page_then_compact(*args, **kw):
        out = real_page(*args, **kw)
        calls.append(args[-1])  # the continue token asked with
        if len(calls) == 2:  # after the second page: the third continuation is expired
            compact_etcd(kube, apiserver.etcd_url, namespace)
        return out

    monkeypatch.setattr(kube, "_page", page_then_compact)
    restarts = kube_adapter.CALLS["LIST_RESTART"]
    kind, items = next(iter(kube.list_watch("ConfigMap", namespace, f"{LABEL}=snapshot", timeout_seconds=1)))
    assert kube_adapter.CALLS["LIST_RESTART"] - restarts == 1, "the 410 did not happen: nothing was tested"
    seen = Counter(c["metadata"]["name"] for c in items)
    assert kind == "SYNC" and set(seen) == names and set(seen.values()) == {1}
    assert calls[:2] == ["", calls[1]] and calls[1] and calls[2] == "", \
        "the restart begins again without a continue token"
