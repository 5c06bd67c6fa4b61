"""The reaper never acts on a stale word (issue 16): deletions confirmed in the restic
repository itself, the restore guard on every path, one warning however many runs
overlap, exemption values that fail safe, and a property test of the whole decision.

Pure tests first (the rule), then the same guarantees on the real API server, restic and
S3 (the steps), then the property over generated sequences of runs.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, event, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tasks.backup.status import RepositoryWord
from tasks.core.settings import get_settings
from tasks.reaper.decide import Policy, Probe, decide, rfc3339, workspaces_from
from tests.fixtures.reaper_world import World

T = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
H, M, DAY = timedelta(hours=1), timedelta(minutes=1), timedelta(days=1)
POLICY = Policy(idle_timeout=2 * H, warning_lead=15 * M, max_session=12 * H, dormancy=30 * DAY,
                volume_dormancy=90 * DAY)
SNAP_A = "a" * 64  # ids as restic writes them: 64 hex digits
SNAP_B = "b" * 64


def labels(user="alice", volume=None):
    out = {"app.kubernetes.io/name": "code-server", "app.kubernetes.io/part-of": "vibecode", "vibecode.dev/user": user}
    return {**out, "vibecode.dev/volume": volume} if volume else out


def dep(replicas=1, ann=None, up=T - 20 * H, rv="7"):
    return {"metadata": {"name": "ws-alice", "labels": labels(), "annotations": ann or {}, "resourceVersion": rv},
            "spec": {"replicas": replicas},
            "status": {"conditions": [{"type": "Available", "status": "True", "lastTransitionTime": rfc3339(up)}]}}


def pvc(kind="workspace", name=None, **ann):
    return {"metadata": {"name": name or f"ws-alice-{kind}", "labels": labels(volume=kind), "annotations": ann,
                         "resourceVersion": "3"}}


def verified_at(at: datetime, snapshot: str = SNAP_A, **extra) -> dict:
    return {"vibecode.dev/last-backup-time": rfc3339(at), "vibecode.dev/last-backup-outcome": "Completed",
            "vibecode.dev/last-backup-verified": "true", "vibecode.dev/last-backup-snapshot": snapshot, **extra}


def warned(at: datetime, rule="idle") -> dict:
    return {"vibecode.dev/idle-warned-at": rfc3339(at), "vibecode.dev/idle-warning": rule}


def idle(ago: timedelta) -> Probe:
    return Probe(True, "expired", T - ago)


def one(deployments, volumes):
    (ws,) = workspaces_from(deployments, volumes, [])
    return ws


# -- the rule, pure ------------------------------------------------------------------------------
def test_dormant_deletion_needs_the_snapshot_confirmed_in_the_repository():
    """The annotation alone is a stale word: a deletion that is due asks the repository, and
    a snapshot the repository does not hold means a new backup, never a deletion."""
    stopped = {"vibecode.dev/stopped-at": rfc3339(T - 31 * DAY)}
    ws = one([dep(0, stopped)], [pvc(**verified_at(T - 20 * DAY)), pvc("extensions")])
    assert decide(ws, None, T, POLICY).action == "confirm"  # never "delete" on the annotation alone
    assert decide(replace(ws, repository=RepositoryWord(frozenset({SNAP_B}))), None, T, POLICY).action == "backup"
    unread = decide(replace(ws, repository=RepositoryWord(error="ServerError: 503")), None, T, POLICY)
    assert unread.action == "keep" and "could not be read" in unread.reason
    assert decide(replace(ws, repository=RepositoryWord(frozenset({SNAP_A}))), None, T, POLICY).action == "delete"
    # the same for the volumes of a workspace whose release already went
    gone = {**verified_at(T - 80 * DAY), "vibecode.dev/stopped-at": rfc3339(T - 91 * DAY),
            "vibecode.dev/dormant-deleted-at": rfc3339(T - 60 * DAY)}
    vols = one([], [pvc(**gone), pvc("extensions", **{k: gone[k] for k in list(gone)[-2:]})])
    assert decide(vols, None, T, POLICY).action == "confirm"
    assert decide(replace(vols, repository=RepositoryWord()), None, T, POLICY).action == "backup"
    assert decide(replace(vols, repository=RepositoryWord(frozenset({SNAP_A}))), None, T,
                  POLICY).action == "delete-volumes"


def test_restore_volumes_are_never_deleted_as_dormant_volumes():
    gone = {**verified_at(T - 80 * DAY), "vibecode.dev/stopped-at": rfc3339(T - 91 * DAY),
            "vibecode.dev/dormant-deleted-at": rfc3339(T - 60 * DAY)}
    restore = pvc("restore", name="ws-alice-restore-r1", **gone)
    ws = one([], [pvc(**gone), restore])
    assert [v["metadata"]["name"] for v in ws.volumes] == ["ws-alice-workspace"]
    d = decide(replace(ws, repository=RepositoryWord(frozenset({SNAP_A}))), None, T, POLICY)
    assert d.action == "delete-volumes"  # ... of the workspace volume only: the restore volume is not in the picture
    # a person whose only volume is a restore volume has no workspace to judge at all
    assert workspaces_from([], [restore], []) == []


def test_a_dormant_workspace_under_an_in_place_restore_is_neither_judged_nor_deleted():
    """No Deployment: the restore guard is on the volume only (guard_restore skips what is absent)."""
    gone = {**verified_at(T - 80 * DAY), "vibecode.dev/stopped-at": rfc3339(T - 91 * DAY),
            "vibecode.dev/dormant-deleted-at": rfc3339(T - 60 * DAY),
            "vibecode.dev/restoring": "ws-alice-restore-r1@2026-11-29T11:00:00Z"}
    ws = one([], [pvc(**gone), pvc("extensions")])
    assert ws.busy and "restoring" in ws.busy
    d = decide(replace(ws, repository=RepositoryWord(frozenset({SNAP_A}))), None, T, POLICY)
    assert d.action == "keep" and "restoring" in d.reason
    # a stopped workspace whose volume (not its Deployment) carries the guard: not released either
    stopped = one([dep(0, {"vibecode.dev/stopped-at": rfc3339(T - 31 * DAY)})],
                  [pvc(**{**verified_at(T - 20 * DAY), "vibecode.dev/restoring": "r@2026-11-29T11:00:00Z"})])
    assert decide(replace(stopped, repository=RepositoryWord(frozenset({SNAP_A}))), None, T,
                  POLICY).action == "keep"


@pytest.mark.parametrize("value", ["flase", "no", "0", "", "False-ish", "disabled"])
def test_an_unrecognised_exemption_value_fails_safe(value):
    ws = one([dep(ann={"vibecode.dev/reap": value, **warned(T - H)})], [pvc()])
    d = decide(ws, idle(5 * H), T, POLICY)
    assert d.action == "cancel-warning" and "unknown value" in d.reason, d  # kept, and no warning left standing
    fresh = decide(one([dep(ann={"vibecode.dev/reap": value})], [pvc()]), idle(5 * H), T, POLICY)
    assert fresh.action == "keep" and "unknown value" in fresh.reason
    for ok in ("true", " TRUE "):  # spelled out: reapable, like no annotation at all
        assert decide(one([dep(ann={"vibecode.dev/reap": ok})], [pvc()]), idle(5 * H), T, POLICY).action == "warn"


def test_lifting_an_exemption_starts_a_new_warning_never_a_stop_on_the_old_one():
    """Warned, then exempted, then the exemption lifted: the old warning does not count."""
    before = {**warned(T - 2 * H)}
    ws = one([dep(ann={**before, "vibecode.dev/reap": "false"})], [pvc()])
    d = decide(ws, idle(5 * H), T - H, POLICY)
    assert d.action == "cancel-warning"  # the run that sees the exemption voids the warning
    from tasks.reaper.decide import cancel_patch

    cleared = {k: v for k, v in before.items() if k not in cancel_patch(ws)["metadata"]["annotations"]}
    lifted = one([dep(ann=cleared)], [pvc()])  # the exemption removed again
    assert decide(lifted, idle(5 * H), T, POLICY).action == "warn"  # a new warning, not a stop


def test_a_fresh_warning_claim_makes_other_runs_keep():
    from tasks.reaper.decide import CLAIM_STALE

    claim = {"vibecode.dev/idle-warning-claim": rfc3339(T - 2 * M)}
    assert decide(one([dep(ann=claim)], [pvc()]), idle(5 * H), T, POLICY).action == "keep"
    stale = {"vibecode.dev/idle-warning-claim": rfc3339(T - CLAIM_STALE)}
    assert decide(one([dep(ann=stale)], [pvc()]), idle(5 * H), T, POLICY).action == "warn"  # its run died


# -- the same on the real API server, restic and S3 ----------------------------------------------
def add_stopped(kube, ns, user, stopped_at, **pvc_ann):
    """The real chart, installed by helm and stopped by an earlier reaper run (played)."""
    from tests.fixtures.reaper import install_stopped

    install_stopped(kube, ns, user, stopped_at)
    if pvc_ann:
        kube.annotate("PersistentVolumeClaim", ns, f"ws-{user}-workspace", pvc_ann)


def real_snapshots(settings, user, tmp_path, n=2) -> list[str]:
    """``n`` real snapshots in the workspace's repository on S3, oldest first."""
    from tests.fixtures.storage import restic_for

    restic = restic_for(settings, user)
    restic.ensure_init()
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for i in range(n):
        (src / "notes.md").write_text(f"version {i}\n")
        restic.run(["backup", ".", "--host", user, "--tag", "nightly"], cwd=src)
    return [x.id for x in restic.snapshots()]


