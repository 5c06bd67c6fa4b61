"""Per-client rate limiting as a token bucket that is a pure function of time.

A bucket is ``(tokens, updated_at)``; :func:`take` returns the bucket after one request
at ``now`` and whether the request may pass, so the rule is tested with plain numbers and
the HTTP layer only keeps a dict of buckets. A refused request costs nothing, so a client
that keeps hammering is let through again as soon as it slows below ``rate``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Bucket:
    tokens: float
    updated_at: float


@dataclass(frozen=True)
class Decision:
    allowed: bool
    bucket: Bucket
    retry_after: int  # whole seconds until one token is back (0 when allowed)


def take(bucket: Bucket | None, now: float, rate: float, burst: int) -> Decision:
    """One request at ``now`` against a bucket refilled at ``rate`` tokens/s up to ``burst``."""
    if bucket is None:
        tokens = float(burst)
    else:
        elapsed = max(0.0, now - bucket.updated_at)  # a clock step backwards refills nothing
        tokens = min(float(burst), bucket.tokens + elapsed * rate)
    if tokens >= 1.0:
        return Decision(True, Bucket(tokens - 1.0, now), 0)
    return Decision(False, Bucket(tokens, now), max(1, math.ceil((1.0 - tokens) / rate)))


class Limiter:
    """Buckets per client key, bounded: the least recently seen clients are forgotten first
    (a forgotten client starts with a full bucket, which only ever errs towards letting a
    real client through)."""

    def __init__(self, rate: float, burst: int, max_clients: int = 10_000) -> None:
        self.rate, self.burst, self.max_clients = rate, burst, max_clients
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def check(self, key: str, now: float) -> Decision:
        decision = take(self._buckets.get(key), now, self.rate, self.burst)
        self._buckets[key] = decision.bucket
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return decision


def client_key(peer: str | None, forwarded_for: str | None, trusted_proxies: list[str] | tuple[str, ...]) -> str:
    """Who a request is from, for rate limiting and logs.

    ``X-Forwarded-For`` is believed only when the direct peer is a trusted proxy (the
    ingress controller), and then the right-most address that is not itself a trusted
    proxy is the client: the left part of the header is whatever the client wrote.
    """
    import ipaddress

    def trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(net, strict=False) for net in trusted_proxies)

    peer = peer or "unknown"
    if not forwarded_for or not trusted(peer):
        return peer
    hops = [h.strip() for h in forwarded_for[:1024].split(",") if h.strip()]
    for hop in reversed(hops):
        if not trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage in the header: count it against the proxy's peer address
    return peer


def rate_key(client: str, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> str:
    """The network a client's requests are counted against: its IPv6 /64 (by default), its
    IPv4 address (or a shorter prefix).

    One host, or one customer line, is routinely given a whole IPv6 /64, so counting per
    address would let it send as millions of clients; an IPv4-mapped IPv6 address counts as
    the IPv4 address it is. Anything that is not an address is its own key.
    """
    import ipaddress

    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
