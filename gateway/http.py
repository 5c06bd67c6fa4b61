"""The gateway's ASGI middleware: per-client rate limit, per-request size bound, and one
structured access-log line per request (no body, no query string, no header: so no token,
no signature and no personal data reaches the log).

A client is counted by its network (:func:`tasks.gateway.ratelimit.rate_key`: an IPv6 /64,
an IPv4 address or the configured prefix), and logged by its address."""

from __future__ import annotations

import json
import logging
import time
import uuid

import anyio
from starlette.exceptions import HTTPException

from tasks.gateway.ratelimit import Limiter, client_key, rate_key

access_log = logging.getLogger("vibecode.gateway.access")

UNLIMITED_PATHS = frozenset({"/healthz"})
# How long an answer waits for the rest of a (small enough) request body it did not need.
DRAIN_SECONDS = 2.0
# How long a whole request body may take to arrive, from the start of the request. A client that
# declares more than it sends (or trickles it, slowloris-style) would otherwise hold a connection
# and a worker for as long as it likes: it gets a 408 instead. 64 KiB in 10 s is 6.5 KB/s.
BODY_SECONDS = 10.0


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")


class BodyTimeout(HTTPException):
    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the request body did not arrive within {seconds:g} s")


def error_body(path: str, status: int, message: str) -> bytes:
    """HR-API errors are ``{"error": ...}``; under /scim/v2 they are SCIM Error messages."""
    if path.startswith("/scim/"):
        return json.dumps({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                           "status": str(status), "detail": message}).encode()
    return json.dumps({"error": message}).encode()


def _media(path: str) -> bytes:
    return b"application/scim+json" if path.startswith("/scim/") else b"application/json"


class GatewayMiddleware:
    def __init__(self, app, *, max_body: int, limiter: Limiter, trusted_proxies: list[str],
                 retry_after: int, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> None:
        self.app = app
        self.prefixes = (ipv4_prefix, ipv6_prefix)
        self.max_body = max_body
        self.limiter = limiter
        self.trusted = list(trusted_proxies)
        self.retry_after = retry_after

    async def _refuse(self, send, path: str, status: int, message: str, extra: list | None = None) -> None:
        body = error_body(path, status, message)
        headers = [(b"content-type", _media(path)), (b"content-length", str(len(body)).encode()),
                   *(extra or [])]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        path = scope.get("path", "")
        headers = dict(scope.get("headers") or [])  # the last of a repeated header wins; we read two
        peer = (scope.get("client") or (None, None))[0]
        xff = headers.get(b"x-forwarded-for", b"").decode("latin-1") or None
        client = client_key(peer, xff, self.trusted)
        rid = uuid.uuid4().hex[:16]
        state = {"status": 0, "bytes_in": 0, "started": False, "body_done": False}
        length = headers.get(b"content-length")

        async def drain() -> None:
            """Read what is left of the request body before answering, when it is within the size
            bound. An answer sent over unread bytes is followed by the close, which the kernel
            turns into a reset that makes the client's kernel drop the answer it has not read yet
            (nginx's "lingering close" exists for this): a sender posting to a wrong path would
            see a dropped connection instead of the 404. Bounded by max_body and DRAIN_SECONDS."""
            if state["body_done"] or scope.get("method") in ("GET", "HEAD") and length is None:
                return
            with anyio.move_on_after(DRAIN_SECONDS):
                while state["bytes_in"] <= self.max_body:
                    message = await receive()
                    if message["type"] != "http.request":
                        break
                    state["bytes_in"] += len(message.get("body", b""))
                    if not message.get("more_body"):
                        break
            state["body_done"] = True

        async def send_logged(message):
            if message["type"] == "http.response.start":
                if message["status"] not in (408, 413):  # neither reads more of what it refused
                    await drain()
                state["status"] = message["status"]
                state["started"] = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            if path not in UNLIMITED_PATHS:
                decision = self.limiter.check(rate_key(client, *self.prefixes), time.monotonic())
                if not decision.allowed:
                    await self._refuse(send_logged, path, 429, "too many requests from this client; slow down",
                                       [(b"retry-after", str(decision.retry_after).encode())])
                    return
            if length is not None:
                if not length.isdigit() or len(length) > 12:
                    await self._refuse(send_logged, path, 400, "Content-Length is not a number")
                    return
                if int(length) > self.max_body:
                    # Refused on the header alone: not one byte of the body is read.
                    state["body_done"] = True
                    await self._refuse(send_logged, path, 413, f"request body is larger than {self.max_body} bytes")
                    return

            async def bounded_receive():
                if state["body_done"]:
                    message = await receive()  # after the body: only a disconnect is left to hear
                else:
                    try:
                        with anyio.fail_after(max(0.0, BODY_SECONDS - (time.perf_counter() - started))):
                            message = await receive()
                    except TimeoutError:
                        state["body_done"] = True  # refused: the rest is not read
                        raise BodyTimeout(BODY_SECONDS) from None
                if message["type"] == "http.request":
                    state["bytes_in"] += len(message.get("body", b""))
                    state["body_done"] = not message.get("more_body")
                    if state["bytes_in"] > self.max_body:
                        state["body_done"] = True  # refused: the rest is not read
                        raise BodyTooLarge(self.max_body)
                else:
                    state["body_done"] = True
                return message

            try:
                await self.app(scope, bounded_receive, send_logged)
            except (BodyTooLarge, BodyTimeout) as exc:
                if state["started"]:
                    raise
                await self._refuse(send_logged, path, exc.status_code, exc.detail)
        finally:
            access_log.info(json.dumps({
                "request_id": rid, "client": client, "method": scope.get("method"), "path": path[:200],
                "status": state["status"], "ms": round((time.perf_counter() - started) * 1000, 2),
                "bytes_in": state["bytes_in"]}, separators=(",", ":")))
