"""Crash safety: each flow is killed with SIGKILL at every one of its task boundaries and run
again; the end state equals an uninterrupted run's, nothing duplicated, nothing lost.

The boundaries are not listed here: an uninterrupted run of the flow, in a process of its
own, records its task runs as they finish (tests/fixtures/killer.py), and that list is what
is killed at, so a new task in a flow is covered without this file changing. For boundary
k a fresh subject (a person, a workspace, a namespace) gets the flow killed right after
its k-th task run, then the run again, and its state must equal the reference subject's
(renamed). The worlds are the real components of the other flow tests: the API server,
helm, the SMTP server, restic on the S3 server, the Prefect server; the kubelet and
controllers are the usual stand-ins (tests/fixtures/kube.py, storage.JobKubelet).

How a flow is run again is how the platform runs it again after a crash:
- onboarding and offboarding: a new run of the same HR event (same parameters; the
  ledger's event ids are the idempotency);
- backup, restore and reaping: the same flow run retried (the run of one idempotency
  key: Crashed, AwaitingRetry, executed again), whose run id names its Jobs and tags its
  snapshots; a new run of these is new work by design (another backup, another restore
  with its own safety copy).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from tests.fixtures.backup import add_workspace
from tests.fixtures.killer import Spec, Zygote, new_flow_run, retry_crashed
from tests.fixtures.storage import restic_for, tree_state

pytestmark = [pytest.mark.usefixtures("prefect_server", "helm_bin"), pytest.mark.slow]
# 38 boundaries, 81 flow runs. Measured one at a time beside a soak on the 2 cores: onboarding
# 114 s, offboarding 257 s, restore 125 s, backup and reaping under 90 s together. In the whole
# suite the first three took the run from 39 to 48 minutes, over the CI budget of 45: they stay
# opt-in; backup, reaping and the restore run anew run in every suite.
EXPENSIVE = pytest.mark.skipif(os.environ.get("VIBECODE_KILL_BOUNDARIES") != "1",
                               reason="opt-in: VIBECODE_KILL_BOUNDARIES=1 (onboarding, offboarding, restore: "
                                      "about 8 min)")


@pytest.fixture(scope="module")
def zygote(prefect_server, apiserver, tmp_path_factory):
    from prefect.settings import PREFECT_API_URL

    z = Zygote(tmp_path_factory.mktemp("killer"),
               {**os.environ, "PYTHONPATH": os.getcwd(), "PREFECT_API_URL": str(PREFECT_API_URL.value())})
    yield z
    z.close()


def _env() -> dict[str, str]:
    """The test's settings as they are now (namespaces, bucket, credentials), for the child."""
    return dict(os.environ)


def _run_all(zygote, specs: list[Spec], attempts: int = 3) -> list:
    """``zygote.run_all``, with a run that the Prefect server itself refused (503: its SQLite
    is busy when the whole suite shares the 2 cores) run again as it was: that is the
    orchestrator's failure, not the flow's, and running again is what is under test anyway."""
    runs = zygote.run_all(specs)
    for _ in range(attempts - 1):
        again = [i for i, r in enumerate(runs) if r.exit_code == 3 and "503 Service Unavailable" in r.log]
        if not again:
            break
        for i in again:
            if specs[i].flow_run_id:
                retry_crashed(specs[i].flow_run_id)
        for i, run in zip(again, zygote.run_all([specs[i] for i in again]), strict=True):
            runs[i] = run
    return runs


