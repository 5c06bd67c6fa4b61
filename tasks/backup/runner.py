"""restic on this machine (the flow's, an operator's): the subprocess adapter.

Command lines come from :mod:`tasks.backup.restic`; this module only runs them. Secrets travel in
the subprocess environment (a new password on stdin), never on a command line, in an
error message or in a ``repr``.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

from tasks.backup.restic import (
    SECRET_ENV,
    Snapshot,
    already_initialised,
    bucket_made_meanwhile,
    check_args,
    classify_failure,
    plain_env,
)
from tasks.core.errors import NotFound, PermanentError, Timeout, TransientError
from tasks.core.settings import Settings


@dataclass(repr=False)
class Restic:
    """restic against one repository. ``env`` holds the secrets, so it is kept out of every
    repr (a traceback or a log line printing this object shows only the repository)."""

    env: dict[str, str] = field(repr=False)
    binary: str = "restic"
    extra_env: dict[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"Restic(repository={self.env.get('RESTIC_REPOSITORY', '?')!r}, binary={self.binary!r})"

    __str__ = __repr__

    @classmethod
    def for_workspace(cls, settings: Settings, username: str, secrets: dict[str, str]) -> "Restic":
        cache = os.environ.get("RESTIC_CACHE_DIR") or str(Path.home() / ".cache" / "restic")
        missing = [k for k in SECRET_ENV if not secrets.get(k)]
        if missing:
            raise PermanentError(f"backup secret lacks {', '.join(missing)}")
        return cls(env={**plain_env(settings.backup, username, cache), **{k: secrets[k] for k in SECRET_ENV}},
                   binary=settings.backup.restic_binary)

    def with_password(self, password: str) -> "Restic":
        """The same repository opened with another password (key rotation)."""
        return replace(self, env={**self.env, "RESTIC_PASSWORD": password})

    def run(self, args: list[str], cwd: str | Path | None = None, timeout: float | None = None,
            what: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
        """Run restic; raise a classified error on failure (exit code 3 included)."""
        proc = self.run_raw(args, cwd=cwd, timeout=timeout, stdin=stdin)
        if proc.returncode != 0:
            raise classify_failure(proc.stderr, what or f"restic {args[0]}")
        return proc

    def run_raw(self, args: list[str], cwd: str | Path | None = None, timeout: float | None = None,
                stdin: str | None = None) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
               **self.env, **self.extra_env}
        try:
            return subprocess.run([self.binary, *args], cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=timeout, check=False, input=stdin,
                                  stdin=None if stdin is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise Timeout(f"restic {args[0]} did not finish in {timeout:.0f}s") from None

    # -- the operations the flows need ----------------------------------------
    def exists(self) -> bool:
        try:
            self.run(["cat", "config"], what="open repository")
            return True
        except NotFound:
            return False

    def ensure_init(self) -> bool:
        """Create the repository if there is none; True if it was created now. One that
        another process created in between is not an error. This does not make concurrent
        inits safe on S3 (both succeed and corrupt the repository): callers serialise them,
        see :func:`tasks.backup.repo.ensure_repository`."""
        if self.exists():
            return False
        proc = self.run_raw(["init"])
        if proc.returncode != 0 and bucket_made_meanwhile(proc.stderr):
            proc = self.run_raw(["init"])
        if proc.returncode != 0 and not already_initialised(proc.stderr):
            raise classify_failure(proc.stderr, "restic init")
        return proc.returncode == 0

    def snapshots(self) -> list[Snapshot]:
        out = self.run(["snapshots", "--json"], what="list snapshots").stdout
        return sorted((Snapshot.from_json(d) for d in json.loads(out or "[]")), key=lambda s: s.time)

    def add_tag(self, snapshot_ids: list[str], tag: str) -> None:
        if snapshot_ids:
            self.run(["tag", "--add", tag, *snapshot_ids], what="tag snapshots")

    def forget(self, snapshot_ids: list[str], prune: bool = True) -> None:
        """Forget exactly these snapshots; the policy was decided in :mod:`tasks.backup.retention`."""
        if snapshot_ids:
            self.run(["forget", *(["--prune"] if prune else []), *snapshot_ids], what="forget snapshots")

    def check(self, read_data_percent: int) -> tuple[bool, str]:
        """(ok, detail). A failed check is a finding about the repository, not an exception."""
        proc = self.run_raw(check_args(read_data_percent))
        if proc.returncode == 0:
            return True, "no errors were found"
        err = classify_failure(proc.stderr + proc.stdout, "restic check")
        if isinstance(err, (TransientError, NotFound)) or "wrong password" in proc.stderr.lower():
            raise err
        return False, str(err)

    # -- keys (password rotation) ---------------------------------------------
    def current_key(self) -> str | None:
        """Id of the key this password opens, or None when it opens none (wrong password)."""
        proc = self.run_raw(["key", "list", "--json"])
        if proc.returncode != 0:
            err = classify_failure(proc.stderr, "restic key list")
            low = proc.stderr.lower()
            if "wrong password" in low or "no key found" in low:
                return None
            raise err
        return next((k["id"] for k in json.loads(proc.stdout or "[]") if k.get("current")), None)

    def add_key(self, new_password: str) -> None:
        """Add a key for ``new_password``; restic reads it from stdin when stdin is no terminal."""
        self.run(["key", "add"], what="restic key add", stdin=new_password + "\n")

    def remove_key(self, key_id: str) -> None:
        self.run(["key", "remove", key_id], what="restic key remove")
