"""The welcome email (pure: its content is tested without a server; :mod:`tasks.core.mail` sends it).

It carries no secret: the person picks a password on Authelia's reset-password page and
registers a second factor at first login, or, with ``totp_preprovision``, is told that an
administrator will hand over the authenticator setup in person (:mod:`tasks.people.totp`).
The Message-ID is derived from the employee and the hire event, so a relay that
de-duplicates by Message-ID also drops a resend.
"""

from __future__ import annotations

from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate

from tasks.core.settings import Settings


def reset_password_url(settings: Settings) -> str:
    return settings.identity.authelia_url.rstrip("/") + "/reset-password/step1"


def welcome_message(*, to_email: str, given_name: str, family_name: str, username: str,
                    workspace_url: str, message_key: str, settings: Settings, returning: bool = False) -> EmailMessage:
    """Build the email; pure, so its content is tested without a server."""
    msg = EmailMessage()
    msg["From"] = settings.mail.sender
    local, _, domain = to_email.rpartition("@")
    msg["To"] = Address(display_name=f"{given_name} {family_name}", username=local, domain=domain)
    msg["Subject"] = f"{'Welcome back' if returning else 'Welcome'} to VibeCode, {given_name}"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<{message_key}@{settings.domain}>"
    reset = reset_password_url(settings)
    if settings.identity.totp_preprovision:  # the secret itself never travels by email
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
