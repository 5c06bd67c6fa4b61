"""The one reader of Authelia's users database (tasks.people.usersdb), as both its users see it:
the identity backend (an empty file is an empty database) and the health check (it is not)."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tasks.core.errors import PermanentError
from tasks.health.checks import Status, parse_users
from tasks.people import usersdb

ALICE = {"displayname": "Alice", "password": "$argon2id$v=19$x", "email": "a@example.com", "groups": ["users"]}


@pytest.mark.parametrize("text, empty_ok, users, error", [
    (yaml.safe_dump({"users": {"alice": ALICE}}), True, {"alice": ALICE}, None),
    (yaml.safe_dump({"users": {"alice": ALICE}}), False, {"alice": ALICE}, None),
    ("", True, {}, None),  # before the first hire
    (None, True, {}, None),
    ("users:\n", True, {}, None),
    ("", False, None, "has no `users` mapping"),  # Authelia with nobody in it locks everyone out
    ("users:\n", False, None, "has no `users` mapping"),
    ("users: {}\n", False, {}, None),
    ("users: [alice]\n", True, None, "has no `users` mapping"),
    ("- alice\n", True, None, "is not a mapping"),
    ("users:\n  alice: {\n", True, None, "is not YAML at line"),
])
def test_load_table(text, empty_ok, users, error):
    if error:
        with pytest.raises(usersdb.UsersFileError, match=error) as caught:
            usersdb.load(text, empty_ok=empty_ok)
        assert isinstance(caught.value, PermanentError) and usersdb.USERS_KEY in str(caught.value)
    else:
        assert usersdb.load(text, empty_ok=empty_ok)["users"] == users


def test_a_yaml_error_names_the_line_and_never_echoes_the_content():
    text = "users:\n  alice:\n    password: '$argon2id$secret-hash\n"
    with pytest.raises(usersdb.UsersFileError) as caught:
        usersdb.load(text)
    assert "line" in caught.value.reason and "secret-hash" not in str(caught.value)


@pytest.mark.parametrize("text, status", [
    (yaml.safe_dump({"users": {"alice": ALICE}}), Status.OK),
    (yaml.safe_dump({"users": {"alice": {**ALICE, "password": ""}}}), Status.WARNING),
    ("users: [unclosed", Status.CRITICAL),
    ("", Status.CRITICAL),
    (None, Status.CRITICAL),
])
def test_the_health_check_judges_what_the_backend_reads(text, status):
    users, check = parse_users(text, "Secret not found")
    assert check.status is status
    if status is not Status.CRITICAL:
        assert users == usersdb.load(text)["users"]


usernames = st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True)
# What HR admits into a name (no control characters: PyYAML writes U+0085 raw inside a quoted
# scalar and reads it back as a space; tasks.people.hr refuses it before it gets here).
text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20)
entries = st.fixed_dictionaries({"displayname": text, "password": text, "disabled": st.booleans(),
                                 "groups": st.lists(text, max_size=3)})


@given(st.dictionaries(usernames, entries, max_size=5))
def test_dump_then_load_is_the_same_database_and_the_checksum_is_stable(users):
    text = usersdb.dump({"users": users})
    assert usersdb.load(text)["users"] == users
    assert usersdb.checksum(usersdb.dump(usersdb.load(text))) == usersdb.checksum(text)
