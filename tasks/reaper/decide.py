"""Pure decisions for idle reaping: keep, warn, stop, or (for long-stopped workspaces) delete.

Idleness is judged the way code-server reports it: ``GET /healthz`` returns
``lastHeartbeat`` (epoch ms, 0 before the first real request). Every request but exactly
``/healthz`` beats, and any open TCP connection renews the beat every 60 s, so an open
browser tab looks active forever; the maximum session age is what stops those.

The rules, in the order they apply to a running workspace:

* exempt (``vibecode.dev/reap: "false"``), busy (a backup or restore Job runs, or the
  ``vibecode.dev/restoring`` guard is set) or a failed probe: keep. A failed probe is
  "unknown", never "idle".
* idle: last activity = the newest of lastHeartbeat, the ``vibecode.dev/last-activity``
  annotation and (for a server nobody has used yet) the time it became available. Warn
  once ``idle >= timeout - lead``; stop only when a warning by this rule is at least
  ``lead`` old, nothing happened since it, and ``idle >= timeout``. Activity after the
  warning cancels it.
* max session: a workspace available for ``max_session`` is warned the same way and
  stopped ``lead`` later even though its heartbeat keeps renewing (that is the open tab).
  An explicit ``last-activity`` annotation after the warning, or a new session (the
  Deployment became available again), cancels it.

A stopped workspace (``stopped-at`` set by us) becomes dormant after ``dormancy``: its
release is deleted only under :func:`tasks.people.deletion.deletion_decision` (a verified backup
newer than the stop), else a backup is asked for first; its volumes follow after the
longer ``volume_dormancy`` under the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Mapping

from tasks.core.names import (
    COMPONENT_LABEL,
    DORMANT_DELETED_AT,
    IDLE_WARNED_AT,
    IDLE_WARNING_RULE,
    LAST_ACTIVITY,
    REAP_EXEMPT,
    RESTORING,
    STOP_REASON,
    STOPPED_AT,
    USER_LABEL,
    VOLUME_LABEL,
)
from tasks.core.timefmt import parse_time, rfc3339
from tasks.people.deletion import deletion_decision

if TYPE_CHECKING:
    from email.message import EmailMessage

IDLE, MAX_SESSION, DORMANT = "idle", "max-session", "dormant"
# keep: nothing to write. cancel-warning: clear a stale warning. backup: dormant but no
# verified backup newer than the stop, so take one (deletion waits for a later run).
ACTIONS = ("keep", "cancel-warning", "warn", "stop", "backup", "delete", "delete-volumes")


@dataclass(frozen=True)
class Policy:
    idle_timeout: timedelta
    warning_lead: timedelta
    max_session: timedelta | None = None  # None: the rule is off
    dormancy: timedelta | None = None
    volume_dormancy: timedelta | None = None


@dataclass(frozen=True)
class Probe:
    ok: bool
    status: str = ""  # alive | expired
    last_heartbeat: datetime | None = None  # None: code-server has had no real request yet
    error: str = ""


@dataclass(frozen=True)
class Workspace:
    """What one LIST of Deployments, volumes and Jobs says about one person's workspace."""

    username: str
    replicas: int | None  # None: no Deployment (the release was uninstalled)
    annotations: Mapping[str, str] = field(default_factory=dict)
    available_since: datetime | None = None  # the Deployment's Available condition turned True
    volumes: tuple[dict, ...] = ()
    busy: str = ""  # why a backup or restore is working on it, "" when none is
    resource_version: str = ""

    @property
    def volume_annotations(self) -> Mapping[str, str]:
        for v in self.volumes:
            ann = (v.get("metadata") or {}).get("annotations") or {}
            if ann.get(STOPPED_AT):
                return ann
        return {}


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str
    rule: str = ""
    idle_seconds: float | None = None


