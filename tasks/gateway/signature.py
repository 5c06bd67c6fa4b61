"""Webhook signatures as Stripe and GitHub do them.

Header ``VibeCode-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``.
The timestamp is inside the MAC, so a captured request cannot be re-dated; requests more
than ``tolerance`` seconds from ``now`` (either way) are refused, which bounds how long a
captured request is worth replaying, and :class:`ReplayGuard` refuses a signature seen
again inside that window. Several secrets are accepted at once so a secret can be rotated
without downtime: the sender switches to the new one while the old one is still accepted.
Every comparison is constant-time (``hmac.compare_digest``), and a header may carry several
``v1`` values (a sender signing with both keys during a rotation).

Error messages say what is wrong with the header, never echo it back.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass

HEADER = "VibeCode-Signature"
SCHEME = "v1"
MAX_HEADER_CHARS = 1024  # a real header is ~80 chars; anything longer is not parsed at all
MAX_SIGNATURES = 4


class SignatureError(ValueError):
    """The request is not authentic (401). ``str(exc)`` is safe to return to the caller."""


@dataclass(frozen=True)
class ParsedHeader:
    timestamp: int
    signatures: tuple[str, ...]


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The header value a sender puts on ``body`` at ``timestamp`` (tests, benchmarks, docs)."""
    return f"t={timestamp},{SCHEME}={_mac(secret, timestamp, body)}"


def _mac(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def parse_header(value: str | None) -> ParsedHeader:
    if not value:
        raise SignatureError(f"missing {HEADER} header")
    if len(value) > MAX_HEADER_CHARS:
        raise SignatureError(f"{HEADER} header is too long")
    timestamp: int | None = None
    sigs: list[str] = []
    for part in value.split(","):
        key, sep, val = part.strip().partition("=")
        if not sep:
            raise SignatureError(f"{HEADER} header must look like t=<unix seconds>,v1=<hex>")
        if key == "t":
            if timestamp is not None:
                raise SignatureError(f"{HEADER} header has more than one t=")
            if not (val.isascii() and val.isdigit()) or len(val) > 12:
                raise SignatureError(f"{HEADER} t= must be unix seconds")
            timestamp = int(val)
        elif key == SCHEME:
            if len(val) != 64 or not val.isascii() or any(c not in "0123456789abcdef" for c in val):
                raise SignatureError(f"{HEADER} v1= must be 64 lowercase hex digits (HMAC-SHA256)")
            sigs.append(val)
        # other schemes (v0, future v2) are ignored, as Stripe does
    if timestamp is None:
        raise SignatureError(f"{HEADER} header has no t=")
    if not sigs:
        raise SignatureError(f"{HEADER} header has no v1= signature")
    if len(sigs) > MAX_SIGNATURES:
        raise SignatureError(f"{HEADER} header has more than {MAX_SIGNATURES} signatures")
    return ParsedHeader(timestamp, tuple(sigs))


def verify(header: str | None, body: bytes, secrets: list[bytes] | tuple[bytes, ...], now: float,
           tolerance: int = 300) -> ParsedHeader:
    """Return the parsed header if one of its signatures matches one of ``secrets``; else raise.

    Every (secret, signature) pair is compared, with no early exit, so the time taken
    does not tell which secret or which position matched.
    """
    if not secrets:
        raise SignatureError("no webhook secret is configured")
    parsed = parse_header(header)
    if abs(now - parsed.timestamp) > tolerance:
        raise SignatureError(f"timestamp is more than {tolerance} s from the server's clock "
                             f"(stale or replayed request; sign each delivery afresh)")
    ok = False
    for secret in secrets:
        expected = _mac(secret, parsed.timestamp, body)
        for sig in parsed.signatures:
            ok |= hmac.compare_digest(expected, sig)
    if not ok:
        raise SignatureError("signature does not match the body (wrong secret, or the body was changed)")
    return parsed


class ReplayGuard:
    """Deliveries already accepted, kept for twice the tolerance window: the same signed
    delivery again is a replay. A delivery is remembered only once it was accepted, so a
    sender may resend the very same request after a 503. Bounded (oldest dropped first);
    per process, so with several replicas it is the event-id idempotency key that keeps
    a replay from starting anything."""

    def __init__(self, tolerance: int = 300, max_entries: int = 100_000) -> None:
        self.tolerance = tolerance
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    @staticmethod
    def _key(parsed: ParsedHeader, body: bytes) -> str:
        # Keyed by timestamp and body, not by the signature text: a replay with the
        # signature list reshuffled or padded, or signed with the other key of a rotation,
        # is the same delivery.
        return f"{parsed.timestamp}:{hashlib.sha256(body).hexdigest()}"

    def _expire(self, now: float) -> None:
        expire_before = now - 2 * self.tolerance
        while self._seen:
            _, at = next(iter(self._seen.items()))
            if at >= expire_before and len(self._seen) < self.max_entries:
                break
            self._seen.popitem(last=False)

    def is_replay(self, parsed: ParsedHeader, body: bytes, now: float) -> bool:
        self._expire(now)
        return self._key(parsed, body) in self._seen

    def remember(self, parsed: ParsedHeader, body: bytes, now: float) -> None:
        self._expire(now)
        self._seen[self._key(parsed, body)] = now
