"""The welcome email against a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import pytest

from tasks import mail
from tasks.errors import TransientError
from tasks.settings import Settings, get_settings


def _msg(settings):
    return mail.welcome_message(to_email="alice@example.com", given_name="Alice", family_name="Liddell",
                                username="alice", workspace_url="https://alice.vibecode.dev",
                                message_key="welcome.E1001.evt-1", settings=settings)


def test_welcome_email_is_delivered_with_url_reset_link_and_2fa_note(smtp_inbox):
    s = get_settings()
    mail.send(_msg(s), s)
    assert len(smtp_inbox.messages) == 1
    got = smtp_inbox.messages[0]
    body = got.get_content()
    assert got["To"].addresses[0].addr_spec == "alice@example.com"
    assert "https://alice.vibecode.dev" in body
    assert "https://auth.vibecode.dev/reset-password/step1" in body
    assert "second" in body and "TOTP" in body
    assert got["Message-ID"] == "<welcome.E1001.evt-1@vibecode.dev>"
    assert smtp_inbox.envelopes[0][1] == ["alice@example.com"]


def test_an_unreachable_server_is_a_transient_error():
    from tests.fixtures.identity import free_port

    with pytest.raises(TransientError):
        mail.send(_msg(Settings()), Settings(smtp_host="127.0.0.1", smtp_port=free_port()))


def test_with_totp_preprovisioning_the_email_promises_an_in_person_handoff():
    body = _msg(Settings(totp_preprovision=True)).get_content()
    assert "administrator will hand you your authenticator setup in person" in body
    assert "At your first sign-in you will register" not in body
    assert "reset-password" in body and "https://alice.vibecode.dev" in body
    assert "otpauth" not in body and "secret" not in body.lower()
    assert "in person" not in _msg(Settings(totp_preprovision=False)).get_content()