def row(report, user):
    return next(r for r in report.rows if r.username == user)


@pytest.mark.usefixtures("prefect_server", "helm_bin")
def test_dormancy_refuses_to_delete_on_an_annotation_the_repository_contradicts(
        kube, namespace, backup_settings, job_kubelet, tmp_path):
    """The annotation names a verified snapshot that the repository no longer holds: the run
    takes a new backup (real restic Job into S3) instead of deleting; the next run finds the
    new snapshot in the repository and only then releases the workspace."""
    from flows.reaper import reap_idle_workspaces
    from tasks.backup.steps import ensure_backup_secret
    from tests.fixtures.storage import restic_for

    R = datetime.now(timezone.utc).replace(microsecond=0)
    stopped = R - 31 * DAY
    ensure_backup_secret.fn()
    older, stale = real_snapshots(backup_settings, "dora", tmp_path)
    restic_for(backup_settings, "dora").forget([stale], prune=False)  # gone from the repository ...
    add_stopped(kube, namespace, "dora", stopped, **verified_at(R - DAY, stale))  # ... still named here
    (job_kubelet.claim_dir("ws-dora-workspace") / "notes.md").write_text("work in progress\n")

    plan = row(reap_idle_workspaces(dry_run=True, now=R), "dora")
    assert plan.action == "backup" and "does not hold" in plan.reason, plan

    r = row(reap_idle_workspaces(now=R), "dora")
    assert r.action == "backup" and r.outcome.startswith("backup Completed") and not r.failed, r
    assert kube.get("Deployment", namespace, "ws-dora") is not None  # nothing deleted on the stale word
    ann = kube.get("PersistentVolumeClaim", namespace, "ws-dora-workspace")["metadata"]["annotations"]
    fresh = ann["vibecode.dev/last-backup-snapshot"]
    assert fresh not in (older, stale) and fresh in {x.id for x in restic_for(backup_settings, "dora").snapshots()}

    r = row(reap_idle_workspaces(now=datetime.now(timezone.utc)), "dora")
    assert r.action == "delete" and "confirmed in the repository" in r.reason and "uninstalled" in r.outcome, r
    assert kube.get("Deployment", namespace, "ws-dora") is None
    assert {p["metadata"]["name"] for p in kube.list("PersistentVolumeClaim", namespace, "vibecode.dev/user=dora")} \
        == {"ws-dora-workspace", "ws-dora-extensions"}  # the volumes stay