def crash_everywhere(zygote, target, prepare, state, same_run: bool, rename, env=lambda k: {}) -> list[str]:
    """The reference run on subject 0, then for each boundary k of it subject k killed right
    after k task runs and run again (all subjects at once: each in a process of its own),
    and each subject's state compared with the reference's. Returns the boundaries.

    ``prepare(ks)`` makes the subjects and returns each one's flow parameters; ``state(k)``
    reads what the flow changed for subject k; ``rename(state, k)`` names it as subject 0;
    ``env(k)``: settings of subject k's runs on top of the test's."""
    (kwargs,) = prepare([0])
    (ref,) = _run_all(zygote, [Spec(target, kwargs, {**_env(), **env(0)},
                                    flow_run_id=new_flow_run(target, kwargs) if same_run else None)])
    assert ref.ok, ref.log[-4000:]
    boundaries = ref.tasks
    assert boundaries, "the flow ran no task: nothing to kill at"
    expected = state(0)
    ks = list(range(1, len(boundaries) + 1))
    params = dict(zip(ks, prepare(ks), strict=True))
    runs = {k: new_flow_run(target, params[k]) if same_run else None for k in ks}
    killed = _run_all(zygote, [Spec(target, params[k], {**_env(), **env(k)}, kill_after=k, flow_run_id=runs[k])
                               for k in ks])
    for k, run in zip(ks, killed, strict=True):
        at = f"boundary {k} (after {boundaries[k - 1]})"
        assert run.killed, f"{at}: not killed: exit {run.exit_code}\n{run.log[-3000:]}"
        assert run.tasks == boundaries[:k], f"{at}: the killed run's tasks differ from the reference's"
    if same_run:
        left = {retry_crashed(runs[k]) for k in ks}
        assert left == {"RUNNING"}, f"the killed runs were left {left}"  # then Crashed, AwaitingRetry, run again
    again = _run_all(zygote, [Spec(target, params[k], {**_env(), **env(k)}, flow_run_id=runs[k]) for k in ks])
    for k, run in zip(ks, again, strict=True):
        at = f"boundary {k} (after {boundaries[k - 1]})"
        assert run.ok, f"the rerun after a kill at {at} failed:\n{run.log[-4000:]}"
        assert rename(state(k), k) == expected, f"the end state after a kill at {at} and a rerun"
    print(f"{target}: {len(boundaries)} boundaries: {boundaries}")
    return boundaries


def _swap(obj, k: int, names: dict[str, str]):
    """``obj`` with subject k's names replaced by subject 0's, for comparing."""
    text = json.dumps(obj, sort_keys=True, default=str)
    for theirs, ours in names.items():
        text = text.replace(theirs, ours)
    return json.loads(text)


# -- backup -------------------------------------------------------------------------------
def _jobs(kube, ns, user):
    return sorted(j["metadata"]["name"] for j in kube.list("Job", ns, f"vibecode.dev/user={user}"))


def test_backup_killed_at_every_boundary_converges(zygote, kube, namespace, backup_settings, job_kubelet, tmp_path):
    ns = namespace

    def prepare(ks):
        for k in ks:
            add_workspace(kube, ns, job_kubelet, f"bk{k}", tmp_path)
        return [{"usernames": [f"bk{k}"]} for k in ks]

    def state(k):
        user = f"bk{k}"
        snaps = restic_for(backup_settings, user).snapshots()
        ann = kube.get("PersistentVolumeClaim", ns, f"ws-{user}-workspace")["metadata"].get("annotations") or {}
        assert [s.id for s in snaps] == [ann.get("vibecode.dev/last-backup-snapshot")], (snaps, ann)
        return {"snapshots": [sorted(t.partition("=")[0] for t in s.tags) for s in snaps],  # the run's tag: its id
                "jobs": len(_jobs(kube, ns, user)),
                "annotations": {a: v for a, v in ann.items() if a.startswith("vibecode.dev/last-backup-")
                                and not a.endswith(("-time", "-snapshot", "-duration"))}}

    boundaries = crash_everywhere(zygote, "flows.backup:backup_workspaces", prepare, state, same_run=True,
                             rename=lambda s, k: _swap(s, k, {f"bk{k}": "bk0"}))
    assert "backup-batch" in boundaries


