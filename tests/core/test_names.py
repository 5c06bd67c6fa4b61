import pytest

from tasks.core.errors import InvalidInput
from tasks.core.names import username_from_email, validate_username, workspace_names

DNS1123_LABEL = __import__("re").compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize("name", ["al", "alice", "bob-smith", "a1", "x" * 32, "dev-42"])
def test_valid_usernames(name):
    assert validate_username(name) == name


@pytest.mark.parametrize("name, fragment", [
    ("", "must match"), ("a", "must match"), ("Alice", "must match"), ("1abc", "must match"),
    ("abc-", "must match"), ("-abc", "must match"), ("a_b", "must match"), ("a.b", "must match"),
    ("x" * 33, "at most 32"), ("x" * 10_000, "at most 32"), ("../etc", "must match"),
    ("a;rm -rf", "must match"), ("a$(id)", "must match"), ("аlice", "ASCII"),  # Cyrillic а
    ("a--b", "--"), ("auth", "reserved"), ("admin", "reserved"), ("api", "reserved"),
    ("docs", "reserved"), ("www", "reserved"), ("grafana", "reserved"), ("prometheus", "reserved"),
    ("minio", "reserved"), ("s3", "reserved"), ("hr", "reserved"), ("kube-system", "reserved"), ("kube-x", "reserved"),
    (None, "string"), (42, "string"),
])
def test_invalid_usernames_name_the_field(name, fragment):
    with pytest.raises(InvalidInput) as err:
        validate_username(name)
    assert err.value.field == "username"
    assert fragment in str(err.value)
    assert len(str(err.value)) < 200  # a 10 kB input is never echoed back


@pytest.mark.parametrize("email, expected", [
    ("alice@example.com", "alice"), ("Alice.Liddell@example.com", "alice-liddell"),
    ("bob_smith+dev@example.com", "bob-smith-dev"),
])
def test_username_from_email(email, expected):
    assert username_from_email(email) == expected


def test_workspace_names_are_dns_safe_and_distinct():
    seen = set()
    for user in ["al", "alice", "a-b", "ab", "x" * 32]:
        n = workspace_names(user)
        for name in (n.release, n.deployment, n.service, n.workspace_pvc, n.extensions_pvc):
            assert DNS1123_LABEL.match(name) and len(name) <= 63, name
        seen.add(n.workspace_pvc)
        assert n.labels["vibecode.dev/user"] == user
        assert n.host("vibecode.dev") == f"{user}.vibecode.dev"
    assert len(seen) == 5


def test_names_refuse_invalid_user():
    with pytest.raises(InvalidInput):
        workspace_names("Bad_User")
