"""Read code-server's ``/healthz`` without renewing its heartbeat.

code-server beats on every request except exactly ``/healthz`` and keeps beating while
any TCP connection to it is open. So each probe opens its own connection, asks for
exactly ``/healthz`` with ``Connection: close`` and reads to the end of the closed
connection: no pool, no keep-alive, no query string. The request is written as bytes
because that is all a probe needs.

Probes run on one asyncio event loop inside one caller (not one Prefect task each), at most
``concurrency`` in flight. A loop, not threads: at 10,000 workspaces 200 threads spent 430 µs
of CPU per probe contending for the GIL, the loop a fraction of that
(benchmarks/scale_bench.py). Names are resolved on a pool as wide as the concurrency, since
the loop's default one (a handful of threads) would queue every workspace's DNS lookup.
A probe that fails for any reason is a failed :class:`~tasks.reaper.decide.Probe`, never an
exception: the reaper must treat it as "unknown".
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Coroutine
from urllib.parse import urlsplit

from tasks.reaper.decide import Probe, parse_healthz

MAX_RESPONSE = 16384  # a /healthz answer is ~200 bytes with its headers


def request_bytes(url: str) -> bytes:
    """The whole request: nothing but ``GET <path>/healthz`` and ``Connection: close``."""
    parts = urlsplit(url)
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


def _refusal(url: str) -> Probe | None:
    parts = urlsplit(url)
    if parts.query or parts.fragment or not parts.path.endswith("/healthz") or not parts.hostname:
        return Probe(False, error="refusing to probe anything but .../healthz without a query")
    return None


async def _exchange(url: str) -> Probe:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return await _exchange_tls(url)
    loop = asyncio.get_running_loop()
    host, port = parts.hostname or "", parts.port or 80
    try:  # an address as it is; a name through the resolver pool
        ip = ipaddress.ip_address(host)
        family, kind, proto = (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), socket.SOCK_STREAM, 0
        address: tuple = (host, port)
    except ValueError:
        family, kind, proto, _, address = (await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))[0]
    with socket.socket(family, kind, proto) as sock:  # plain sockets: a third of the CPU of streams
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
        await loop.sock_sendall(sock, request_bytes(url))
        chunks, size = [], 0
        while size <= MAX_RESPONSE:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    return _answer(chunks, size)


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
    """One probe on its own connection, closed afterwards; ``timeout`` bounds the whole probe."""
    refused = _refusal(url)
    if refused is not None:
        return refused
    try:
        return await asyncio.wait_for(_exchange(url), timeout)
    except (TimeoutError, asyncio.TimeoutError):
        return Probe(False, error="TimeoutError: timed out")
    except (OSError, ssl.SSLError, EOFError) as exc:
        return Probe(False, error=f"{type(exc).__name__}: {exc}"[:200])


async def _probe_many(urls: dict[str, str], concurrency: int, timeout: float) -> dict[str, Probe]:
    loop = asyncio.get_running_loop()
    resolver = ThreadPoolExecutor(max_workers=max(1, min(concurrency, 64)), thread_name_prefix="probe-dns")
    loop.set_default_executor(resolver)  # getaddrinfo of each workspace's Service name
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


def probe_one(url: str, timeout: float) -> Probe:
    """One probe (see :func:`probe_all`)."""
    return _run(_probe(url, timeout))


def probe_all(urls: dict[str, str], concurrency: int, timeout: float) -> dict[str, Probe]:
    """username -> Probe, with at most ``concurrency`` probes in flight."""
    if not urls:
        return {}
    return _run(_probe_many(urls, max(1, concurrency), timeout))
