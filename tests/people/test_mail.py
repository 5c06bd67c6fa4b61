"""The welcome email against a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import logging

import pytest

from tasks.core import mail
from tasks.core.errors import PermanentError, TransientError
from tasks.core.settings import Settings, get_settings
from tasks.people.welcome import welcome_message


def _msg(settings):
    return welcome_message(to_email="alice@example.com", given_name="Alice", family_name="Liddell",
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
    from tasks.cluster.localnode.envtest import free_port

    with pytest.raises(TransientError):
        mail.send(_msg(Settings()), Settings(smtp_host="127.0.0.1", smtp_port=free_port()))


def test_with_totp_preprovisioning_the_email_promises_an_in_person_handoff():
    body = _msg(Settings(totp_preprovision=True)).get_content()
    assert "administrator will hand you your authenticator setup in person" in body
    assert "At your first sign-in you will register" not in body
    assert "reset-password" in body and "https://alice.vibecode.dev" in body
    assert "otpauth" not in body and "secret" not in body.lower()
    assert "in person" not in _msg(Settings(totp_preprovision=False)).get_content()


# -- the SMTP password never crosses the wire in clear -------------------------------------------
def _tls_settings(server, test_ca, **over) -> Settings:
    return Settings(**{"smtp_host": server["host"], "smtp_port": server["port"], "smtp_username": server["username"],
                       "smtp_password": server["password"], "smtp_ca_file": test_ca["ca_file"], **over})


def test_smtp_login_over_starttls_trusting_the_test_ca(smtp_tls_server, test_ca):
    server = smtp_tls_server("starttls")
    s = _tls_settings(server, test_ca, smtp_starttls=True)
    mail.send(_msg(s), s)
    assert server["inbox"].logins == [(server["username"], True)]  # logged in, inside TLS
    assert len(server["inbox"].messages) == 1


def test_smtp_login_over_implicit_tls_smtps(smtp_tls_server, test_ca):
    server = smtp_tls_server("smtps")
    s = _tls_settings(server, test_ca, smtp_ssl=True)
    mail.send(_msg(s), s)
    assert server["inbox"].logins == [(server["username"], True)]
    assert len(server["inbox"].messages) == 1


def test_smtp_refuses_to_send_a_password_without_tls(smtp_tls_server, test_ca):
    server = smtp_tls_server("plain-auth")  # a server that would take the password in clear
    s = _tls_settings(server, test_ca)
    with pytest.raises(PermanentError, match="refusing to send smtp_password without TLS"):
        mail.send(_msg(s), s)
    assert server["inbox"].ehlos == 0 and server["inbox"].logins == [] and server["inbox"].messages == []


def test_smtp_refuses_a_server_certificate_from_an_untrusted_ca(smtp_tls_server, test_ca):
    for mode, flag in (("starttls", "smtp_starttls"), ("smtps", "smtp_ssl")):
        server = smtp_tls_server(mode)
        s = _tls_settings(server, test_ca, **{flag: True, "smtp_ca_file": test_ca["other_ca_file"]})
        with pytest.raises(PermanentError, match="certificate not trusted"):
            mail.send(_msg(s), s)
        assert server["inbox"].logins == [] and server["inbox"].messages == []


def test_smtp_starttls_required_but_not_offered_is_permanent(smtp_tls_server, test_ca):
    server = smtp_tls_server("plain-auth")
    s = _tls_settings(server, test_ca, smtp_starttls=True)
    with pytest.raises(PermanentError, match="does not support STARTTLS"):
        mail.send(_msg(s), s)
    assert server["inbox"].logins == []


def test_smtp_insecure_auth_only_when_loudly_allowed_and_warns(smtp_tls_server, test_ca, caplog):
    server = smtp_tls_server("plain-auth")
    s = _tls_settings(server, test_ca, smtp_allow_insecure_auth=True)
    with caplog.at_level(logging.WARNING, logger="tasks.core.mail"):
        mail.send(_msg(s), s)
    assert server["inbox"].logins == [(server["username"], False)]  # it really went in clear
    assert any("INSECURE" in r.getMessage() for r in caplog.records)
    assert server["password"] not in caplog.text
