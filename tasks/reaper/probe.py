"""Read code-server's ``/healthz`` without renewing its heartbeat.

code-server beats on every request except exactly ``/healthz`` and keeps beating while
any TCP connection to it is open. So each probe opens its own connection, asks for
exactly ``/healthz`` with ``Connection: close`` and reads to the end of the closed
connection: no pool, no keep-alive, no query string. The request is written as bytes
because that is all a probe needs.

Probes run inside one caller (not one Prefect task each), at most ``concurrency`` in flight,
on one selector loop of our own (:func:`_probe_plain`): non-blocking sockets, nothing else.
Measured at 10,000 workspaces (benchmarks/scale_bench.py): 200 threads spent 430 µs of CPU
per probe contending for the GIL, asyncio's loop 420 µs, this loop a fraction of that. Names
(each workspace's Service) are resolved on a pool as wide as the concurrency, as they come.
https, which an in-cluster Service does not need, runs on asyncio.
A probe that fails for any reason is a failed :class:`~tasks.reaper.decide.Probe`, never an
exception: the reaper must treat it as "unknown".
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import queue
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Coroutine
from urllib.parse import SplitResult, urlsplit

from tasks.reaper.decide import Probe, parse_healthz

MAX_RESPONSE = 16384  # a /healthz answer is ~200 bytes with its headers


def request_bytes(url: str) -> bytes:
    """The whole request: nothing but ``GET <path>/healthz`` and ``Connection: close``."""
    return _request(urlsplit(url))


def _request(parts: SplitResult) -> bytes:
    return (f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc.rsplit('@', 1)[-1]}\r\n"
            f"Accept: application/json\r\nConnection: close\r\n\r\n").encode("ascii")


def parse_response(data: bytes) -> Probe:
    """An HTTP/1.1 response read to the end of a closed connection (Content-Length, chunked or
    neither)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if not sep or len(status) < 2 or not status[0].startswith(b"HTTP/1.") or not status[1].isdigit():
        return Probe(False, error="not an HTTP response")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        out, rest = b"", body
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            try:
                n = int(size_line.split(b";")[0], 16)
            except ValueError:
                return Probe(False, error="bad chunked encoding")
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    elif headers.get(b"content-length", b"").isdigit():
        body = body[:int(headers[b"content-length"])]
    return parse_healthz(int(status[1]), body)


def _refusal(parts: SplitResult) -> Probe | None:
    if parts.query or parts.fragment or not parts.path.endswith("/healthz") or not parts.hostname:
        return Probe(False, error="refusing to probe anything but .../healthz without a query")
    return None


async def _exchange_tls(url: str) -> Probe:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 443, ssl=ssl.create_default_context())
    try:
        writer.write(request_bytes(url))
        chunks, size = [], 0
        while size <= MAX_RESPONSE:
            chunk = await reader.read(4096)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        writer.close()
    return _answer(chunks, size)


def _answer(chunks: list[bytes], size: int) -> Probe:
    if size > MAX_RESPONSE:
        return Probe(False, error="response too large for /healthz")
    return parse_response(b"".join(chunks))


async def _probe(url: str, timeout: float) -> Probe:
    """One https probe on its own connection, closed afterwards; ``timeout`` bounds the whole probe."""
    try:
        return await asyncio.wait_for(_exchange_tls(url), timeout)
    except (TimeoutError, asyncio.TimeoutError):
        return Probe(False, error="TimeoutError: timed out")
    except (OSError, ssl.SSLError, EOFError) as exc:
        return Probe(False, error=f"{type(exc).__name__}: {exc}"[:200])


async def _probe_many_tls(urls: dict[str, str], concurrency: int, timeout: float) -> dict[str, Probe]:
    gate = asyncio.Semaphore(concurrency)

    async def one(url: str) -> Probe:
        async with gate:
            return await _probe(url, timeout)

    users = list(urls)
    results = await asyncio.gather(*(one(urls[u]) for u in users))
    return dict(zip(users, results, strict=True))


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """The coroutine on a loop of its own; in a thread of its own when this one runs a loop already."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["out"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="probe-loop")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["out"]


class _Conn:
    """One plain-http probe in flight: a non-blocking socket, connecting, then reading."""

    __slots__ = ("user", "sock", "request", "chunks", "size", "deadline", "connected", "done")

    def __init__(self, user: str, sock: socket.socket, request: bytes, deadline: float):
        self.user, self.sock, self.request, self.deadline = user, sock, request, deadline
        self.chunks: list[bytes] = []
        self.size, self.connected, self.done = 0, False, False


def _address(host: str, port: int) -> tuple[int, tuple] | None:
    """(family, address) of an IP literal; None for a name (resolved on the pool)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), (host, port)


