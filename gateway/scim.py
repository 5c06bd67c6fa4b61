"""SCIM 2.0 (RFC 7643/7644) under ``/scim/v2``, so Okta and Entra ID provisioning can
drive onboarding.

The protocol (routing, discovery, validation, filters, PATCH, ETags, error messages) is
scim2-server's :class:`~scim2_server.applications.asgi.ASGIApplication` over scim2-models;
what is ours is the storage, :class:`LedgerStorage`:

- a SCIM user *is* a person's ledger record (:mod:`tasks.people.ledger`): its SCIM id
  is a label and the resource is kept in the record, so a restart (or a second replica)
  loses nothing and no other state exists;
- every write that means something to HR starts a flow run
  (:mod:`tasks.gateway.scim_map` decides which), with an HR event id in SCIM's own
  namespace (:func:`tasks.gateway.events.scim_event_id`) as idempotency key; a run found
  under that key that is not this event for this person is a 409, never a silent 204;
- the HR rules are :func:`tasks.people.hr.parse_request`'s; a refusal is a SCIM 400 naming the
  SCIM attribute, and changes nothing;
- the write is stored first and the run started second; if Prefect cannot be reached the
  write is undone, to the point that a refused create leaves no claim behind
  (:meth:`~tasks.people.ledger.Ledger.release`), and the client gets 503 with Retry-After
  (identity providers retry, possibly with corrected input);
- a person the ledger already knows (their employee id) keeps their username whatever
  ``userName`` a new SCIM user brings (a name change, provisioned again after a delete):
  the username names their workspace, volumes, backups and identity, and the HR path
  adopts it the same way; a person who is still another live SCIM user is a 409 naming it.

Whatever bytes a request holds, the answer is a SCIM error: header values that are not
UTF-8 are a 400 at this boundary (scim2-server would raise decoding them), and the
Location header is percent-encoded (a path holding control characters must not make the
response unsendable).

The published User schema marks ``name`` (given and family name) and ``emails`` required,
because a person's identity and welcome email need them. Passwords are never stored.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
import re
import urllib.parse
import uuid
from dataclasses import replace
from typing import Annotated, Any, Callable, cast

import anyio
from pydantic import EmailStr
from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Email,
    EnterpriseUser,
    ETag,
    External,
    Filter,
    InvalidValueException,
    Meta,
    Name,
    NotFoundException,
    NotImplementedException,
    Patch,
    PreconditionFailedException,
    Reference,
    Required,
    Resource,
    ResourceType,
    SCIMException,
    ScimProvider,
    SearchRequest,
    ServiceProviderConfig,
    Sort,
    UnauthorizedException,
    UniquenessException,
    User,
)
from scim2_server.applications.asgi import ASGIApplication
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from scim2_server.service import ScimService
from scim2_server.storage import AsyncScimStorage, SearchPage

from gateway.runs import PrefectUnavailable, RunStarter
from tasks.core.errors import InvalidInput
from tasks.core.settings import Settings
from tasks.gateway import scim_map
from tasks.gateway.events import run_mismatch, scim_event_id, scim_event_key
from tasks.people.hr import Process, deployment_for, parse_request, process_for
from tasks.people.ledger import Ledger, Record

log = logging.getLogger("vibecode.gateway")

SCIM_ID = re.compile(r"^[0-9a-f]{32}$")
NOT_STORED = ("id", "meta", "password")


class VibeName(Name):
    given_name: Annotated[str | None, Required.true] = None
    family_name: Annotated[str | None, Required.true] = None


class VibeEmail(Email):
    value: Annotated[EmailStr | None, Required.true] = None


class VibeUser(User):
    """The core User schema as VibeCode serves it: a name and an email are required."""

    name: Annotated[VibeName | None, Required.true] = None
    # a narrower item type than User's (pydantic validates it); mypy sees an incompatible override
    emails: Annotated[list[VibeEmail] | None, Required.true] = None  # type: ignore[assignment]


BEARER = AuthenticationScheme(type=AuthenticationScheme.Type.oauthbearertoken, name="OAuth Bearer Token",
                              description="A static bearer token from the gateway's settings",
                              spec_uri=Reference[External]("https://www.rfc-editor.org/rfc/rfc6750"),
                              primary=True)


def provider(max_results: int) -> ScimProvider:
    config = ServiceProviderConfig(
        patch=Patch(supported=True), bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=max_results), change_password=ChangePassword(supported=False),
        sort=Sort(supported=False), etag=ETag(supported=True), authentication_schemes=[BEARER])
    return ScimProvider(models=[VibeUser, EnterpriseUser],
                        resource_types=[ResourceType.from_resource(
                            VibeUser[EnterpriseUser])],  # type: ignore[misc]  # scim2-models' extension syntax, generic at runtime
                        config=config)


class ServiceUnavailable(SCIMException):
    status = 503
    _default_detail = "The Prefect API is unreachable; nothing was changed. Retry later"


class EventConflict(SCIMException):
    """The event id this write derives already names another event's run (409; nothing changed)."""

    status = 409
    _default_detail = "This change's event id already names another run; nothing was changed"


