"""Prefect tag concurrency limits that keep the API server and storage from being flooded.

Tasks carry tags (``kube-api``, ``helm``, ``restic``, ``vibecode-users-db``); these limits cap how many task runs
with each tag run at once across *all* flow runs on the server, which a per-flow thread
pool cannot do. Creating a limit that exists updates it, so this is safe to rerun.
"""

from __future__ import annotations

from prefect.client.orchestration import get_client

from tasks.core.settings import Settings, get_settings
from tasks.core.steps import HELM, KUBE_API, RESTIC, USERS_DB


def desired_limits(settings: Settings) -> dict[str, int]:
    return {
        KUBE_API: settings.kube_concurrency,
        HELM: max(1, settings.kube_concurrency // 2),  # each helm call is many API requests
        RESTIC: settings.backup.concurrency,
        # Writers of the Authelia users database: the compare-and-swap loop is correct
        # without a limit, the limit only saves retries when many hires land at once.
        USERS_DB: 4,
    }


def ensure_concurrency_limits(settings: Settings | None = None) -> dict[str, int]:
    limits = desired_limits(settings or get_settings())
    with get_client(sync_client=True) as client:
        for tag, limit in limits.items():
            client.create_concurrency_limit(tag=tag, concurrency_limit=limit)
    return limits