def _ago(d: timedelta) -> str:
    s = int(max(d.total_seconds(), 0))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def decide(ws: Workspace, probe: Probe | None, now: datetime, policy: Policy) -> Decision:
    """keep / cancel-warning / warn / stop / backup / delete / delete-volumes, with the reason."""
    ann = ws.annotations
    if ann.get(REAP_EXEMPT, "").strip().lower() == "false":
        return Decision("keep", f"exempt ({REAP_EXEMPT}: \"false\")")
    if ws.busy:
        return Decision("keep", f"{ws.busy}: never stopped or deleted meanwhile")
    if ws.replicas is None:
        return _dormant_volumes(ws, now, policy)
    if ws.replicas == 0:
        return _stopped(ws, now, policy)
    if probe is None or not probe.ok:
        return Decision("keep", f"probe failed ({probe.error if probe else 'not probed'}): state unknown")

    heartbeat = probe.last_heartbeat
    marked = parse_time(ann.get(LAST_ACTIVITY))
    candidates = [t for t in (heartbeat, marked) if t is not None]
    if heartbeat is None and ws.available_since is not None:
        candidates.append(ws.available_since)  # up, but nobody has opened it since
    if not candidates:
        return Decision("keep", "no heartbeat yet and no start time known: cannot tell how long it is idle")
    last = min(max(candidates), now)  # a clock ahead of ours means "active now"
    idle = now - last
    warned_at = parse_time(ann.get(IDLE_WARNED_AT))
    rule = ann.get(IDLE_WARNING_RULE, IDLE) if warned_at else ""
    lead, timeout = policy.warning_lead, policy.idle_timeout
    idle_s = idle.total_seconds()

    # A standing warning: does it still hold, and is it old enough to act on?
    if warned_at is not None:
        if rule == MAX_SESSION:
            restarted = ws.available_since is not None and ws.available_since > warned_at
            if restarted or (marked is not None and marked > warned_at):
                return Decision("cancel-warning", "new session or activity after the session-age warning",
                                MAX_SESSION, idle_s)
        elif last > warned_at:
            return Decision("cancel-warning", f"activity {_ago(now - last)} ago, after the warning", IDLE, idle_s)
        if now - warned_at >= lead:
            since = ws.available_since
            if rule == MAX_SESSION and since is not None and _session_over(ws, now, policy):
                return Decision("stop", f"running {_ago(now - since)}, past the maximum session "
                                        f"age; warned {_ago(now - warned_at)} ago", MAX_SESSION, idle_s)
            if idle >= timeout and last <= warned_at:
                return Decision("stop", f"idle {_ago(idle)}; warned {_ago(now - warned_at)} ago", IDLE, idle_s)
        return Decision("keep", f"warned {_ago(now - warned_at)} ago ({rule}); stops {lead} after the warning "
                                f"if still {'running' if rule == MAX_SESSION else 'idle'}", rule, idle_s)

    if idle >= timeout - lead:
        return Decision("warn", f"idle {_ago(idle)}; stops at {_ago(timeout)} idle, after the warning", IDLE, idle_s)
    if policy.max_session is not None and ws.available_since is not None \
            and now - ws.available_since >= policy.max_session - lead:
        return Decision("warn", f"running {_ago(now - ws.available_since)}; the maximum session is "
                                f"{_ago(policy.max_session)}", MAX_SESSION, idle_s)
    return Decision("keep", f"active {_ago(idle)} ago", "", idle_s)


def _session_over(ws: Workspace, now: datetime, policy: Policy) -> bool:
    return (policy.max_session is not None and ws.available_since is not None
            and now - ws.available_since >= policy.max_session)


def _stopped(ws: Workspace, now: datetime, policy: Policy) -> Decision:
    stopped_at = parse_time(ws.annotations.get(STOPPED_AT))
    if stopped_at is None:
        return Decision("keep", "scaled to zero, but not by the reaper: left alone")
    if policy.dormancy is None:
        return Decision("keep", f"stopped {_ago(now - stopped_at)} ago; dormancy is off")
    return _dormancy(ws, stopped_at, now, policy.dormancy, "delete", "release")


