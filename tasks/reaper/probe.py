"""Read code-server's ``/healthz`` without renewing its heartbeat.

code-server beats on every request except exactly ``/healthz`` and keeps beating while
any TCP connection to it is open. So each probe opens its own connection, asks for
exactly ``/healthz`` with ``Connection: close`` and reads to the end of the closed
connection: no pool, no keep-alive, no query string. The request is written as bytes on a
plain socket because that is all a probe needs, and it costs half the CPU of http.client's
header parsing (1,000 probes in one run). Probes run on a bounded thread pool inside one caller, not one Prefect task
each. A probe that fails for any reason is a failed :class:`~tasks.reaper.decide.Probe`, never an
exception: the reaper must treat it as "unknown".
"""

from __future__ import annotations

import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
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


def probe_one(url: str, timeout: float) -> Probe:
    """One probe on its own connection, closed afterwards; ``timeout`` bounds the whole probe."""
    parts = urlsplit(url)
    if parts.query or parts.fragment or not parts.path.endswith("/healthz") or not parts.hostname:
        return Probe(False, error="refusing to probe anything but .../healthz without a query")
    https = parts.scheme == "https"
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((parts.hostname, parts.port or (443 if https else 80)), timeout=timeout) as raw:
            sock = ssl.create_default_context().wrap_socket(raw, server_hostname=parts.hostname) if https else raw
            sock.sendall(request_bytes(url))
            chunks, size = [], 0
            while size <= MAX_RESPONSE:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out")
                sock.settimeout(left)
                chunk = sock.recv(4096)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except OSError as exc:
        return Probe(False, error=f"{type(exc).__name__}: {exc}"[:200])
    if size > MAX_RESPONSE:
        return Probe(False, error="response too large for /healthz")
    return parse_response(b"".join(chunks))


def probe_all(urls: dict[str, str], concurrency: int, timeout: float) -> dict[str, Probe]:
    """username -> Probe, with at most ``concurrency`` probes in flight."""
    if not urls:
        return {}
    users = list(urls)
    with ThreadPoolExecutor(max_workers=min(concurrency, len(users)), thread_name_prefix="probe") as pool:
        results = pool.map(lambda u: probe_one(urls[u], timeout), users)
        return dict(zip(users, results, strict=True))
