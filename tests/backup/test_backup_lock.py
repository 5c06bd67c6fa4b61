"""The backup Job's own script against another run's exclusive lock, on the real S3 server
with real restic (what ``sh -c`` runs in the Job; :func:`tasks.backup.restic.backup_script`).

Seen in the soak: an offboarding's final backup met the nightly run's ``restic check`` of the
same repository, failed on the lock, and the person's deletion was refused. restic 0.14 has no
``--retry-lock``, so the script waits and tries again, on those words only.

The lock is a real one: ``restic key passwd`` takes the repository's exclusive lock and then
blocks reading the new password from a pipe the test holds open; closing the pipe ends it
(an empty password is refused) and restic removes its lock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from tasks.backup.restic import backup_script
from tests.fixtures.faults import FaultPlan, s3_proxy
from tests.fixtures.storage import restic_for

USER = "lockuser"
FAST = (1, 1, 1, 1, 1, 1, 1, 1)  # the tries' waits, shortened for the test


def _env(restic, tmp_path, **extra) -> dict[str, str]:
    scratch = tmp_path / "job-tmp"  # the Job's emptyDir at /tmp
    scratch.mkdir(exist_ok=True)
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **restic.env, "TMPDIR": str(scratch), **extra}


def _volume(tmp_path):
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "notes.txt").write_text("a day's work\n")
    return volume


def _locks(restic) -> list[str]:
    return restic.run(["list", "locks", "--no-lock"]).stdout.split()


class ExclusiveLock:
    """A real exclusive lock on the repository, held until :meth:`release`."""

    def __init__(self, restic, tmp_path):
        self.proc = subprocess.Popen([restic.binary, "key", "passwd"], env=_env(restic, tmp_path),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not _locks(restic):
            assert self.proc.poll() is None and time.monotonic() < deadline, "restic key passwd did not take its lock"
            time.sleep(0.1)

    def release(self) -> None:
        self.proc.stdin.close()  # an empty new password: restic refuses it, unlocks and exits
        self.proc.wait(timeout=30)


@pytest.fixture
def repo(backup_settings):
    restic = restic_for(backup_settings, USER)
    restic.run(["init"])
    return restic


def _script(**kw) -> str:
    return backup_script(USER, "lockrun1", waits=FAST, **kw)


def test_a_backup_waits_out_another_runs_exclusive_lock_and_then_saves_its_snapshot(repo, tmp_path):
    volume = _volume(tmp_path)
    lock = ExclusiveLock(repo, tmp_path)
    released = threading.Timer(2.5, lock.release)  # a check that takes a few seconds
    released.start()
    try:
        done = subprocess.run(["sh", "-c", _script()], cwd=volume, env=_env(repo, tmp_path), capture_output=True,
                              text=True, timeout=120)
    finally:
        released.join()
    assert done.returncode == 0, done.stderr
    assert "repository is already locked" in done.stderr  # restic's own refusal is in the log
    assert "vibecode: the repository is locked; trying again in 1s" in done.stderr
    snapshots = repo.snapshots()
    assert [s.tags for s in snapshots] == [("nightly", USER, "vibecode-run=lockrun1")]
    assert _locks(repo) == []


def test_a_backup_that_stays_locked_fails_after_its_last_try_with_restics_words(repo, tmp_path):
    volume = _volume(tmp_path)
    lock = ExclusiveLock(repo, tmp_path)
    try:
        done = subprocess.run(["sh", "-c", backup_script(USER, "lockrun2", waits=(1, 1))], cwd=volume,
                              env=_env(repo, tmp_path), capture_output=True, text=True, timeout=120)
    finally:
        lock.release()
    assert done.returncode != 0
    assert done.stderr.count("trying again") == 2  # two waits, three tries
    assert done.stderr.rstrip().splitlines()[-1].startswith("the `unlock` command")  # restic's last words end the log
    assert repo.snapshots() == []


def test_a_backup_failing_for_any_other_reason_is_not_tried_again(repo, tmp_path):
    volume = _volume(tmp_path)
    done = subprocess.run(["sh", "-c", _script()], cwd=volume, env=_env(repo, tmp_path, RESTIC_PASSWORD="wrong"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "wrong password" in done.stderr and "trying again" not in done.stderr


def test_a_backup_terminated_while_it_waits_for_the_lock_stops_at_once(repo, tmp_path):
    volume = _volume(tmp_path)
    lock = ExclusiveLock(repo, tmp_path)
    try:
        proc = subprocess.Popen(["sh", "-c", backup_script(USER, "lockrun3", waits=(30, 30))], cwd=volume,
                                env=_env(repo, tmp_path), stderr=subprocess.PIPE, text=True)
        first = proc.stderr.readline()
        while "trying again" not in first:  # restic's refusal, then the wait
            first = proc.stderr.readline()
            assert first, "the script ended without waiting for the lock"
        proc.send_signal(signal.SIGTERM)  # the Job's deadline; the shell runs the trap when its sleep ends
        rc = proc.wait(timeout=60)
    finally:
        lock.release()
    assert rc == 143  # not a second try
    assert repo.snapshots() == []


def test_a_terminated_backup_passes_an_interrupt_to_restic_which_removes_its_lock(repo, backup_settings, tmp_path):
    """Through a proxy that holds every upload of data for 5 s, so restic is mid-backup, its
    lock in the repository, when the Job's TERM arrives."""
    volume = _volume(tmp_path)
    slow = FaultPlan({"delay": 1.0}, delay_seconds=5.0,
                     eligible=lambda method, path: method == "PUT" and "/data/" in path)
    with s3_proxy(backup_settings.backup.s3_endpoint, slow) as proxy:
        env = _env(repo, tmp_path, RESTIC_REPOSITORY=repo.env["RESTIC_REPOSITORY"].replace(
            backup_settings.backup.s3_endpoint.rstrip("/"), proxy.url.rstrip("/")))
        proc = subprocess.Popen(["sh", "-c", _script()], cwd=volume, env=env, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not proxy.counts().get("delay"):  # restic has locked and is uploading its first pack
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        assert _locks(repo), "restic holds no lock while it uploads"
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        log = proc.stderr.read()
    assert rc == 130, log  # restic's own exit on an interrupt, after its clean-up
    assert "signal interrupt received, cleaning up" in log
    assert _locks(repo) == []  # no stale lock to block the next check for 30 minutes


def test_the_waits_for_a_lock_fit_well_inside_a_backup_jobs_deadline():
    from tasks.backup.restic import LOCK_WAITS
    from tasks.core.settings import BackupSettings

    deadline = BackupSettings.model_fields["timeout_seconds"].default
    assert 0 < sum(LOCK_WAITS) <= deadline / 4  # the backup itself keeps three quarters of the deadline
