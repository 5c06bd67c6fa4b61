"""Backup, restore and Job hardening: each test names the defect it proves fixed.

Real API server, Prefect, restic 0.14 and S3 server (SeaweedFS); Jobs run by the kubelet
stand-in (tests.fixtures.storage.JobKubelet), which honours the pod spec's uid/gid,
read-only mounts and termination messages.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import threading
import time

import pytest

from flows.backup import backup_workspaces
from flows.restore import restore_workspace, rotate_restic_password
from tasks.backup.restic import EMPTY_TAG, PRE_RESTORE_TAG
from tasks.backup.runner import Restic
from tasks.backup.status import LAST_BACKUP_REASON, Outcome, has_verified_backup
from tasks.cluster.jobs import JobWaiter, await_job
from tasks.core.errors import PermanentError, WatchExpired, is_transient
from tasks.core.names import RESTORING_ANNOTATION
from tasks.core.settings import get_settings
from tests.fixtures.backup import add_workspace
from tests.fixtures.kube import finish_job
from tests.fixtures.storage import restic_for, tree_state

pytestmark = pytest.mark.usefixtures("prefect_server")


def add_volume(kube, ns, kubelet, user, tmp_path, tree=True):
    d = add_workspace(kube, ns, kubelet, user, tmp_path)  # owned by the workspace uid, as code-server writes
    if not tree:
        wipe(d)
    return d


def stopped_deployment(kube, ns, user):
    kube.create({"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": f"ws-{user}", "namespace": ns},
                 "spec": {"replicas": 0, "selector": {"matchLabels": {"vibecode.dev/user": user}},
                          "template": {"metadata": {"labels": {"vibecode.dev/user": user}},
                                       "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})


def wipe(d):
    for entry in d.iterdir():
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


# -- 1. empty volumes -------------------------------------------------------------------------
def test_empty_volume_is_a_completed_verified_backup_and_restores_exactly_empty(
        kube, namespace, backup_settings, job_kubelet, tmp_path):
    add_volume(kube, namespace, job_kubelet, "emma", tmp_path, tree=False)

    report = backup_workspaces(["emma"])

    w = report.for_user("emma")
    assert w.outcome is Outcome.COMPLETED and w.verified and w.snapshot_id, w
    assert has_verified_backup(kube.get("PersistentVolumeClaim", namespace, "ws-emma-workspace"), report.finished)
    (snap,) = restic_for(backup_settings, "emma").snapshots()
    assert EMPTY_TAG in snap.tags and snap.id == w.snapshot_id
    restored = restore_workspace("emma")
    assert restored.snapshot_id == snap.id and list(job_kubelet.volumes[restored.pvc].iterdir()) == []


# -- 2. termination messages --------------------------------------------------------------------
def test_failed_backup_reports_what_restic_said_in_result_annotation_and_email(
        kube, namespace, backup_settings, job_kubelet, tmp_path, monkeypatch, smtp_inbox):
    monkeypatch.setenv("VIBECODE_OPS_EMAIL", "platform-team@example.com")
    get_settings.cache_clear()
    d = add_volume(kube, namespace, job_kubelet, "fred", tmp_path)
    (d / "root-only.key").write_text("not readable by the workspace uid\n")
    os.chmod(d / "root-only.key", 0o600)  # owned by root: the Job (uid 1000) cannot read it

    w = backup_workspaces(["fred"]).for_user("fred")

    assert w.outcome is Outcome.PARTIALLY_FAILED and w.snapshot_id
    assert "root-only.key" in w.reason and "permission denied" in w.reason, w.reason
    assert "exited 3" in w.reason
    ann = kube.get("PersistentVolumeClaim", namespace, "ws-fred-workspace")["metadata"]["annotations"]
    assert "permission denied" in ann[LAST_BACKUP_REASON]
    (notice,) = smtp_inbox.messages
    assert "permission denied" in notice.get_content()


def test_failed_totp_job_reason_is_its_termination_message_stand_in(kube, namespace):
    """Plays kubelet and Job controller by writing the pod's and Job's status."""
    from tasks.people import totp

    s = get_settings()
    ns = s.platform_namespace  # the TOTP Job lives with Authelia, not with the workspaces
    job = kube.create(totp.provision_job("carol", s.identity, s.platform_namespace))
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    kube.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}})
    kube.create({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "vibecode-totp-carol-x1", "namespace": ns,
                              "labels": {"job-name": "vibecode-totp-carol"}},
                 "spec": job["spec"]["template"]["spec"]})
    kube.patch_status("Pod", ns, "vibecode-totp-carol-x1", {"phase": "Failed", "containerStatuses": [{
        "name": "authelia", "ready": False, "restartCount": 0, "image": c["image"], "imageID": "",
        "state": {"terminated": {"exitCode": 1, "reason": "Error",
                                 "message": "error: a TOTP configuration already exists for user carol"}}}]})
    finish_job(kube, ns, "vibecode-totp-carol", succeeded=False, reason="BackoffLimitExceeded",
               message="Job has reached the specified backoff limit")

    result = await_job(kube, ns, totp.PROVISION_JOB_SELECTOR, "vibecode-totp-carol", 5, 0.1)

    assert result.state == "failed"
    assert "authelia exited 1 (Error): error: a TOTP configuration already exists for user carol" in result.reason


# -- 3. restic init race ------------------------------------------------------------------------
def test_restic_init_that_finds_a_repository_counts_as_already_initialised(backup_settings, tmp_path):
    """restic 0.14's words, checked against the real S3 server and a local repository."""
    s3 = restic_for(backup_settings, "gina")
    assert s3.run_raw(["init"]).returncode == 0
    assert "repository master key and config already initialized" in s3.run_raw(["init"]).stderr
    local = Restic(env={**s3.env, "RESTIC_REPOSITORY": str(tmp_path / "repo")})
    assert local.run_raw(["init"]).returncode == 0
    assert "config file already exists" in local.run_raw(["init"]).stderr

    racing = restic_for(backup_settings, "hugo")
    real_run = racing.run

    def run(args, **kw):
        try:
            return real_run(args, **kw)
        finally:
            if args == ["cat", "config"]:  # another process inits between our check and our init
                assert restic_for(backup_settings, "hugo").run_raw(["init"]).returncode == 0

    racing.run = run
    assert racing.ensure_init() is False  # not an error: the repository exists
    assert restic_for(backup_settings, "hugo").snapshots() == []


