"""What the gateway refuses to start with. A short shared secret can be brute-forced
offline from one captured signature, and an empty one signs anything, so each secret and
the SCIM token must be at least :data:`MIN_SECRET_BYTES` bytes (as a 256-bit HMAC key)."""

from __future__ import annotations

from tasks.core.settings import Settings

MIN_SECRET_BYTES = 32


def config_problems(settings: Settings, prefect_api_url: str | None) -> list[str]:
    """Every reason the gateway must not start, naming the setting; empty when it may.

    Without PREFECT_API_URL Prefect would start a private in-process server, where the
    runs the gateway creates would wait forever for a worker that never sees them.
    """
    problems: list[str] = []
    if not prefect_api_url:
        problems.append("PREFECT_API_URL is not set: the gateway must start runs on the shared Prefect server")
    secrets = settings.gateway.webhook_secrets
    if not secrets:
        problems.append("VIBECODE_GATEWAY_WEBHOOK_SECRETS is empty: set a JSON list of at least one secret")
    for i, secret in enumerate(secrets):
        n = len(secret.get_secret_value().encode())
        if n < MIN_SECRET_BYTES:
            problems.append(f"VIBECODE_GATEWAY_WEBHOOK_SECRETS[{i}] is {n} bytes; at least "
                            f"{MIN_SECRET_BYTES} are needed")
    if len({s.get_secret_value() for s in secrets}) != len(secrets):
        problems.append("VIBECODE_GATEWAY_WEBHOOK_SECRETS lists the same secret twice")
    token = settings.gateway.scim_token
    n = len(token.get_secret_value().encode()) if token is not None else 0
    if n < MIN_SECRET_BYTES:
        problems.append(f"VIBECODE_GATEWAY_SCIM_TOKEN is {'unset' if token is None else f'{n} bytes'}; "
                        f"at least {MIN_SECRET_BYTES} bytes are needed")
    return problems