# -- onboarding and offboarding --------------------------------------------------------------
def _person(kube, ns, inbox, user) -> dict:
    """What the people flows change for one person: directory entry (the password only as
    "one hash": a second would be a second identity's), ledger, release, workspace, mail."""
    from tasks.cluster import helm
    from tasks.people.ledger import Ledger
    from tests.fixtures.people import users_file

    entry = dict(users_file(kube).get(user) or {})
    password = entry.pop("password", "")
    rec = Ledger().get(user)
    release = helm.status(f"ws-{user}", ns)
    dep = kube.get("Deployment", ns, f"ws-{user}")
    return {"entry": entry, "hashed": password.startswith("$argon2id$"),
            "ledger": rec and {"state": rec.state.value, "events": list(rec.events), "welcome": rec.welcome_sent,
                               "error": rec.last_error, "left": rec.terminated_at is not None},
            "release": release and release.revision, "replicas": dep and dep["spec"]["replicas"],
            "volumes": len(kube.list("PersistentVolumeClaim", ns, f"vibecode.dev/user={user}")),
            "mails": Counter(m["Subject"] for m in inbox.messages if m["To"].addresses[0].username == user)}


def _hire(k: int, prefix: str) -> dict:
    from tests.fixtures.people import event

    return event(f"evt-{prefix}{k}", employee_id=f"{prefix.upper()}{k:03d}", username=f"{prefix}{k}",
                 email=f"{prefix}{k}@example.com")


@EXPENSIVE
def test_onboarding_killed_at_every_boundary_converges(zygote, platform, kube):
    ns, inbox = platform["ns"], platform["inbox"]
    boundaries = crash_everywhere(
        zygote, "flows.onboarding:run_hr_event", lambda ks: [{"body": _hire(k, "on")} for k in ks],
        lambda k: _person(kube, ns, inbox, f"on{k}"), same_run=False,
        rename=lambda s, k: _swap(s, k, {f"on{k}": "on0", f"ON{k:03d}": "ON000"}))
    assert {"ensure-identity", "install-workspace-release", "send-welcome-email", "record-event"} <= set(boundaries)


@EXPENSIVE
def test_offboarding_killed_at_every_boundary_converges(zygote, platform, kube, backup_settings, job_kubelet):
    """The final backup is the real backup flow (a subflow): its Jobs run on the kubelet
    stand-in against the S3 server, so a kill inside it is a kill at its boundaries too."""
    from flows.onboarding import run_hr_event
    from tests.fixtures.concurrency import run_in_threads

    ns, inbox = platform["ns"], platform["inbox"]

    def prepare(ks):
        _, errors = run_in_threads(run_hr_event, [_hire(k, "off") for k in ks])
        assert not errors, errors
        for k in ks:  # someone's work (restic refuses an empty snapshot)
            (job_kubelet.claim_dir(f"ws-off{k}-workspace") / "notes.md").write_text("work in progress\n")
        return [{"body": {**_hire(k, "off"), "event_id": f"evt-left{k}", "type": "employee.terminated",
                          "occurred_at": "2026-11-30T17:00:00Z"}}
                for k in ks]

    def state(k):
        user = f"off{k}"
        snaps = restic_for(backup_settings, user).snapshots()
        return {**_person(kube, ns, inbox, user), "snapshots": len(snaps), "backup-jobs": len(_jobs(kube, ns, user))}

    boundaries = crash_everywhere(zygote, "flows.onboarding:run_hr_event", prepare, state, same_run=False,
                                  rename=lambda s, k: _swap(s, k, {f"off{k}": "off0", f"left{k}": "left0",
                                                                   f"OFF{k:03d}": "OFF000"}))
    assert {"disable-identity", "backup-batch", "judge-deletion", "record-event"} <= set(boundaries)


