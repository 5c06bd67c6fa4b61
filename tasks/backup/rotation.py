"""restic password rotation and the backup Jobs' Secret: the rules, pure.

A rotation moves every repository from ``restic_password`` to ``restic_new_password``
without a moment in which a repository opens with neither: the new key is added
everywhere, then the Jobs' Secret switches, then the old keys go. Each rule below is what
one step decides from what it found, so a rerun after any crash converges, and a step
that would lock a repository out refuses instead.
"""

from __future__ import annotations

import base64
from typing import Literal

from tasks.core.errors import InvalidInput, PermanentError

PASSWORD_KEY = "RESTIC_PASSWORD"  # in the Jobs' Secret

AddKey = Literal["new key present", "new key added"]
RemoveKey = Literal["old key already removed", "old key removed"]


def check_rotation(old: str | None, new: str | None) -> tuple[str, str]:
    """(old, new), or refuse a rotation the settings cannot carry out, naming the setting
    (nothing changed)."""
    if not new:
        raise InvalidInput("restic_new_password", "is not set (environment VIBECODE_RESTIC_NEW_PASSWORD)")
    if old is None:
        raise InvalidInput("restic_password", "is not set (environment VIBECODE_RESTIC_PASSWORD)")
    if new == old:
        raise InvalidInput("restic_new_password", "equals restic_password; nothing to rotate")
    return old, new


def add_key_step(username: str, new_opens: bool, old_opens: bool) -> Literal["present", "add"]:
    """Step 1 for one repository. Already rotated (the new password opens it): nothing to do.
    Opened by neither: refuse, it needs a person (adding a key needs an open repository)."""
    if new_opens:
        return "present"
    if not old_opens:
        raise PermanentError(f"repository of {username} opens with neither the old nor the new password")
    return "add"


def remove_key_step(username: str, old_key: str | None, new_key: str | None) -> Literal["gone", "remove"]:
    """Step 3 for one repository: ``old_key``/``new_key`` are the key ids the old and new
    passwords open (None: that password opens nothing). Never removes the key the new
    password depends on, nor the last key."""
    if old_key is None:
        return "gone"
    if new_key is None or new_key == old_key:
        raise PermanentError(f"refusing to remove the old key of {username}: the new password does not open it")
    return "remove"


def secret_data_patch(want: dict[str, str], have: dict[str, str], new_password: str | None) -> dict[str, str] | None:
    """The ``data`` to write into the Jobs' Secret, or None when it is already right.

    ``want`` is the settings' plain values, ``have`` the Secret's base64 ``data``. During a
    rotation (``new_password`` set) a Secret that already holds the new password keeps it:
    step 2 has run, and switching back would lock out the repositories step 3 has finished.
    """
    wanted = {k: _b64(v) for k, v in want.items()}
    if new_password is not None and have.get(PASSWORD_KEY) == _b64(new_password):
        wanted[PASSWORD_KEY] = have[PASSWORD_KEY]
    return None if have == wanted else wanted


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()