def test_the_purge_of_leavers_refuses_on_an_annotation_the_repository_contradicts(
        kube, namespaces, backup_settings, tmp_path):
    from tasks.backup.steps import ensure_backup_secret
    from tasks.core.errors import BackupRequired
    from tasks.people.ledger import Ledger
    from tasks.people.record import State
    from tasks.people.steps import delete_workspace, judge_deletion
    from tests.fixtures.reaper import add_workspace
    from tests.fixtures.storage import restic_for

    ns, _ = namespaces
    left = datetime.now(timezone.utc).replace(microsecond=0) - 40 * DAY
    ledger = Ledger()
    ledger.claim("lena", "E-4711")
    ledger.update("lena", lambda r: replace(r, state=State.TERMINATED, terminated_at=left))
    add_workspace(kube, ns, "lena", replicas=0)
    ensure_backup_secret.fn()
    older, stale = real_snapshots(backup_settings, "lena", tmp_path)
    restic_for(backup_settings, "lena").forget([stale], prune=False)
    kube.annotate("PersistentVolumeClaim", ns, "ws-lena-workspace", verified_at(left + DAY, stale))
    now = datetime.now(timezone.utc)

    d = judge_deletion.fn("lena", now)
    assert d.action == "refuse" and "does not hold" in d.reason, d
    with pytest.raises(BackupRequired):
        delete_workspace.fn("lena", now)
    assert kube.get("PersistentVolumeClaim", ns, "ws-lena-workspace") is not None

    kube.annotate("PersistentVolumeClaim", ns, "ws-lena-workspace",
                  {"vibecode.dev/restoring": "ws-lena-restore-r1@2026-11-29T11:00:00Z",
                   "vibecode.dev/last-backup-snapshot": older})
    d = judge_deletion.fn("lena", now)
    assert d.action == "defer" and "restore" in d.reason, d  # held while a restore writes the volume
    kube.annotate("PersistentVolumeClaim", ns, "ws-lena-workspace", {"vibecode.dev/restoring": None})
    d = judge_deletion.fn("lena", now)
    assert d.action == "delete" and "confirmed in the repository" in d.reason, d