def test_concurrent_first_backups_initialise_each_repository_once_and_it_stays_readable(
        kube, namespace, backup_settings):
    """On S3, concurrent `restic init` all succeed and leave the repository unreadable."""
    from tasks.backup.repo import ensure_repository
    from tasks.backup.steps import ensure_backup_secret

    ensure_backup_secret.fn()
    users = ["ines", "jon", "kai"]
    created: dict[str, list[bool]] = {u: [] for u in users}
    errors: list[Exception] = []

    def init(user):
        try:
            created[user].append(ensure_repository(user))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=init, args=(u,)) for u in users for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for user in users:
        assert sorted(created[user]) == [False, False, False, True]  # exactly one run initialised it
        repo = restic_for(backup_settings, user)
        assert repo.snapshots() == [] and repo.check(0)[0] is True


# -- 4. broken and expired watches ----------------------------------------------------------------
class BreakableProxy:
    """A TCP proxy to the API server whose connections the test can cut (and refuse for a while)."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.refuse_until = 0.0
        self.breaks = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if time.monotonic() < self.refuse_until:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def break_all(self, refuse_seconds: float):
        self.refuse_until = time.monotonic() + refuse_seconds
        self.breaks += 1
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self.conns.clear()

    def close(self):
        self.sock.close()
        self.break_all(0)


def _job(ns, name, run="r1"):
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": ns, "labels": {"run": run}},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "c", "image": "busybox"}]}}}}


def test_broken_watch_is_relisted_and_only_each_jobs_real_outcome_counts(kube, namespace):
    import copy
    from urllib.parse import urlparse

    from kubernetes import client as k8s

    from tasks.cluster.jobs import close_waiter, shared_key, waiter_for
    from tasks.cluster.kube import Kube

    cfg = copy.copy(kube.api_client.configuration)
    up = urlparse(cfg.host)
    proxy = BreakableProxy((up.hostname, up.port))
    cfg.refresh_api_key_hook = None  # the kubeconfig loader's hook would reset the host to the API server's
    cfg.host = f"https://127.0.0.1:{proxy.port}"
    flaky = Kube(k8s.ApiClient(cfg))
    for name in ("j1", "j2"):
        kube.create(_job(namespace, name))
    results = {}
    threads = [threading.Thread(target=lambda n=n: results.__setitem__(
        n, await_job(flaky, namespace, "run=r1", n, timeout=30, retry_interval=0.2, shared=True)))
        for n in ("j1", "j2")]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)  # both are waiting on one established watch
        proxy.break_all(refuse_seconds=1.5)  # the stream breaks, and the first re-lists fail too
        time.sleep(0.5)
        finish_job(kube, namespace, "j1", succeeded=True)  # finished while nobody could watch
        time.sleep(1.5)
        finish_job(kube, namespace, "j2", succeeded=False, reason="DeadlineExceeded",
                   message="Job was active longer than specified deadline")
        for t in threads:
            t.join(timeout=30)
        waiter = waiter_for(shared_key(namespace, "run=r1"), lambda: iter(()), 1)
        assert results["j1"].state == "succeeded"
        assert results["j2"].state == "failed" and "longer than specified deadline" in results["j2"].reason
        assert waiter.relists >= 1 and proxy.breaks == 1
    finally:
        close_waiter(shared_key(namespace, "run=r1"))
        proxy.close()


def test_waiter_resumes_after_an_expired_watch_and_raises_only_permanent_errors():
    calls = []
    done = {"metadata": {"name": "j"}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}

    def list_watch():
        calls.append(1)
        if len(calls) == 1:
            yield "SYNC", [{"metadata": {"name": "j"}, "status": {"active": 1}}]
            raise WatchExpired("watch Job: HTTP 410 too old resource version")
        yield "SYNC", [done]
        time.sleep(0.5)  # the server holds the watch open

    waiter = JobWaiter(list_watch, retry_interval=0.05)
    assert waiter.wait("j", 5) == ("succeeded", "Complete") and len(calls) == 2 and waiter.relists == 1
    waiter.close()

    def forbidden():
        raise PermanentError("watch Job: HTTP 403 forbidden")
        yield  # pragma: no cover

    waiter = JobWaiter(forbidden, retry_interval=0.05)
    with pytest.raises(PermanentError):
        waiter.wait("j", 5)
    waiter.close()


# -- 5. restore: latest, exact in place, the guard --------------------------------------------------
def test_restore_latest_is_the_newest_good_snapshot_not_a_partial_one(
        kube, namespace, backup_settings, job_kubelet, tmp_path, monkeypatch):
    monkeypatch.setenv("VIBECODE_KEEP_LAST", "3")
    get_settings.cache_clear()
    d = add_volume(kube, namespace, job_kubelet, "ivy", tmp_path)
    good = backup_workspaces(["ivy"]).for_user("ivy")
    state = tree_state(d)
    (d / "root-only.key").write_text("x\n")
    os.chmod(d / "root-only.key", 0o600)  # unreadable for the Job: the next snapshot is partial
    partial = backup_workspaces(["ivy"]).for_user("ivy")
    assert good.outcome is Outcome.COMPLETED and partial.outcome is Outcome.PARTIALLY_FAILED
    assert partial.snapshot_id and partial.snapshot_id != good.snapshot_id

    restored = restore_workspace("ivy")

    assert restored.snapshot_id == good.snapshot_id
    assert tree_state(job_kubelet.volumes[restored.pvc]) == state


def test_in_place_restore_leaves_exactly_the_snapshot_after_a_verified_pre_restore_backup(
        kube, namespace, backup_settings, job_kubelet, tmp_path, monkeypatch):
    monkeypatch.setenv("VIBECODE_KEEP_LAST", "3")
    get_settings.cache_clear()
    d = add_volume(kube, namespace, job_kubelet, "jack", tmp_path)
    stopped_deployment(kube, namespace, "jack")
    first = backup_workspaces(["jack"]).for_user("jack")
    state = tree_state(d)
    (d / "src" / "main.py").unlink()  # deleted since the snapshot ...
    (d / "added since.txt").write_text("new work\n")  # ... and added since
    (d / ".hidden-new").mkdir()
    os.chown(d / "added since.txt", 1000, 1000)
    os.chown(d / ".hidden-new", 1000, 1000)
    between = tree_state(d)

    result = restore_workspace("jack", snapshot=first.snapshot_id[:8], target="in-place")

    assert tree_state(d) == state  # no merge: the files added since are gone, the deleted one is back
    snaps = {x.id: x for x in restic_for(backup_settings, "jack").snapshots()}
    pre = snaps[result.pre_restore_snapshot]
    assert PRE_RESTORE_TAG in pre.tags
    check = restore_workspace("jack", snapshot=pre.id[:8])  # the replaced state is kept, verified
    assert tree_state(job_kubelet.volumes[check.pvc]) == between
    assert restore_workspace("jack").snapshot_id == first.snapshot_id  # latest never means a pre-restore copy
    ann = kube.get("Deployment", namespace, "ws-jack")["metadata"].get("annotations") or {}
    assert RESTORING_ANNOTATION not in ann


def test_provisioning_refuses_to_start_a_workspace_while_a_restore_holds_the_guard(
        kube, namespace, backup_settings, job_kubelet, tmp_path, helm_bin):
    from flows.workspace import provision_workspace

    add_volume(kube, namespace, job_kubelet, "kate", tmp_path)
    stopped_deployment(kube, namespace, "kate")
    backup_workspaces(["kate"])
    job_kubelet.hold.add("ws-kate-restore-")
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", restore_workspace("kate", target="in-place")))
    t.start()
    try:
        for _ in range(300):
            if any(n.startswith("ws-kate-restore-") for n in job_kubelet._held):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the restore Job was never created")
        ann = kube.get("Deployment", namespace, "ws-kate")["metadata"]["annotations"]
        assert ann[RESTORING_ANNOTATION].startswith("ws-kate-restore-")
        with pytest.raises(Exception, match="being restored"):
            provision_workspace("kate", replicas=1)
        assert kube.get("Deployment", namespace, "ws-kate")["spec"]["replicas"] == 0
    finally:
        job_kubelet.release("ws-kate-restore-")
        t.join(timeout=120)
    assert box["r"].outcome is Outcome.COMPLETED
    for kind, name in (("Deployment", "ws-kate"), ("PersistentVolumeClaim", "ws-kate-workspace")):
        assert RESTORING_ANNOTATION not in (kube.get(kind, namespace, name)["metadata"].get("annotations") or {})


def test_two_restores_cannot_both_take_one_guard_the_later_write_is_a_conflict_then_a_refusal(
        kube, namespace, backup_settings, job_kubelet, tmp_path, monkeypatch):
    """A race played in order: run B judged the volume's lapsed guard, then run A took it over
    before B wrote. B's write, on the version it judged, is a Conflict (transient: its retry
    reads again) and the retry is refused: A's guard is fresh and A's Job is not created yet."""
    import logging
    from datetime import datetime, timedelta, timezone

    from tasks.backup import restore_steps
    from tasks.backup.guard import guard_value
    from tasks.backup.restore_steps import guard_restore
    from tasks.cluster import kube as adapter
    from tasks.core.errors import Conflict

    monkeypatch.setattr(restore_steps, "get_run_logger", lambda: logging.getLogger("test"))  # .fn: no run
    add_volume(kube, namespace, job_kubelet, "nora", tmp_path)
    pvc = "ws-nora-workspace"
    dead = guard_value("ws-nora-restore-dead0000", datetime.now(timezone.utc) - timedelta(hours=3))
    kube.annotate("PersistentVolumeClaim", namespace, pvc, {RESTORING_ANNOTATION: dead})
    judged = kube.get("PersistentVolumeClaim", namespace, pvc)  # what B read
    guard_restore.fn("nora", "ws-nora-restore-aaaa0000")  # A takes the lapsed guard over
    assert kube.get("PersistentVolumeClaim", namespace, pvc)["metadata"]["annotations"][
        RESTORING_ANNOTATION].startswith("ws-nora-restore-aaaa0000@")

    client = adapter.connect()
    real_get = client.get
    monkeypatch.setattr(client, "get", lambda kind, ns, name: judged if kind == "PersistentVolumeClaim"
                        else real_get(kind, ns, name))
    with pytest.raises(Conflict):
        guard_restore.fn("nora", "ws-nora-restore-bbbb0000")
    monkeypatch.setattr(client, "get", real_get)
    with pytest.raises(PermanentError, match="already being restored"):
        guard_restore.fn("nora", "ws-nora-restore-bbbb0000")  # the retry
    assert kube.get("PersistentVolumeClaim", namespace, pvc)["metadata"]["annotations"][
        RESTORING_ANNOTATION].startswith("ws-nora-restore-aaaa0000@")


# -- 6. password rotation -----------------------------------------------------------------------
def test_rotate_restic_password_new_opens_old_does_not_and_the_secret_follows(
        kube, namespace, backup_settings, job_kubelet, tmp_path, monkeypatch):
    import secrets as pysecrets

    for user in ("lena", "mike"):
        add_volume(kube, namespace, job_kubelet, user, tmp_path)
    assert backup_workspaces().outcome is Outcome.COMPLETED
    old = backup_settings.backup.restic_password.get_secret_value()
    new = pysecrets.token_urlsafe(24)
    with pytest.raises(Exception, match="restic_new_password"):
        rotate_restic_password()  # nothing to rotate to: refused, nothing changed
    monkeypatch.setenv("VIBECODE_RESTIC_NEW_PASSWORD", new)
    get_settings.cache_clear()

    rows = rotate_restic_password()
    again = rotate_restic_password()  # a rerun converges and changes nothing

    assert set(rows) == {"lena", "mike"} and all("added" in r and "removed" in r for r in rows.values())
    assert all(r == "new key present; old key already removed" for r in again.values())
    for user in ("lena", "mike"):
        repo = restic_for(backup_settings, user)
        assert repo.with_password(new).current_key() is not None and len(repo.with_password(new).snapshots()) == 1
        assert repo.with_password(old).current_key() is None
        assert "wrong password" in repo.with_password(old).run_raw(["snapshots"]).stderr
    secret = kube.get("Secret", namespace, backup_settings.backup.secret)
    assert base64.b64decode(secret["data"]["RESTIC_PASSWORD"]).decode() == new
    # the next night (settings still name the old password as restic_password) keeps the new one
    report = backup_workspaces()
    assert report.outcome is Outcome.COMPLETED
    secret = kube.get("Secret", namespace, backup_settings.backup.secret)
    assert base64.b64decode(secret["data"]["RESTIC_PASSWORD"]).decode() == new


# -- 7. no secret in a repr ---------------------------------------------------------------------
def test_restic_runner_repr_and_str_hold_no_secret(backup_settings):
    r = restic_for(backup_settings, "nina")
    for secret in (backup_settings.backup.restic_password.get_secret_value(),
                   backup_settings.backup.s3_secret_access_key.get_secret_value(),
                   backup_settings.backup.s3_access_key_id.get_secret_value()):
        for text in (repr(r), str(r), f"{r}", repr([r]), repr(r.with_password("other-" + secret))):
            assert secret not in text
    assert "nina" in repr(r)


# -- 8. the kubelet stand-in honours the pod spec -------------------------------------------------
def _probe_job(ns, name, script, **pod_extra):
    from tasks.cluster.objects import restricted_job

    container = {"name": "probe", "image": "busybox", "command": ["/bin/sh", "-c", "$(SCRIPT)"],
                 "args": [], "workingDir": "/work/sub",
                 "env": [{"name": "SCRIPT", "value": script}, {"name": "WHO", "value": "there"},
                         {"name": "GREETING", "value": "hi $(WHO) $$(WHO) $(LATER)"}, {"name": "LATER", "value": "x"},
                         {"name": "RO", "value": "/ro"}, {"name": "SEC", "value": "/sec"}, {"name": "CM", "value": "/cm"},
                         {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "probe", "key": "token"}}}],
                 "volumeMounts": [{"name": "work", "mountPath": "/work"},
                                  {"name": "ro", "mountPath": "/ro", "readOnly": True},
                                  {"name": "sec", "mountPath": "/sec", "readOnly": True},
                                  {"name": "cm", "mountPath": "/cm"}]}
    volumes = [{"name": "work", "persistentVolumeClaim": {"claimName": "work"}},
               {"name": "ro", "persistentVolumeClaim": {"claimName": "ro", "readOnly": True}},
               {"name": "sec", "secret": {"secretName": "probe"}},
               {"name": "cm", "configMap": {"name": "probe"}}]
    job = restricted_job(name=name, namespace=ns, labels={"run": "probe"}, container=container, volumes=volumes,
                         run_as_user=1234, run_as_group=2345, deadline_seconds=pod_extra.get("deadline", 30))
    return job


def test_job_stand_in_honours_vars_workdir_uid_read_only_secret_configmap_and_deadline(
        kube, namespace, job_kubelet, tmp_path):
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "probe", "namespace": namespace},
                 "stringData": {"token": "tok-value", "file.txt": "secret file"}})
    kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe", "namespace": namespace},
                 "data": {"conf.yml": "a: 1"}})
    work, ro = tmp_path / "work", tmp_path / "ro"
    (work / "sub").mkdir(parents=True)
    ro.mkdir()
    (ro / "keep.txt").write_text("keep\n")
    os.chown(work / "sub", 1234, 2345)
    os.chown(ro, 1234, 2345)
    job_kubelet.volumes.update(work=work, ro=ro)
    script = ('echo "$(id -u):$(id -g) $(pwd) $GREETING" > out.txt; cat "$SEC/file.txt" >> out.txt; '
              'echo >> out.txt; cat "$CM/conf.yml" >> out.txt; echo " $TOKEN" >> out.txt; '
              'if touch "$RO/new" 2>/dev/null; then echo ro-writable >> out.txt; fi; '
              'if touch /etc/new-in-root 2>/dev/null; then echo root-writable >> out.txt; fi')
    kube.create(_probe_job(namespace, "probe-ok", script))
    slow = _probe_job(namespace, "probe-slow", "sleep 30", deadline=1)
    kube.create(slow)
    bad = _probe_job(namespace, "probe-bad", "true")
    bad["spec"]["template"]["spec"]["volumes"][0] = {"name": "work", "hostPath": {"path": "/"}}
    kube.create(bad)

    ok = await_job(kube, namespace, "run=probe", "probe-ok", 30, 0.1)
    deadline = await_job(kube, namespace, "run=probe", "probe-slow", 30, 0.1)
    refused = await_job(kube, namespace, "run=probe", "probe-bad", 30, 0.1)

    assert ok.state == "succeeded", ok.reason
    out = (work / "sub" / "out.txt").read_text().split("\n")
    # $(VAR) of an earlier variable is expanded, $$ escapes, a later or unknown one stays as written
    assert out[0] == f"1234:2345 {work}/sub hi there $(WHO) $(LATER)"
    assert out[1:] == ["secret file", "a: 1 tok-value", ""]
    assert not (ro / "new").exists() and not os.path.exists("/etc/new-in-root")
    assert (work / "sub" / "out.txt").stat().st_uid == 1234
    assert deadline.state == "failed" and "longer than specified deadline" in deadline.reason
    assert refused.state == "failed" and "only PVC, emptyDir, Secret and ConfigMap volumes" in refused.reason


def test_watch_errors_map_410_to_watch_expired_and_5xx_to_transient():
    from kubernetes.client.exceptions import ApiException

    from tasks.cluster.kube import map_api_error, watch_error
    from tasks.core.errors import ServerError

    assert isinstance(map_api_error(ApiException(status=410, reason="Gone"), "watch"), WatchExpired)
    assert isinstance(watch_error({"code": 410, "reason": "Expired", "message": "too old"}, "w"), WatchExpired)
    assert isinstance(watch_error({"code": 500, "message": "etcd"}, "w"), ServerError)
    assert not is_transient(watch_error({"code": 403, "message": "forbidden"}, "w"))


def test_cli_rotate_restic_password_reads_passwords_only_from_the_environment(kube, namespace, backup_settings,
                                                                              capsys):
    from vibecode_cli import main as cli

    assert cli(["rotate-restic-password", "--new-password", "on-the-command-line"]) == 2  # no such option
    assert "No such option" in capsys.readouterr().err
    assert cli(["rotate-restic-password"]) == 2
    assert "restic_new_password" in capsys.readouterr().err
    assert kube.get("Secret", namespace, backup_settings.backup.secret) is None  # nothing changed
