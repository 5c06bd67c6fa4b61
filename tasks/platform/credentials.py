"""The platform's generated secrets and the Secrets that carry them (pure builders).

Bootstrap generates each secret once, stores it in the Secret ``vibecode-platform-secrets``
(platform namespace) before any chart is installed, and on every rerun reuses what is there:
only a key that is missing is generated (a key added by a newer version), an existing one is
never replaced. The values live only in Secrets: no function here returns them for logging,
and the steps that call these return key names, never values.

The generator is passed in (``token``: bytes -> text, :func:`secrets.token_urlsafe` in the
steps), so these stay pure and testable.
"""

from __future__ import annotations

import base64
import json
from typing import Callable

from tasks.core.names import COMPONENT_LABEL, PART_OF, PART_OF_LABEL

# key -> bytes of entropy. Authelia wants >= 20 characters for its keys (64 here); the HR
# gateway wants >= 32 bytes for its webhook secret and SCIM token.
PLATFORM_SECRET_KEYS: dict[str, int] = {
    "authelia-jwt-secret": 48,
    "authelia-session-secret": 48,
    "authelia-storage-encryption-key": 48,
    "postgres-password": 32,
    "redis-password": 32,
    "s3-access-key-id": 15,
    "s3-secret-access-key": 30,
    "restic-password": 32,
    "hr-webhook-secret": 48,
    "hr-scim-token": 48,
}
USERS_FILE_KEY = "users_database.yml"
EMPTY_USERS = "users: {}\n"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def decode(secret: dict | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in ((secret or {}).get("data") or {}).items()}


def missing_keys(existing: dict | None) -> list[str]:
    """Keys of :data:`PLATFORM_SECRET_KEYS` the Secret lacks (all of them when it is absent)."""
    have = set(((existing or {}).get("data") or {}))
    return [k for k in PLATFORM_SECRET_KEYS if k not in have]


def generate(keys: list[str], token: Callable[[int], str]) -> dict[str, str]:
    return {k: token(PLATFORM_SECRET_KEYS[k]) for k in keys}


def _secret(name: str, namespace: str, component: str, data: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {PART_OF_LABEL: PART_OF, COMPONENT_LABEL: component}},
            "data": {k: _b64(v) for k, v in data.items()}}


def platform_secret(name: str, namespace: str, values: dict[str, str]) -> dict:
    return _secret(name, namespace, "platform", values)


def added_keys_patch(values: dict[str, str]) -> dict:
    """A merge patch that adds keys and touches no other."""
    return {"data": {k: _b64(v) for k, v in values.items()}}


def users_secret(name: str, namespace: str) -> dict:
    """Authelia's file backend with nobody in it; onboarding writes the people."""
    return _secret(name, namespace, "authelia", {USERS_FILE_KEY: EMPTY_USERS})


def smtp_secret(namespace: str, password: str) -> dict:
    return _secret("vibecode-smtp", namespace, "authelia", {"smtp-password": password})


def hr_gateway_secret(name: str, namespace: str, platform: dict[str, str]) -> dict:
    """The keys the HR gateway's chart reads, from the platform secrets (one source of truth)."""
    return _secret(name, namespace, "hr-gateway", {
        "webhook-secrets": json.dumps([platform["hr-webhook-secret"]]),
        "scim-token": platform["hr-scim-token"]})


def backup_secret(name: str, namespace: str, platform: dict[str, str]) -> dict:
    """What backup and restore Jobs read (tasks.backup), for the in-cluster S3 store."""
    return _secret(name, namespace, "backup", {
        "RESTIC_PASSWORD": platform["restic-password"],
        "AWS_ACCESS_KEY_ID": platform["s3-access-key-id"],
        "AWS_SECRET_ACCESS_KEY": platform["s3-secret-access-key"]})


def same_data(existing: dict | None, manifest: dict) -> bool:
    return existing is not None and (existing.get("data") or {}) == manifest["data"]
