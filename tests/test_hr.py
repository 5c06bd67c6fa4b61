"""The HR request: the contract's username rule, and hostile input refused naming the field."""

from __future__ import annotations

import copy

import pytest

from tasks.errors import InvalidInput
from tasks.hr import HRRequest, effective_groups, parse_request
from tasks.settings import Settings

HIRE = {"event_id": "evt-2026-0001", "type": "employee.hired", "occurred_at": "2026-11-28T09:00:00Z",
        "employee": {"employee_id": "E1001", "email": "alice@example.com", "given_name": "Alice",
                     "family_name": "Liddell", "username": "alice", "department": "engineering",
                     "groups": ["developers"]}}


def hire(**employee) -> dict:
    body = copy.deepcopy(HIRE)
    body["employee"].update(employee)
    return body


def test_the_issue_example_parses():
    r = parse_request(HIRE)
    assert isinstance(r, HRRequest) and r.username == "alice" and r.employee.groups == ["developers"]


@pytest.mark.parametrize("email,username", [
    ("Alice.B_C+D@Example.com", "alice-b-c-d"),
    ("bob@example.com", "bob"),
])
def test_username_defaults_to_the_emails_local_part(email, username):
    body = hire(email=email)
    del body["employee"]["username"]
    assert parse_request(body).username == username


HOSTILE_USERNAMES = ["../../etc/passwd", "a/b", "alice;rm -rf /", "$(reboot)", "`id`", "a b",
                     "аlice",  # Cyrillic a
                     "ａｌｉｃｅ",  # fullwidth
                     "x" * 10_000, "auth", "admin", "api", "docs", "www", "grafana", "prometheus",
                     "minio", "s3", "kube-system", "Alice", "-alice", "alice-", "a", ""]


@pytest.mark.parametrize("username", HOSTILE_USERNAMES)
def test_hostile_usernames_are_refused_naming_the_field(username):
    with pytest.raises(InvalidInput) as exc:
        parse_request(hire(username=username))
    assert exc.value.field == "employee.username"
    assert len(str(exc.value)) < 300  # a 10 kB input is never echoed back


HOSTILE_EMAILS = ["../../etc/passwd@example.com", "alice@example.com\r\nBcc: all@example.com",
                  "a;id@example.com", "alice@exa mple.com", "аlice@example.com", "alice@",
                  "@example.com", "alice", "x" * 10_000 + "@example.com", "alice@example.com@evil.com",
                  "alice@localhost", "alice@1.2.3.4"]


@pytest.mark.parametrize("email", HOSTILE_EMAILS)
def test_hostile_emails_are_refused_naming_the_field(email):
    body = hire(email=email)
    del body["employee"]["username"]
    with pytest.raises(InvalidInput) as exc:
        parse_request(body)
    assert exc.value.field == "employee.email"
    assert len(str(exc.value)) < 300


def test_an_email_that_derives_a_reserved_host_is_refused_on_the_email_field():
    body = hire(email="admin@example.com")
    del body["employee"]["username"]
    with pytest.raises(InvalidInput, match="reserved") as exc:
        parse_request(body)
    assert exc.value.field == "employee.email"


@pytest.mark.parametrize("field,value", [
    ("given_name", "Robert'); DROP TABLE--"), ("given_name", "a\nb"), ("family_name", "x" * 10_000),
    ("groups", ["admins; rm"]), ("groups", ["../x"]), ("department", "../../x"), ("employee_id", "E 1"),
])
def test_other_employee_fields_are_checked(field, value):
    with pytest.raises(InvalidInput) as exc:
        parse_request(hire(**{field: value}))
    assert exc.value.field.startswith(f"employee.{field}")


def test_unicode_names_are_people_and_are_allowed():
    r = parse_request(hire(given_name="Zoë", family_name="Ó Briain-Łukasz"))
    assert r.employee.display_name == "Zoë Ó Briain-Łukasz"


@pytest.mark.parametrize("patch,field", [({"type": "employee.promoted"}, "type"),
                                         ({"event_id": "../x"}, "event_id"),
                                         ({"occurred_at": "2026-11-28T09:00:00"}, "occurred_at")])
def test_envelope_fields_are_checked(patch, field):
    with pytest.raises(InvalidInput) as exc:
        parse_request({**HIRE, **patch})
    assert exc.value.field == field


def test_groups_default_and_department_mapping():
    s = Settings(department_groups={"engineering": ["developers", "gpu"]}, default_groups=["users"])
    body = hire(groups=[])
    assert effective_groups(parse_request(body).employee, s) == ["developers", "gpu", "users"]
    assert effective_groups(parse_request(hire(department="sales", groups=[])).employee, s) == ["users"]
