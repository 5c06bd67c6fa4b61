"""The welcome email, over SMTP (settings.smtp_*).

A password never crosses the wire in clear: SMTP AUTH runs only inside TLS (STARTTLS,
``smtp_starttls``, or implicit TLS, ``smtp_ssl``), with the server's certificate checked
against the system's trust store or ``smtp_ca_file``. Only the loudly named
``smtp_allow_insecure_auth`` lifts that, and every such login logs a warning.

It carries no secret: the person picks a password on Authelia's reset-password page and
registers a second factor at first login, or, with ``totp_preprovision``, is told that an
administrator will hand over the authenticator setup in person (:mod:`tasks.totp`).
The Message-ID is derived from the employee and the hire event, so a relay that
de-duplicates by Message-ID also drops a resend.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate

from tasks.errors import PermanentError, TransientError
from tasks.settings import Settings, get_settings

log = logging.getLogger(__name__)


def reset_password_url(settings: Settings) -> str:
    return settings.authelia_url.rstrip("/") + "/reset-password/step1"


def welcome_message(*, to_email: str, given_name: str, family_name: str, username: str,
                    workspace_url: str, message_key: str, settings: Settings, returning: bool = False) -> EmailMessage:
    """Build the email; pure, so its content is tested without a server."""
    msg = EmailMessage()
    msg["From"] = settings.mail_sender
    local, _, domain = to_email.rpartition("@")
    msg["To"] = Address(display_name=f"{given_name} {family_name}", username=local, domain=domain)
    msg["Subject"] = f"{'Welcome back' if returning else 'Welcome'} to VibeCode, {given_name}"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<{message_key}@{settings.domain}>"
    reset = reset_password_url(settings)
    if settings.totp_preprovision:  # the secret itself never travels by email
        second_factor = (f"2. Your second factor, an authenticator app (TOTP), is already set up for you:\n"
                         f"   an administrator will hand you your authenticator setup in person.\n"
                         f"   Then sign in at {workspace_url}; the second factor is required.\n\n")
    else:
        second_factor = (f"2. Sign in at {workspace_url}. At your first sign-in you will register a second\n"
                         f"   factor, an authenticator app (TOTP) or a security key; it is required.\n\n")
    msg.set_content(
        f"Hello {given_name},\n\n"
        f"your VibeCode account is ready.\n\n"
        f"  Username:  {username}\n"
        f"  Workspace: {workspace_url}\n\n"
        f"1. Choose your password: open {reset} and enter your username.\n"
        f"   Nobody has been told a password for you, and nobody will ever ask for yours.\n"
        f"{second_factor}"
        f"Your files live in your workspace's persistent volume and are backed up.\n\n"
        f"-- The VibeCode platform team\n"
    )
    return msg


def tls_context(settings: Settings) -> ssl.SSLContext:
    """Verify the server's certificate and host name; trust ``smtp_ca_file`` when given."""
    cafile = str(settings.smtp_ca_file) if settings.smtp_ca_file else None
    return ssl.create_default_context(cafile=cafile)


def check_auth_is_encrypted(settings: Settings) -> None:
    """Refuse, before connecting, to send a password over a connection that will not be encrypted."""
    s = settings
    if not (s.smtp_username and s.smtp_password) or s.smtp_starttls or s.smtp_ssl:
        return
    if not s.smtp_allow_insecure_auth:
        raise PermanentError("SMTP: refusing to send smtp_password without TLS; set VIBECODE_SMTP_STARTTLS "
                             "or VIBECODE_SMTP_SSL (or, insecurely, VIBECODE_SMTP_ALLOW_INSECURE_AUTH)")
    log.warning("INSECURE: SMTP login to %s:%s without TLS (smtp_allow_insecure_auth is on): the password "
                "crosses the network in clear", s.smtp_host, s.smtp_port)


def send(msg: EmailMessage, settings: Settings | None = None) -> None:
    """Deliver one message; 4xx replies and broken connections are transient, 5xx and TLS failures are not."""
    s = settings or get_settings()
    check_auth_is_encrypted(s)
    try:
        if s.smtp_ssl:
            smtp = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=30, context=tls_context(s))
        else:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=30)
        with smtp:
            if s.smtp_starttls and not s.smtp_ssl:
                smtp.starttls(context=tls_context(s))  # refuses (SMTPNotSupportedError) if not offered
            if s.smtp_username and s.smtp_password:
                smtp.login(s.smtp_username, s.smtp_password.get_secret_value())
            smtp.send_message(msg)
    except smtplib.SMTPNotSupportedError as exc:
        raise PermanentError(f"SMTP {s.smtp_host}:{s.smtp_port} does not support {_what(exc)}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        codes = {code for code, _ in exc.recipients.values()}
        cls = TransientError if all(400 <= c < 500 for c in codes) else PermanentError
        raise cls(f"SMTP refused the recipient(s): {sorted(codes)}") from None
    except smtplib.SMTPResponseException as exc:
        cls = TransientError if 400 <= exc.smtp_code < 500 else PermanentError
        raise cls(f"SMTP {s.smtp_host}:{s.smtp_port} answered {exc.smtp_code}") from None
    except (ssl.SSLCertVerificationError, ssl.CertificateError) as exc:
        raise PermanentError(f"SMTP {s.smtp_host}:{s.smtp_port}: TLS certificate not trusted "
                             f"({getattr(exc, 'verify_message', '') or type(exc).__name__}); "
                             "set VIBECODE_SMTP_CA_FILE to the CA that signed it") from None
    except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError) as exc:
        raise TransientError(f"SMTP {s.smtp_host}:{s.smtp_port} unreachable: {type(exc).__name__}") from None


def _what(exc: smtplib.SMTPNotSupportedError) -> str:
    text = str(exc).lower()
    return "STARTTLS" if "starttls" in text else "AUTH" if "auth" in text else "a required extension"
