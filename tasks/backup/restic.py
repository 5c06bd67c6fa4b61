"""restic command lines and scripts, and what restic's output means. Pure: no subprocess.

The Job builders (:mod:`tasks.backup.jobs`) and the runner on this machine
(:mod:`tasks.backup.runner`) take their arguments from the same functions, so a test (or
the benchmark, or an operator's laptop) can run *the Job's own* command against a
directory standing in for the PVC. Backups run with the volume as working directory and
``.`` as the path, which puts the files at the snapshot root: a restore gets the
volume's contents, not ``data/...``.

Empty volumes: restic 0.14 refuses to save an empty snapshot ("snapshot is empty", also
for empty stdin). The backup script then saves a one-line marker file
:data:`EMPTY_MARKER` from stdin, tagged :data:`EMPTY_TAG`, and a restore of such a
snapshot excludes the marker. So an empty volume gets a real snapshot that retention,
``restic check``, ``has_verified_backup`` and "restore latest" treat like any other, and
restoring it gives back exactly an empty volume (a recorded "empty" outcome without a
snapshot would make "latest" restore an older, non-empty state instead).

Restores write into a staging folder on the target volume and only then replace the
volume's contents with it (restic 0.14 has no ``restore --delete``), so the volume ends up
holding exactly the snapshot, and a failed restic run deletes nothing.

Secrets travel only in the process environment (or stdin), never on a command line or
in an error message.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from datetime import datetime

from tasks.core.errors import NotFound, PermanentError, ServerError, TransientError, VibecodeError
from tasks.core.settings import BackupSettings

NIGHTLY_TAG = "nightly"
PARTIAL_TAG = "partial"  # added when restic saved a snapshot but could not read every file
EMPTY_TAG = "empty"  # the volume was empty: the snapshot holds only EMPTY_MARKER
PRE_RESTORE_TAG = "pre-restore"  # taken just before an in-place restore replaced the volume's contents
EMPTY_MARKER = ".vibecode-empty"
STAGING_PREFIX = ".vibecode-restore-"  # staging folder of an in-place restore, at the volume's root
RUN_TAG_PREFIX = "vibecode-run="

# env var -> key in the platform Secret (same names, so the Secret reads like the env it feeds)
SECRET_ENV = ("RESTIC_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def repository(backup: BackupSettings, username: str) -> str:
    """One repository per workspace: a lost key or a corrupted index never spans people."""
    return f"s3:{backup.s3_endpoint.rstrip('/')}/{backup.s3_bucket}/{username}"


def plain_env(backup: BackupSettings, username: str, cache_dir: str) -> dict[str, str]:
    """The non-secret environment of every restic process for ``username``."""
    return {"RESTIC_REPOSITORY": repository(backup, username), "AWS_DEFAULT_REGION": backup.s3_region,
            "RESTIC_CACHE_DIR": cache_dir}


def run_tag(run_id: str) -> str:
    return f"{RUN_TAG_PREFIX}{run_id}"


def backup_args(username: str, run_id: str, kind_tag: str = NIGHTLY_TAG) -> list[str]:
    """``--host`` is fixed to the username: pod names change nightly and restic picks the
    parent snapshot by host and path, so a stable host keeps unchanged files unread."""
    return ["backup", ".", "--host", username, "--tag", kind_tag, "--tag", username,
            "--tag", run_tag(run_id)]


def empty_backup_args(username: str, run_id: str, kind_tag: str = NIGHTLY_TAG) -> list[str]:
    """The snapshot of an empty volume: the marker file from stdin, tagged as such."""
    return ["backup", "--stdin", "--stdin-filename", EMPTY_MARKER, "--host", username, "--tag", kind_tag,
            "--tag", username, "--tag", run_tag(run_id), "--tag", EMPTY_TAG]


def restore_args(username: str, snapshot: str = "latest", target: str = ".", empty: bool = False) -> list[str]:
    return ["restore", snapshot, "--host", username, "--target", target,
            *(["--exclude", f"/{EMPTY_MARKER}"] if empty else [])]


def _sh(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


# Seconds between a backup's tries while another run holds the repository's exclusive lock
# (a check reading a subset of the data, a prune): nine minutes in all, well inside the Job's deadline.
LOCK_WAITS = (5, 10, 20, 45, 60, 60, 60, 60, 60, 60, 60, 60)
LOCKED = ("repository is already locked", "unable to create lock")  # restic 0.14's words (see classify_failure)


def backup_script(username: str, run_id: str, kind_tag: str = NIGHTLY_TAG, restic: str = "restic",
                  waits: tuple[int, ...] = LOCK_WAITS) -> str:
    """``sh -c`` script for a backup Job, run in the volume: an empty volume gets the marker snapshot.

    A backup takes a shared lock, which an exclusive one (a ``check`` or ``forget --prune``
    of the same repository, e.g. the nightly run's while an offboarding takes its final
    backup) refuses. restic 0.14 has no ``--retry-lock``, so the script tries again after
    each of ``waits``, only on those words; any other failure ends it at
    once. restic runs in the background, and the TERM of a Job's deadline is passed on to it
    as an INT (a shell as the container's PID 1 ignores TERM, and restic 0.14 removes its
    lock on INT only): killed without that, it would leave a lock that blocks every check
    of the repository for 30 minutes; a TERM also ends the tries. restic's stderr goes to the
    log (the Job's termination message) after each try; scratch files go to ``$TMPDIR``,
    the Job's own emptyDir."""
    empty = _sh([restic, *empty_backup_args(username, run_id, kind_tag)])
    full = _sh([restic, *backup_args(username, run_id, kind_tag)])
    locked = "|".join(f'*"{w}"*' for w in LOCKED)
    return (f'tmp="${{TMPDIR:-/tmp}}" input=/dev/null stopped=\n'
            f'err="$tmp/vibecode-restic.err"\n'
            f'if [ -z "$(ls -A .)" ]; then\n'
            f'  input="$tmp/vibecode-empty.in"; echo "vibecode: the volume is empty" > "$input"\n'
            f'  set -- {empty}\n'
            f'else\n'
            f'  set -- {full}\n'
            f'fi\n'
            f"trap 'stopped=1; kill -INT \"$pid\" 2>/dev/null' TERM INT\n"
            f'for wait in {" ".join(str(w) for w in waits)} 0; do\n'
            f'  [ -z "$stopped" ] || exit 143\n'
            f'  "$@" < "$input" 2> "$err" &\n'
            f'  pid=$!\n'
            f'  while :; do wait "$pid"; rc=$?; kill -0 "$pid" 2>/dev/null || break; done\n'
            f'  cat "$err" >&2\n'
            f'  [ "$rc" -ne 0 ] && [ -z "$stopped" ] && [ "$wait" -gt 0 ] || exit "$rc"\n'
            f'  case "$(cat "$err")" in\n'
            f'    {locked}) echo "vibecode: the repository is locked; trying again in ${{wait}}s" >&2; sleep "$wait" ;;\n'
            f'    *) exit "$rc" ;;\n'
            f'  esac\n'
            f'done\n')


def restore_script(username: str, snapshot: str, run_id: str, empty: bool = False, restic: str = "restic") -> str:
    """``sh -c`` script for a restore Job, run in the target volume.

    restic restores into a staging folder; only when that succeeded is every other entry
    of the volume removed and the staged entries moved up. A rerun starts over cleanly."""
    stage = shlex.quote(f"{STAGING_PREFIX}{run_id}")
    restore = _sh([restic, *restore_args(username, snapshot, "-", empty)]).replace(" --target -", ' --target "$stage"')
    entries = '{d}/* {d}/.[!.]* {d}/..?*'
    return (f"set -eu\n"
            f"stage={stage}\n"
            f'rm -rf "$stage"; mkdir "$stage"\n'
            f"{restore}\n"
            f'for e in {entries.format(d=".")}; do\n'
            f'  [ -e "$e" ] || [ -L "$e" ] || continue\n'
            f'  [ "$e" = "./$stage" ] || rm -rf "$e"\n'
            f"done\n"
            f'for e in {entries.format(d=chr(34) + "$stage" + chr(34))}; do\n'
            f'  [ -e "$e" ] || [ -L "$e" ] || continue\n'
            f'  mv "$e" .\n'
            f"done\n"
            f'rmdir "$stage"\n')


def already_initialised(stderr: str) -> bool:
    """``restic init`` found a repository: restic 0.14 says "repository master key and config
    already initialized" on S3 and "config file already exists" on a local backend."""
    low = stderr.lower()
    return "config file already exists" in low or "already initialized" in low


def bucket_made_meanwhile(stderr: str) -> bool:
    """``restic init`` lost a race for the bucket: restic 0.14 checks that the bucket exists,
    then creates it, and a second init (another workspace's repository in the same bucket)
    between the two gets S3's BucketAlreadyOwnedByYou. The bucket is there now: init again."""
    low = stderr.lower()
    return "bucketalreadyownedbyyou" in low or "succeeded and you already own it" in low


def newest_good(snapshots: list["Snapshot"], username: str) -> "Snapshot | None":
    """What "latest" restores: the newest snapshot of this workspace that is neither partial
    nor a pre-restore safety copy (those are restorable by id)."""
    good = [x for x in snapshots if x.hostname == username and x.good and PRE_RESTORE_TAG not in x.tags]
    return max(good, key=lambda x: x.time, default=None)


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

    @property
    def empty(self) -> bool:
        return EMPTY_TAG in self.tags

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
    # Unreachable storage first: restic adds "Is there a repository ...?" to every failure to
    # open the config file, and an outage must never look like "no repository yet" (that would
    # start an init). HTTP codes as whole words: restic prints hex ids, which often contain "503".
    if any(s in low for s in ("connection refused", "dial tcp", "i/o timeout", "timeout", "500 internal",
                              "slowdown", "connection reset")) or re.search(r"\b50[23]\b", low):
        return ServerError(msg)
    if "is there a repository at the following location" in low:
        return NotFound(msg)
    if "wrong password" in low or "no key found" in low:
        return PermanentError(msg)
    if "repository is already locked" in low or "unable to create lock" in low:
        return TransientError(msg)
    # Two first-time inits create the shared bucket at once: S3 answers the second "you
    # already own it" (BucketAlreadyOwnedByYou); the retry finds the bucket there.
    if "already own it" in low or "bucketalreadyownedbyyou" in low:
        return TransientError(msg)
    return PermanentError(msg)
