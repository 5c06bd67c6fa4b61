import json

import pytest
from pydantic import ValidationError

from tasks.core.settings import Settings


def test_env_prefix_and_types(monkeypatch):
    monkeypatch.setenv("VIBECODE_NAMESPACE", "ws")
    monkeypatch.setenv("VIBECODE_BACKUP_CONCURRENCY", "7")
    monkeypatch.setenv("VIBECODE_DEPARTMENT_GROUPS", json.dumps({"engineering": ["developers"]}))
    s = Settings()
    assert s.namespace == "ws"
    assert s.backup_concurrency == 7
    assert s.department_groups == {"engineering": ["developers"]}


def test_secrets_never_printed(monkeypatch):
    monkeypatch.setenv("VIBECODE_RESTIC_PASSWORD", "hunter2-not-for-logs")
    monkeypatch.setenv("VIBECODE_S3_SECRET_ACCESS_KEY", "s3-secret-not-for-logs")
    s = Settings()
    for rendered in (repr(s), str(s), s.model_dump_json()):
        assert "hunter2-not-for-logs" not in rendered
        assert "s3-secret-not-for-logs" not in rendered
    assert s.restic_password.get_secret_value() == "hunter2-not-for-logs"


@pytest.mark.parametrize("var, value", [
    ("VIBECODE_DOMAIN", "Not A Domain"), ("VIBECODE_BACKUP_CONCURRENCY", "0"),
    ("VIBECODE_AUTHELIA_BACKEND", "kerberos"), ("VIBECODE_VERIFY_READ_DATA_PERCENT", "101"),
])
def test_bad_settings_are_refused(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError) as err:
        Settings()
    assert var.removeprefix("VIBECODE_").lower() in str(err.value)


def test_every_setting_is_described():
    """Descriptions are the UI's and ``--help``'s text; a field without one is undocumented."""
    from tasks.core.settings import Settings

    missing = [name for name, f in Settings.model_fields.items() if not (f.description or "").strip()]
    assert missing == []