# -- restore --------------------------------------------------------------------------------
class _InPlace:
    """Stopped workspaces ``rs{k}``, each backed up once and then changed, restored in place;
    ``state(k)``: whether the volume holds exactly the snapshot's files, the snapshots by tag,
    the Jobs by kind, the guard."""

    def __init__(self, kube, ns, backup_settings, job_kubelet, tmp_path, prefix="rs"):
        self.kube, self.ns, self.settings, self.kubelet, self.tmp = kube, ns, backup_settings, job_kubelet, tmp_path
        self.prefix, self.trees, self.saved = prefix, {}, {}

    def prepare(self, ks):
        from flows.backup import backup_workspaces

        for k in ks:
            self.trees[k] = add_workspace(self.kube, self.ns, self.kubelet, f"{self.prefix}{k}", self.tmp)
        assert backup_workspaces(usernames=[f"{self.prefix}{k}" for k in ks]).outcome.value == "Completed"
        for k in ks:  # work after the backup, which the restore replaces
            self.saved[k] = tree_state(self.trees[k])
            (self.trees[k] / "src" / "main.py").write_text("print('changed')\n")
            (self.trees[k] / "new-file.txt").write_text("after the backup\n")
        return [{"username": f"{self.prefix}{k}", "snapshot": "latest", "target": "in-place"} for k in ks]

    def state(self, k):
        user = f"{self.prefix}{k}"
        pvc = self.kube.get("PersistentVolumeClaim", self.ns, f"ws-{user}-workspace")
        tags = Counter(t for s in restic_for(self.settings, user).snapshots() for t in s.tags
                       if "=" not in t and t != user)
        return {"files-are-the-snapshot": tree_state(self.trees[k]) == self.saved[k], "snapshots": tags,
                "jobs": Counter(j.split("-")[2] for j in _jobs(self.kube, self.ns, user)),
                "guard": (pvc["metadata"].get("annotations") or {}).get("vibecode.dev/restoring")}


@EXPENSIVE
def test_restore_in_place_killed_at_every_boundary_converges(zygote, kube, namespace, backup_settings, job_kubelet,
                                                             tmp_path):
    """An in-place restore of a stopped workspace: the guard, the verified pre-restore copy,
    the restore Job. After the rerun the volume holds exactly the snapshot's files."""
    w = _InPlace(kube, namespace, backup_settings, job_kubelet, tmp_path)
    boundaries = crash_everywhere(zygote, "flows.restore:restore_workspace", w.prepare, w.state, same_run=True,
                                  rename=lambda s, k: s)
    assert {"guard-restore", "run-backup-job", "start-restore-job", "wait-for-job"} <= set(boundaries)


def test_a_killed_in_place_restore_run_anew_takes_over_its_guard_once_the_guard_lapsed(
        zygote, kube, namespace, backup_settings, job_kubelet, tmp_path):
    """Not its retry but a new run with the same parameters (the CLI run again). Killed after
    its restore Job finished: the new run takes the guard over at once and ends as an
    uninterrupted run does (one more verified pre-restore copy and restore Job: a new run is
    new work). Killed before any Job: the killed run's guard cannot be told from a live
    one's, so the new run is refused with the reason and changes nothing; once the
    pre-restore window has passed (the test moves the guard's stamp back, as the clock
    would), the new run takes it over."""
    from tasks.backup.guard import guard_value, guarding_job

    w = _InPlace(kube, namespace, backup_settings, job_kubelet, tmp_path, prefix="ra")
    target = "flows.restore:restore_workspace"
    params = dict(zip((0, 1, 2), w.prepare([0, 1, 2]), strict=True))
    (ref,) = _run_all(zygote, [Spec(target, params[0], _env())])
    assert ref.ok, ref.log[-4000:]
    expected = w.state(0)
    after_job, after_guard = ref.tasks.index("wait-for-job") + 1, ref.tasks.index("guard-restore") + 1
    killed = _run_all(zygote, [Spec(target, params[1], _env(), kill_after=after_job),
                               Spec(target, params[2], _env(), kill_after=after_guard)])
    assert all(r.killed for r in killed), [r.exit_code for r in killed]
    assert w.state(1)["guard"] and w.state(2)["guard"]  # both left their guard behind

    late, early = _run_all(zygote, [Spec(target, params[1], _env()), Spec(target, params[2], _env())])
    assert late.ok, late.log[-4000:]
    assert w.state(1) == {**expected, "snapshots": expected["snapshots"] + Counter({"pre-restore": 1}),
                          "jobs": expected["jobs"] + Counter({"prerestore": 1, "restore": 1})}
    assert "taking over a lapsed restore guard" in late.log and "has finished" in late.log

    before = w.state(2)
    assert not early.ok and "is already being restored" in early.log and "pre-restore window" in early.log
    assert w.state(2) == before  # refused: no copy, no Job, the guard as it was
    old = datetime.now(timezone.utc) - timedelta(hours=3)
    for kind, name in (("Deployment", "ws-ra2"), ("PersistentVolumeClaim", "ws-ra2-workspace")):
        obj = kube.get(kind, namespace, name)
        if obj is None:  # no Deployment here: the volume alone carries the guard
            continue
        value = obj["metadata"]["annotations"]["vibecode.dev/restoring"]
        kube.annotate(kind, namespace, name, {"vibecode.dev/restoring": guard_value(guarding_job(value), old)})
    (again,) = _run_all(zygote, [Spec(target, params[2], _env())])
    assert again.ok, again.log[-4000:]
    assert w.state(2) == expected and "is gone" in again.log


