"""Starting flow runs on Prefect, and telling "Prefect is unreachable" (503, retry later)
apart from everything else.

``run_deployment(..., idempotency_key=event_id, timeout=0)``: the server keeps one run per
(flow, idempotency key), so the same event posted twice, or twenty times at once, gets the
same run back and starts nothing new. ``timeout=0`` returns as soon as the run exists; no
one waits for the flow here. (``arun_deployment`` is ``run_deployment``'s async form.)
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger("vibecode.gateway")


class PrefectUnavailable(Exception):
    """The run could not be created now; nothing was started. ``str()`` is safe to return."""


@dataclass(frozen=True)
class StartedRun:
    flow_run_id: str
    deployment: str
    parameters: dict[str, Any]


class RunStarter:
    """One long-lived Prefect client per event loop (opened by the app's lifespan).

    Concurrent requests for the same (deployment, event id) in this process share one
    call to Prefect (the others wait for its answer): a burst of retries from a sender
    then costs the Prefect server one write, not twenty contending ones on its database.
    Across processes (replicas) the server's idempotency key does the same job.
    """

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._client = None
        self._inflight: dict[tuple[str, str], asyncio.Future] = {}

    async def open(self) -> None:
        from prefect.client.orchestration import get_client

        self._client = get_client(httpx_settings={"timeout": httpx.Timeout(self.timeout)})
        await self._client.__aenter__()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.__aexit__(None, None, None)
            self._client = None

    async def start(self, deployment: str, parameters: dict[str, Any], idempotency_key: str) -> StartedRun:
        key = (deployment, idempotency_key)
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._start(deployment, parameters, idempotency_key))
            self._inflight[key] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(pending)

    async def _start(self, deployment: str, parameters: dict[str, Any], idempotency_key: str) -> StartedRun:
        import anyio
        from prefect.deployments import arun_deployment
        from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

        if self._client is None:
            raise PrefectUnavailable("the gateway has no Prefect client yet")
        try:
            # The client retries transient failures with back-off; this bounds the whole
            # attempt, so a caller hears 503 in seconds, not after minutes of retries.
            with anyio.fail_after(self.timeout):
                run = await arun_deployment(name=deployment, client=self._client, parameters=parameters,
                                            idempotency_key=idempotency_key, timeout=0, as_subflow=False)
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
        return StartedRun(flow_run_id=str(run.id), deployment=deployment, parameters=dict(run.parameters or {}))
