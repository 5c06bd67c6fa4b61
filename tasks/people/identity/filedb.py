"""Authelia's file backend: ``users_database.yml`` inside the Secret the platform chart owns.

Every change is a compare-and-swap on the Secret's ``resourceVersion``: read, change the
document, ``replace``; when another writer got there first the API server answers 409
(:class:`~tasks.core.errors.Conflict`) and we re-read and re-apply, so 50 concurrent hires
never lose each other's entries. Secret volumes are not watched reliably (symlink swap,
read-only), so Authelia's pod template carries the checksum of the users file, which rolls
it. That roll is *converged*, not a side effect of a write: every ``upsert``/``disable``
makes sure the annotation names the file as it is now, even when the file needed no
change, so a retry after "the write landed but the roll failed" (or "the write landed but
the client saw an error") still ends with Authelia on the current file.
"""

from __future__ import annotations

import base64
import copy
import random
import time
from typing import Callable

from tasks.core.errors import Conflict, PermanentError
from tasks.core.names import USERS_CHECKSUM_ANNOTATION
from tasks.core.settings import Settings, get_settings
from tasks.people import usersdb
from tasks.people.identity import Change, UserSpec, UserState
from tasks.people.identity.passwords import unusable_argon2_hash
from tasks.people.usersdb import USERS_KEY

CHECKSUM_ANNOTATION = USERS_CHECKSUM_ANNOTATION  # on Authelia's pod template
MAX_ATTEMPTS = 40


# -- pure document operations (unit-tested without a cluster) -------------------------
def _attributes(spec: UserSpec) -> dict:
    return {
        "displayname": spec.displayname,
        "email": spec.email,
        "given_name": spec.given_name,
        "family_name": spec.family_name,
        "groups": list(spec.groups),
        "disabled": False,
    }


def apply_upsert(doc: dict, spec: UserSpec, new_hash: Callable[[], str]) -> tuple[dict, Change]:
    """Add the user with an unusable password, or bring attributes in line; never touches a
    live password (the person may already have chosen one). An upsert that grants no access
    (the person has left) never enables and never disables (that is the disable's, which also
    scrambles the password), but adds someone absent as disabled: found by the soak, a hire run
    after its newer termination left no entry where HR's order leaves a disabled one."""
    users = doc["users"]
    current = users.get(spec.username)
    wanted = _attributes(spec)
    if not spec.grants_access:
        del wanted["disabled"]
        if current is None:  # a leaver not here yet (their termination overtook their hire): created
            out = copy.deepcopy(doc)  # disabled, as the hire and then the termination would leave them
            out["users"][spec.username] = {**wanted, "disabled": True, "password": new_hash()}
            return out, "created"
    if current is None:
        out = copy.deepcopy(doc)
        out["users"][spec.username] = {**wanted, "password": new_hash()}
        return out, "created"
    if all(current.get(k) == v for k, v in wanted.items()):
        return doc, "unchanged"
    out = copy.deepcopy(doc)
    out["users"][spec.username] = {**current, **wanted}
    return out, "enabled" if current.get("disabled") and spec.grants_access else "updated"


def apply_disable(doc: dict, username: str, new_hash: Callable[[], str]) -> tuple[dict, Change]:
    """Disable and replace the hash, so a password the person chose stops working too."""
    current = doc["users"].get(username)
    if current is None:
        return doc, "absent"
    if current.get("disabled") is True:
        return doc, "unchanged"
    out = copy.deepcopy(doc)
    out["users"][username] = {**current, "disabled": True, "password": new_hash()}
    return out, "disabled"


def to_state(username: str, entry: dict) -> UserState:
    return UserState(username=username, email=entry.get("email", ""),
                     displayname=entry.get("displayname", ""), groups=tuple(entry.get("groups") or ()),
                     disabled=bool(entry.get("disabled")), extra={"password": entry.get("password", "")})


