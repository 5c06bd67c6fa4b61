"""The HR request: the contract's username rule, and hostile input refused naming the field."""

from __future__ import annotations

import copy

import pytest

from tasks.core.errors import InvalidInput
from tasks.core.settings import Settings
from tasks.people.hr import HRRequest, effective_groups, parse_request

HIRE = {"event_id": "evt-2026-0001", "type": "employee.hired", "occurred_at": "2026-11-28T09:00:00Z",
        "employee": {"employee_id": "E1001", "email": "alice@example.com", "given_name": "Alice",
                     "family_name": "Liddell", "username": "alice", "department": "engineering",
                     "groups": ["developers"]}}


@pytest.fixture(autouse=True)
def _hr_may_grant_the_test_groups(monkeypatch):
    """The module's events ask for ``developers``; the default allowlist holds only ``users``."""
    from tasks.core.settings import get_settings

    monkeypatch.setenv("VIBECODE_HR_ALLOWED_GROUPS", '["developers", "users"]')
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


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


# -- full matches: a trailing newline is not a valid end of input -------------------------
@pytest.mark.parametrize("username", ["alice\n", "alice\r\n", "alice\n\n", "\nalice"])
def test_hr_refuses_trailing_newline_in_username(username):
    with pytest.raises(InvalidInput) as exc:
        parse_request(hire(username=username))
    assert exc.value.field == "employee.username"


@pytest.mark.parametrize("email", ["alice@example.com\n", "alice\n@example.com", "alice@example\n.com"])
def test_hr_refuses_trailing_newline_in_email(email):
    body = hire(email=email)
    del body["employee"]["username"]
    with pytest.raises(InvalidInput) as exc:
        parse_request(body)
    assert exc.value.field == "employee.email"
    with pytest.raises(InvalidInput) as exc:  # with an explicit username the email is still checked
        parse_request(hire(email=email))
    assert exc.value.field == "employee.email"


@pytest.mark.parametrize("field,value", [("employee_id", "E1001\n"), ("department", "engineering\n"),
                                         ("groups", ["developers\n"])])
def test_hr_refuses_trailing_newline_in_other_employee_fields(field, value):
    with pytest.raises(InvalidInput) as exc:
        parse_request(hire(**{field: value}))
    assert exc.value.field.startswith(f"employee.{field}")


def test_hr_refuses_trailing_newline_in_event_id():
    with pytest.raises(InvalidInput) as exc:
        parse_request({**HIRE, "event_id": "evt-1\n"})
    assert exc.value.field == "event_id"


def test_validate_username_and_snapshot_id_refuse_trailing_newline():
    from tasks.core.names import validate_snapshot_id, validate_username

    for bad in ("alice\n", "bob\r\n"):
        with pytest.raises(InvalidInput):
            validate_username(bad)
    assert validate_snapshot_id("latest") == "latest" and validate_snapshot_id("0123abcd") == "0123abcd"
    for bad in ("latest\n", "0123abcd\n", "LATEST", "0123"):
        with pytest.raises(InvalidInput) as exc:
            validate_snapshot_id(bad)
        assert exc.value.field == "snapshot"


def test_flow_username_parameter_refuses_trailing_newline():
    from pydantic import TypeAdapter, ValidationError

    from tasks.core.names import Username

    assert TypeAdapter(Username).validate_python("alice") == "alice"
    for bad in ("alice\n", "admin"):
        with pytest.raises(ValidationError):
            TypeAdapter(Username).validate_python(bad)


def test_cli_restore_refuses_a_snapshot_id_with_a_trailing_newline(capsys):
    from vibecode_cli import main

    assert main(["restore", "alice", "--snapshot", "0123abcd\n"]) == 2
    assert "snapshot" in capsys.readouterr().err


# -- groups: an allowlist, and never a privileged group -------------------------------------
def test_hr_refuses_a_privileged_group_naming_the_field():
    s = Settings(hr_allowed_groups=["developers", "users"])
    with pytest.raises(InvalidInput, match="privileged") as exc:
        parse_request(hire(groups=["developers", "admins"]), s)
    assert exc.value.field == "employee.groups"


def test_hr_refuses_a_privileged_group_even_when_an_operator_allowlists_it():
    with pytest.raises(Exception, match="privileged"):  # the settings themselves are refused
        Settings(hr_allowed_groups=["admins", "users"])
    with pytest.raises(Exception, match="department_groups.it"):
        Settings(department_groups={"it": ["admins"]})
    s = Settings(privileged_groups=["root-ops"], hr_allowed_groups=["users"])
    with pytest.raises(InvalidInput, match="privileged") as exc:
        parse_request(hire(groups=["root-ops"]), s)
    assert exc.value.field == "employee.groups"


def test_hr_refuses_groups_outside_the_allowlist_naming_the_field():
    s = Settings(department_groups={"engineering": ["developers", "gpu"]}, default_groups=["users"],
                 hr_allowed_groups=None)  # the default allowlist (the module's env sets one)
    assert parse_request(hire(groups=["gpu", "users"]), s).employee.groups == ["gpu", "users"]
    with pytest.raises(InvalidInput, match="not a group HR may grant") as exc:
        parse_request(hire(groups=["finance-approvers"]), s)
    assert exc.value.field == "employee.groups"
    with pytest.raises(InvalidInput) as exc:  # the default allowlist is the defaults + mappings only
        parse_request(hire(groups=["developers"]), Settings(hr_allowed_groups=None))
    assert exc.value.field == "employee.groups"


def test_hr_group_allowlist_applies_to_the_flow_parameter_model_too():
    """Prefect validates a flow's ``HRRequest`` parameter without parse_request: same refusal."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="privileged"):
        HRRequest.model_validate(hire(groups=["admins"]))
    with pytest.raises(ValidationError, match="not a group HR may grant"):
        HRRequest.model_validate(hire(groups=["wheel"]))


def test_effective_groups_never_include_a_privileged_group():
    s = Settings(department_groups={"engineering": ["developers"]}, default_groups=["users"])
    emp = parse_request(hire(groups=[]), s).employee
    assert effective_groups(emp, s) == ["developers", "users"]
    # even with settings that skipped validation (model_copy does not validate) and map a privileged group
    s2 = s.model_copy(update={"identity": s.identity.model_copy(update={"privileged_groups": ["developers"]})})
    assert effective_groups(emp, s2) == ["users"]
