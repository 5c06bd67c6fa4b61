"""The gateway's FastAPI app: ``POST /v1/hr/events`` (signed HR webhooks), SCIM 2.0 under
``/scim/v2`` (:mod:`gateway.scim`), ``GET /healthz``; OpenAPI at ``/openapi.json``.

Order of checks on a webhook, cheapest and least revealing first: rate limit (429) and
size (413, on the Content-Length header before the body is read) in the middleware, then
the signature over the raw bytes (401) before anything looks inside them, then replay
(409), media type and JSON (415; JSON nested deeper than the parser's bound included), the
HR rules of :func:`tasks.people.hr.parse_request` and an event id outside SCIM's namespace
(422), and only then Prefect (202, 503 with Retry-After, or 409 when the event id already
names another event's run: :func:`tasks.gateway.events.run_mismatch`). Any refusal starts
nothing. Whatever bytes arrive, the answer is a 4xx naming the problem: library errors on
hostile input are caught here, so the error log holds only our own faults.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json
from starlette.exceptions import HTTPException

from gateway.http import GatewayMiddleware, error_body
from gateway.runs import PrefectUnavailable, RunStarter
from tasks.core.errors import InvalidInput
from tasks.core.settings import Settings
from tasks.gateway import signature
from tasks.gateway.events import run_mismatch, webhook_event_id_problem
from tasks.gateway.ratelimit import Limiter
from tasks.people.hr import HRRequest, deployment_for, parse_request

log = logging.getLogger("vibecode.gateway")

JSON_TYPES = ("application/json",)


class Accepted(BaseModel):
    flow_run_id: str
    deployment: str


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    error: str
    fields: list[FieldError] | None = None


def _error(status: int, message: str, fields: list[dict] | None = None, headers: dict | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if fields is not None:
        body["fields"] = fields
    return JSONResponse(body, status_code=status, headers=headers)


def invalid_fields(data: object, first: InvalidInput) -> list[dict]:
    """Every invalid field: :func:`parse_request`'s verdict first (it holds rules beyond the
    model), then the model's other complaints, each field once."""
    fields = [{"field": first.field, "message": str(first).split(": ", 1)[-1]}]
    try:
        HRRequest.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False):
            loc = ".".join(str(p) for p in err["loc"]) or "request"
            if all(f["field"] != loc for f in fields):
                fields.append({"field": loc, "message": str(err["msg"]).removeprefix("Value error, ")[:300]})
    return fields[:50]