class BadRequest(SCIMException):
    status = 400
    _default_detail = "The request could not be read"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _version_tag(version: int) -> str:
    return f'W/"{version}"'


class LedgerStorage(AsyncScimStorage):
    """SCIM users kept in the ledger ConfigMaps; writes start onboarding/offboarding runs.

    Kubernetes calls are blocking, so they run in worker threads; starting a run is
    awaited on the event loop.
    """

    def __init__(self, settings: Settings, starter: RunStarter, ledger_factory: Callable[[], Ledger] | None = None,
                 clock: Callable[[], dt.datetime] = _now) -> None:
        self.settings = settings
        self.starter = starter
        self._ledger_factory = ledger_factory or (lambda: Ledger(settings))
        self._ledger: Ledger | None = None
        self.clock = clock
        token = settings.gateway.scim_token
        self._event_key = scim_event_key(token.get_secret_value() if token is not None else "")

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = self._ledger_factory()
        return self._ledger

    # -- record <-> resource ---------------------------------------------------------
    @staticmethod
    def _state(rec: Record) -> dict:
        return json.loads(rec.scim) if rec.scim else {}

    def _resource(self, resource_type: ResourceType, rec: Record, model: type[Resource[Any]]) -> Resource[Any]:
        st = self._state(rec)
        res = model.model_validate(st["resource"])
        res.id = rec.scim_id
        res.meta = Meta(resource_type=resource_type.name, created=dt.datetime.fromisoformat(st["created"]),
                        last_modified=dt.datetime.fromisoformat(st["lastModified"]),
                        version=_version_tag(st["version"]))
        return res

    @staticmethod
    def _wire(resource: Resource[Any]) -> dict:
        data = resource.model_dump(mode="json")
        for key in NOT_STORED:
            data.pop(key, None)
        return data

    async def _run(self, fn, *args):
        return await anyio.to_thread.run_sync(fn, *args)

    async def _record(self, resource_id: str) -> Record:
        rec = await self._run(self.ledger.by_scim_id, resource_id) if SCIM_ID.match(resource_id or "") else None
        if rec is None or not rec.scim:
            raise NotFoundException(detail=f"User {resource_id!r} not found")
        return rec

    # -- HR --------------------------------------------------------------------------
    @staticmethod
    def _invalid(exc: InvalidInput, id_source: str) -> InvalidValueException:
        attr = scim_map.scim_attribute(exc.field, id_source)
        return InvalidValueException(detail=f"{attr}: {str(exc).split(': ', 1)[-1]}")

    def _hr_body(self, user: dict, event_type: str, scim_id: str, version: int, username: str,
                 employee_id: str, id_source: str) -> dict:
        body = scim_map.hr_event(user, event_type=event_type,
                                 event_id=scim_event_id(self._event_key, scim_id, version),
                                 occurred_at=self.clock(), username=username, employee_id=employee_id)
        try:
            return parse_request(body).model_dump(mode="json")
        except InvalidInput as exc:
            raise self._invalid(exc, id_source) from None

    async def _start(self, hr: dict) -> str:
        deployment = deployment_for(hr["type"], self.settings)
        try:
            run = await self.starter.start(deployment, {"request": hr}, hr["event_id"])
        except PrefectUnavailable as exc:
            raise ServiceUnavailable(detail=str(exc)) from None
        mismatch = run_mismatch(deployment, hr, run.deployment, run.parameters.get("request"), exact=False)
        if mismatch:
            log.warning("scim %s for %s: event id already names flow run %s (%s)", hr["type"],
                        hr["employee"]["employee_id"], run.flow_run_id, mismatch)
            raise EventConflict(detail=f"this change's event id already names flow run {run.flow_run_id} "
                                       f"({mismatch}); nothing was changed")
        log.info("scim %s for %s -> flow run %s on %s", hr["type"], hr["event_id"], run.flow_run_id, deployment)
        return run.flow_run_id

    def _check_unique(self, user_name: str, scim_id: str) -> None:
        """userName is unique (caseExact false) among the SCIM users."""
        wanted = user_name.casefold()
        for rec in self.ledger.scim_users():
            if rec.scim_id != scim_id and str(self._state(rec).get("resource", {}).get("userName", "")).casefold() == wanted:
                raise UniquenessException(detail="userName is already taken by another User")

    # -- storage API -----------------------------------------------------------------
    async def get(self, resource_type: ResourceType, resource_id: str, *, response_parameters=None) -> Resource[Any]:
        rec = await self._record(resource_id)
        return self._resource(resource_type, rec, type_model(resource_type))

    async def search(self, resource_types: list[ResourceType], search_request: SearchRequest[Any], *,
                     position: Any = None) -> SearchPage:
        resource_type = resource_types[0]
        model = type_model(resource_type)
        records = await self._run(self.ledger.scim_users)
        found = [self._resource(resource_type, r, model) for r in records if r.scim]
        if search_request.filter is not None:
            found = [r for r in found if search_request.filter.match(r)]
        found.sort(key=lambda r: r.id or "")
        start = search_request.start_index_0 or 0
        stop = None if search_request.count is None else start + search_request.count
        return SearchPage(len(found), found[start:stop])

    async def create(self, resource_type: ResourceType, resource: Resource[Any]) -> Resource[Any]:
        scim_id = uuid.uuid4().hex
        user = self._wire(resource)
        employee_id, id_source = scim_map.employee_id_for(user, scim_id)
        try:
            username = scim_map.username_for(user)
        except InvalidInput as exc:
            raise self._invalid(exc, id_source) from None
        known = await self._run(self.ledger.by_employee, employee_id)
        if known is not None:
            username = known.username  # fixed at the first hire (a name change keeps the workspace)
        event = scim_map.event_type_for(None, user, username=username, employee_id=employee_id)
        # Validate everything before anything is written (an inactive new user has no event yet,
        # but must still be a valid person for the day they are activated).
        hr = self._hr_body(user, event or "employee.hired", scim_id, 1, username, employee_id, id_source)
        now = self.clock().isoformat()
        state = json.dumps({"version": 1, "created": now, "lastModified": now, "resource": user})
        rec, claimed = await self._run(self._claim, username, employee_id, scim_id, state, user["userName"])
        if rec.username != username:  # another entry point claimed the person meanwhile
            hr = self._hr_body(user, event or "employee.hired", scim_id, 1, rec.username, employee_id, id_source)
        if event is not None:
            try:
                await self._start(hr)
            except (ServiceUnavailable, EventConflict):
                await self._run(self._undo_create, rec, scim_id, claimed)
                raise
        return self._resource(resource_type, rec, type(resource))

    def _claim(self, username: str, employee_id: str, scim_id: str, state: str, user_name: str) -> tuple[Record, bool]:
        """Attach the new SCIM user to the person's record; (the record, whether this claimed it)."""
        self._check_unique(user_name, scim_id)
        claimed = self.ledger.by_employee(employee_id) is None
        try:
            rec = self.ledger.claim(username, employee_id)
        except InvalidInput:
            raise UniquenessException(detail=f"userName gives username {username!r}, which belongs to another "
                                             f"employee; send that person's externalId or employeeNumber, or "
                                             f"another userName") from None

        def attach(r: Record) -> Record:
            if r.scim_id and r.scim_id != scim_id:
                other = str(self._state(r).get("resource", {}).get("userName", ""))[:100]
                raise UniquenessException(detail=f"this person (employee {employee_id}, username {r.username!r}) "
                                                 f"is already the SCIM User {r.scim_id} (userName {other!r}); "
                                                 f"update or delete that User instead")
            return replace(r, scim_id=scim_id, scim=state)

        try:
            return self.ledger.update(rec.username, attach), claimed
        except UniquenessException:
            if claimed:
                self.ledger.release(rec.username, employee_id)
            raise

    def _undo_create(self, rec: Record, scim_id: str, claimed: bool) -> None:
        """A refused create leaves nothing behind: the SCIM user is detached and, if this create
        made the claim, the claim is given back, so a corrected retry starts afresh."""
        self.ledger.forget_scim(rec.username, scim_id)
        if claimed:
            self.ledger.release(rec.username, rec.employee_id)

    async def update(self, resource_type: ResourceType, resource: Resource[Any], *,
                     expected_version: str | None = None) -> Resource[Any]:
        rec = await self._record(resource.id or "")  # no id: not found, like an unknown one
        old_state = self._state(rec)
        old_version = old_state["version"]
        if expected_version is not None and expected_version != _version_tag(old_version):
            raise PreconditionFailedException
        user = scim_map.keep_active(old_state["resource"], self._wire(resource))
        version = old_version + 1
        event = scim_map.event_type_for(old_state["resource"], user, username=rec.username,
                                        employee_id=rec.employee_id)
        hr = None
        if event is not None:
            # A termination is about the person as they were: it must go through even if
            # the same request also blanked a field the HR event needs.
            source = old_state["resource"] if process_for(event) is Process.OFFBOARDING else user
            hr = self._hr_body(source, event, rec.scim_id, version, rec.username, rec.employee_id, "externalId")
        new_state = {**old_state, "version": version, "lastModified": self.clock().isoformat(), "resource": user}
        saved = await self._run(self._swap, rec, old_version, json.dumps(new_state), user.get("userName", ""))
        if hr is not None:
            try:
                await self._start(hr)
            except (ServiceUnavailable, EventConflict):
                await self._run(self._revert, saved, version, rec.scim)
                raise
        return self._resource(resource_type, saved, type(resource))

    def _swap(self, rec: Record, old_version: int, new_state: str, user_name: str) -> Record:
        if user_name:
            self._check_unique(user_name, rec.scim_id)

        def change(r: Record) -> Record:
            if r.scim_id != rec.scim_id or self._state(r).get("version") != old_version:
                raise PreconditionFailedException(detail="the User changed meanwhile; read it again")
            return replace(r, scim=new_state)

        return self.ledger.update(rec.username, change)

    def _revert(self, saved: Record, version: int, old_state: str) -> None:
        def change(r: Record) -> Record:
            return replace(r, scim=old_state) if self._state(r).get("version") == version else r

        self.ledger.update(saved.username, change)

    async def delete(self, resource_type: ResourceType, resource_id: str, *,
                     expected_version: str | None = None) -> None:
        rec = await self._record(resource_id)
        state = self._state(rec)
        if expected_version is not None and expected_version != _version_tag(state["version"]):
            raise PreconditionFailedException
        version = state["version"] + 1
        hr = None
        if scim_map.is_active(state["resource"]):
            hr = self._hr_body(state["resource"], "employee.terminated", rec.scim_id, version, rec.username,
                               rec.employee_id, "externalId")
        # Terminate first: if Prefect is down, the User still exists and the client retries.
        if hr is not None:
            await self._start(hr)
        if not await self._run(self.ledger.forget_scim, rec.username, rec.scim_id):
            raise NotFoundException(detail=f"User {resource_id!r} not found")


