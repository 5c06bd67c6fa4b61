"""Identity in Authelia behind one small interface, with two backends.

* ``file``: Authelia's ``users_database.yml`` inside the platform chart's Secret
  (:mod:`tasks.people.identity.filedb`).
* ``ldap``: entries and ``groupOfNames`` membership in a directory (:mod:`tasks.people.identity.ldapdir`).

Both converge: ``upsert`` and ``disable`` compare before they write and report what
changed, so replays are no-ops. Disabling keeps the entry (audit) and scrambles the
credential so access ends at once; re-enabling never restores a password (the person
resets it). Nothing here returns or logs a password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from tasks.core.settings import Settings, get_settings

Change = Literal["created", "updated", "enabled", "disabled", "unchanged", "absent"]


@dataclass(frozen=True)
class UserSpec:
    """What HR says a person should look like in the directory."""

    username: str
    email: str
    given_name: str
    family_name: str
    groups: tuple[str, ...]
    employee_id: str = ""
    # False: bring the data in line and leave access as it is (a leaver's late update must
    # neither enable them nor stand in for the disable, which also replaces the password)
    grants_access: bool = True

    @property
    def displayname(self) -> str:
        return f"{self.given_name} {self.family_name}"


@dataclass(frozen=True)
class UserState:
    username: str
    email: str
    displayname: str
    groups: tuple[str, ...]
    disabled: bool
    extra: dict = field(default_factory=dict, compare=False, repr=False)  # may hold a hash: never print it


class IdentityBackend(Protocol):
    name: str

    def get(self, username: str) -> UserState | None: ...

    def list_users(self) -> dict[str, UserState]: ...

    def upsert(self, spec: UserSpec) -> Change:
        """Create (random password) or update in place; re-enables a disabled user."""

    def disable(self, username: str) -> Change:
        """Disable and scramble the credential; keeps the entry for audit."""


def get_backend(settings: Settings | None = None) -> IdentityBackend:
    s = settings or get_settings()
    if s.identity.backend == "ldap":
        from tasks.people.identity.ldapdir import LdapBackend

        return LdapBackend(s)
    from tasks.people.identity.filedb import FileBackend

    return FileBackend(s)