def test_two_runs_at_once_warn_and_stop_each_person_once(kube, namespace, smtp_inbox):
    """Both runs LIST before either writes (the schedule and a manual `vibecode reap`): one
    email, one stop; the other run's guarded writes are refused and reported as skipped."""
    from tasks.reaper.steps import apply_decisions, observe_workspaces
    from tests.fixtures.reaper import add_workspace, play_controller

    R = datetime.now(timezone.utc).replace(microsecond=0)
    add_workspace(kube, namespace, "ola")
    play_controller(kube, namespace, "ola", R - 3 * H)
    owners = {"ola": ("ola@example.com", ("users",))}

    def judged(now):
        (ws,) = [w for w in observe_workspaces.fn().workspaces if w.username == "ola"]
        return [(ws, decide(ws, Probe(True, "expired", None), now, POLICY))]

    first, second = judged(R), judged(R)
    assert first[0][1].action == second[0][1].action == "warn"
    a, b = apply_decisions.fn(first, R, owners), apply_decisions.fn(second, R, owners)
    assert len(smtp_inbox.messages) == 1 and smtp_inbox.messages[0]["To"] == "ola@example.com"
    assert a["ola"].kind == "done" and b["ola"].kind == "skipped", (a, b)
    ann = kube.get("Deployment", namespace, "ws-ola")["metadata"]["annotations"]
    assert ann["vibecode.dev/idle-warned-at"] == rfc3339(R) and "vibecode.dev/idle-warning-claim" not in ann

    later = R + 20 * M
    first, second = judged(later), judged(later)
    assert first[0][1].action == second[0][1].action == "stop"
    a, b = apply_decisions.fn(first, later, owners), apply_decisions.fn(second, later, owners)
    assert not isinstance(b["ola"], str) and b["ola"].kind == "skipped", b  # refused, and not a failure
    assert a["ola"].kind == "done", a
    dep_ = kube.get("Deployment", namespace, "ws-ola")
    assert dep_["spec"]["replicas"] == 0 and dep_["metadata"]["annotations"]["vibecode.dev/stopped-at"] == rfc3339(later)
    assert len(smtp_inbox.messages) == 1