def _is_json_media(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


def create_app(settings: Settings, starter: RunStarter | None = None, scim_store=None) -> FastAPI:
    """The app. ``starter`` and ``scim_store`` are injectable so tests can point them at
    their own servers; by default they talk to PREFECT_API_URL and the ledger."""
    starter = starter or RunStarter(timeout=settings.gateway.prefect_timeout_seconds)
    secrets = [s.get_secret_value().encode() for s in settings.gateway.webhook_secrets]
    tolerance = settings.gateway.signature_tolerance_seconds
    replays = signature.ReplayGuard(tolerance)
    retry_after = str(settings.gateway.retry_after_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await starter.open()
        try:
            yield
        finally:
            await starter.close()

    app = FastAPI(title="VibeCode HR gateway", version="1",
                  description="Signed HR webhooks and SCIM 2.0 provisioning that start VibeCode's "
                              "onboarding and offboarding flows on Prefect.",
                  lifespan=lifespan, redirect_slashes=False)  # a wrong path is a 404, never a redirect
    app.state.starter = starter
    app.add_middleware(GatewayMiddleware, max_body=settings.gateway.max_body_bytes,
                       limiter=Limiter(settings.gateway.rate_per_second, settings.gateway.rate_burst),
                       trusted_proxies=settings.gateway.trusted_proxies,
                       retry_after=settings.gateway.retry_after_seconds,
                       ipv4_prefix=settings.gateway.rate_ipv4_prefix, ipv6_prefix=settings.gateway.rate_ipv6_prefix)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        return JSONResponse(json.loads(error_body(request.url.path, exc.status_code, str(exc.detail))),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None),
                            media_type="application/scim+json" if request.url.path.startswith("/scim/")
                            else "application/json")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        fields = [{"field": ".".join(str(p) for p in e["loc"]), "message": str(e["msg"])[:300]}
                  for e in exc.errors()][:50]
        if request.url.path.startswith("/scim/"):
            return JSONResponse(json.loads(error_body(request.url.path, 400, "; ".join(
                f"{f['field']}: {f['message']}" for f in fields))), status_code=400,
                media_type="application/scim+json")
        return _error(422, "invalid request", fields)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(json.loads(error_body(request.url.path, 500, "internal error")), status_code=500)

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process serves HTTP")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    hr_schema = HRRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    hr_schema.pop("$defs", None)

    @app.post(
        "/v1/hr/events", status_code=202, response_model=Accepted, tags=["hr"],
        summary="An HR event (employee.hired / employee.updated / employee.terminated)",
        description=(f"Signed with header `{signature.HEADER}: t=<unix seconds>,v1=<hex HMAC-SHA256 of "
                     f"\"<t>.<raw body>\">` using a shared secret; timestamps more than {tolerance} s from "
                     f"the server's clock are refused. The same `event_id` again returns the same flow run "
                     f"and starts nothing."),
        responses={401: {"model": ErrorBody, "description": "missing, wrong or stale signature"},
                   409: {"model": ErrorBody, "description": "a replayed delivery, or an event_id reused "
                                                            "for a different event"},
                   413: {"model": ErrorBody, "description": "body over the size bound"},
                   415: {"model": ErrorBody, "description": "not JSON"},
                   422: {"model": ErrorBody, "description": "invalid fields, each named"},
                   429: {"model": ErrorBody, "description": "rate limited (Retry-After)"},
                   503: {"model": ErrorBody, "description": "Prefect unreachable; nothing started (Retry-After)"}},
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": hr_schema}}},
                       "parameters": [{"name": signature.HEADER, "in": "header", "required": True,
                                       "schema": {"type": "string"}}]},
    )
    async def hr_event(request: Request):
        body = await request.body()
        now = time.time()
        try:
            parsed = signature.verify(request.headers.get(signature.HEADER), body, secrets, now, tolerance)
        except signature.SignatureError as exc:
            return _error(401, str(exc), headers={"WWW-Authenticate": signature.HEADER})
        if replays.is_replay(parsed, body, now):
            return _error(409, "this signed delivery was already accepted (a replay); nothing was started. "
                               "Sign each delivery afresh")
        if not _is_json_media(request.headers.get("content-type")):
            return _error(415, "Content-Type must be application/json")
        try:
            # pydantic's parser: UTF-8 only, no lone surrogates, nesting bounded (a body nested
            # thousands deep is refused here, not by a RecursionError further in).
            data = from_json(body)
        except ValueError as exc:
            return _error(415, f"body is not JSON ({str(exc)[:120]})")
        try:
            req = parse_request(data)
        except InvalidInput as exc:
            return _error(422, "invalid request", invalid_fields(data, exc))
        problem = webhook_event_id_problem(req.event_id)
        if problem:
            return _error(422, "invalid request", [{"field": "event_id", "message": problem}])
        deployment = deployment_for(req.type, settings)
        params = {"request": req.model_dump(mode="json")}
        try:
            run = await starter.start(deployment, params, req.event_id)
        except PrefectUnavailable as exc:
            return _error(503, str(exc), headers={"Retry-After": retry_after})
        mismatch = run_mismatch(deployment, params["request"], run.deployment, run.parameters.get("request"),
                                exact=True)
        if mismatch:
            return _error(409, f"event_id {req.event_id!r} was already used for a different event "
                               f"(flow run {run.flow_run_id}: {mismatch}); nothing was started")
        replays.remember(parsed, body, now)
        log.info("hr event %s (%s) -> flow run %s on %s", req.event_id, req.type, run.flow_run_id, deployment)
        return JSONResponse({"flow_run_id": run.flow_run_id, "deployment": deployment}, status_code=202)

    if settings.gateway.scim_token is not None:
        from gateway.scim import scim_app

        # scim2-server's own ASGI app: the SCIM paths are documented by /scim/v2/Schemas
        # and /scim/v2/ResourceTypes (the SCIM way), not in this OpenAPI document.
        app.mount("/scim", scim_app(settings, starter, scim_store))
    return app
