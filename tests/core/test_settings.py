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
    assert s.backup.concurrency == 7
    assert s.identity.department_groups == {"engineering": ["developers"]}


def test_secrets_never_printed(monkeypatch):
    monkeypatch.setenv("VIBECODE_RESTIC_PASSWORD", "hunter2-not-for-logs")
    monkeypatch.setenv("VIBECODE_S3_SECRET_ACCESS_KEY", "s3-secret-not-for-logs")
    s = Settings()
    for rendered in (repr(s), str(s), s.model_dump_json()):
        assert "hunter2-not-for-logs" not in rendered
        assert "s3-secret-not-for-logs" not in rendered
    assert s.backup.restic_password.get_secret_value() == "hunter2-not-for-logs"


@pytest.mark.parametrize("var, value", [
    ("VIBECODE_DOMAIN", "Not A Domain"), ("VIBECODE_BACKUP_CONCURRENCY", "0"),
    ("VIBECODE_AUTHELIA_BACKEND", "kerberos"), ("VIBECODE_VERIFY_READ_DATA_PERCENT", "101"),
])
def test_bad_settings_are_refused(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError) as err:
        Settings()
    from tasks.core.settings import LEGACY_NAMES

    flat = var.removeprefix("VIBECODE_").lower()
    concern, name = LEGACY_NAMES.get(flat, ("", flat))
    assert name in str(err.value)
    assert (concern or flat) in str(err.value)


def test_nested_names_flat_names_and_keywords_all_reach_the_same_field(monkeypatch):
    """Deployments written before the split keep working: the flat VIBECODE_* name and the
    flat keyword are read into the concern; the nested name wins when both are set."""
    from tasks.core.settings import LEGACY_NAMES

    monkeypatch.setenv("VIBECODE_REAP_PROBE_CONCURRENCY", "7")
    assert Settings().reaper.probe_concurrency == 7
    monkeypatch.setenv("VIBECODE_REAPER__PROBE_CONCURRENCY", "9")
    assert Settings().reaper.probe_concurrency == 9
    assert Settings(reap_probe_concurrency=3).reaper.probe_concurrency == 3
    assert Settings(reaper={"probe_concurrency": 4}).reaper.probe_concurrency == 4
    # every flat name maps to a field that exists, and no two flat names share one
    from tasks.core.settings import CONCERNS

    assert all(name in CONCERNS[c].model_fields for c, name in LEGACY_NAMES.values())
    assert len(set(LEGACY_NAMES.values())) == len(LEGACY_NAMES)


def test_a_refused_setting_never_echoes_a_secret(monkeypatch):
    """A model-level check that fails (privileged group) must not print the LDAP password beside it."""
    monkeypatch.setenv("VIBECODE_LDAP_PASSWORD", "ldap-secret-not-for-logs")
    monkeypatch.setenv("VIBECODE_DEFAULT_GROUPS", '["admins"]')
    with pytest.raises(ValidationError) as err:
        Settings()
    assert "privileged" in str(err.value) and "ldap-secret-not-for-logs" not in str(err.value)


def test_every_setting_is_described():
    """Descriptions are the UI's and ``--help``'s text; a field without one is undocumented."""
    from tasks.core.settings import CONCERNS, Settings

    models = {"": Settings, **{f"{c}.": m for c, m in CONCERNS.items()}}
    missing = [prefix + name for prefix, model in models.items() for name, f in model.model_fields.items()
               if not (f.description or "").strip()]
    assert missing == []
    assert set(CONCERNS) <= set(Settings.model_fields)  # every concern is reachable from Settings