_MODELS: dict[str, type[Resource[Any]]] = {}


def type_model(resource_type: ResourceType) -> type[Resource[Any]]:
    return _MODELS[resource_type.name or ""]


class GatewayScimApp(ASGIApplication):
    """scim2-server's ASGI app with the gateway's bearer token (constant-time compare) and
    Retry-After on 503."""

    def __init__(self, storage: AsyncScimStorage, scim_provider: ScimProvider, token: str) -> None:
        super().__init__(storage, scim_provider, ScimService(scim_provider))
        self._token = token.encode()
        for rt in scim_provider.resource_types:
            model = scim_provider.model_for(rt)
            if rt.name and model is not None:
                _MODELS[rt.name] = cast(type[Resource[Any]], model)
        self.retry_after = "10"

    def check_auth(self, request: ScimRequest) -> None:
        scheme, _, token = (request.header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._token):
            raise UnauthorizedException(detail="a valid bearer token is required")

    def handle_exception(self, request: ScimRequest, exception: Exception) -> ScimResponse:
        """Also: what scim2-server answers 501 (``/Me``, and features the ServiceProviderConfig
        says we lack: bulk, sorting, cursors) is a 4xx here. A 5xx from the internet-facing
        surface means our fault or Prefect down, which is what alerting watches; a client
        asking for something we never offered is the client's to fix: ``/Me`` is a 404 (there
        is no such endpoint here), a feature we lack a 400 naming it."""
        if isinstance(exception, NotImplementedException):
            detail = f"{exception.detail} by this service provider (see /ServiceProviderConfig)"
            exception = (NotFoundException(detail=detail) if request.path.strip("/").split("/")[0] == "Me"
                         else BadRequest(detail=detail))
        response = super().handle_exception(request, exception)
        if isinstance(exception, ServiceUnavailable):
            response.headers["Retry-After"] = self.retry_after
        return response

    def finalize_response(self, request: ScimRequest, response: ScimResponse) -> ScimResponse:
        """Location is the request's URL, which holds whatever the path and Host header held:
        percent-encode it, so a control character cannot make the response unsendable."""
        response.headers.setdefault("Location", request.url)
        response.headers["Location"] = urllib.parse.quote(response.headers["Location"], safe=_URL_SAFE)
        return super().finalize_response(request, response)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            problem = _undecodable(scope)
            if problem:
                response = self.service.error_response(BadRequest(detail=problem))
                response.headers["Cache-Control"] = "no-cache"
                await self.send_response(response, send)
                return
        await super().__call__(scope, receive, send)


# RFC 3986 reserved and unreserved characters, and '%' (already-encoded octets stay as they are).
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"


def _undecodable(scope) -> str | None:
    """Why scim2-server could not read this request's headers or query string, or ``None``:
    it decodes them as UTF-8, and raised (a 500, a traceback in the error log) on any other
    bytes. Header names are HTTP tokens, so only values need checking."""
    for name, value in scope.get("headers") or []:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return f"the {name.decode('latin-1')[:60]} header is not valid UTF-8"
    try:
        scope.get("query_string", b"").decode("utf-8")
    except UnicodeDecodeError:
        return "the query string is not valid UTF-8"
    return None


def scim_app(settings: Settings, starter: RunStarter, storage: AsyncScimStorage | None = None) -> GatewayScimApp:
    assert settings.gateway.scim_token is not None
    app = GatewayScimApp(storage or LedgerStorage(settings, starter), provider(settings.gateway.scim_max_results),
                         settings.gateway.scim_token.get_secret_value())
    app.retry_after = str(settings.gateway.retry_after_seconds)
    return app
