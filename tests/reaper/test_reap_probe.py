"""The /healthz prober on the wire: exactly ``GET /healthz``, ``Connection: close``, one fresh
connection per probe, bounded concurrency, and every failure is "unknown", never an error."""

from __future__ import annotations

import socket
import threading
import time

from tasks.reaper.probe import probe_all, probe_one


class Recorder:
    """A loopback HTTP server that records each connection's raw request."""

    def __init__(self, delay: float = 0.0, answer: bytes | None = None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.delay, self.requests, self.in_flight, self.peak = delay, [], 0, 0
        self.answer = answer or b'{"status":"expired","lastHeartbeat":1764417600000}'
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.requests.append(data.decode())
            with self.lock:  # from the request to the answer: what the client waits on
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
            time.sleep(self.delay)
            with self.lock:
                self.in_flight -= 1
            try:
                self._answer(conn)
            except OSError:  # the client gave up first (a probe that timed out)
                return
        finally:
            conn.close()

    def _answer(self, conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(self.answer)).encode() + b"\r\n\r\n" + self.answer)
        # As a server answering "Connection: close" does, end our side; a keep-alive client
        # would still send its next request here, a closing one sends nothing.
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(0.5)
        try:
            extra = conn.recv(4096)
        except socket.timeout:
            extra = b"<still open>"
        if extra:
            self.requests.append("EXTRA:" + extra.decode(errors="replace"))

    def close(self):
        self.sock.close()


def test_each_probe_is_exactly_get_healthz_on_its_own_closed_connection():
    srv = Recorder(delay=0.05)
    try:
        urls = {f"u{i}": f"http://127.0.0.1:{srv.port}/healthz" for i in range(40)}
        results = probe_all(urls, concurrency=8, timeout=5)
        time.sleep(0.7)
        assert all(p.ok and p.status == "expired" for p in results.values()) and len(results) == 40
        assert len(srv.requests) == 40, srv.requests[:3]  # 40 connections, one request each, nothing after
        for raw in srv.requests:
            lines = raw.split("\r\n")
            assert lines[0] == "GET /healthz HTTP/1.1"
            assert "Connection: close" in lines
        assert 2 <= srv.peak <= 8
    finally:
        srv.close()


def test_failures_are_unknown_never_exceptions():
    srv = Recorder(delay=1.0)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    bad = Recorder(answer=b"<html>login</html>")
    try:
        out = probe_all({"slow": f"http://127.0.0.1:{srv.port}/healthz", "closed": f"http://127.0.0.1:{port}/healthz",
                         "html": f"http://127.0.0.1:{bad.port}/healthz",
                         "query": f"http://127.0.0.1:{bad.port}/healthz?x=1"}, concurrency=4, timeout=0.3)
        assert {u: p.ok for u, p in out.items()} == {"slow": False, "closed": False, "html": False, "query": False}
        assert "timed out" in out["slow"].error or "timeout" in out["slow"].error.lower()
        assert "refusing" in out["query"].error and not any("x=1" in r for r in bad.requests)
        assert not probe_one("http://127.0.0.1:1/other", 1).ok
    finally:
        srv.close()
        bad.close()


def test_response_parsing_content_length_chunked_and_garbage():
    from tasks.reaper.probe import parse_response, request_bytes

    body = b'{"status":"alive","lastHeartbeat":1764417600000}'
    ok = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%sTRAILING" % (len(body), body))
    assert ok.ok and ok.status == "alive"
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n" + body[:16] + b"\r\n" + \
        hex(len(body) - 16)[2:].encode() + b"\r\n" + body[16:] + b"\r\n0\r\n\r\n"
    assert parse_response(chunked) == ok
    assert parse_response(b"HTTP/1.1 200 OK\r\n\r\n" + body) == ok  # no length: read to the close
    for bad in (b"", b"garbage", b"HTTP/1.1 abc\r\n\r\n", b"HTTP/1.1 503 Unavailable\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"):
        assert not parse_response(bad).ok
    assert request_bytes("http://ws-a.ns.svc:80/healthz") == (
        b"GET /healthz HTTP/1.1\r\nHost: ws-a.ns.svc:80\r\nAccept: application/json\r\nConnection: close\r\n\r\n")


def test_probes_start_as_urls_are_added_and_names_are_resolved():
    """The reaper adds each running workspace as its Deployment's page arrives: the first probes
    are answered before the last URL is added. A name (``localhost``) is resolved on the pool;
    one that does not resolve is unknown, and the order of the answer is the order of adding."""
    from tasks.reaper.probe import Prober

    srv = Recorder(delay=0.05)
    try:
        prober = Prober(concurrency=4, timeout=5)
        for i in range(8):
            prober.add(f"ip{i}", f"http://127.0.0.1:{srv.port}/healthz")
        deadline = time.monotonic() + 5
        while len(srv.requests) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(srv.requests) == 8  # answered while more are still to come
        prober.add("name", f"http://localhost:{srv.port}/healthz")
        prober.add("nowhere", "http://ws-nobody.invalid:8080/healthz")
        prober.add("query", f"http://127.0.0.1:{srv.port}/healthz?x=1")
        out = prober.results()
        assert list(out) == [*(f"ip{i}" for i in range(8)), "name", "nowhere", "query"]
        assert all(out[f"ip{i}"].ok for i in range(8)) and out["name"].ok
        assert not out["nowhere"].ok and "gaierror" in out["nowhere"].error
        assert not out["query"].ok and "refusing" in out["query"].error
        assert srv.peak <= 4
    finally:
        srv.close()


def test_a_prober_with_nothing_added_answers_at_once():
    from tasks.reaper.probe import Prober

    t = time.monotonic()
    assert Prober(concurrency=8, timeout=30).results() == {}
    assert time.monotonic() - t < 5