class _LazyHash:
    """Hash once per operation, however many CAS rounds it takes (argon2 costs ~0.2 s)."""

    def __init__(self) -> None:
        self._value: str | None = None

    def __call__(self) -> str:
        if self._value is None:
            self._value = unusable_argon2_hash()
        return self._value


# -- the Secret ------------------------------------------------------------------------
class FileBackend:
    name = "file"

    def __init__(self, settings: Settings | None = None, kube=None):
        self.settings = settings or get_settings()
        self._kube = kube

    @property
    def kube(self):
        if self._kube is None:
            from tasks.cluster.kube import connect

            self._kube = connect(self.settings)
        return self._kube

    def _read(self) -> tuple[dict, dict]:
        ns, name = self.settings.platform_namespace, self.settings.identity.authelia_users_secret
        secret = self.kube.get("Secret", ns, name)
        if secret is None:
            raise PermanentError(f"Secret {ns}/{name} not found: install the platform chart first "
                                 "(it owns the Authelia users database)")
        raw = (secret.get("data") or {}).get(USERS_KEY)
        text = base64.b64decode(raw).decode() if raw else ""
        return secret, usersdb.load(text)

    def get(self, username: str) -> UserState | None:
        entry = self._read()[1]["users"].get(username)
        return None if entry is None else to_state(username, entry)

    def list_users(self) -> dict[str, UserState]:
        return {u: to_state(u, e) for u, e in self._read()[1]["users"].items()}

    def upsert(self, spec: UserSpec) -> Change:
        new_hash = _LazyHash()
        return self._update(lambda doc: apply_upsert(doc, spec, new_hash))

    def disable(self, username: str) -> Change:
        new_hash = _LazyHash()
        return self._update(lambda doc: apply_disable(doc, username, new_hash))

    def _read_text(self) -> tuple[dict, str]:
        secret, _ = self._read()
        raw = (secret.get("data") or {}).get(USERS_KEY)
        return secret, base64.b64decode(raw).decode() if raw else ""

    def _update(self, mutate: Callable[[dict], tuple[dict, Change]]) -> Change:
        for attempt in range(MAX_ATTEMPTS):
            secret, current_text = self._read_text()
            new_doc, change = mutate(usersdb.load(current_text))
            if change in ("unchanged", "absent"):
                self.roll_authelia(usersdb.checksum(current_text))  # converge: a lost roll is redone here
                return change
            text = usersdb.dump(new_doc)
            secret.setdefault("data", {})[USERS_KEY] = base64.b64encode(text.encode()).decode()
            secret["metadata"].pop("managedFields", None)  # resourceVersion stays: it is the guard
            try:
                self.kube.replace(secret)
            except Conflict:
                time.sleep(random.uniform(0, min(1.0, 0.02 * 2 ** attempt)))  # full jitter
                continue
            self.roll_authelia(usersdb.checksum(text))
            return change
        raise Conflict(f"users database still contended after {MAX_ATTEMPTS} attempts")

    def roll_authelia(self, digest: str) -> bool:
        """Make Authelia's pod template carry ``digest``, so the Deployment runs on that file.

        Returns whether it had to change (a roll started). A missing Deployment is an error:
        without it nobody reads the file, and a disabled person's session would silently
        outlive the change.
        """
        ns, name = self.settings.platform_namespace, self.settings.identity.authelia_deployment
        dep = self.kube.get("Deployment", ns, name)
        if dep is None:
            raise PermanentError(f"Authelia Deployment {ns}/{name} not found: the users file was written "
                                 "but nothing will load it; install the platform chart (or set "
                                 "VIBECODE_AUTHELIA_DEPLOYMENT) and rerun")
        annotations = ((dep.get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations") or {}
        if annotations.get(CHECKSUM_ANNOTATION) == digest:
            return False
        self.kube.patch("Deployment", ns, name,
                        {"spec": {"template": {"metadata": {"annotations": {CHECKSUM_ANNOTATION: digest}}}}})
        return True
