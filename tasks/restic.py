"""restic, the one data path for backups: command lines shared by Jobs and local runs.

The Job builder and :class:`Restic` take their arguments from the same functions, so a
test (or the benchmark, or an operator's laptop) can run *the Job's own* command against
a directory standing in for the PVC. Backups run with the volume as working directory
and ``.`` as the path, which puts the files at the snapshot root: a restore ``--target``
gets the volume's contents, not ``data/...``.

Secrets travel only in the subprocess environment, never on a command line or in an
error message.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tasks.errors import NotFound, PermanentError, ServerError, TransientError, VibecodeError
from tasks.settings import Settings

NIGHTLY_TAG = "nightly"
PARTIAL_TAG = "partial"  # added when restic saved a snapshot but could not read every file
RUN_TAG_PREFIX = "vibecode-run="

# env var -> key in the platform Secret (same names, so the Secret reads like the env it feeds)
SECRET_ENV = ("RESTIC_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def repository(settings: Settings, username: str) -> str:
    """One repository per workspace: a lost key or a corrupted index never spans people."""
    return f"s3:{settings.s3_endpoint.rstrip('/')}/{settings.s3_bucket}/{username}"


def plain_env(settings: Settings, username: str, cache_dir: str) -> dict[str, str]:
    """The non-secret environment of every restic process for ``username``."""
    return {"RESTIC_REPOSITORY": repository(settings, username), "AWS_DEFAULT_REGION": settings.s3_region,
            "RESTIC_CACHE_DIR": cache_dir}


def run_tag(run_id: str) -> str:
    return f"{RUN_TAG_PREFIX}{run_id}"


def backup_args(username: str, run_id: str) -> list[str]:
    """``--host`` is fixed to the username: pod names change nightly and restic picks the
    parent snapshot by host and path, so a stable host keeps unchanged files unread."""
    return ["backup", ".", "--host", username, "--tag", NIGHTLY_TAG, "--tag", username,
            "--tag", run_tag(run_id)]


def restore_args(username: str, snapshot: str = "latest") -> list[str]:
    return ["restore", snapshot, "--host", username, "--target", "."]


def check_args(read_data_percent: int) -> list[str]:
    return ["check", f"--read-data-subset={read_data_percent}%"] if read_data_percent > 0 else ["check"]


@dataclass(frozen=True)
class Snapshot:
    id: str
    time: datetime
    tags: tuple[str, ...] = ()
    hostname: str = ""
    paths: tuple[str, ...] = ()

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def good(self) -> bool:
        return PARTIAL_TAG not in self.tags

    @classmethod
    def from_json(cls, d: dict) -> "Snapshot":
        t = d["time"]
        # restic writes nanoseconds; Python keeps microseconds
        head, _, frac = t.partition(".")
        if frac:
            n = len(frac) - len(frac.lstrip("0123456789"))
            t = f"{head}.{frac[:min(n, 6)]}{frac[n:]}"
        return cls(id=d["id"], time=datetime.fromisoformat(t.replace("Z", "+00:00")),
                   tags=tuple(d.get("tags") or ()), hostname=d.get("hostname", ""), paths=tuple(d.get("paths") or ()))


def classify_failure(stderr: str, what: str) -> VibecodeError:
    """restic's own words -> our taxonomy; only the last lines, which never hold secrets."""
    tail = " ".join(line.strip() for line in stderr.strip().splitlines()[-3:])[-500:]
    msg = f"{what}: {tail or 'restic failed without a message'}"
    low = stderr.lower()
    if "is there a repository at the following location" in low:
        return NotFound(msg)
    if "wrong password" in low or "no key found" in low:
        return PermanentError(msg)
    if "repository is already locked" in low or "unable to create lock" in low:
        return TransientError(msg)
    if any(s in low for s in ("connection refused", "dial tcp", "i/o timeout", "timeout", "503", "502",
                              "500 internal", "slowdown", "connection reset")):
        return ServerError(msg)
    return PermanentError(msg)


@dataclass
class Restic:
    """restic on this machine, against one repository. ``env`` holds the secrets."""

    env: dict[str, str]
    binary: str = "restic"
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_workspace(cls, settings: Settings, username: str, secrets: dict[str, str]) -> "Restic":
        cache = os.environ.get("RESTIC_CACHE_DIR") or str(Path.home() / ".cache" / "restic")
        missing = [k for k in SECRET_ENV if not secrets.get(k)]
        if missing:
            raise PermanentError(f"backup secret lacks {', '.join(missing)}")
        return cls(env={**plain_env(settings, username, cache), **{k: secrets[k] for k in SECRET_ENV}},
                   binary=settings.restic_binary)

    def run(self, args: list[str], cwd: str | Path | None = None, timeout: float | None = None,
            what: str | None = None) -> subprocess.CompletedProcess:
        """Run restic; raise a classified error on failure (exit code 3 included)."""
        proc = self.run_raw(args, cwd=cwd, timeout=timeout)
        if proc.returncode != 0:
            raise classify_failure(proc.stderr, what or f"restic {args[0]}")
        return proc

    def run_raw(self, args: list[str], cwd: str | Path | None = None,
                timeout: float | None = None) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
               **self.env, **self.extra_env}
        try:
            return subprocess.run([self.binary, *args], cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            from tasks.errors import Timeout

            raise Timeout(f"restic {args[0]} did not finish in {timeout:.0f}s") from None

    # -- the operations the flow needs ----------------------------------------
    def ensure_init(self) -> bool:
        """Create the repository if there is none; True if it was created now."""
        try:
            self.run(["cat", "config"], what="open repository")
            return False
        except NotFound:
            proc = self.run_raw(["init"])
            if proc.returncode != 0 and "already initialized" not in proc.stderr:
                raise classify_failure(proc.stderr, "restic init") from None
            return proc.returncode == 0

    def snapshots(self) -> list[Snapshot]:
        out = self.run(["snapshots", "--json"], what="list snapshots").stdout
        return sorted((Snapshot.from_json(d) for d in json.loads(out or "[]")), key=lambda s: s.time)

    def add_tag(self, snapshot_ids: list[str], tag: str) -> None:
        if snapshot_ids:
            self.run(["tag", "--add", tag, *snapshot_ids], what="tag snapshots")

    def forget(self, snapshot_ids: list[str], prune: bool = True) -> None:
        """Forget exactly these snapshots; the policy was decided in :mod:`tasks.retention`."""
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
