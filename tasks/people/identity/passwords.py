"""Throw-away credentials. No password travels: accounts get a random one nobody sees, and
the person chooses their own on Authelia's reset-password page."""

from __future__ import annotations

import secrets
import threading
from functools import lru_cache

from argon2 import PasswordHasher


@lru_cache(maxsize=1)
def authelia_hasher() -> PasswordHasher:
    """argon2id at Authelia's defaults, so its own ``crypto hash validate`` accepts the hash."""
    return PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4, hash_len=32, salt_len=16)


# Each hash takes 64 MiB for ~0.2 s: 50 concurrent hires must not ask for 3 GiB at once.
_HASH_SLOTS = threading.BoundedSemaphore(4)


def random_secret() -> str:
    return secrets.token_urlsafe(32)


def unusable_argon2_hash() -> str:
    """An argon2id hash of 256 random bits that are dropped at once: a locked door with no key."""
    with _HASH_SLOTS:
        return authelia_hasher().hash(random_secret())
