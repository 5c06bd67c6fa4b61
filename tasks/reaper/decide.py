"""Pure decisions for idle reaping: keep, warn, stop, or (for long-stopped workspaces) delete.

Idleness is judged the way code-server reports it: ``GET /healthz`` returns
``lastHeartbeat`` (epoch ms, 0 before the first real request). Every request but exactly
``/healthz`` beats, and any open TCP connection renews the beat every 60 s, so an open
browser tab looks active forever; the maximum session age is what stops those.

The rules, in the order they apply to a running workspace:

* exempt (``vibecode.dev/reap: "false"``) or an exemption value we do not recognise: keep
  (an unknown value fails safe, and the run reports it). A warning standing on an exempt
  workspace is cleared: it was about a workspace that may no longer be stopped, so lifting
  the exemption starts a new warning, never a stop on one sent before the exemption.
* busy (a backup or restore Job runs, or the ``vibecode.dev/restoring`` guard is set on
  the Deployment or any of its volumes) or a failed probe: keep. A failed probe is
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

A warning is sent at most once, however many runs overlap (the schedule and a manual
``vibecode reap``): a run first *claims* it (``vibecode.dev/idle-warning-claim``, written
with the resourceVersion it judged, so only one of two runs that listed the same state
can), then emails, then records ``idle-warned-at``. A fresh claim makes every other run
keep; a claim left by a run that died lapses after :data:`CLAIM_STALE`. A stop needs the
recorded warning, so nobody is stopped on a warning whose email was never sent.

A stopped workspace (``stopped-at`` set by us) becomes dormant after ``dormancy``: its
release is deleted only under :func:`tasks.people.deletion.deletion_decision` (a verified
backup newer than the stop, confirmed in the restic repository itself), else a backup is
asked for first; its volumes follow after the longer ``volume_dormancy`` under the same
rule. Restore volumes (``vibecode.dev/volume: restore``) are never part of that: an
operator made them and an operator deletes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import TYPE_CHECKING, Iterable, Literal, Mapping

from tasks.backup.status import RepositoryWord
from tasks.core.names import (
    COMPONENT_LABEL,
    DORMANT_DELETED_AT,
    IDLE_WARNED_AT,
    IDLE_WARNING_CLAIM,
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
CLAIM_STALE = timedelta(minutes=10)  # a warning claim this old was left by a run that died before recording


class Action(StrEnum):
    """What one run does to one workspace."""

    KEEP = "keep"  # nothing to write
    CANCEL_WARNING = "cancel-warning"  # clear a stale warning (activity since, or exempt)
    WARN = "warn"
    STOP = "stop"
    BACKUP = "backup"  # dormant, but no verified backup newer than the stop: take one, delete on a later run
    CONFIRM = "confirm"  # a deletion is due: ask the repository, then judge again (never written)
    DELETE = "delete"  # uninstall the release, keep the volumes
    DELETE_VOLUMES = "delete-volumes"


ACTIONS = tuple(a.value for a in Action)
Exemption = Literal["none", "exempt", "unknown"]


def exemption(annotations: Mapping[str, str]) -> tuple[Exemption, str]:
    """The ``vibecode.dev/reap`` annotation: absent or ``"true"`` is reapable, ``"false"``
    exempt, anything else unknown (kept, fail safe). Returns the raw value for reports."""
    if REAP_EXEMPT not in annotations:
        return "none", ""
    raw = annotations[REAP_EXEMPT]
    value = str(raw).strip().lower()
    if value == "true":
        return "none", raw
    if value == "false":
        return "exempt", raw
    return "unknown", raw


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
    """What one LIST of Deployments, volumes and Jobs says about one person's workspace,
    and (once a deletion is due) what its restic repository says."""

    username: str
    replicas: int | None  # None: no Deployment (the release was uninstalled)
    annotations: Mapping[str, str] = field(default_factory=dict)
    available_since: datetime | None = None  # the Deployment's Available condition turned True
    volumes: tuple[dict, ...] = ()  # workspace and extensions volumes; never restore volumes
    busy: str = ""  # why a backup or restore is working on it, "" when none is
    resource_version: str = ""
    repository: RepositoryWord | None = None  # None: the repository has not been asked

    @property
    def volume_annotations(self) -> Mapping[str, str]:
        for v in self.volumes:
            ann = (v.get("metadata") or {}).get("annotations") or {}
            if ann.get(STOPPED_AT):
                return ann
        return {}


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    rule: str = ""
    idle_seconds: float | None = None


def _ago(d: timedelta) -> str:
    s = int(max(d.total_seconds(), 0))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _exempt(ws: Workspace, kind: Exemption, raw: str) -> Decision:
    why = (f"exempt ({REAP_EXEMPT}: {raw!r})" if kind == "exempt" else
           f"unknown value {raw!r} of {REAP_EXEMPT}: kept (fail safe); \"false\" exempts, removing it ends the "
           f"exemption")
    if ws.annotations.get(IDLE_WARNED_AT) or ws.annotations.get(IDLE_WARNING_CLAIM):
        return Decision(Action.CANCEL_WARNING, f"{why}; the standing warning is void, a new one is sent if the "
                                               f"exemption ends")
    return Decision(Action.KEEP, why)


def decide(ws: Workspace, probe: Probe | None, now: datetime, policy: Policy) -> Decision:
    """keep / cancel-warning / warn / stop / backup / confirm / delete / delete-volumes, with the reason."""
    ann = ws.annotations
    kind, raw = exemption(ann)
    if kind != "none":
        return _exempt(ws, kind, raw)
    if ws.busy:
        return Decision(Action.KEEP, f"{ws.busy}: never stopped or deleted meanwhile")
    if ws.replicas is None:
        return _dormant_volumes(ws, now, policy)
    if ws.replicas == 0:
        return _stopped(ws, now, policy)
    if probe is None or not probe.ok:
        return Decision(Action.KEEP, f"probe failed ({probe.error if probe else 'not probed'}): state unknown")

    heartbeat = probe.last_heartbeat
    marked = parse_time(ann.get(LAST_ACTIVITY))
    candidates = [t for t in (heartbeat, marked) if t is not None]
    if heartbeat is None and ws.available_since is not None:
        candidates.append(ws.available_since)  # up, but nobody has opened it since
    if not candidates:
        return Decision(Action.KEEP, "no heartbeat yet and no start time known: cannot tell how long it is idle")
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
                return Decision(Action.CANCEL_WARNING, "new session or activity after the session-age warning",
                                MAX_SESSION, idle_s)
        elif last > warned_at:
            return Decision(Action.CANCEL_WARNING, f"activity {_ago(now - last)} ago, after the warning", IDLE,
                            idle_s)
        if now - warned_at >= lead:
            since = ws.available_since
            if rule == MAX_SESSION and since is not None and _session_over(ws, now, policy):
                return Decision(Action.STOP, f"running {_ago(now - since)}, past the maximum session age; "
                                             f"warned {_ago(now - warned_at)} ago", MAX_SESSION, idle_s)
            if idle >= timeout and last <= warned_at:
                return Decision(Action.STOP, f"idle {_ago(idle)}; warned {_ago(now - warned_at)} ago", IDLE, idle_s)
        return Decision(Action.KEEP, f"warned {_ago(now - warned_at)} ago ({rule}); stops {lead} after the warning "
                                     f"if still {'running' if rule == MAX_SESSION else 'idle'}", rule, idle_s)

    claimed = parse_time(ann.get(IDLE_WARNING_CLAIM))
    if claimed is not None and now - claimed < CLAIM_STALE:
        return Decision(Action.KEEP, f"another run claimed the warning {_ago(now - claimed)} ago and is sending it",
                        "", idle_s)
    if idle >= timeout - lead:
        return Decision(Action.WARN, f"idle {_ago(idle)}; stops at {_ago(timeout)} idle, after the warning", IDLE,
                        idle_s)
    if policy.max_session is not None and ws.available_since is not None \
            and now - ws.available_since >= policy.max_session - lead:
        return Decision(Action.WARN, f"running {_ago(now - ws.available_since)}; the maximum session is "
                                     f"{_ago(policy.max_session)}", MAX_SESSION, idle_s)
    return Decision(Action.KEEP, f"active {_ago(idle)} ago", "", idle_s)


def _session_over(ws: Workspace, now: datetime, policy: Policy) -> bool:
    return (policy.max_session is not None and ws.available_since is not None
            and now - ws.available_since >= policy.max_session)


def _stopped(ws: Workspace, now: datetime, policy: Policy) -> Decision:
    stopped_at = parse_time(ws.annotations.get(STOPPED_AT))
    if stopped_at is None:
        return Decision(Action.KEEP, "scaled to zero, but not by the reaper: left alone")
    if policy.dormancy is None:
        return Decision(Action.KEEP, f"stopped {_ago(now - stopped_at)} ago; dormancy is off")
    return _dormancy(ws, stopped_at, now, policy.dormancy, Action.DELETE, "release")


def _dormant_volumes(ws: Workspace, now: datetime, policy: Policy) -> Decision:
    stopped_at = parse_time(ws.volume_annotations.get(STOPPED_AT))
    if stopped_at is None or not ws.volume_annotations.get(DORMANT_DELETED_AT):
        return Decision(Action.KEEP, "no Deployment and not made dormant by the reaper: left alone")
    if policy.volume_dormancy is None:
        return Decision(Action.KEEP, "release deleted while dormant; volume deletion is off")
    return _dormancy(ws, stopped_at, now, policy.volume_dormancy, Action.DELETE_VOLUMES, "volumes")


def _dormancy(ws: Workspace, stopped_at: datetime, now: datetime, period: timedelta, action: Action,
              what: str) -> Decision:
    """The one rule that also decides offboarding deletions: a verified backup taken after the
    stop, confirmed in the repository, and the period over. No backup yet (or one the
    repository does not hold) means: take one now, delete on a later run."""
    if not any(((v.get("metadata") or {}).get("labels") or {}).get(VOLUME_LABEL) == "workspace"
               for v in ws.volumes):
        return Decision(Action.KEEP, "dormant, but no workspace volume was found to prove a backup of", DORMANT)
    if now - stopped_at < period:
        return Decision(Action.KEEP, f"stopped {_ago(now - stopped_at)} ago; its {what} go after {period.days} days")
    verdict = deletion_decision(stopped_at, list(ws.volumes), now, period.days, event="the stop",
                                period="dormancy", repository=ws.repository)
    if verdict.action == "delete":
        return Decision(action, f"stopped {_ago(now - stopped_at)} ago; {verdict.reason}", DORMANT)
    if verdict.action == "confirm":
        return Decision(Action.CONFIRM, f"{what} due for deletion; {verdict.reason}", DORMANT)
    if verdict.action == "refuse":
        return Decision(Action.BACKUP, f"dormant, but {verdict.reason}: backing up first", DORMANT)
    return Decision(Action.KEEP, verdict.reason, DORMANT)


# -- what a decision writes (pure; the steps send it) -------------------------------------------
# Every write is guarded by the resourceVersion the decision was judged on: if the Deployment
# changed since the LIST (a resume, the restore guard, an exemption, another run), the API
# server refuses it and this run leaves the workspace to the next one.
def _guarded(ws: Workspace, annotations: dict[str, str | None], **rest) -> dict:
    meta: dict = {"annotations": annotations}
    if ws.resource_version:
        meta["resourceVersion"] = ws.resource_version
    return {"metadata": meta, **rest}


def stop_patch(ws: Workspace, d: Decision, now: datetime) -> dict:
    """Scale to zero and mark, in one guarded write."""
    return _guarded(ws, {STOPPED_AT: rfc3339(now), STOP_REASON: f"{d.rule}: {d.reason}"[:250], **CLEAR_WARNING},
                    spec={"replicas": 0})


def claim_patch(ws: Workspace, now: datetime) -> dict:
    """The right to send this warning: only one of the runs that judged the same state gets it."""
    return _guarded(ws, {IDLE_WARNING_CLAIM: rfc3339(now)})


def warn_annotations(d: Decision, now: datetime) -> dict[str, str | None]:
    """Recorded once the email went out (or there is no address to send it to)."""
    return {IDLE_WARNED_AT: rfc3339(now), IDLE_WARNING_RULE: d.rule, IDLE_WARNING_CLAIM: None}


CLEAR_WARNING: dict[str, str | None] = {IDLE_WARNED_AT: None, IDLE_WARNING_RULE: None, IDLE_WARNING_CLAIM: None}
RELEASE_CLAIM: dict[str, str | None] = {IDLE_WARNING_CLAIM: None}


def cancel_patch(ws: Workspace) -> dict:
    """Not guarded by the resourceVersion: clearing a warning can only postpone a stop, never
    cause one, so there is nothing for a precondition to protect. Guarded, a cancel lost to any
    write after the LIST left the warning standing although this run saw it void (an
    exemption), and once the exemption was lifted that old warning stopped the workspace."""
    return {"metadata": {"annotations": dict(CLEAR_WARNING)}}


def dormant_patch(ws: Workspace, now: datetime) -> dict:
    """Marks the Deployment before its release goes, guarded: of two runs, one uninstalls."""
    return _guarded(ws, {DORMANT_DELETED_AT: rfc3339(now)})


def resume_annotations(now: datetime) -> dict[str, str | None]:
    """Resuming is activity: the fresh code-server has no heartbeat until it is opened."""
    return {STOPPED_AT: None, STOP_REASON: None, LAST_ACTIVITY: rfc3339(now), **CLEAR_WARNING}


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


def _ann(obj: dict) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def _volume_kind(obj: dict) -> str:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(VOLUME_LABEL, "")


def _replicas(deployment: dict) -> int:
    return int((deployment.get("spec") or {}).get("replicas", 1) or 0)


def busy_jobs(jobs: Iterable[dict]) -> dict[str, str]:
    """username -> why a workspace is busy: a backup or restore Job of it is running."""
    busy: dict[str, str] = {}
    for j in jobs:
        if job_running(j):
            component = ((j.get("metadata") or {}).get("labels") or {}).get(COMPONENT_LABEL, "job")
            busy[_user(j)] = f"a {component} Job is running"
    return busy


def probe_target(deployment: dict, busy: Mapping[str, str]) -> str:
    """The username whose ``/healthz`` is asked, "" for none: the workspace runs (replicas) and
    no Job (``busy``, from :func:`busy_jobs`) or restore guard on the Deployment works on it. A
    guard on a volume only is seen later; probing such a workspace changes nothing, its
    decision is keep."""
    user = _user(deployment)
    return user if _replicas(deployment) and user not in busy and not _ann(deployment).get(RESTORING) else ""


def workspaces_from(deployments: Iterable[dict], volumes: Iterable[dict], jobs: Iterable[dict],
                    busy: Mapping[str, str] | None = None) -> list[Workspace]:
    """One Workspace per user that has a Deployment or a workspace volume, sorted by username.

    Restore volumes are left out of ``volumes`` (dormancy never deletes them), but the
    restore guard on any volume of the user makes the workspace busy: an in-place restore
    of a dormant workspace (no Deployment) is guarded on its volume only.

    Each argument is iterated once, in the order Jobs, Deployments, volumes, so pages can be
    folded in as they arrive, and running workspaces probed while the volumes are still read;
    a Deployment is kept as the few facts the rule reads. ``busy``: :func:`busy_jobs` of ``jobs``
    when the caller has it already (it chose the probes by it)."""
    busy = busy_jobs(jobs) if busy is None else busy
    facts: dict[str, tuple[int, Mapping[str, str], datetime | None, str]] = {}
    for d in deployments:
        user, meta = _user(d), d.get("metadata") or {}
        if user:
            facts[user] = (_replicas(d), meta.get("annotations") or {}, available_since(d),
                           meta.get("resourceVersion", ""))
    by_user_vols: dict[str, list[dict]] = {}
    guarded: dict[str, str] = {}
    for v in volumes:
        user = _user(v)
        if _ann(v).get(RESTORING):
            guarded.setdefault(user, f"{RESTORING} is set on {(v.get('metadata') or {}).get('name', '?')}")
        if _volume_kind(v) != "restore":
            by_user_vols.setdefault(user, []).append(v)
    out: dict[str, Workspace] = {}
    for user, (replicas, ann, since, version) in facts.items():
        reason = busy.get(user) or (f"{RESTORING} is set" if ann.get(RESTORING) else "") or guarded.get(user, "")
        out[user] = Workspace(user, replicas, ann, since, tuple(by_user_vols.get(user, ())), reason, version)
    for user, vols in by_user_vols.items():
        if user and user not in out:
            out[user] = Workspace(user, None, {}, None, tuple(vols), busy.get(user, "") or guarded.get(user, ""))
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