@pytest.mark.usefixtures("prefect_server")
def test_resume_refuses_a_workspace_whose_volume_a_restore_job_is_writing(kube, namespace, monkeypatch):
    from flows.reaper import resume_workspace
    from tasks.core.errors import PermanentError
    from tasks.reaper.steps import start_workspace
    from tests.fixtures.kube import finish_job
    from tests.fixtures.reaper import add_workspace

    monkeypatch.setenv("VIBECODE_READY_TIMEOUT_SECONDS", "1")  # a wrong start must not wait long to show
    get_settings.cache_clear()
    R = datetime.now(timezone.utc)
    guard = f"ws-rita-restore-r1@{rfc3339(R - M)}"
    add_workspace(kube, namespace, "rita", replicas=0, annotations={"vibecode.dev/restoring": guard,
                                                                    "vibecode.dev/stopped-at": rfc3339(R - DAY)})
    kube.annotate("PersistentVolumeClaim", namespace, "ws-rita-workspace", {"vibecode.dev/restoring": guard})
    kube.create({"apiVersion": "batch/v1", "kind": "Job",
                 "metadata": {"name": "ws-rita-restore-r1", "namespace": namespace,
                              "labels": {**labels("rita"), "app.kubernetes.io/component": "restore"}},
                 "spec": {"template": {"spec": {"restartPolicy": "Never",
                                                "containers": [{"name": "restic", "image": "restic"}]}}}})
    with pytest.raises(PermanentError, match="being restored"):
        resume_workspace("rita")
    assert kube.get("Deployment", namespace, "ws-rita")["spec"]["replicas"] == 0

    # The guard set between the check and the scale (the restore started meanwhile): refused too.
    kube.annotate("Deployment", namespace, "ws-rita", {"vibecode.dev/restoring": None})
    with pytest.raises(PermanentError, match="being restored"):
        kube.annotate("Deployment", namespace, "ws-rita", {"vibecode.dev/restoring": guard})
        start_workspace.fn("rita")
    assert kube.get("Deployment", namespace, "ws-rita")["spec"]["replicas"] == 0

    # Once the restore Job has finished the guard has lapsed: resume clears it and starts.
    finish_job(kube, namespace, "ws-rita-restore-r1", succeeded=True)
    monkeypatch.setattr("flows.reaper.wait_available", lambda username: "played: no kubelet here")
    assert resume_workspace("rita").username == "rita"
    dep_ = kube.get("Deployment", namespace, "ws-rita")
    assert dep_["spec"]["replicas"] == 1 and "vibecode.dev/restoring" not in dep_["metadata"]["annotations"]


@pytest.mark.usefixtures("prefect_server")
def test_a_run_reports_unknown_exemption_values_and_keeps_those_workspaces(kube, namespace, monkeypatch):
    from flows.reaper import reap_idle_workspaces
    from tests.fixtures.reaper import add_workspace, play_controller

    R = datetime.now(timezone.utc).replace(microsecond=0)
    monkeypatch.setenv("VIBECODE_REAP_PROBE_URLS", json.dumps({"uma": "http://127.0.0.1:1"}))
    get_settings.cache_clear()
    add_workspace(kube, namespace, "uma", annotations={"vibecode.dev/reap": "flase", **warned(R - H)})
    play_controller(kube, namespace, "uma", R - 30 * H)
    report = reap_idle_workspaces(now=R)
    r = row(report, "uma")
    assert r.action == "cancel-warning" and "unknown value" in r.reason and not r.failed, r
    dep_ = kube.get("Deployment", namespace, "ws-uma")
    assert dep_["spec"]["replicas"] == 1 and "vibecode.dev/idle-warned-at" not in dep_["metadata"]["annotations"]
    assert report.unknown_exemptions == {"uma": "flase"}


# -- the property: no sequence of runs breaks the rules --------------------------------------------
SIM = Policy(idle_timeout=2 * H, warning_lead=15 * M, max_session=12 * H, dormancy=2 * DAY,
             volume_dormancy=4 * DAY)
# What can happen between runs, weighted by repetition so that sequences often get as far as
# warnings, stops and deletions (reaching them is checked by the statistics and the test below).
EVENTS = (["run"] * 8 + ["overlapping runs"] * 3 + ["run, exempted meanwhile", "run, guarded meanwhile",
                                                      "run, used meanwhile"]
          + ["1m", "5m", "16m", "16m", "1h", "2h", "2h", "6h", "1d", "3d", "3d"]
          + ["use", "exempt:false", "exempt:FALSE", "exempt:true", "exempt:flase", "exempt:", "exempt:-",
             "exempt:-", "guard:on", "guard:off", "guard:off", "probe:down", "probe:up", "probe:up",
             "backup:ok", "backup:ok", "backup:failed", "snapshot leaves the repository", "resume",
             "backups fail from now", "backups complete from now"])
DURATIONS = {"1m": M, "5m": 5 * M, "16m": 16 * M, "1h": H, "2h": 2 * H, "6h": 6 * H, "1d": DAY, "3d": 3 * DAY}


