"""Authelia's file-backend users database (``users_database.yml``): the one reader and writer.

Two parts of the platform read this file: the identity backend, which edits it
(:mod:`tasks.people.identity.filedb`), and the health checks, which judge it
(:func:`tasks.health.checks.parse_users`). They used to parse it each their own way, so a
file one accepted the other could refuse; now both read it here. Pure: text in, document
out; the Secret around it is the callers' business.

The errors name what is wrong and where (a YAML error's line), never the content: the
file holds password hashes.
"""

from __future__ import annotations

import hashlib

import yaml

from tasks.core.errors import PermanentError

USERS_KEY = "users_database.yml"  # the key of the file in the users Secret
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: about 9x faster on a big file


class UsersFileError(PermanentError):
    """The users database cannot be used as it is; ``reason`` completes "users database ..."."""

    def __init__(self, reason: str):
        super().__init__(f"{USERS_KEY} {reason}")
        self.reason = reason


def load(text: str | None, *, empty_ok: bool = True) -> dict:
    """The document, with ``users`` always a mapping of username to entry.

    ``empty_ok``: an empty file (or one without ``users``) is an empty database, as it is
    before the first hire; a health check passes ``False``, because Authelia with nobody in
    its database locks everybody out.
    """
    try:
        doc = yaml.load(text or "", Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise UsersFileError(f"is not YAML{f' at line {mark.line + 1}' if mark else ''}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise UsersFileError("is not a mapping")
    users = doc.get("users")
    if users is None and empty_ok:
        users = {}
    if not isinstance(users, dict):
        raise UsersFileError("has no `users` mapping")
    doc["users"] = users
    return doc


def dump(doc: dict) -> str:
    """Stable text (sorted keys), so an unchanged database has an unchanged checksum."""
    return yaml.safe_dump(doc, sort_keys=True, allow_unicode=True, default_flow_style=False)


def checksum(text: str) -> str:
    """What Authelia's pod template carries, so a changed file rolls Authelia."""
    return hashlib.sha256(text.encode()).hexdigest()
