"""The LDAP backend against a real Debian slapd."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from ldap3 import BASE, Connection, Server

from tasks.identity import UserSpec, get_backend
from tasks.identity.ldapdir import LdapBackend

ALICE = UserSpec(username="alice", email="alice@example.com", given_name="Alice", family_name="Liddell",
                 groups=("developers", "users"), employee_id="E1001")


def _password_of(settings, dn) -> bytes:
    with Connection(Server(settings.ldap_url), settings.ldap_bind_dn,
                    settings.ldap_password.get_secret_value(), auto_bind=True) as conn:
        conn.search(dn, "(objectClass=*)", BASE, attributes=["userPassword"])
        return conn.entries[0].userPassword.value


def test_settings_select_the_ldap_backend(ldap_settings):
    assert isinstance(get_backend(ldap_settings), LdapBackend)


def test_hire_creates_entry_and_group_membership(ldap_settings):
    backend = LdapBackend(ldap_settings)
    assert backend.upsert(ALICE) == "created"
    state = backend.get("alice")
    assert state.email == "alice@example.com" and state.displayname == "Alice Liddell"
    assert state.groups == ("developers", "users") and state.disabled is False
    assert state.extra["employee_id"] == "E1001"
    assert _password_of(ldap_settings, backend.user_dn("alice")).lower().startswith(b"{ssha512}")
    assert backend.upsert(ALICE) == "unchanged"


def test_update_in_place_moves_groups_and_mail(ldap_settings):
    backend = LdapBackend(ldap_settings)
    backend.upsert(ALICE)
    moved = UserSpec(**{**ALICE.__dict__, "email": "a.liddell@example.com", "groups": ("users", "sre")})
    assert backend.upsert(moved) == "updated"
    state = backend.get("alice")
    assert state.email == "a.liddell@example.com" and state.groups == ("sre", "users")
    # 'developers' lost its last member, so groupOfNames had to go
    assert "developers" not in {g for u in backend.list_users().values() for g in u.groups}


def test_disable_keeps_the_entry_and_changes_the_credential(ldap_settings):
    backend = LdapBackend(ldap_settings)
    backend.upsert(ALICE)
    before = _password_of(ldap_settings, backend.user_dn("alice"))
    assert backend.disable("alice") == "disabled"
    state = backend.get("alice")
    assert state.disabled is True and state.groups == ("developers", "users")
    assert _password_of(ldap_settings, backend.user_dn("alice")) != before
    assert backend.disable("alice") == "unchanged"
    assert backend.disable("nobody") == "absent"
    assert backend.upsert(ALICE) == "enabled"
    assert backend.get("alice").disabled is False


def test_concurrent_hires_share_groups_without_losing_members(ldap_settings):
    backend = LdapBackend(ldap_settings)
    specs = [UserSpec(username=f"user{i:02d}", email=f"user{i:02d}@example.com", given_name="U",
                      family_name=f"N{i}", groups=("users", "developers"), employee_id=f"E{i}") for i in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        assert list(pool.map(backend.upsert, specs)) == ["created"] * 20
    users = backend.list_users()
    assert sorted(users) == [s.username for s in specs]
    assert all(u.groups == ("developers", "users") for u in users.values())