def play(w: World, events: list[str]) -> None:
    """Each run is the reaper's own LIST -> decide -> (repository) -> writes; the checks that
    nothing is stopped without a valid warning, warned twice, or deleted without a
    confirmed snapshot are in the world model, at the moment each write goes through."""
    backups_complete = True
    for e in events:
        what, _, arg = e.partition(":")
        if e in DURATIONS:
            w.advance(DURATIONS[e])
        elif e == "use":
            w.use()
        elif what == "exempt":
            w.set_exemption(None if arg == "-" else arg)
        elif what == "guard":
            w.guard(arg == "on")
        elif what == "probe":
            w.probe_ok = arg == "up"
        elif what == "backup":
            w.backup(arg == "ok")
        elif e == "snapshot leaves the repository":
            w.forget_annotated()
        elif e == "resume":
            w.resume()
        elif e.startswith("backups "):
            backups_complete = "complete" in e
        else:  # a run, or two that both LIST before either writes; something may happen in between
            listed = [w.list() for _ in range(2 if e == "overlapping runs" else 1)]
            if "exempted" in e:
                w.set_exemption("false")
            elif "guarded" in e:
                w.guard(True)
            elif "used" in e:
                w.use()
            for ws, probe in listed:
                if ws is not None:
                    ws, d = w.judge(ws, probe)
                    event(f"{d.action}: {w.apply(ws, d, backups_complete)}")
        if w.had_restore_volume:
            assert "ws-alice-restore-r1" in w.volumes, "a restore volume was deleted as a dormant volume"


@hsettings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Found in a full run: warned, then a run that saw the exemption lost its cancel to a Conflict
# (the exemption was written again after its LIST); the exemption lifted, the old warning stopped.
@example(events=["2h", "run", "run, exempted meanwhile", "run, exempted meanwhile", "16m", "exempt:-", "run"],
         restore_volume=False, start="running", stopped_days=0, backup="none")
@given(events=st.lists(st.sampled_from(EVENTS), max_size=80), restore_volume=st.booleans(),
       start=st.sampled_from(["running", "running", "running", "stopped", "dormant"]),
       stopped_days=st.integers(0, 6), backup=st.sampled_from(["none", "before", "after", "gone"]))
def test_no_sequence_of_runs_stops_without_a_valid_warning_or_deletes_without_a_confirmed_snapshot(
        events, restore_volume, start, stopped_days, backup):
    """Over generated sequences (clock, activity, exemptions set/lifted/garbled, the restore
    guard on and off, backups confirmed in the repository or not, overlapping runs): no
    stop without a warning at least the lead time old, sent while not exempt and after the
    last run that saw an exemption; no second email for one warning; no deletion without
    the annotated snapshot in the repository, or while the restore guard is set; no restore
    volume ever deleted."""
    play(World.new(T, SIM, restore_volume, start, stopped_days * DAY, backup), events)


def test_the_property_reaches_every_irreversible_step():
    """The property above is only worth something if its runs warn, stop and delete: one
    plain sequence through all of it, with the same world model."""
    w = World.new(T, SIM, restore_volume=True)

    def run(completes=True):
        ws, probe = w.list()
        ws, d = w.judge(ws, probe)
        w.apply(ws, d, completes)
        return d.action

    w.advance(2 * H)
    assert run() == "warn"
    w.advance(16 * M)
    assert run() == "stop"
    w.advance(3 * DAY)
    assert run() == "backup"  # no verified backup newer than the stop
    w.forget_annotated()  # ... and it left the repository again
    assert run() == "backup"
    assert run() == "delete"
    w.advance(3 * DAY)
    w.backup(True)
    assert run() == "delete-volumes"
    assert set(w.volumes) == {"ws-alice-restore-r1"} and len(w.emails) == 1


def test_the_deletion_rule_waits_for_a_restore_writing_into_the_volume():
    """Offboarding and dormancy share the rule: the restore guard on a volume defers a deletion
    (and asks for no backup of a volume being overwritten)."""
    from tasks.people.deletion import deletion_decision

    guarded = pvc(**verified_at(T - DAY), **{"vibecode.dev/restoring": "ws-alice-restore-r1@2026-11-29T11:00:00Z"})
    assert deletion_decision(T - 40 * DAY, [guarded], T, 30).action == "defer"
    word = RepositoryWord(frozenset({SNAP_A}))
    assert deletion_decision(T - 40 * DAY, [guarded], T, 30, repository=word).action == "defer"
    assert deletion_decision(T - 40 * DAY, [pvc()], T, 30).action == "refuse"  # no backup, no guard: back up
    assert deletion_decision(T - 40 * DAY, [{**guarded, "metadata": {**guarded["metadata"], "annotations": {
        "vibecode.dev/restoring": "r@2026-11-29T11:00:00Z"}}}], T, 30).action == "defer"
