"""The LDAP backend: ``inetOrgPerson`` entries under ``ou=people`` and ``groupOfNames``
under ``ou=groups`` (what Authelia's ``custom`` LDAP implementation reads by default).

A disabled person keeps their entry (audit) with ``employeeType: disabled`` and a fresh
random ``userPassword``; Authelia's ``users_filter`` must exclude them, e.g.
``(&({username_attribute}={input})(objectClass=inetOrgPerson)(!(employeeType=disabled)))``.
That needs no ``memberOf`` overlay or ppolicy module, so it works on a stock slapd.

The bind password never crosses the wire in clear: ``ldaps://`` or StartTLS
(``ldap_start_tls``), with the server's certificate checked against ``ldap_ca_file`` or the
system's trust store. Only the loudly named ``ldap_allow_insecure_bind`` lifts that, and
every such bind logs a warning.
"""

from __future__ import annotations

import logging
import ssl

from ldap3 import (
    BASE,
    HASHED_SALTED_SHA512,
    MODIFY_ADD,
    MODIFY_DELETE,
    MODIFY_REPLACE,
    SUBTREE,
    Connection,
    Server,
    Tls,
)
from ldap3.core.exceptions import (
    LDAPAssertionFailedResult,
    LDAPAttributeOrValueExistsResult,
    LDAPEntryAlreadyExistsResult,
    LDAPException,
    LDAPNoSuchAttributeResult,
    LDAPNoSuchObjectResult,
    LDAPObjectClassViolationResult,
    LDAPSocketOpenError,
    LDAPStartTLSError,
)
from ldap3.operation.search import compile_filter, parse_filter
from ldap3.utils.asn1 import encode as asn1_encode
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn
from ldap3.utils.hashed import hashed

from tasks.core.errors import Conflict, PermanentError, ServerError
from tasks.core.settings import Settings, get_settings
from tasks.people.identity import Change, UserSpec, UserState
from tasks.people.identity.passwords import random_secret

log = logging.getLogger(__name__)

ASSERTION_CONTROL_OID = "1.3.6.1.1.12"
GROUP_ATTEMPTS = 20

ATTRS = ["uid", "mail", "displayName", "givenName", "sn", "cn", "employeeType", "employeeNumber"]