# -- reaping --------------------------------------------------------------------------------
def test_reaping_killed_at_every_boundary_converges(zygote, kube, namespaces, smtp_inbox, code_servers, monkeypatch):
    """One namespace pair per subject (the reaper judges every workspace of its namespace):
    an idle workspace that is warned (one email) and one warned long enough ago that is
    stopped. The endpoint is a real code-server nobody uses (its heartbeat stays 0)."""
    from tests.fixtures.reaper import add_workspace as add_deployment
    from tests.fixtures.reaper import owners_secret, play_controller

    (idle,) = code_servers(1)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    spaces = {}

    def prepare(ks):
        out = []
        for k in ks:
            ws, pf = f"rp{k}-{namespaces[0]}"[:63], f"rp{k}-{namespaces[1]}"[:63]
            for n in (ws, pf):
                kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}})
            spaces[k] = (ws, pf)
            add_deployment(kube, ws, f"warn{k}")
            add_deployment(kube, ws, f"stop{k}", annotations={"vibecode.dev/idle-warned-at":
                                                               (now - timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%SZ")})
            play_controller(kube, ws, f"warn{k}", now - timedelta(hours=1, minutes=50))
            play_controller(kube, ws, f"stop{k}", now - timedelta(hours=3))
            owners_secret(kube, pf, {f"warn{k}": f"warn{k}@example.com", f"stop{k}": f"stop{k}@example.com"})
            out.append({"now": now.isoformat()})
        return out

    def env_for(k):
        return {"VIBECODE_NAMESPACE": spaces[k][0], "VIBECODE_PLATFORM_NAMESPACE": spaces[k][1],
                "VIBECODE_REAP_PROBE_URLS": json.dumps({f"{who}{k}": idle.url for who in ("warn", "stop")})}

    def state(k):
        ws = spaces[k][0]
        deps = {d["metadata"]["name"]: {"replicas": d["spec"]["replicas"],
                                        "annotations": {a: v for a, v in (d["metadata"].get("annotations") or {}).items()
                                                        if a.startswith("vibecode.dev/")}}
                for d in kube.list("Deployment", ws)}
        mails = Counter(m["To"].addresses[0].username for m in smtp_inbox.messages
                        if m["To"].addresses[0].username.endswith(str(k)))
        return {"workspaces": deps, "mails": mails}

    boundaries = crash_everywhere(zygote, "flows.reaper:reap_idle_workspaces", prepare, state, same_run=True,
                                  rename=lambda s, k: _swap(s, k, {f"warn{k}": "warn0", f"stop{k}": "stop0"}),
                                  env=env_for)
    assert {"observe-workspaces", "apply-reap-decisions"} <= set(boundaries)
    reference = state(0)["workspaces"]
    assert reference["ws-stop0"]["replicas"] == 0 and reference["ws-warn0"]["replicas"] == 1
    assert "vibecode.dev/idle-warned-at" in reference["ws-warn0"]["annotations"]