def _dormant_volumes(ws: Workspace, now: datetime, policy: Policy) -> Decision:
    stopped_at = parse_time(ws.volume_annotations.get(STOPPED_AT))
    if stopped_at is None or not ws.volume_annotations.get(DORMANT_DELETED_AT):
        return Decision("keep", "no Deployment and not made dormant by the reaper: left alone")
    if policy.volume_dormancy is None:
        return Decision("keep", "release deleted while dormant; volume deletion is off")
    return _dormancy(ws, stopped_at, now, policy.volume_dormancy, "delete-volumes", "volumes")


def _dormancy(ws: Workspace, stopped_at: datetime, now: datetime, period: timedelta, action: str,
              what: str) -> Decision:
    """The one rule that also decides offboarding deletions: a verified backup taken after the
    stop, and the period over. No backup yet means: take one now, delete on a later run."""
    if not any(((v.get("metadata") or {}).get("labels") or {}).get(VOLUME_LABEL) == "workspace"
               for v in ws.volumes):
        return Decision("keep", "dormant, but no workspace volume was found to prove a backup of", DORMANT)
    if now - stopped_at < period:
        return Decision("keep", f"stopped {_ago(now - stopped_at)} ago; its {what} go after {period.days} days")
    verdict = deletion_decision(stopped_at, list(ws.volumes), now, period.days, event="the stop",
                                period="dormancy")
    if verdict.action == "delete":
        return Decision(action, f"stopped {_ago(now - stopped_at)} ago; {verdict.reason}", DORMANT)
    if verdict.action == "refuse":
        return Decision("backup", f"dormant, but {verdict.reason}: backing up first", DORMANT)
    return Decision("keep", verdict.reason, DORMANT)


# -- what a decision writes (pure; the flow sends it) ------------------------------------------
def stop_patch(ws: Workspace, d: Decision, now: datetime) -> dict:
    """Scale to zero and mark, in one write guarded by the resourceVersion we judged: if the
    Deployment changed since the LIST (a resume, the restore guard), the API server refuses."""
    meta: dict = {"annotations": {STOPPED_AT: rfc3339(now), STOP_REASON: f"{d.rule}: {d.reason}"[:250],
                                  IDLE_WARNED_AT: None, IDLE_WARNING_RULE: None}}
    if ws.resource_version:
        meta["resourceVersion"] = ws.resource_version
    return {"metadata": meta, "spec": {"replicas": 0}}


def warn_annotations(d: Decision, now: datetime) -> dict[str, str | None]:
    return {IDLE_WARNED_AT: rfc3339(now), IDLE_WARNING_RULE: d.rule}


CLEAR_WARNING: dict[str, str | None] = {IDLE_WARNED_AT: None, IDLE_WARNING_RULE: None}


def resume_annotations(now: datetime) -> dict[str, str | None]:
    """Resuming is activity: the fresh code-server has no heartbeat until it is opened."""
    return {STOPPED_AT: None, STOP_REASON: None, IDLE_WARNED_AT: None, IDLE_WARNING_RULE: None,
            LAST_ACTIVITY: rfc3339(now)}


