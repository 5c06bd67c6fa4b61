"""The onboarding ledger: one ConfigMap per person (``vibecode-user-<username>``) in the
platform namespace, the durable record that makes HR events safe to repeat. The record
and every decision on it are pure (:mod:`tasks.people.record`); this module stores them.

Why a ConfigMap per person and not one shared document: 50 concurrent hires then never
contend on it. Two creates make a claim atomic: the API server's create (``exist_ok=False``)
is the only step that can say "you were first".
A person provisioned through SCIM also has their SCIM id (a label, to find them by it) and
the SCIM resource as the identity provider last set it, so the gateway keeps no state of its own.

* ``vibecode-employee-<sha256(employee id)>``, the employee index, names the one username
  an employee id owns. Creating it claims the employee: two concurrent hires of one
  person with different usernames both try, one wins, the other adopts the winner's
  username. (A hash, because employee ids may hold capitals and dots; the id itself is
  stored inside and checked on every read.)
* ``vibecode-user-<username>`` claims the username: a username held by another employee
  is refused, and the employee's index entry is taken back so a corrected event can claim.

Every change is a compare-and-swap on ``resourceVersion`` retried on ``Conflict``. It
holds no secret.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import replace
from typing import Any, Callable, TypeVar

from tasks.core.errors import Conflict, InvalidInput, PermanentError
from tasks.core.names import (
    EMPLOYEE_ID_LABEL,
    EMPLOYEE_INDEX_COMPONENT,
    LEDGER_COMPONENT,
    LEDGER_SELECTOR,
    PART_OF,
    PART_OF_LABEL,
    RECORD_COMPONENT_LABEL,
    SCIM_ID_LABEL,
    STATE_LABEL,
    USER_LABEL,
)
from tasks.core.settings import Settings, get_settings
from tasks.people.record import Record, State, from_data, to_data, untouched

PREFIX = "vibecode-user-"
INDEX_PREFIX = "vibecode-employee-"
SELECTOR = LEDGER_SELECTOR
V = TypeVar("V")  # a decision's verdict

__all__ = ["Ledger", "Record", "State", "index_name", "to_manifest", "from_manifest"]


def _name(username: str) -> str:
    return PREFIX + username


def index_name(employee_id: str) -> str:
    return INDEX_PREFIX + hashlib.sha256(employee_id.encode()).hexdigest()[:40]


def to_manifest(rec: Record, namespace: str) -> dict:
    meta: dict[str, Any] = {"name": _name(rec.username), "namespace": namespace,
            "labels": {PART_OF_LABEL: PART_OF, RECORD_COMPONENT_LABEL: LEDGER_COMPONENT, USER_LABEL: rec.username,
                       EMPLOYEE_ID_LABEL: rec.employee_id, STATE_LABEL: rec.state.value}}
    if rec.resource_version:
        meta["resourceVersion"] = rec.resource_version
    if rec.scim_id:
        meta["labels"][SCIM_ID_LABEL] = rec.scim_id
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": to_data(rec)}


def from_manifest(cm: dict) -> Record:
    return from_data(cm.get("data") or {}, cm["metadata"].get("resourceVersion", ""))


def index_manifest(employee_id: str, username: str, namespace: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": index_name(employee_id), "namespace": namespace,
                         "labels": {PART_OF_LABEL: PART_OF, RECORD_COMPONENT_LABEL: EMPLOYEE_INDEX_COMPONENT,
                                    EMPLOYEE_ID_LABEL: employee_id, USER_LABEL: username}},
            "data": {"employee_id": employee_id, "username": username}}


class Ledger:
    def __init__(self, settings: Settings | None = None, kube=None):
        self.settings = settings or get_settings()
        if kube is None:
            from tasks.cluster.kube import connect

            kube = connect(self.settings)
        self.kube = kube
        self.ns = self.settings.platform_namespace

    def get(self, username: str) -> Record | None:
        cm = self.kube.get("ConfigMap", self.ns, _name(username))
        return None if cm is None else from_manifest(cm)

    def _indexed_username(self, employee_id: str) -> str | None:
        idx = self.kube.get("ConfigMap", self.ns, index_name(employee_id))
        if idx is None:
            return None
        data = idx.get("data") or {}
        if data.get("employee_id") != employee_id:
            raise PermanentError(f"employee index {index_name(employee_id)} holds another employee id; fix by hand")
        return data["username"]

    def by_employee(self, employee_id: str) -> Record | None:
        """The record this employee id owns, or ``None`` if it owns none (yet)."""
        username = self._indexed_username(employee_id)
        if username is not None:
            rec = self.get(username)
            return rec if rec is not None and rec.employee_id == employee_id else None
        # Records claimed before the index existed are found by their label.
        found = self.kube.list("ConfigMap", self.ns, f"{SELECTOR},{EMPLOYEE_ID_LABEL}={employee_id}")
        if len(found) > 1:
            raise PermanentError(f"employee {employee_id} has {len(found)} ledger records; fix by hand")
        return from_manifest(found[0]) if found else None

    def by_scim_id(self, scim_id: str) -> Record | None:
        found = self.kube.list("ConfigMap", self.ns, f"{SELECTOR},{SCIM_ID_LABEL}={scim_id}")
        return from_manifest(found[0]) if found else None

    def scim_users(self) -> list[Record]:
        return [from_manifest(cm) for cm in self.kube.list("ConfigMap", self.ns, f"{SELECTOR},{SCIM_ID_LABEL}")]

    def all(self, state: State | None = None) -> list[Record]:
        sel = SELECTOR + (f",{STATE_LABEL}={State(state).value}" if state else "")
        return [from_manifest(cm) for cm in self.kube.list("ConfigMap", self.ns, sel)]

    def claim(self, username: str, employee_id: str) -> Record:
        """The employee's record: created under ``username`` if the employee owns none yet.

        Atomic per employee id (the index create) and per username (the record create).
        A username held by another employee is refused: two people must never share one
        identity or one workspace.
        """
        try:
            idx = self.kube.create(index_manifest(employee_id, username, self.ns), exist_ok=False)
        except Conflict:
            idx = self.kube.get("ConfigMap", self.ns, index_name(employee_id))
            if idx is None:  # taken back between our create and read: the task retries
                raise
        data = idx.get("data") or {}
        if data.get("employee_id") != employee_id:
            raise PermanentError(f"employee index {index_name(employee_id)} holds another employee id; fix by hand")
        owned = data["username"]
        rec = from_manifest(self.kube.create(to_manifest(Record(owned, employee_id), self.ns)))
        if rec.employee_id != employee_id:
            self.kube.delete("ConfigMap", self.ns, index_name(employee_id))
            raise InvalidInput("employee.username",
                               f"{owned!r} already belongs to another employee; send an explicit username")
        return rec

    def forget_scim(self, username: str, scim_id: str) -> bool:
        """Detach SCIM user ``scim_id`` from ``username``'s record (a SCIM DELETE, or a refused
        create undone); the person and their history stay. ``False`` if it was not attached."""
        detached: list[bool] = [False]

        def detach(r: Record) -> Record:
            detached[0] = bool(scim_id) and r.scim_id == scim_id
            return replace(r, scim_id="", scim="") if detached[0] else r

        if self.get(username) is None:
            return False
        self.update(username, detach)
        return detached[0]

    def release(self, username: str, employee_id: str) -> bool:
        """Give back a claim nothing came of (the create that made it was refused), so a
        corrected retry claims afresh: the record, if still :func:`untouched`, and the employee
        index entry naming it. Each is deleted at the version read, so a record another run
        touched meanwhile is kept (and then so is its index entry). ``True`` if it was given back."""
        cm = self.kube.get("ConfigMap", self.ns, _name(username))
        if cm is not None:
            rec = from_manifest(cm)
            if rec.employee_id != employee_id or not untouched(rec):
                return False
            try:
                self.kube.delete("ConfigMap", self.ns, _name(username), resource_version=rec.resource_version)
            except Conflict:
                return False
        idx = self.kube.get("ConfigMap", self.ns, index_name(employee_id))
        data = (idx or {}).get("data") or {}
        if idx is not None and data.get("employee_id") == employee_id and data.get("username") == username:
            try:
                self.kube.delete("ConfigMap", self.ns, index_name(employee_id),
                                 resource_version=idx["metadata"].get("resourceVersion"))
            except Conflict:
                pass  # rewritten meanwhile: it is someone's claim now
        return True

    def update(self, username: str, change: Callable[[Record], Record], attempts: int = 20) -> Record:
        """The record after ``change``, applied by compare-and-swap (see :meth:`decide`)."""
        return self.decide(username, lambda r: (change(r), None), attempts)[0]

    def decide(self, username: str, decision: Callable[[Record], tuple[Record, V]],
               attempts: int = 20) -> tuple[Record, V]:
        """(the stored record, the verdict) of a pure ``decision`` on the current record.

        Compare-and-swap on ``resourceVersion``: when another writer got there first, the
        record is read again and decided again, so the verdict returned is the one of the
        attempt that was stored. A decision that changes nothing writes nothing.
        """
        for attempt in range(attempts):
            current = self.get(username)
            if current is None:
                raise PermanentError(f"no ledger record for {username}")
            new, verdict = decision(current)
            if new == current:
                return current, verdict
            try:
                return from_manifest(self.kube.replace(to_manifest(new, self.ns))), verdict
            except Conflict:
                time.sleep(random.uniform(0, min(1.0, 0.02 * 2 ** attempt)))
        raise Conflict(f"ledger record {username} still contended after {attempts} attempts")
