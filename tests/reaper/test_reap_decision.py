"""The reaper's decision, pure: table-driven cases and hypothesis properties."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tasks.backup.status import RepositoryWord
from tasks.core.settings import Settings, check_probe_base
from tasks.people.deletion import deletion_decision
from tasks.reaper.decide import (
    Policy,
    Probe,
    Workspace,
    busy_jobs,
    decide,
    parse_healthz,
    policy_for,
    probe_url,
    rfc3339,
    stop_patch,
    workspaces_from,
)

T = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
H, M = timedelta(hours=1), timedelta(minutes=1)
POLICY = Policy(idle_timeout=2 * H, warning_lead=15 * M, max_session=12 * H, dormancy=timedelta(days=30),
                volume_dormancy=timedelta(days=90))


def vol(name="ws-alice-workspace", kind="workspace", **ann):
    return {"metadata": {"name": name, "labels": {"vibecode.dev/volume": kind, "vibecode.dev/user": "alice"},
                         "annotations": ann}}


def backed_up(at: datetime, **over):
    ann = {"vibecode.dev/last-backup-time": rfc3339(at), "vibecode.dev/last-backup-outcome": "Completed",
           "vibecode.dev/last-backup-verified": "true", "vibecode.dev/last-backup-snapshot": "abc123"}
    return vol(**{**ann, **over})


def beat(ago: timedelta | None) -> Probe:
    return Probe(True, "alive" if ago is not None and ago < M else "expired", None if ago is None else T - ago)


def warned(at: datetime, rule="idle") -> dict:
    return {"vibecode.dev/idle-warned-at": rfc3339(at), "vibecode.dev/idle-warning": rule}


IN_REPO = RepositoryWord(frozenset({"abc123"}))  # what the repository holds: the annotated snapshot


def W(replicas=1, up=T - 20 * H, ann=None, volumes=None, busy=""):
    return Workspace("alice", replicas, ann or {}, up, tuple(volumes if volumes is not None else [vol()]), busy, "7")


CASES = [
    # (name, workspace, probe, expected action, words in the reason)
    ("used recently", W(up=T - 3 * H), beat(10 * M), "keep", "active"),
    ("idle, not yet near the timeout", W(up=T - 3 * H), beat(H), "keep", "active"),
    ("idle past timeout minus lead: warn", W(up=T - 3 * H), beat(2 * H - 15 * M), "warn", "idle"),
    ("never used since start, long ago: warn", W(up=T - 3 * H), beat(None), "warn", "idle"),
    ("never used, just started", W(up=T - 5 * M), beat(None), "keep", "active"),
    ("never used, start unknown", W(up=None), beat(None), "keep", "cannot tell"),
    ("warned 15 min ago, still idle: stop", W(ann=warned(T - 15 * M)), beat(3 * H), "stop", "warned"),
    ("warned 14 min ago: not yet", W(ann=warned(T - 14 * M)), beat(3 * H), "keep", "warned"),
    ("activity after the warning cancels", W(ann=warned(T - 20 * M)), beat(5 * M), "cancel-warning", "after"),
    ("annotation activity after the warning cancels",
     W(ann={**warned(T - 20 * M), "vibecode.dev/last-activity": rfc3339(T - 2 * M)}), beat(3 * H),
     "cancel-warning", "after"),
    ("failed probe is kept, even when warned", W(ann=warned(T - H)), Probe(False, error="timeout"), "keep",
     "unknown"),
    ("not probed is kept", W(), None, "keep", "unknown"),
    ("exempt: the standing warning is cleared", W(ann={"vibecode.dev/reap": "false", **warned(T - H)}), beat(5 * H),
     "cancel-warning", "exempt"),
    ("backup running", W(busy="a backup Job is running", ann=warned(T - H)), beat(5 * H), "keep", "backup"),
    ("open tab: running 12h - lead: warn (max session)", W(up=T - 12 * H + 15 * M), beat(timedelta(seconds=30)),
     "warn", "maximum session"),
    ("open tab, warned by max session 15m ago: stop", W(ann=warned(T - 15 * M, "max-session")),
     beat(timedelta(seconds=20)), "stop", "maximum session"),
    ("open tab, warned by max session 10m ago: keep", W(ann=warned(T - 10 * M, "max-session")),
     beat(timedelta(seconds=20)), "keep", "warned"),
    ("max-session warning, then a restart: cancelled", W(up=T - 5 * M, ann=warned(T - 30 * M, "max-session")),
     beat(timedelta(seconds=20)), "cancel-warning", "new session"),
    ("stopped by someone else", W(replicas=0), None, "keep", "not by the reaper"),
    ("stopped 10 days ago", W(replicas=0, ann={"vibecode.dev/stopped-at": rfc3339(T - timedelta(days=10))}),
     None, "keep", "after 30 days"),
    ("dormant, no backup: back up first",
     W(replicas=0, ann={"vibecode.dev/stopped-at": rfc3339(T - timedelta(days=31))}), None, "backup",
     "no verified backup"),
    ("dormant, backup from before the stop: back up first",
     W(replicas=0, ann={"vibecode.dev/stopped-at": rfc3339(T - timedelta(days=31))},
       volumes=[backed_up(T - timedelta(days=32))]), None, "backup", "no verified backup"),
    ("dormant, verified backup after the stop, confirmed in the repository: delete",
     replace(W(replicas=0, ann={"vibecode.dev/stopped-at": rfc3339(T - timedelta(days=31))},
               volumes=[backed_up(T - timedelta(days=20)), vol("ws-alice-extensions", "extensions")]),
             repository=IN_REPO), None, "delete", "verified backup"),
    ("dormant, unverified backup after the stop: back up",
     W(replicas=0, ann={"vibecode.dev/stopped-at": rfc3339(T - timedelta(days=31))},
       volumes=[backed_up(T - timedelta(days=20), **{"vibecode.dev/last-backup-verified": "false"})]), None,
     "backup", "no verified backup"),
    ("dormant, no volume at all: keep",
     W(replicas=0, ann={"vibecode.dev/stopped-at": rfc3339(T - timedelta(days=31))}, volumes=[]), None, "keep",
     "no workspace volume"),
    ("release gone, volumes 91 days, confirmed in the repository: delete volumes",
     replace(W(replicas=None, up=None, volumes=[backed_up(T - timedelta(days=80), **{
         "vibecode.dev/stopped-at": rfc3339(T - timedelta(days=91)),
         "vibecode.dev/dormant-deleted-at": rfc3339(T - timedelta(days=60))})]), repository=IN_REPO), None,
     "delete-volumes", "verified backup"),
    ("release gone, volumes 60 days: keep",
     W(replicas=None, up=None, volumes=[backed_up(T - timedelta(days=50), **{
         "vibecode.dev/stopped-at": rfc3339(T - timedelta(days=60)),
         "vibecode.dev/dormant-deleted-at": rfc3339(T - timedelta(days=30))})]), None, "keep", "after 90 days"),
    ("volumes of someone else's workspace (offboarding): left alone",
     W(replicas=None, up=None, volumes=[vol()]), None, "keep", "left alone"),
]


@pytest.mark.parametrize("name,workspace,probe,action,words", CASES, ids=[c[0] for c in CASES])
def test_decision_table(name, workspace, probe, action, words):
    d = decide(workspace, probe, T, POLICY)
    assert d.action == action, d
    assert words in d.reason, d


def test_dormancy_off_and_stop_patch_is_guarded():
    off = Policy(2 * H, 15 * M)
    assert decide(W(replicas=0, ann={"vibecode.dev/stopped-at": rfc3339(T - timedelta(days=400))}), None, T,
                  off).action == "keep"
    d = decide(W(ann=warned(T - H)), beat(3 * H), T, POLICY)
    patch = stop_patch(W(ann=warned(T - H)), d, T)
    assert patch["spec"] == {"replicas": 0} and patch["metadata"]["resourceVersion"] == "7"
    assert patch["metadata"]["annotations"]["vibecode.dev/stopped-at"] == rfc3339(T)
    assert patch["metadata"]["annotations"]["vibecode.dev/stop-reason"].startswith("idle: ")


# -- properties --------------------------------------------------------------------------------
durations = st.integers(min_value=0, max_value=40 * 24 * 3600).map(lambda s: timedelta(seconds=s))
maybe = lambda s: st.none() | s
policies = st.builds(
    lambda idle, lead_frac, maxs, dorm: Policy(timedelta(seconds=idle), timedelta(seconds=int(idle * lead_frac)),
                                               None if maxs is None else timedelta(seconds=maxs),
                                               None if dorm is None else timedelta(days=dorm),
                                               None if dorm is None else timedelta(days=dorm * 2)),
    st.integers(60, 48 * 3600), st.floats(0, 0.99), maybe(st.integers(60, 48 * 3600)), maybe(st.integers(1, 60)))
probes = st.one_of(
    st.builds(lambda e: Probe(False, error=e), st.sampled_from(["timeout", "HTTP 502", "refused"])),
    st.builds(lambda ago, status: Probe(True, status, None if ago is None else T - ago),
              maybe(durations), st.sampled_from(["alive", "expired"])))


@st.composite
def workspaces(draw):
    ann = {}
    if draw(st.booleans()):
        ann["vibecode.dev/idle-warned-at"] = rfc3339(T - draw(durations))
        ann["vibecode.dev/idle-warning"] = draw(st.sampled_from(["idle", "max-session"]))
    if draw(st.booleans()):
        ann["vibecode.dev/last-activity"] = rfc3339(T - draw(durations))
    if draw(st.booleans()):
        ann["vibecode.dev/stopped-at"] = rfc3339(T - draw(durations))
    if draw(st.integers(0, 9)) == 0:
        ann["vibecode.dev/reap"] = "false"
    vols = []
    if draw(st.booleans()):
        vann = {}
        if draw(st.booleans()):
            vann = backed_up(T - draw(durations), **{"vibecode.dev/last-backup-verified": draw(
                st.sampled_from(["true", "false"]))})["metadata"]["annotations"]
        if draw(st.booleans()):
            vann = {**vann, "vibecode.dev/stopped-at": rfc3339(T - draw(durations)),
                    "vibecode.dev/dormant-deleted-at": rfc3339(T - draw(durations))}
        vols.append(vol(**vann))
    up = draw(maybe(durations))
    return Workspace("alice", draw(st.sampled_from([None, 0, 1])), ann, None if up is None else T - up,
                     tuple(vols), draw(st.sampled_from(["", "", "", "a backup Job is running"])), "7")


def _activity(w: Workspace, p: Probe) -> list[datetime]:
    from tasks.reaper.decide import parse_time

    return [t for t in (p.last_heartbeat, parse_time(w.annotations.get("vibecode.dev/last-activity"))) if t]


@hsettings(max_examples=600, deadline=None)
@given(workspaces(), probes, policies)
def test_never_stop_without_an_old_enough_warning_and_no_activity_since(w, p, policy):
    d = decide(w, p, T, policy)
    assert d.action in ("keep", "cancel-warning", "warn", "stop", "backup", "delete", "delete-volumes", "confirm")
    if d.action != "stop":
        return
    from tasks.reaper.decide import parse_time

    warned_at = parse_time(w.annotations.get("vibecode.dev/idle-warned-at"))
    assert warned_at is not None and T - warned_at >= policy.warning_lead
    assert p.ok and w.replicas and not w.busy and w.annotations.get("vibecode.dev/reap") != "false"
    rule = w.annotations.get("vibecode.dev/idle-warning")
    marked = parse_time(w.annotations.get("vibecode.dev/last-activity"))
    if d.rule == "idle":
        assert all(t <= warned_at for t in _activity(w, p))
    else:  # an open tab renews the heartbeat; only an explicit mark or a new session counts
        assert rule == "max-session" and (marked is None or marked <= warned_at)
        assert w.available_since <= warned_at and T - w.available_since >= policy.max_session


@hsettings(max_examples=600, deadline=None)
@given(workspaces(), probes, policies)
def test_a_failed_probe_never_stops_or_warns(w, p, policy):
    if not p.ok:
        assert decide(w, p, T, policy).action not in ("stop", "warn")
    assert decide(w, None, T, policy).action not in ("stop", "warn")


@hsettings(max_examples=600, deadline=None)
@given(workspaces(), probes, policies)
def test_never_delete_without_a_verified_backup_newer_than_the_stop(w, p, policy):
    from tasks.backup.status import has_verified_backup
    from tasks.reaper.decide import parse_time

    d = decide(w, p, T, policy)
    if d.action not in ("delete", "delete-volumes"):
        return
    stopped = parse_time((w.annotations if d.action == "delete" else w.volume_annotations).get(
        "vibecode.dev/stopped-at"))
    assert stopped is not None and not w.busy
    workspace_vols = [v for v in w.volumes if v["metadata"]["labels"]["vibecode.dev/volume"] == "workspace"]
    assert workspace_vols
    for v in workspace_vols:
        assert has_verified_backup(v, T, max_age=T - stopped.replace(microsecond=0))


@hsettings(max_examples=500, deadline=None)
@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9000, 1, 1), timezones=st.just(timezone.utc)),
       durations, st.integers(0, 90))
def test_the_rule_is_shared_and_never_deletes_without_a_newer_verified_backup(since, backup_after, days):
    now = since + timedelta(days=days) + backup_after
    older = [backed_up(since - timedelta(seconds=1))]
    assert deletion_decision(since, older, now, days).action == "refuse"
    assert deletion_decision(since, older, now, days, event="the stop", period="dormancy").action == "refuse"


# -- policy and probe URL -----------------------------------------------------------------------
def test_group_policy_overrides_and_most_lenient_wins():
    s = Settings(reap_group_policies={"research": {"idle_timeout_seconds": 8 * 3600, "max_session_seconds": 0},
                                      "ops": {"idle_timeout_seconds": 4 * 3600, "dormancy_days": 0}})
    assert policy_for(s, ()).idle_timeout == 2 * H
    assert policy_for(s, ("research",)).idle_timeout == 8 * H and policy_for(s, ("research",)).max_session is None
    both = policy_for(s, ("ops", "research"))
    assert both.idle_timeout == 8 * H and both.max_session is None and both.dormancy is None
    unknown = policy_for(s, None)  # owner directory unreadable: the gentlest of everything
    assert unknown.idle_timeout == 8 * H and unknown.dormancy is None


@pytest.mark.parametrize("env,field", [
    ({"reap_warning_lead_seconds": 7200}, "warning_lead_seconds"),
    ({"reap_group_policies": {"g": {"idle_timeout_seconds": 600}}}, "reaper.group_policies.g.warning_lead_seconds"),
    ({"reap_volume_dormancy_days": 10}, "volume_dormancy_days"),
    ({"reap_probe_url": "http://x/{user}"}, "reaper.probe_url"),
    ({"reap_probe_url": "http://{service}/?x=1"}, "reaper.probe_url"),
    ({"reap_probe_urls": {"alice": "ftp://h"}}, "reaper.probe_urls.alice"),
    ({"reap_group_policies": {"g": {"idle_timeout": 600}}}, "idle_timeout"),
])
def test_bad_reaper_settings_name_the_field(env, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        Settings(**env)


def test_probe_url_and_healthz_parsing():
    s = Settings(namespace="ws", reap_probe_urls={"bob": "http://127.0.0.1:9999/"})
    assert probe_url(s, "alice") == "http://ws-alice.ws.svc.cluster.local:80/healthz"
    assert probe_url(s, "bob") == "http://127.0.0.1:9999/healthz"
    assert check_probe_base("https://{username}.example.test", "f")
    assert parse_healthz(200, b'{"status":"expired","lastHeartbeat":0}') == Probe(True, "expired", None)
    p = parse_healthz(200, b'{"status":"alive","lastHeartbeat":1764417600000}')
    assert p.ok and p.last_heartbeat == datetime(2025, 11, 29, 12, 0, tzinfo=timezone.utc)
    for code, body in ((502, b""), (200, b"<html>"), (200, b'{"status":"alive"}'),
                       (200, b'{"status":"alive","lastHeartbeat":true}'), (200, b'{"status":"x","lastHeartbeat":1}')):
        assert not parse_healthz(code, body).ok


def test_one_list_each_builds_the_picture():
    dep = {"metadata": {"name": "ws-alice", "resourceVersion": "9", "labels": {"vibecode.dev/user": "alice"},
                        "annotations": {"vibecode.dev/restoring": "run-1"}},
           "spec": {"replicas": 1},
           "status": {"conditions": [{"type": "Available", "status": "True",
                                      "lastTransitionTime": rfc3339(T - H)}]}}
    dep_b = {"metadata": {"name": "ws-bob", "resourceVersion": "3", "labels": {"vibecode.dev/user": "bob"}},
             "spec": {"replicas": 0}}
    job = {"metadata": {"labels": {"vibecode.dev/user": "bob", "app.kubernetes.io/component": "backup"}},
           "status": {"active": 1}}
    done = {"metadata": {"labels": {"vibecode.dev/user": "carol", "app.kubernetes.io/component": "backup"}},
            "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    carol = {**vol(), "metadata": {**vol()["metadata"], "labels": {"vibecode.dev/volume": "workspace",
                                                                   "vibecode.dev/user": "carol"}}}
    a, b, c = workspaces_from([dep, dep_b], [vol(), carol], [job, done])
    assert (a.username, a.replicas, a.available_since, a.resource_version) == ("alice", 1, T - H, "9")
    assert "restoring" in a.busy and len(a.volumes) == 1
    assert b.busy == "a backup Job is running" and b.replicas == 0
    assert c.username == "carol" and c.replicas is None and c.busy == ""
    # the step passes the busy map it chose the probes by: the same picture
    assert workspaces_from([dep, dep_b], [vol(), carol], [job, done],
                           busy=busy_jobs([job, done])) == [a, b, c]
