"""The onboarding ledger: one ConfigMap per person (``vibecode-user-<username>``) in the
platform namespace, the durable record that makes HR events safe to repeat.

Why a ConfigMap per person and not one shared document: 50 concurrent hires then never
contend on it, and creating it (``exist_ok=False``) is an atomic claim of the username
for one ``employee_id``. It records the event ids already processed, whether the welcome
email went out for the current employment, and when the person left (the retention
clock). It holds no secret. A person provisioned through SCIM also has their SCIM id (a
label, to find them by it) and the SCIM resource as the identity provider last set it, so
the gateway keeps no state of its own.

Every change is a compare-and-swap on ``resourceVersion`` retried on ``Conflict``.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Callable

from tasks.errors import Conflict, InvalidInput, PermanentError
from tasks.names import SCIM_ID_LABEL
from tasks.settings import Settings, get_settings

PREFIX = "vibecode-user-"
SELECTOR = "app.kubernetes.io/part-of=vibecode,vibecode.dev/component=onboarding"
KEEP_EVENTS = 200


@dataclass(frozen=True)
class Record:
    username: str
    employee_id: str
    state: str = "onboarding"  # onboarding -> active -> terminated (-> purged)
    events: tuple[str, ...] = ()
    welcome: str = ""  # "", "claimed:<run>:<iso>", "sent:<iso>"
    terminated_at: str = ""
    purged_at: str = ""
    last_error: str = ""
    scim_id: str = ""  # set while a SCIM user is this person (cleared by a SCIM DELETE)
    scim: str = ""  # JSON: the SCIM resource and its version, written only by the gateway
    resource_version: str = field(default="", compare=False)

    @property
    def welcome_sent(self) -> bool:
        return self.welcome.startswith("sent:")

    def seen(self, event_id: str) -> bool:
        return event_id in self.events

    def with_event(self, event_id: str) -> "Record":
        if event_id in self.events:
            return self
        return replace(self, events=(*self.events, event_id)[-KEEP_EVENTS:])

    def terminated_time(self) -> datetime | None:
        return datetime.fromisoformat(self.terminated_at) if self.terminated_at else None


def _name(username: str) -> str:
    return PREFIX + username


def to_manifest(rec: Record, namespace: str) -> dict:
    meta = {"name": _name(rec.username), "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "vibecode", "vibecode.dev/component": "onboarding",
                       "vibecode.dev/user": rec.username, "vibecode.dev/employee-id": rec.employee_id,
                       "vibecode.dev/state": rec.state}}
    if rec.resource_version:
        meta["resourceVersion"] = rec.resource_version
    data = {"username": rec.username, "employee_id": rec.employee_id, "state": rec.state,
            "events": json.dumps(list(rec.events)), "welcome": rec.welcome,
            "terminated_at": rec.terminated_at, "purged_at": rec.purged_at, "last_error": rec.last_error}
    if rec.scim_id:
        meta["labels"][SCIM_ID_LABEL] = rec.scim_id
        data["scim_id"] = rec.scim_id
    if rec.scim:
        data["scim"] = rec.scim
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def from_manifest(cm: dict) -> Record:
    d = cm.get("data") or {}
    return Record(username=d["username"], employee_id=d["employee_id"], state=d.get("state", "onboarding"),
                  events=tuple(json.loads(d.get("events") or "[]")), welcome=d.get("welcome", ""),
                  terminated_at=d.get("terminated_at", ""), purged_at=d.get("purged_at", ""),
                  last_error=d.get("last_error", ""), scim_id=d.get("scim_id", ""), scim=d.get("scim", ""),
                  resource_version=cm["metadata"].get("resourceVersion", ""))


class Ledger:
    def __init__(self, settings: Settings | None = None, kube=None):
        self.settings = settings or get_settings()
        if kube is None:
            from tasks.kube import connect

            kube = connect(self.settings)
        self.kube = kube
        self.ns = self.settings.platform_namespace

    def get(self, username: str) -> Record | None:
        cm = self.kube.get("ConfigMap", self.ns, _name(username))
        return None if cm is None else from_manifest(cm)

    def by_employee(self, employee_id: str) -> Record | None:
        found = self.kube.list("ConfigMap", self.ns, f"{SELECTOR},vibecode.dev/employee-id={employee_id}")
        if len(found) > 1:
            raise PermanentError(f"employee {employee_id} has {len(found)} ledger records; fix by hand")
        return from_manifest(found[0]) if found else None

    def by_scim_id(self, scim_id: str) -> Record | None:
        found = self.kube.list("ConfigMap", self.ns, f"{SELECTOR},{SCIM_ID_LABEL}={scim_id}")
        return from_manifest(found[0]) if found else None

    def scim_users(self) -> list[Record]:
        return [from_manifest(cm) for cm in self.kube.list("ConfigMap", self.ns, f"{SELECTOR},{SCIM_ID_LABEL}")]

    def all(self, state: str | None = None) -> list[Record]:
        sel = SELECTOR + (f",vibecode.dev/state={state}" if state else "")
        return [from_manifest(cm) for cm in self.kube.list("ConfigMap", self.ns, sel)]

    def claim(self, username: str, employee_id: str) -> Record:
        """Create the record, or return the existing one if it is this employee's.

        A username already held by another employee is refused: two people must never
        share one identity or one workspace.
        """
        created = self.kube.create(to_manifest(Record(username, employee_id), self.ns))
        rec = from_manifest(created)
        if rec.employee_id != employee_id:
            raise InvalidInput("employee.username",
                               f"{username!r} already belongs to another employee; send an explicit username")
        return rec

    def update(self, username: str, change: Callable[[Record], Record], attempts: int = 20) -> Record:
        for attempt in range(attempts):
            current = self.get(username)
            if current is None:
                raise PermanentError(f"no ledger record for {username}")
            new = change(current)
            if new == current:
                return current
            try:
                return from_manifest(self.kube.replace(to_manifest(new, self.ns)))
            except Conflict:
                time.sleep(random.uniform(0, min(1.0, 0.02 * 2 ** attempt)))
        raise Conflict(f"ledger record {username} still contended after {attempts} attempts")
