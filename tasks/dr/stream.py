"""restic for the platform repository, with pg_dump and pg_restore piped through it: the adapter.

A database dump never touches a disk here: ``pg_dump`` writes into ``restic backup --stdin``
and ``restic dump`` writes into ``pg_restore``, pipe to pipe. When the producer of a pipe
fails, restic has still saved whatever arrived (a truncated dump), so that snapshot is
forgotten before the error is raised: a set never holds a dump that cannot be restored.

Secrets travel only in the processes' environments (the repository password in
``RESTIC_PASSWORD``, a database password in ``PGPASSWORD``), never on a command line or in
an error message; stderr tails are cut to a few lines.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tasks.backup.restic import classify_failure
from tasks.backup.runner import Restic
from tasks.core.errors import PermanentError
from tasks.dr.plan import Dsn


def _tail(text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return " ".join(line.strip() for line in text.strip().splitlines()[-3:])[-400:]


def _base_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}


@dataclass(repr=False)
class PlatformRepo:
    """The platform repository; ``env`` (secrets) is kept out of every repr."""

    repository: str
    env: dict[str, str] = field(repr=False)
    binary: str = "restic"

    def __repr__(self) -> str:
        return f"PlatformRepo({self.repository!r})"

    @classmethod
    def open(cls, repository: str, password: str, access_key: str, secret_key: str, region: str,
             binary: str = "restic") -> "PlatformRepo":
        if not password:
            raise PermanentError("the platform repository has no password (recovery.password or its block)")
        cache = os.environ.get("RESTIC_CACHE_DIR") or str(Path.home() / ".cache" / "restic")
        return cls(repository, {"RESTIC_REPOSITORY": repository, "RESTIC_PASSWORD": password,
                                "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key,
                                "AWS_DEFAULT_REGION": region, "RESTIC_CACHE_DIR": cache}, binary)

    @property
    def restic(self) -> Restic:
        return Restic(env=dict(self.env), binary=self.binary)

    def _env(self) -> dict[str, str]:
        return {**_base_env(), **self.env}

    def backup_text(self, args: list[str], text: str, timeout: float = 600) -> None:
        self.restic.run(args, stdin=text, timeout=timeout, what=f"restic backup {args[3]}")

    def backup_from(self, producer: list[str], producer_env: dict[str, str], args: list[str],
                    timeout: float = 3600) -> None:
        """``producer | restic backup --stdin``; a failed producer's snapshot is forgotten."""
        (prod, _, prod_err), (rest, out, err) = _pipe(
            producer, {**_base_env(), **producer_env}, [self.binary, *args, "--json"], self._env(), timeout,
            f"{producer[0]} | restic backup")
        if prod.returncode != 0:
            self._forget_summary(out)
            raise PermanentError(f"{Path(producer[0]).name} failed (exit {prod.returncode}): {_tail(prod_err)}")
        if rest.returncode != 0:
            raise classify_failure(err.decode(errors="replace"), "restic backup")

    def _forget_summary(self, out: bytes) -> None:
        for line in out.decode(errors="replace").splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("message_type") == "summary" and msg.get("snapshot_id"):
                self.restic.forget([msg["snapshot_id"]], prune=False)

    def dump_text(self, args: list[str], timeout: float = 600) -> str:
        return self.restic.run(args, timeout=timeout, what=f"restic dump {args[-1]}").stdout

    def dump_into(self, args: list[str], consumer: list[str], consumer_env: dict[str, str],
                  timeout: float = 3600) -> None:
        """``restic dump | consumer``; both must succeed."""
        (rest, _, rest_err), (cons, _, cons_err) = _pipe(
            [self.binary, *args], self._env(), consumer, {**_base_env(), **consumer_env}, timeout,
            f"restic dump | {consumer[0]}")
        if rest.returncode != 0:
            raise classify_failure(rest_err.decode(errors="replace"), "restic dump")
        if cons.returncode != 0:
            raise PermanentError(f"{Path(consumer[0]).name} failed (exit {cons.returncode}): {_tail(cons_err)}")


def _pipe(first: list[str], first_env: dict[str, str], second: list[str], second_env: dict[str, str],
          timeout: float, label: str) -> tuple[tuple[subprocess.Popen, bytes, bytes], tuple[subprocess.Popen, bytes, bytes]]:
    """``first | second``, no copy in between: each (process, stdout, stderr) once both ended.
    The second holds the pipe's read end alone, so if it dies the first gets SIGPIPE; if they do
    not finish within ``timeout`` both are killed (PermanentError)."""
    one = subprocess.Popen(first, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=first_env)
    assert one.stdout is not None
    try:
        two = subprocess.Popen(second, stdin=one.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=second_env)
    except BaseException:
        one.kill()
        one.wait()
        raise
    one.stdout.close()
    try:
        out2, err2 = two.communicate(timeout=timeout)
        out1, err1 = one.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        for p in (one, two):
            p.kill()
            p.wait()
        raise PermanentError(f"{label} did not finish in {timeout:.0f}s") from None
    return (one, out1 or b"", err1), (two, out2, err2)


def pg_command(args: list[str], pg_bin: Path, dsn: Dsn) -> tuple[list[str], dict[str, str]]:
    """A PostgreSQL client command line and its environment (the password in PGPASSWORD)."""
    binary = pg_bin / args[0]
    return [str(binary) if binary.exists() else args[0], *args[1:]], ({"PGPASSWORD": dsn.password}
                                                                       if dsn.password else {})
