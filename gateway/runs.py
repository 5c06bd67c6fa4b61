"""Starting flow runs on Prefect, and telling "Prefect is unreachable" (503, retry later)
apart from everything else.

``run_deployment(..., idempotency_key=event_id, timeout=0)``: the server keeps one run per
(flow, idempotency key), so the same event posted twice, or twenty times at once, gets the
same run back and starts nothing new. ``timeout=0`` returns as soon as the run exists; no
one waits for the flow here. (``arun_deployment`` is ``run_deployment``'s async form.)

An event id names one event whichever flow it is meant for, but the server's key is per
flow: the same id on the offboarding flow would start a second run. So the key is first
looked up across flows (a run found is returned as it is, for the caller to judge with
:func:`tasks.gateway.events.run_mismatch`); and after a create it is looked up again, so
that two replicas racing with one id for two flows converge: the earliest run wins, and
the other is cancelled before a worker can act on it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

log = logging.getLogger("vibecode.gateway")


class PrefectUnavailable(Exception):
    """The run could not be created now; nothing was started. ``str()`` is safe to return."""


@dataclass(frozen=True)
class StartedRun:
    flow_run_id: str
    deployment: str  # the deployment the run is on ("flow/deployment"; its id if not one we start)
    parameters: dict[str, Any]
    created: bool = True  # False: the run already existed under this key


class RunStarter:
    """One long-lived Prefect client per event loop (opened by the app's lifespan).

    Concurrent requests for the same event id in this process share one call to Prefect
    (the others wait for its answer, and judge it as their own): a burst of retries from a
    sender then costs the Prefect server one write, not twenty contending ones on its
    database. Across processes (replicas) the server's idempotency key does the same job.
    """

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._client: PrefectClient | None = None
        self._inflight: dict[str, asyncio.Future] = {}
        self._deployment_ids: dict[str, Any] = {}  # "flow/deployment" -> id

    @property
    def client(self) -> PrefectClient:
        """The open client (``open`` was awaited; the app opens it at startup)."""
        if self._client is None:
            raise RuntimeError("RunStarter used before open()")
        return self._client

    async def open(self) -> None:
        from prefect.client.orchestration import get_client

        self._client = get_client(httpx_settings={"timeout": httpx.Timeout(self.timeout)})
        await self._client.__aenter__()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.__aexit__(None, None, None)
            self._client = None

    async def start(self, deployment: str, parameters: dict[str, Any], idempotency_key: str) -> StartedRun:
        pending = self._inflight.get(idempotency_key)
        if pending is None:
            pending = asyncio.ensure_future(self._start(deployment, parameters, idempotency_key))
            self._inflight[idempotency_key] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(idempotency_key, None))
        return await asyncio.shield(pending)

    async def _start(self, deployment: str, parameters: dict[str, Any], idempotency_key: str) -> StartedRun:
        import anyio
        from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

        if self._client is None:
            raise PrefectUnavailable("the gateway has no Prefect client yet")
        try:
            # The client retries transient failures with back-off; this bounds the whole
            # attempt, so a caller hears 503 in seconds, not after minutes of retries.
            with anyio.fail_after(self.timeout):
                return await self._find_or_create(deployment, parameters, idempotency_key)
        except TimeoutError:
            raise PrefectUnavailable(f"the Prefect API did not answer within {self.timeout:g} s; "
                                     f"nothing was started") from None
        except ObjectNotFound:
            log.error("deployment %s is not registered on the Prefect server", deployment)
            raise PrefectUnavailable(f"deployment {deployment} is not registered; nothing was started") from None
        except PrefectHTTPStatusError as exc:
            code = exc.response.status_code
            if code >= 500 or code in (408, 429):
                raise PrefectUnavailable(f"the Prefect API answered {code}; nothing was started") from None
            raise
        except (httpx.TransportError, OSError) as exc:
            log.warning("Prefect API unreachable: %s", type(exc).__name__)
            raise PrefectUnavailable("the Prefect API is unreachable; nothing was started") from None

    async def _deployment_id(self, deployment: str):
        if deployment not in self._deployment_ids:
            self._deployment_ids[deployment] = (await self.client.read_deployment_by_name(deployment)).id
        return self._deployment_ids[deployment]

    async def _started(self, run, created: bool) -> StartedRun:
        names = {v: k for k, v in self._deployment_ids.items()}
        if run.deployment_id is not None and run.deployment_id not in names:
            # A run on another deployment (found under our key): name it, for the caller's verdict.
            dep = await self.client.read_deployment(run.deployment_id)
            flow = await self.client.read_flow(dep.flow_id)
            self._deployment_ids[f"{flow.name}/{dep.name}"] = run.deployment_id
            names[run.deployment_id] = f"{flow.name}/{dep.name}"
        return StartedRun(flow_run_id=str(run.id), deployment=names.get(run.deployment_id, str(run.deployment_id)),
                          parameters=dict(run.parameters or {}), created=created)

    async def _runs_with_key(self, key: str) -> list:
        """Every run with this idempotency key, on any flow, the earliest created first."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey

        runs = await self.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(idempotency_key=FlowRunFilterIdempotencyKey(any_=[key])), limit=20)
        return sorted(runs, key=lambda r: (r.created, str(r.id)))

    async def _find_or_create(self, deployment: str, parameters: dict[str, Any], key: str) -> StartedRun:
        from prefect.deployments import arun_deployment
        from prefect.states import Cancelled

        await self._deployment_id(deployment)  # so runs found can be named
        found = await self._runs_with_key(key)
        if found:  # whatever its state: the event already has its run
            return await self._started(found[0], created=False)
        run = await arun_deployment(name=deployment, client=self._client, parameters=parameters,
                                    idempotency_key=key, timeout=0, as_subflow=False)
        runs = await self._runs_with_key(key)
        winner = runs[0] if runs else run
        if winner.id != run.id:
            # Another replica created a run with this key on another flow at the same moment.
            await self.client.set_flow_run_state(run.id, Cancelled(
                message=f"event id {key!r} is already used by flow run {winner.id}"), force=True)
            log.warning("event id %s: cancelled duplicate flow run %s (flow run %s was first)", key, run.id, winner.id)
            return await self._started(winner, created=False)
        return await self._started(run, created=True)
