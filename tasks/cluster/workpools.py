"""The two Prefect work pools and their base job templates, kept in step on every bootstrap.

- ``vibecode-ops`` (type ``process``): a worker on an operator's machine runs flows as
  local processes (the single-machine setup, `prefect worker start --pool vibecode-ops`).
- ``vibecode-kubernetes`` (type ``kubernetes``, prefect-kubernetes): flow runs become Jobs
  in the ``vibecode-ops`` namespace under the ``vibecode-flows`` ServiceAccount, whose Role
  holds exactly what the flows call (tasks.platform.values.FLOWS_RULES). Its template is
  deployments/kubernetes-pool.json: restricted Pod Security context, secrets only as
  ``secretKeyRef`` from the Secret bootstrap creates, resource requests and limits.

Prefect reads a pool's base job template only when it creates the pool (``prefect
work-pool create`` and the worker's first start both skip an existing pool), so a changed
template would never reach a running platform. :func:`ensure_work_pools` compares what the
server holds with the template in git and updates it (``update_work_pool``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectNotFound

from tasks.core.errors import PermanentError

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_TEMPLATE = ROOT / "deployments" / "kubernetes-pool.json"
PROCESS_POOL = "vibecode-ops"
KUBERNETES_POOL = "vibecode-kubernetes"
FLOWS_NAMESPACE = "vibecode-ops"
FLOWS_SERVICE_ACCOUNT = "vibecode-flows"
PLATFORM_SECRET = "vibecode-platform-secrets"

Outcome = Literal["created", "updated", "unchanged", "would create", "would update"]


def kubernetes_template(path: Path = KUBERNETES_TEMPLATE) -> dict[str, Any]:
    return json.loads(path.read_text())


def process_template() -> dict[str, Any]:
    from prefect.workers.process import ProcessWorker

    return ProcessWorker.get_default_base_job_template()


def desired_pools() -> dict[str, tuple[str, dict[str, Any]]]:
    """name -> (type, base job template)."""
    return {PROCESS_POOL: ("process", process_template()),
            KUBERNETES_POOL: ("kubernetes", kubernetes_template())}


def ensure_work_pool(name: str, type_: str, template: dict[str, Any], client=None, plan: bool = False) -> Outcome:
    """Create the pool with ``template``, or bring an existing pool's template in step.
    With ``plan``, only say what would be done.

    A pool of another type is an operator's mistake that an update cannot fix (Prefect
    does not change a pool's type): refused, nothing changed."""
    if client is None:
        with get_client(sync_client=True) as own:
            return ensure_work_pool(name, type_, template, own, plan)
    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        if plan:
            return "would create"
        client.create_work_pool(WorkPoolCreate(name=name, type=type_, base_job_template=template))
        return "created"
    if pool.type != type_:
        raise PermanentError(f"work pool {name!r} exists with type {pool.type!r}, not {type_!r}: "
                             f"delete it (prefect work-pool delete {name}) and bootstrap again")
    if pool.base_job_template == template:
        return "unchanged"
    if plan:
        return "would update"
    client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))
    return "updated"


def ensure_work_pools(client=None, plan: bool = False) -> dict[str, Outcome]:
    if client is None:
        with get_client(sync_client=True) as own:
            return ensure_work_pools(own, plan)
    return {name: ensure_work_pool(name, type_, template, client, plan)
            for name, (type_, template) in desired_pools().items()}