# -- building the picture from one LIST each -----------------------------------------------------
def available_since(deployment: dict) -> datetime | None:
    for cond in (deployment.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Available" and cond.get("status") == "True":
            return parse_time(cond.get("lastTransitionTime"))
    return None


def job_running(job: dict) -> bool:
    status = job.get("status") or {}
    done = any(c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
               for c in status.get("conditions") or [])
    return not done


def _user(obj: dict) -> str:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(USER_LABEL, "")


def workspaces_from(deployments: list[dict], volumes: list[dict], jobs: list[dict]) -> list[Workspace]:
    """One Workspace per user that has a Deployment or a volume, sorted by username."""
    by_user_vols: dict[str, list[dict]] = {}
    for v in volumes:
        by_user_vols.setdefault(_user(v), []).append(v)
    busy: dict[str, str] = {}
    for j in jobs:
        if job_running(j):
            component = ((j.get("metadata") or {}).get("labels") or {}).get(COMPONENT_LABEL, "job")
            busy[_user(j)] = f"a {component} Job is running"
    out: dict[str, Workspace] = {}
    for d in deployments:
        user, meta = _user(d), d.get("metadata") or {}
        if not user:
            continue
        ann = meta.get("annotations") or {}
        reason = busy.get(user) or (f"{RESTORING} is set" if ann.get(RESTORING) else "")
        out[user] = Workspace(user, int((d.get("spec") or {}).get("replicas", 1) or 0), ann, available_since(d),
                              tuple(by_user_vols.get(user, ())), reason, meta.get("resourceVersion", ""))
    for user, vols in by_user_vols.items():
        if user and user not in out:
            out[user] = Workspace(user, None, {}, None, tuple(vols), busy.get(user, ""))
    return [out[u] for u in sorted(out)]


# -- policy ---------------------------------------------------------------------------------------
def policy_for(settings, groups: tuple[str, ...] | None) -> Policy:
    """The owner's policy: defaults, overridden by their groups' (the most lenient value of each
    when they are in several); ``groups=None`` (owner unknown) takes the most lenient of all."""
    v = settings.reaper.values_for(groups)
    return Policy(idle_timeout=timedelta(seconds=v["idle_timeout_seconds"]),
                  warning_lead=timedelta(seconds=v["warning_lead_seconds"]),
                  max_session=timedelta(seconds=v["max_session_seconds"]) if v["max_session_seconds"] else None,
                  dormancy=timedelta(days=v["dormancy_days"]) if v["dormancy_days"] else None,
                  volume_dormancy=timedelta(days=v["volume_dormancy_days"]) if v["volume_dormancy_days"] else None)


# -- where to probe --------------------------------------------------------------------------------


def probe_url(settings, username: str) -> str:
    base = settings.reaper.probe_urls.get(username) or settings.reaper.probe_url
    base = base.format(username=username, service=f"ws-{username}", namespace=settings.namespace)
    return base.rstrip("/") + "/healthz"


def parse_healthz(status_code: int, body: bytes) -> Probe:
    """code-server's answer; anything unexpected is a failed probe (unknown, never idle)."""
    import json

    if status_code != 200:
        return Probe(False, error=f"HTTP {status_code}")
    try:
        doc = json.loads(body)
        beat = doc["lastHeartbeat"]
        status = doc["status"]
    except (ValueError, KeyError, TypeError):
        return Probe(False, error="not a code-server /healthz answer")
    if not isinstance(beat, (int, float)) or isinstance(beat, bool) or beat < 0 or status not in ("alive", "expired"):
        return Probe(False, error="not a code-server /healthz answer")
    when = datetime.fromtimestamp(beat / 1000, timezone.utc) if beat else None
    return Probe(True, status, when)


def warning_message(*, to_email: str, username: str, decision: Decision, stop_at: datetime, sender: str,
                    domain: str) -> "EmailMessage":
    """The one warning email before a stop (pure). The Message-ID is fixed per user and stop
    time, so a relay that de-duplicates drops a resend."""
    from email.message import EmailMessage
    from email.utils import formatdate

    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to_email
    msg["Subject"] = f"[VibeCode] your workspace will be stopped at {stop_at:%H:%M} UTC"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<reap-{username}-{stop_at:%Y%m%d%H%M}@{domain}>"
    if decision.rule == MAX_SESSION:
        why = (f"it has been running for a long time ({decision.reason}). An open browser tab keeps a "
               f"workspace alive, so long sessions are stopped to free the node's memory.")
        keep = "Save your work before then; the workspace is stopped even if a tab is still open."
    else:
        why = f"nobody has used it for a while ({decision.reason})."
        keep = "To keep it running, just use it: open https://" + f"{username}.{domain} before then."
    msg.set_content(
        f"Hello {username},\n\n"
        f"your VibeCode workspace will be stopped at {stop_at:%Y-%m-%d %H:%M} UTC because {why}\n\n"
        f"{keep}\n\n"
        f"Stopping keeps every file: your volumes stay, and the platform team can start it again "
        f"(`vibecode resume {username}`).\n\n"
        f"-- The VibeCode platform team\n")
    return msg