def _failure(exc: BaseException) -> Probe:
    return Probe(False, error=f"{type(exc).__name__}: {exc}"[:200])


TIMED_OUT = Probe(False, error="TimeoutError: timed out")


class Prober:
    """Probes started as URLs are added, on a thread of their own, and their answers when
    :meth:`results` is called: the reaper adds each running workspace as its Deployment's page
    arrives, so the probes run while the rest of the fleet is still being read.

    Plain http (a workspace Service, the usual case) runs on one selector (epoll) loop of our
    own: non-blocking connect, send, read to the close; at most ``concurrency`` connections
    open; each bounded by ``timeout`` from the start of its name lookup (or of its connection,
    for an address). Not asyncio's loop: at 10,000 workspaces its streams and futures cost
    0.42 ms of CPU per probe, this loop a fraction of it (benchmarks/scale_bench.py), and the
    probes share the cores with the listing and the API server. https runs on asyncio when
    the results are asked for. A probe that fails for any reason is a failed Probe."""

    def __init__(self, concurrency: int, timeout: float):
        self.concurrency, self.timeout = max(1, concurrency), timeout
        self._out: dict[str, Probe] = {}  # the loop's (plain http)
        self._refused: dict[str, Probe] = {}
        self._tls: dict[str, str] = {}
        self._order: list[str] = []
        self._incoming: queue.SimpleQueue = queue.SimpleQueue()  # (user, request, family, address) or None: no more
        self._waker_r, self._waker_w = socket.socketpair()
        self._waker_r.setblocking(False)
        self._waker_w.setblocking(False)
        self._plain = 0  # plain-http probes added
        self._addresses: dict[tuple[str, int], tuple[int, tuple] | None] = {}
        self._wake_pending = False
        self._lookups = ThreadPoolExecutor(max_workers=min(self.concurrency, 64), thread_name_prefix="probe-dns")
        self._resolving: dict[str, float] = {}  # user -> when its lookup started (written by the pool)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run_loop, name="probe-loop", daemon=True)
        self._thread.start()

    def add(self, user: str, url: str) -> None:
        self._order.append(user)
        parts = urlsplit(url)
        refused = _refusal(parts)
        if refused is not None:
            self._refused[user] = refused
            return
        if parts.scheme == "https":
            self._tls[user] = url
            return
        self._plain += 1
        host, port = parts.hostname or "", parts.port or 80
        if (host, port) not in self._addresses:  # one parse per host: the stand-ins share one
            self._addresses[(host, port)] = _address(host, port)
        known = self._addresses[(host, port)]
        if known is None:
            self._lookups.submit(self._resolve, user, _request(parts), host, port)
        else:
            self._give((user, _request(parts), *known))

    def results(self) -> dict[str, Probe]:
        """username -> Probe for every URL added, once all have answered or timed out."""
        self._give(None)
        self._thread.join()
        self._lookups.shutdown(wait=False, cancel_futures=True)
        self._waker_r.close()
        self._waker_w.close()
        if self._error is not None:
            raise self._error
        done = {**self._out, **self._refused}
        if self._tls:
            done.update(_run(_probe_many_tls(self._tls, self.concurrency, self.timeout)))
        return {u: done[u] for u in self._order}

    # -- the thread's side ---------------------------------------------------------------
    def _give(self, item) -> None:
        """Hand an item to the loop; wake it only if no wake-up is pending (a syscall per
        workspace cost 30 µs). The loop reads the wake-ups, then clears the flag, then drains
        the queue; the item is queued before the flag is read. So an item either finds the flag
        clear and wakes the loop, or finds it set before the loop cleared it, and then the
        loop's drain, which comes after, takes it."""
        self._incoming.put(item)
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            self._waker_w.send(b"\0")
        except OSError:  # the buffer is full (a wake-up is pending anyway), or the loop has ended
            pass

    def _resolve(self, user: str, request: bytes, host: str, port: int) -> None:
        self._resolving[user] = time.monotonic()
        item: tuple
        try:
            family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
            item = (user, request, family, address)
        except OSError as exc:
            item = (user, request, 0, exc)
        finally:
            self._resolving.pop(user, None)
        self._give(item)

    def _run_loop(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            self._error = exc

    def _loop(self) -> None:
        out, sel, timeout = self._out, selectors.DefaultSelector(), self.timeout
        sel.register(self._waker_r, selectors.EVENT_READ, None)
        ready: deque = deque()
        flight: deque[_Conn] = deque()  # in start order, so their deadlines are in order too
        active, closed, next_lookup_check = 0, False, 0.0

        def finish(conn: _Conn, probe: Probe) -> None:
            nonlocal active
            if conn.done:
                return
            conn.done, active = True, active - 1
            sel.unregister(conn.sock)
            conn.sock.close()
            out.setdefault(conn.user, probe)

        def start(user: str, request: bytes, family: int, address) -> None:
            nonlocal active
            if isinstance(address, BaseException):
                out.setdefault(user, _failure(address))
                return
            if user in out:  # its lookup outlived the timeout
                return
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            err = sock.connect_ex(address)
            if err not in (0, errno.EINPROGRESS):
                sock.close()
                out[user] = _failure(OSError(err, os.strerror(err)))
                return
            conn = _Conn(user, sock, request, time.monotonic() + timeout)
            sel.register(sock, selectors.EVENT_WRITE, conn)
            flight.append(conn)
            active += 1

        def on_event(conn: _Conn) -> None:
            sock = conn.sock
            if not conn.connected:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    return finish(conn, _failure(OSError(err, os.strerror(err))))
                conn.connected = True
            try:
                if conn.request:
                    conn.request = conn.request[sock.send(conn.request):]
                    if not conn.request:
                        sel.modify(sock, selectors.EVENT_READ, conn)
                    return None
                chunk = sock.recv(4096)
            except BlockingIOError:
                return None
            except OSError as exc:
                return finish(conn, _failure(exc))
            if chunk:
                conn.chunks.append(chunk)
                conn.size += len(chunk)
                if conn.size <= MAX_RESPONSE:
                    return None
            return finish(conn, _answer(conn.chunks, conn.size))

        try:
            while not closed or len(out) < self._plain:  # the count is final once "no more" is read
                while active < self.concurrency and ready:
                    start(*ready.popleft())
                now = time.monotonic()
                while flight and (flight[0].done or flight[0].deadline <= now):
                    finish(flight.popleft(), TIMED_OUT)
                if self._resolving and now >= next_lookup_check:  # a hanging lookup: timed out, its answer ignored
                    for user, began in list(self._resolving.items()):
                        if now - began > timeout:
                            out.setdefault(user, TIMED_OUT)
                    next_lookup_check = now + 0.05
                if closed and len(out) >= self._plain:
                    break
                wait = 0.05 if self._resolving else (flight[0].deadline - now if flight else None)
                for key, _ in sel.select(None if wait is None else max(0.0, wait)):
                    if key.data is not None:
                        on_event(key.data)
                        continue
                    try:  # added, or resolved
                        while self._waker_r.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                    self._wake_pending = False  # after the wake-ups are read, before the queue: see _give
                    while True:
                        try:
                            item = self._incoming.get_nowait()
                        except queue.Empty:
                            break
                        if item is None:
                            closed = True
                        else:
                            ready.append(item)
        finally:
            for conn in flight:
                if not conn.done:
                    conn.sock.close()
            sel.close()


def probe_one(url: str, timeout: float) -> Probe:
    """One probe (see :class:`Prober`)."""
    return probe_all({"": url}, 1, timeout)[""]


def probe_all(urls: dict[str, str], concurrency: int, timeout: float) -> dict[str, Probe]:
    """username -> Probe, with at most ``concurrency`` probes in flight (see :class:`Prober`)."""
    if not urls:
        return {}
    prober = Prober(concurrency, timeout)
    for user, url in urls.items():
        prober.add(user, url)
    return prober.results()
