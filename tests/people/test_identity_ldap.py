"""The LDAP backend against a real Debian slapd."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import pytest
from ldap3 import BASE

from tasks.core.errors import PermanentError
from tasks.people.identity import UserSpec, get_backend
from tasks.people.identity.ldapdir import LdapBackend
from tests.fixtures.identity import admin_connection

ALICE = UserSpec(username="alice", email="alice@example.com", given_name="Alice", family_name="Liddell",
                 groups=("developers", "users"), employee_id="E1001")


def _password_of(settings, dn) -> bytes:
    with admin_connection({"url": settings.identity.ldap_url, "ca_file": settings.identity.ldap_ca_file,
                           "bind_dn": settings.identity.ldap_bind_dn,
                           "password": settings.identity.ldap_password.get_secret_value()}) as conn:
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


def test_an_upsert_granting_no_access_adds_someone_absent_disabled_and_never_changes_access(ldap_settings):
    """A hire run after its newer termination (the soak's finding): HR's order would have left a
    disabled entry, so one is added disabled; on an active entry it changes data, not access."""
    backend = LdapBackend(ldap_settings)
    left = UserSpec(**{**ALICE.__dict__, "username": "gone", "email": "gone@example.com", "grants_access": False})
    assert backend.upsert(left) == "created"
    assert backend.get("gone").disabled is True and backend.get("gone").groups == ("developers", "users")
    backend.upsert(ALICE)
    late = UserSpec(**{**ALICE.__dict__, "family_name": "Hargreaves", "grants_access": False})
    assert backend.upsert(late) == "updated"
    assert backend.get("alice").disabled is False and backend.get("alice").extra.get("family_name") == "Hargreaves"


def test_concurrent_hires_share_groups_without_losing_members(ldap_settings):
    backend = LdapBackend(ldap_settings)
    specs = [UserSpec(username=f"user{i:02d}", email=f"user{i:02d}@example.com", given_name="U",
                      family_name=f"N{i}", groups=("users", "developers"), employee_id=f"E{i}") for i in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        assert list(pool.map(backend.upsert, specs)) == ["created"] * 20
    users = backend.list_users()
    assert sorted(users) == [s.username for s in specs]
    assert all(u.groups == ("developers", "users") for u in users.values())


# -- the bind password never crosses the wire in clear ------------------------------------------
def test_ldap_binds_over_starttls_trusting_the_test_ca(ldap_settings):
    """slapd refuses an unencrypted simple bind (olcSecurity simple_bind=128), so this working
    proves the StartTLS upgrade happened before the password was sent."""
    assert ldap_settings.identity.ldap_url.startswith("ldap://") and ldap_settings.identity.ldap_start_tls
    backend = LdapBackend(ldap_settings)
    assert backend.upsert(ALICE) == "created" and backend.get("alice").email == "alice@example.com"


def test_ldap_binds_over_ldaps(ldap_settings, slapd):
    s = ldap_settings.replace(ldap_url=slapd["ldaps_url"], ldap_start_tls=False)
    backend = LdapBackend(s)
    assert backend.upsert(ALICE) == "created" and backend.get("alice").groups == ("developers", "users")


def test_ldap_refuses_a_password_bind_over_plain_ldap(ldap_settings, monkeypatch):
    s = ldap_settings.replace(ldap_start_tls=False)
    from tasks.people.identity import ldapdir

    opened = []
    monkeypatch.setattr(ldapdir, "Connection", lambda *a, **k: opened.append(a) or pytest.fail("connected"))
    with pytest.raises(PermanentError, match="refusing to send the bind password over plain ldap://"):
        LdapBackend(s).get("alice")
    assert opened == []  # refused before any connection was opened


def test_ldap_refuses_a_server_certificate_from_an_untrusted_ca(ldap_settings, slapd, test_ca):
    for update in ({"ldap_ca_file": test_ca["other_ca_file"]},  # StartTLS
                   {"ldap_ca_file": test_ca["other_ca_file"], "ldap_url": slapd["ldaps_url"]}):
        with pytest.raises(PermanentError, match="TLS"):
            LdapBackend(ldap_settings.replace(**update)).get("alice")


def test_ldap_insecure_bind_only_when_loudly_allowed_and_warns(ldap_settings, caplog):
    """With the insecure setting the bind really goes out in clear (this slapd then refuses it:
    confidentiality required), and the operator is warned."""
    s = ldap_settings.replace(ldap_start_tls=False, ldap_allow_insecure_bind=True)
    with caplog.at_level(logging.WARNING, logger="tasks.people.identity.ldapdir"):
        with pytest.raises(PermanentError, match="bind .* failed: LDAPConfidentialityRequiredResult"):
            LdapBackend(s).get("alice")
    assert any("INSECURE" in r.getMessage() and "without TLS" in r.getMessage() for r in caplog.records)
    assert ldap_settings.identity.ldap_password.get_secret_value() not in caplog.text


# -- group clean-up never deletes a group another writer just joined ---------------------------------
def _spec(username: str, groups: tuple[str, ...]) -> UserSpec:
    return UserSpec(username=username, email=f"{username}@example.com", given_name="U", family_name=username,
                    groups=groups, employee_id=f"E-{username}")


def test_ldap_group_cleanup_keeps_a_group_another_writer_just_joined(ldap_settings, monkeypatch):
    """Two writers, two connections, on the real slapd. Writer A moves alice, the last member of
    ``developers``, out of it; just before A's delete of the now-empty group reaches the server,
    writer B adds bob to ``developers``. bob's membership must survive."""
    import ldap3

    writer_a, writer_b = LdapBackend(ldap_settings), LdapBackend(ldap_settings)
    writer_a.upsert(_spec("alice", ("developers", "users")))
    developers = writer_a._group_dn("developers")
    real_delete = ldap3.Connection.delete
    interleaved = []

    def delete(self, dn, controls=None):
        if dn == developers and not interleaved:
            interleaved.append(dn)
            assert writer_b.upsert(_spec("bob", ("developers",))) == "created"  # B, between A's read and delete
        return real_delete(self, dn, controls=controls)

    monkeypatch.setattr(ldap3.Connection, "delete", delete)
    assert writer_a.upsert(_spec("alice", ("users",))) == "updated"
    assert interleaved == [developers]  # the race really happened
    assert writer_b.get("bob").groups == ("developers",)
    assert writer_a.get("alice").groups == ("users",)


def test_ldap_last_member_leaving_still_deletes_the_group(ldap_settings):
    backend = LdapBackend(ldap_settings)
    backend.upsert(_spec("alice", ("developers", "users")))
    backend.upsert(_spec("alice", ("users",)))
    with admin_connection({"url": ldap_settings.identity.ldap_url, "ca_file": ldap_settings.identity.ldap_ca_file,
                           "bind_dn": ldap_settings.identity.ldap_bind_dn,
                           "password": ldap_settings.identity.ldap_password.get_secret_value()}) as conn:
        conn.search(backend.groups_dn, "(objectClass=groupOfNames)", attributes=["cn"])
        assert sorted(str(e.cn.value) for e in conn.entries) == ["users"]


def test_ldap_two_writers_racing_on_one_group_lose_no_member(ldap_settings):
    """Real concurrency: A repeatedly joins and leaves ``sre`` (deleting it each time it is the last
    member) while B adds new people to ``sre``; every person B added must still be in it."""
    from threading import Thread

    a, b = LdapBackend(ldap_settings), LdapBackend(ldap_settings)
    errors: list[BaseException] = []

    def toggler():
        try:
            for _ in range(12):
                a.upsert(_spec("alice", ("sre",)))
                a.upsert(_spec("alice", ("users",)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def joiner():
        try:
            for i in range(12):
                b.upsert(_spec(f"joiner{i:02d}", ("sre",)))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [Thread(target=toggler), Thread(target=joiner)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    users = b.list_users()
    assert all(users[f"joiner{i:02d}"].groups == ("sre",) for i in range(12)), \
        {u: s.groups for u, s in users.items()}
