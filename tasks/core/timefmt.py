"""Timestamps as they travel in annotations: RFC 3339 in UTC, whole seconds.

Annotations are written by us and read back by decisions; anything unreadable (or without
a timezone) parses to ``None`` so that it can never count as "recent" or "old enough".
"""

from __future__ import annotations

from datetime import datetime, timezone


def parse_time(value: str | None) -> datetime | None:
    """RFC 3339 to an aware datetime; anything else is None (and so never counts)."""
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else None


def rfc3339(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