class LdapBackend:
    name = "ldap"

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        base = self.settings.identity.ldap_base_dn
        self.people = f"ou=people,{base}"
        self.groups_dn = f"ou=groups,{base}"

    # -- plumbing --------------------------------------------------------------------
    def _transport(self) -> tuple[Server, bool]:
        """The server to talk to and whether to StartTLS; refuses a clear-text bind unless the
        insecure setting says otherwise."""
        s = self.settings
        url = s.identity.ldap_url.strip()
        scheme = url.split("://", 1)[0].lower()
        if scheme not in ("ldap", "ldaps"):
            raise PermanentError(f"ldap_url must start with ldap:// or ldaps://, not {scheme[:10]!r}")
        tls = Tls(ca_certs_file=str(s.identity.ldap_ca_file) if s.identity.ldap_ca_file else None, validate=ssl.CERT_REQUIRED,
                  version=ssl.PROTOCOL_TLS_CLIENT)
        server = Server(url, use_ssl=scheme == "ldaps", tls=tls, connect_timeout=5)
        if scheme == "ldaps" or s.identity.ldap_start_tls:
            return server, scheme != "ldaps"
        if not s.identity.ldap_allow_insecure_bind:
            raise PermanentError("LDAP: refusing to send the bind password over plain ldap://; use ldaps:// "
                                 "or set VIBECODE_LDAP_START_TLS (or, insecurely, VIBECODE_LDAP_ALLOW_INSECURE_BIND)")
        log.warning("INSECURE: LDAP bind as %s to %s without TLS (ldap_allow_insecure_bind is on): the password "
                    "crosses the network in clear", s.identity.ldap_bind_dn, url)
        return server, False

    def _connect(self) -> Connection:
        s = self.settings
        if s.identity.ldap_password is None:
            raise PermanentError("VIBECODE_LDAP_PASSWORD is not set")
        server, start_tls = self._transport()
        try:
            conn = Connection(server, user=s.identity.ldap_bind_dn, password=s.identity.ldap_password.get_secret_value(),
                              raise_exceptions=True, receive_timeout=10)
            conn.open()
            if start_tls:
                conn.start_tls()  # raises if the server refuses; the password is never sent then
            conn.bind()
        except LDAPSocketOpenError as exc:
            if _tls_failure(exc):
                raise PermanentError(f"LDAP {s.identity.ldap_url}: TLS failed ({str(exc)[:160]}); check ldap_ca_file") from None
            raise ServerError(f"LDAP {s.identity.ldap_url} unreachable: {type(exc).__name__}") from None
        except LDAPStartTLSError as exc:
            raise PermanentError(f"LDAP {s.identity.ldap_url}: StartTLS failed ({str(exc)[:160]}); check ldap_ca_file "
                                 "and that the server offers StartTLS") from None
        except LDAPException as exc:
            raise PermanentError(f"LDAP bind as {s.identity.ldap_bind_dn} failed: {type(exc).__name__}") from None
        self._ensure_ous(conn)
        return conn

    def _ensure_ous(self, conn: Connection) -> None:
        for dn in (self.people, self.groups_dn):
            try:
                conn.add(dn, "organizationalUnit", {"ou": dn.split(",", 1)[0].split("=", 1)[1]})
            except LDAPEntryAlreadyExistsResult:
                pass

    def user_dn(self, username: str) -> str:
        return f"uid={escape_rdn(username)},{self.people}"

    def _group_dn(self, group: str) -> str:
        return f"cn={escape_rdn(group)},{self.groups_dn}"

    def _read(self, conn: Connection, username: str) -> UserState | None:
        try:
            conn.search(self.user_dn(username), "(objectClass=inetOrgPerson)", BASE, attributes=ATTRS)
        except LDAPNoSuchObjectResult:
            return None
        if not conn.entries:
            return None
        e = conn.entries[0].entry_attributes_as_dict
        return UserState(username=username, email=_one(e, "mail"), displayname=_one(e, "displayName"),
                         groups=tuple(self._groups_of(conn, self.user_dn(username))),
                         disabled=_one(e, "employeeType") == "disabled",
                         extra={"given_name": _one(e, "givenName"), "family_name": _one(e, "sn"),
                                "employee_id": _one(e, "employeeNumber")})

    def _groups_of(self, conn: Connection, dn: str) -> list[str]:
        conn.search(self.groups_dn, f"(&(objectClass=groupOfNames)(member={escape_filter_chars(dn)}))",
                    SUBTREE, attributes=["cn"])
        return sorted(str(e.cn.value) for e in conn.entries)

    # -- interface -------------------------------------------------------------------
    def get(self, username: str) -> UserState | None:
        with self._connect() as conn:
            return self._read(conn, username)

    def list_users(self) -> dict[str, UserState]:
        with self._connect() as conn:
            conn.search(self.people, "(objectClass=inetOrgPerson)", SUBTREE, attributes=["uid"])
            names = [str(e.uid.value) for e in conn.entries]
            return {n: st for n in names if (st := self._read(conn, n)) is not None}

    def upsert(self, spec: UserSpec) -> Change:
        with self._connect() as conn:
            current = self._read(conn, spec.username)
            dn = self.user_dn(spec.username)
            attrs = {"cn": spec.displayname, "displayName": spec.displayname, "givenName": spec.given_name,
                     "sn": spec.family_name, "mail": spec.email}
            if spec.grants_access:
                attrs["employeeType"] = "active"
            # granting no access (the person has left): never enabled nor disabled here, but someone
            # absent is added disabled, as HR's order (hire, then termination) leaves them (filedb)
            added_as = attrs.get("employeeType", "disabled")
            if spec.employee_id:
                attrs["employeeNumber"] = spec.employee_id
            change: Change = "unchanged"
            if current is None:
                try:
                    conn.add(dn, "inetOrgPerson", {**attrs, "employeeType": added_as, "uid": spec.username,
                                                   "userPassword": hashed(HASHED_SALTED_SHA512, random_secret())})
                    change = "created"
                except LDAPEntryAlreadyExistsResult:  # a concurrent run created it: converge below
                    current = self._read(conn, spec.username)
            if current is not None:
                have = {"cn": current.displayname, "displayName": current.displayname,
                        "givenName": current.extra.get("given_name"), "sn": current.extra.get("family_name"),
                        "mail": current.email, "employeeType": "disabled" if current.disabled else "active",
                        "employeeNumber": current.extra.get("employee_id")}
                diff = {k: [(MODIFY_REPLACE, [v])] for k, v in attrs.items() if have.get(k) != v}
                if diff:
                    conn.modify(dn, diff)
                    change = "enabled" if current.disabled and spec.grants_access else "updated"
            groups_changed = self._sync_groups(conn, dn, set(spec.groups),
                                               set(current.groups) if current else set())
            if groups_changed and change == "unchanged":
                change = "updated"
            return change

    def disable(self, username: str) -> Change:
        with self._connect() as conn:
            current = self._read(conn, username)
            if current is None:
                return "absent"
            if current.disabled:
                return "unchanged"
            conn.modify(self.user_dn(username), {
                "employeeType": [(MODIFY_REPLACE, ["disabled"])],
                "userPassword": [(MODIFY_REPLACE, [hashed(HASHED_SALTED_SHA512, random_secret())])],
            })
            return "disabled"

    def _sync_groups(self, conn: Connection, dn: str, wanted: set[str], have: set[str]) -> bool:
        for group in sorted(wanted - have):
            self._join_group(conn, self._group_dn(group), group, dn)
        for group in sorted(have - wanted):
            self._leave_group(conn, self._group_dn(group), dn)
        return wanted != have

    def _join_group(self, conn: Connection, gdn: str, group: str, dn: str) -> None:
        """Add ``dn`` to the group, creating the group if it does not exist; concurrent writers
        may create or delete it meanwhile, so each outcome is re-tried from the top."""
        for _ in range(GROUP_ATTEMPTS):
            try:
                conn.modify(gdn, {"member": [(MODIFY_ADD, [dn])]})
                return
            except LDAPAttributeOrValueExistsResult:
                return
            except LDAPNoSuchObjectResult:
                pass
            try:
                conn.add(gdn, "groupOfNames", {"cn": group, "member": [dn]})
                return
            except LDAPEntryAlreadyExistsResult:  # created concurrently: join it on the next round
                continue
        raise Conflict(f"LDAP group {group} still contended after {GROUP_ATTEMPTS} attempts")

    def _leave_group(self, conn: Connection, gdn: str, dn: str) -> None:
        """Remove ``dn`` from the group; delete the group only if ``dn`` is still its sole member.

        ``groupOfNames`` needs at least one member, so the last one leaving means deleting the
        entry. That delete carries an assertion control (RFC 4528) on the ``entryCSN`` read
        just before: if another writer added a member in between, the entry changed, the
        server refuses the delete, and we re-read (and then only remove ``dn``).
        """
        for _ in range(GROUP_ATTEMPTS):
            try:
                conn.search(gdn, "(objectClass=groupOfNames)", BASE, attributes=["member", "entryCSN"])
            except LDAPNoSuchObjectResult:
                return
            if not conn.entries:
                return
            entry = conn.entries[0].entry_attributes_as_dict
            members = {str(m).lower() for m in entry.get("member") or []}
            if dn.lower() not in members:
                return
            if len(members) > 1:
                try:
                    conn.modify(gdn, {"member": [(MODIFY_DELETE, [dn])]})
                    return
                except (LDAPNoSuchAttributeResult, LDAPNoSuchObjectResult):
                    return
                except LDAPObjectClassViolationResult:  # the others left meanwhile: re-read
                    continue
            csn = str((entry.get("entryCSN") or [""])[0])
            if not csn:
                raise PermanentError(f"LDAP {gdn} has no entryCSN; cannot delete it safely")
            try:
                conn.delete(gdn, controls=[assertion_control(f"(entryCSN={csn})")])
                return
            except LDAPAssertionFailedResult:  # changed since we read it (a member joined): re-read
                continue
            except LDAPNoSuchObjectResult:
                return
        raise Conflict(f"LDAP group {gdn} still contended after {GROUP_ATTEMPTS} attempts")


def assertion_control(ldap_filter: str) -> tuple[str, bool, bytes]:
    """An LDAP assertion control (RFC 4528): the server runs the operation only if the target
    entry matches ``ldap_filter`` at that moment, atomically with the operation."""
    root = parse_filter(ldap_filter, None, True, False, None, False)
    return ASSERTION_CONTROL_OID, True, asn1_encode(compile_filter(root.elements[0]))


def _tls_failure(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "certificate" in text or "ssl" in text or "tls" in text


def _one(attrs: dict, key: str) -> str:
    values = attrs.get(key) or []
    return str(values[0]) if values else ""
