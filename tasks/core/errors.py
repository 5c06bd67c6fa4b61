"""The project's error taxonomy, modelled on kopf's: every failure is either worth
retrying (the world may change under us) or not (retrying only repeats the mistake).

Tasks pass :func:`retry_if_transient` as ``retry_condition_fn`` so Prefect retries
fire only where they help.
"""

from __future__ import annotations


class VibecodeError(Exception):
    """Base of everything we raise on purpose."""

    transient: bool = False


class TransientError(VibecodeError):
    """Retrying later may succeed: overload, timeouts, 5xx, optimistic-lock conflicts."""

    transient = True


class PermanentError(VibecodeError):
    """Retrying cannot help until a person changes something."""


class InvalidInput(PermanentError, ValueError):
    """Bad input at an entry point. Raised before anything is changed."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class MissingPrerequisite(PermanentError):
    """Something a person must install, start or configure first (a tool, a server, a
    setting). Found before anything is changed; the CLI exits 2 and prints each problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class NotFound(PermanentError):
    pass


class Forbidden(PermanentError):
    pass


class Invalid(PermanentError):
    """The API server refused the object (HTTP 422/400)."""


class Conflict(TransientError):
    """409: already exists, or resourceVersion moved. Re-read and try again."""


class TooManyRequests(TransientError):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class ServerError(TransientError):
    """5xx or a connection that failed: the API server may be restarting."""


class WatchExpired(TransientError):
    """410 Gone on a watch: its resourceVersion was compacted away. Re-list and watch again."""


class Timeout(TransientError):
    """We waited as long as we promised to and the world did not converge."""


class BackupRequired(PermanentError):
    """A destructive step was refused because no verified backup exists."""


def is_transient(exc: BaseException | None) -> bool:
    return isinstance(exc, VibecodeError) and exc.transient


def retry_if_transient(task, task_run, state) -> bool:  # Prefect's retry_condition_fn signature
    """Retry a failed task run only if it failed with a transient error."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - we only classify it
        return is_transient(exc)
    return False
