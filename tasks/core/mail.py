"""Mail over SMTP (settings.smtp_*): welcome mails, idle warnings, backup failure notices.
The messages are built by pure modules (:mod:`tasks.people.welcome`, ...); this adapter sends.

A password never crosses the wire in clear: SMTP AUTH runs only inside TLS (STARTTLS,
``smtp_starttls``, or implicit TLS, ``smtp_ssl``), with the server's certificate checked
against the system's trust store or ``smtp_ca_file``. Only the loudly named
``smtp_allow_insecure_auth`` lifts that, and every such login logs a warning.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage

from tasks.core.errors import PermanentError, TransientError
from tasks.core.settings import Settings, get_settings

log = logging.getLogger(__name__)


def tls_context(settings: Settings) -> ssl.SSLContext:
    """Verify the server's certificate and host name; trust ``smtp_ca_file`` when given."""
    cafile = str(settings.mail.smtp_ca_file) if settings.mail.smtp_ca_file else None
    return ssl.create_default_context(cafile=cafile)


def check_auth_is_encrypted(settings: Settings) -> None:
    """Refuse, before connecting, to send a password over a connection that will not be encrypted."""
    s = settings
    if not (s.mail.smtp_username and s.mail.smtp_password) or s.mail.smtp_starttls or s.mail.smtp_ssl:
        return
    if not s.mail.smtp_allow_insecure_auth:
        raise PermanentError("SMTP: refusing to send smtp_password without TLS; set VIBECODE_SMTP_STARTTLS "
                             "or VIBECODE_SMTP_SSL (or, insecurely, VIBECODE_SMTP_ALLOW_INSECURE_AUTH)")
    log.warning("INSECURE: SMTP login to %s:%s without TLS (smtp_allow_insecure_auth is on): the password "
                "crosses the network in clear", s.mail.smtp_host, s.mail.smtp_port)


def send(msg: EmailMessage, settings: Settings | None = None) -> None:
    """Deliver one message; 4xx replies and broken connections are transient, 5xx and TLS failures are not."""
    s = settings or get_settings()
    check_auth_is_encrypted(s)
    try:
        smtp: smtplib.SMTP
        if s.mail.smtp_ssl:
            smtp = smtplib.SMTP_SSL(s.mail.smtp_host, s.mail.smtp_port, timeout=30, context=tls_context(s))
        else:
            smtp = smtplib.SMTP(s.mail.smtp_host, s.mail.smtp_port, timeout=30)
        with smtp:
            if s.mail.smtp_starttls and not s.mail.smtp_ssl:
                smtp.starttls(context=tls_context(s))  # refuses (SMTPNotSupportedError) if not offered
            if s.mail.smtp_username and s.mail.smtp_password:
                smtp.login(s.mail.smtp_username, s.mail.smtp_password.get_secret_value())
            smtp.send_message(msg)
    except smtplib.SMTPNotSupportedError as exc:
        raise PermanentError(f"SMTP {s.mail.smtp_host}:{s.mail.smtp_port} does not support {_what(exc)}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        codes = {code for code, _ in exc.recipients.values()}
        cls = TransientError if all(400 <= c < 500 for c in codes) else PermanentError
        raise cls(f"SMTP refused the recipient(s): {sorted(codes)}") from None
    except smtplib.SMTPResponseException as exc:
        cls = TransientError if 400 <= exc.smtp_code < 500 else PermanentError
        raise cls(f"SMTP {s.mail.smtp_host}:{s.mail.smtp_port} answered {exc.smtp_code}") from None
    except (ssl.SSLCertVerificationError, ssl.CertificateError) as exc:
        raise PermanentError(f"SMTP {s.mail.smtp_host}:{s.mail.smtp_port}: TLS certificate not trusted "
                             f"({getattr(exc, 'verify_message', '') or type(exc).__name__}); "
                             "set VIBECODE_SMTP_CA_FILE to the CA that signed it") from None
    except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError) as exc:
        raise TransientError(f"SMTP {s.mail.smtp_host}:{s.mail.smtp_port} unreachable: {type(exc).__name__}") from None


def _what(exc: smtplib.SMTPNotSupportedError) -> str:
    text = str(exc).lower()
    return "STARTTLS" if "starttls" in text else "AUTH" if "auth" in text else "a required extension"
