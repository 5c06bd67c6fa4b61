"""Platform health as pure decisions: listed objects and ``now`` in, checks and gauges out.

kube-state-metrics knows Deployments and Velero knows backups, but neither knows what a
VibeCode workspace is, whether its owner still works here or whether its last backup was
verified. These functions do. They take what one LIST per kind returned (never a GET per
workspace), so a run over 1,000 workspaces costs a handful of API requests, and they take
``now`` so every threshold is testable without waiting.

Each check answers ok / warning / critical with a value and a message an operator can act
on. Gauges are the numbers behind them (counts, ages) for Datadog and Prometheus.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from enum import Enum
from typing import Iterable

from pydantic import BaseModel, Field

from tasks.backup.status import (
    LAST_BACKUP_OUTCOME,
    LAST_BACKUP_TIME,
    LAST_VERIFIED_TIME,
    Outcome,
    has_verified_backup,
    run_outcome,
)
from tasks.core.names import NAME_LABEL, PART_OF, PART_OF_LABEL, STOPPED_AT, USER_LABEL, WORKSPACE_APP
from tasks.core.timefmt import parse_time as _time
from tasks.people import usersdb

BACKUP_WARNING = timedelta(hours=26)  # one missed night
BACKUP_CRITICAL = timedelta(hours=50)  # two missed nights
CERT_WARNING = timedelta(days=14)
CERT_CRITICAL = timedelta(days=3)
STUCK_AFTER = timedelta(minutes=10)  # a workspace unavailable this long is broken, not starting
OFFBOARD_GRACE = timedelta(minutes=5)  # offboarding disables the identity first; this is its head start
LEAVER_STATES = ("terminated", "purged")
NAME_LIMIT = 5  # names quoted in one message; the gauges carry the rest


class Status(str, Enum):
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return {"ok": 0, "warning": 1, "critical": 2}[self.value]


class Check(BaseModel):
    name: str
    status: Status
    value: float
    message: str


class Gauge(BaseModel):
    """One number for the sinks; ``labels`` become Datadog tags and Prometheus labels."""

    name: str  # dotted, e.g. "workspaces" -> vibecode.workspaces / vibecode_workspaces
    value: float
    labels: dict[str, str] = Field(default_factory=dict)


class HealthReport(BaseModel):
    started: datetime
    finished: datetime
    checks: list[Check]
    gauges: list[Gauge] = Field(default_factory=list)
    sinks: dict[str, str] = Field(default_factory=dict)  # sink -> "ok" | "failed: ..." | "not configured"

    @property
    def status(self) -> Status:
        return worst(c.status for c in self.checks)

    @property
    def failed_sinks(self) -> list[str]:
        return [name for name, outcome in self.sinks.items() if outcome.startswith("failed")]

    def ordered(self) -> list[Check]:
        """Criticals first, then warnings, then the rest; by name within each."""
        return sorted(self.checks, key=lambda c: (-c.status.rank, c.name))

    def table(self) -> list[dict]:
        return [{"check": c.name, "status": c.status.value, "value": _fmt(c.value), "message": c.message}
                for c in self.ordered()]

    def markdown(self) -> str:
        counts = {s: sum(c.status is s for c in self.checks) for s in Status}
        lines = [f"# Platform health: {self.status.value}", "",
                 f"{counts[Status.CRITICAL]} critical, {counts[Status.WARNING]} warning, "
                 f"{counts[Status.OK]} ok ({self.finished:%Y-%m-%d %H:%M:%S} UTC)", ""]
        for status in (Status.CRITICAL, Status.WARNING):
            for c in self.ordered():
                if c.status is status:
                    lines.append(f"- **{status.value}** `{c.name}`: {c.message}")
        if self.failed_sinks:
            lines += ["", "Sinks that failed: " + ", ".join(f"{n} ({self.sinks[n]})" for n in self.failed_sinks)]
        return "\n".join(lines) + "\n"


def worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, key=lambda s: s.rank, default=Status.OK)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.3f}"


def _names(items: list[str]) -> str:
    more = len(items) - NAME_LIMIT
    return ", ".join(items[:NAME_LIMIT]) + (f" and {more} more" if more > 0 else "")


def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def _user(obj: dict) -> str:
    return (_meta(obj).get("labels") or {}).get(USER_LABEL, "") or _meta(obj).get("name", "?")


def _condition(obj: dict, kind: str) -> dict | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


# -- the API server and nodes -----------------------------------------------------------
def check_api(latency_seconds: float | None, error: str, slow_seconds: float) -> Check:
    if latency_seconds is None:
        return Check(name="api", status=Status.CRITICAL, value=-1, message=f"API server unreachable: {error}")
    if latency_seconds > slow_seconds:
        return Check(name="api", status=Status.WARNING, value=latency_seconds,
                     message=f"API server answered in {latency_seconds:.2f}s (slow above {slow_seconds:g}s)")
    return Check(name="api", status=Status.OK, value=latency_seconds,
                 message=f"API server answered in {latency_seconds * 1000:.0f} ms")


def check_nodes(nodes: list[dict]) -> Check:
    ready = [n for n in nodes if (_condition(n, "Ready") or {}).get("status") == "True"]
    not_ready = sorted(_meta(n).get("name", "?") for n in nodes if n not in ready)
    if not nodes:
        return Check(name="nodes", status=Status.CRITICAL, value=0, message="no nodes registered")
    if not ready:
        return Check(name="nodes", status=Status.CRITICAL, value=0,
                     message=f"none of {len(nodes)} nodes is Ready: {_names(not_ready)}")
    if not_ready:
        return Check(name="nodes", status=Status.WARNING, value=len(ready),
                     message=f"{len(ready)}/{len(nodes)} nodes Ready; not Ready: {_names(not_ready)}")
    return Check(name="nodes", status=Status.OK, value=len(ready), message=f"{len(ready)}/{len(nodes)} nodes Ready")


# -- platform components ----------------------------------------------------------------
def check_components(deployments: list[dict], statefulsets: list[dict], components: list[str]) -> list[Check]:
    """One check per ``namespace/name`` in ``components`` that exists as a Deployment or a
    StatefulSet. Absent ones are not installed here (bootstrap installs what it is asked to)."""
    found: dict[str, tuple[str, dict]] = {}
    for kind, items in (("Deployment", deployments), ("StatefulSet", statefulsets)):
        for obj in items:
            found[f"{_meta(obj).get('namespace')}/{_meta(obj).get('name')}"] = (kind, obj)
    checks = []
    for key in components:
        if key not in found:
            continue
        kind, obj = found[key]
        want = (obj.get("spec") or {}).get("replicas", 1)
        status = obj.get("status") or {}
        have = status.get("availableReplicas" if kind == "Deployment" else "readyReplicas") or 0
        name = f"component.{key.split('/', 1)[1]}"
        if want == 0:
            checks.append(Check(name=name, status=Status.WARNING, value=0, message=f"{kind} {key} is scaled to zero"))
        elif have == 0:
            checks.append(Check(name=name, status=Status.CRITICAL, value=0,
                                message=f"{kind} {key}: none of {want} replicas available"))
        elif have < want:
            checks.append(Check(name=name, status=Status.WARNING, value=have,
                                message=f"{kind} {key}: {have}/{want} replicas available"))
        else:
            checks.append(Check(name=name, status=Status.OK, value=have,
                                message=f"{kind} {key}: {have}/{want} replicas available"))
    if not checks:
        checks.append(Check(name="components", status=Status.WARNING, value=0,
                            message=f"none of the platform components is installed ({_names(components)})"))
    return checks


def check_authelia(status_code: int | None, body: str, latency_seconds: float, error: str,
                   slow_seconds: float) -> Check:
    """Authelia's ``GET /api/health`` answers 200 ``{"status": "OK"}`` when it is serving."""
    try:
        answer = json.loads(body or "{}").get("status")
    except (ValueError, AttributeError):
        answer = None
    if status_code is None:
        return Check(name="authelia", status=Status.CRITICAL, value=-1, message=f"Authelia unreachable: {error}")
    if status_code != 200 or answer != "OK":
        return Check(name="authelia", status=Status.CRITICAL, value=status_code,
                     message=f"Authelia health answered HTTP {status_code} status {answer!r}")
    if latency_seconds > slow_seconds:
        return Check(name="authelia", status=Status.WARNING, value=latency_seconds,
                     message=f"Authelia answered in {latency_seconds:.2f}s (slow above {slow_seconds:g}s)")
    return Check(name="authelia", status=Status.OK, value=latency_seconds,
                 message=f"Authelia healthy ({latency_seconds * 1000:.0f} ms)")


def check_certificates(certificates: list[dict] | None, now: datetime) -> tuple[list[Check], list[Gauge]]:
    """cert-manager Certificates: Ready, and far enough from expiry. ``None``: no CRD, no check."""
    if certificates is None:
        return [], []
    gauges, problems, status = [], [], Status.OK
    least = float("inf")
    for cert in certificates:
        name = f"{_meta(cert).get('namespace')}/{_meta(cert).get('name')}"
        ready = (_condition(cert, "Ready") or {}).get("status") == "True"
        not_after = _time((cert.get("status") or {}).get("notAfter"))
        left = (not_after - now) if not_after else None
        if left is not None:
            days = left.total_seconds() / 86400
            least = min(least, days)
            gauges.append(Gauge(name="certificate.expiry_seconds", value=round(left.total_seconds()),
                                labels={"certificate": name}))
        if not ready or left is None or left < CERT_CRITICAL:
            status = Status.CRITICAL
            problems.append(f"{name} " + ("not Ready" if not ready else "no expiry" if left is None
                                          else f"expires in {left.total_seconds() / 86400:.1f} days"))
        elif left < CERT_WARNING:
            status = worst([status, Status.WARNING])
            problems.append(f"{name} expires in {left.total_seconds() / 86400:.1f} days")
    value = 0 if least == float("inf") else round(least, 2)
    if problems:
        msg = _names(problems)
    elif certificates:
        msg = f"{len(certificates)} certificates Ready; the first expires in {value:.1f} days"
    else:
        msg = "no Certificate objects"
    return [Check(name="certificates", status=status, value=value, message=msg)], gauges


# -- workspaces ---------------------------------------------------------------------------
def check_workspace_replicas(deployments: list[dict], now: datetime) -> Check:
    """Desired vs ready. Unavailable for longer than ``STUCK_AFTER`` (or a rollout past its
    progress deadline) is critical; a workspace still starting is a warning."""
    starting, stuck = [], []
    for dep in deployments:
        want = (dep.get("spec") or {}).get("replicas", 1)
        ready = (dep.get("status") or {}).get("readyReplicas") or 0
        if want == 0 or ready >= want:
            continue
        progressing = _condition(dep, "Progressing") or {}
        available = _condition(dep, "Available") or {}
        since = _time(available.get("lastTransitionTime")) or _time(_meta(dep).get("creationTimestamp"))
        if progressing.get("reason") == "ProgressDeadlineExceeded" or (since and now - since > STUCK_AFTER):
            stuck.append(_user(dep))
        else:
            starting.append(_user(dep))
    wanted = sum(1 for d in deployments if (d.get("spec") or {}).get("replicas", 1) > 0)
    if stuck:
        return Check(name="workspaces.ready", status=Status.CRITICAL, value=len(stuck) + len(starting),
                     message=f"{len(stuck)} workspaces not ready for over {STUCK_AFTER.seconds // 60} min: "
                             f"{_names(sorted(stuck))}")
    if starting:
        return Check(name="workspaces.ready", status=Status.WARNING, value=len(starting),
                     message=f"{len(starting)} workspaces starting: {_names(sorted(starting))}")
    return Check(name="workspaces.ready", status=Status.OK, value=0,
                 message=f"all {wanted} running workspaces ready")


def check_workspace_volumes(pvcs: list[dict]) -> Check:
    lost = sorted(_user(p) for p in pvcs if (p.get("status") or {}).get("phase") == "Lost")
    pending = sorted(_user(p) for p in pvcs if (p.get("status") or {}).get("phase") not in ("Bound", "Lost"))
    if lost:
        return Check(name="workspaces.volumes", status=Status.CRITICAL, value=len(lost) + len(pending),
                     message=f"{len(lost)} workspace volumes Lost: {_names(lost)}")
    if pending:
        return Check(name="workspaces.volumes", status=Status.WARNING, value=len(pending),
                     message=f"{len(pending)} workspace volumes not Bound: {_names(pending)}")
    return Check(name="workspaces.volumes", status=Status.OK, value=0, message=f"all {len(pvcs)} volumes Bound")


def leavers(ledger: list[dict]) -> dict[str, str]:
    """username -> terminated_at (RFC 3339) for everyone the ledger says has left."""
    out = {}
    for cm in ledger:
        data = cm.get("data") or {}
        if data.get("state") in LEAVER_STATES and data.get("username"):
            out[data["username"]] = data.get("terminated_at", "")
    return out


def check_leavers_running(deployments: list[dict], ledger: list[dict]) -> Check:
    """Offboarding scales a leaver's workspace to zero; one that still runs is an incident."""
    gone = leavers(ledger)
    running = sorted(_user(d) for d in deployments
                     if _user(d) in gone and (d.get("spec") or {}).get("replicas", 1) > 0)
    stopping = sorted(_user(d) for d in deployments
                      if _user(d) in gone and (d.get("spec") or {}).get("replicas", 1) == 0
                      and ((d.get("status") or {}).get("replicas") or 0) > 0)
    if running:
        return Check(name="workspaces.leavers", status=Status.CRITICAL, value=len(running),
                     message=f"{len(running)} leavers' workspaces still run: {_names(running)}")
    if stopping:
        return Check(name="workspaces.leavers", status=Status.WARNING, value=len(stopping),
                     message=f"{len(stopping)} leavers' workspaces still stopping: {_names(stopping)}")
    return Check(name="workspaces.leavers", status=Status.OK, value=0,
                 message=f"no leaver's workspace runs ({len(gone)} leavers)")


# -- backups --------------------------------------------------------------------------------
def backup_age(pvc: dict, now: datetime) -> tuple[timedelta, bool]:
    """How long this volume has been without a verified backup, and whether it ever had one.

    The backup flow stamps the time of every Completed + verified backup, which outlives a
    failed night. A volume without that stamp counts from its latest attempt if that one was
    good, else from its creation: guessing an older good backup would hide a real gap."""
    ann = _meta(pvc).get("annotations") or {}
    good = _time(ann.get(LAST_VERIFIED_TIME))
    if good is None and has_verified_backup(pvc, now):
        good = _time(ann.get(LAST_BACKUP_TIME))
    if good is not None:
        return max(now - good, timedelta(0)), True
    created = _time(_meta(pvc).get("creationTimestamp")) or now
    return max(now - created, timedelta(0)), False


def check_backups(pvcs: list[dict], now: datetime) -> tuple[Check, list[Gauge]]:
    """Every workspace's last verified backup younger than 26 h (warning) / 50 h (critical).
    A volume younger than that which has no backup yet is fine: its first night is ahead."""
    warn, crit, gauges = [], [], []
    for pvc in pvcs:
        age, good = backup_age(pvc, now)
        user = _user(pvc)
        gauges.append(Gauge(name="backup.age_seconds", value=round(age.total_seconds()), labels={"workspace": user}))
        if age > BACKUP_CRITICAL:
            crit.append(user)
        elif age > BACKUP_WARNING:
            warn.append(user)
    if crit:
        check = Check(name="backups.fresh", status=Status.CRITICAL, value=len(crit) + len(warn),
                      message=f"{len(crit)} workspaces without a verified backup for over "
                              f"{BACKUP_CRITICAL.total_seconds() / 3600:.0f} h: {_names(sorted(crit))}")
    elif warn:
        check = Check(name="backups.fresh", status=Status.WARNING, value=len(warn),
                      message=f"{len(warn)} workspaces without a verified backup for over "
                              f"{BACKUP_WARNING.total_seconds() / 3600:.0f} h: {_names(sorted(warn))}")
    else:
        check = Check(name="backups.fresh", status=Status.OK, value=0,
                      message=f"all {len(pvcs)} workspaces have a verified backup younger than "
                              f"{BACKUP_WARNING.total_seconds() / 3600:.0f} h (or are newer than that)")
    return check, gauges


def check_last_backup_run(pvcs: list[dict]) -> Check:
    """The last nightly run's outcome, as Velero would state it, from each volume's latest attempt."""
    outcomes: dict[str, Outcome] = {}
    for pvc in pvcs:
        raw = (_meta(pvc).get("annotations") or {}).get(LAST_BACKUP_OUTCOME)
        try:
            outcomes[_user(pvc)] = Outcome(raw)
        except ValueError:
            continue
    if not outcomes:
        status = Status.WARNING if pvcs else Status.OK
        return Check(name="backups.last_run", status=status, value=0,
                     message="no backup run recorded yet" if pvcs else "no workspace volumes")
    overall = run_outcome(list(outcomes.values()))
    bad = sorted(u for u, o in outcomes.items() if o is not Outcome.COMPLETED)
    status = {Outcome.COMPLETED: Status.OK, Outcome.PARTIALLY_FAILED: Status.WARNING,
              Outcome.FAILED: Status.CRITICAL}[overall]
    msg = f"{overall.value}" + (f": not completed for {_names(bad)}" if bad else f" for {len(outcomes)} workspaces")
    return Check(name="backups.last_run", status=status, value=len(bad), message=msg)


def check_bucket(latency_seconds: float | None, error: str, bucket: str, slow_seconds: float) -> Check:
    if latency_seconds is None:
        return Check(name="backups.bucket", status=Status.CRITICAL, value=-1,
                     message=f"bucket {bucket} unreachable: {error}")
    if latency_seconds > slow_seconds:
        return Check(name="backups.bucket", status=Status.WARNING, value=latency_seconds,
                     message=f"bucket {bucket} answered in {latency_seconds:.2f}s (slow above {slow_seconds:g}s)")
    return Check(name="backups.bucket", status=Status.OK, value=latency_seconds,
                 message=f"bucket {bucket} reachable ({latency_seconds * 1000:.0f} ms)")


# -- users -----------------------------------------------------------------------------------
def parse_users(text: str | None, error: str = "") -> tuple[dict[str, dict] | None, Check]:
    """Authelia's users database: it must parse, and each entry needs what Authelia requires."""
    if text is None:
        return None, Check(name="users.database", status=Status.CRITICAL, value=0,
                           message=f"users database unreadable: {error}")
    try:
        users = usersdb.load(text, empty_ok=False)["users"]  # the identity backend's own reader
    except usersdb.UsersFileError as exc:
        return None, Check(name="users.database", status=Status.CRITICAL, value=0,
                           message=f"users database {exc.reason}")
    incomplete = sorted(u for u, e in users.items()
                        if not isinstance(e, dict) or not e.get("password") or not e.get("displayname"))
    users = {u: e for u, e in users.items() if isinstance(e, dict)}
    if incomplete:
        return users, Check(name="users.database", status=Status.WARNING, value=len(users),
                            message=f"{len(incomplete)} entries lack a password or displayname: "
                                    f"{_names(incomplete)}")
    return users, Check(name="users.database", status=Status.OK, value=len(users),
                        message=f"{len(users)} users")


def redact(users: dict[str, dict] | None) -> dict[str, dict] | None:
    """What the checks need of each entry: whether it is disabled. Password hashes stay behind."""
    return None if users is None else {u: {"disabled": bool(e.get("disabled"))} for u, e in users.items()}


def check_users(users: dict[str, dict] | None, workspace_users: set[str], ledger: list[dict],
                now: datetime) -> list[Check]:
    """Every enabled user has a workspace; every leaver is disabled."""
    if users is None:
        return []
    states = {(cm.get("data") or {}).get("username"): (cm.get("data") or {}).get("state") for cm in ledger}
    enabled = {u for u, e in users.items() if not e.get("disabled")}
    missing = sorted(enabled - workspace_users)
    settled = [u for u in missing if states.get(u) == "active"]  # onboarding said done, yet no workspace
    if settled:
        ws = Check(name="users.workspaces", status=Status.CRITICAL, value=len(missing),
                   message=f"{len(settled)} active users have no workspace: {_names(settled)}")
    elif missing:
        ws = Check(name="users.workspaces", status=Status.WARNING, value=len(missing),
                   message=f"{len(missing)} enabled users have no workspace yet: {_names(missing)}")
    else:
        ws = Check(name="users.workspaces", status=Status.OK, value=0,
                   message=f"all {len(enabled)} enabled users have a workspace")
    late: list[str] = []
    fresh: list[str] = []
    for user, when in leavers(ledger).items():
        if user in enabled:
            t = _time(when)
            (fresh if t and now - t <= OFFBOARD_GRACE else late).append(user)
    if late:
        lv = Check(name="users.leavers", status=Status.CRITICAL, value=len(late) + len(fresh),
                   message=f"{len(late)} leavers are still enabled in Authelia: {_names(sorted(late))}")
    elif fresh:
        lv = Check(name="users.leavers", status=Status.WARNING, value=len(fresh),
                   message=f"{len(fresh)} leavers being offboarded, still enabled: {_names(sorted(fresh))}")
    else:
        lv = Check(name="users.leavers", status=Status.OK, value=0, message="every leaver is disabled")
    return [ws, lv]


# -- counts ----------------------------------------------------------------------------------
def counts(deployments: list[dict], users: dict[str, dict] | None, now: datetime,
           dormancy: timedelta | None) -> list[Gauge]:
    """running / stopped / dormant workspaces (dormant: stopped by the reaper at least
    ``dormancy`` ago, the reaper's ``settings.reaper.dormancy_days``; None: dormancy is off,
    so none is), and enabled / disabled users."""
    running = stopped = dormant = 0
    for dep in deployments:
        if (dep.get("spec") or {}).get("replicas", 1) > 0:
            running += 1
            continue
        stopped += 1
        at = _time((_meta(dep).get("annotations") or {}).get(STOPPED_AT))
        if at and dormancy is not None and now - at >= dormancy:
            dormant += 1
    out = [Gauge(name="workspaces", value=v, labels={"state": k})
           for k, v in (("running", running), ("stopped", stopped), ("dormant", dormant))]
    if users is not None:
        disabled = sum(1 for e in users.values() if e.get("disabled"))
        out += [Gauge(name="users", value=len(users) - disabled, labels={"state": "enabled"}),
                Gauge(name="users", value=disabled, labels={"state": "disabled"})]
    return out


# -- one run ---------------------------------------------------------------------------------
class Listing(BaseModel):
    """What the one LIST per kind returned (and the users database, parsed where it was read)."""

    nodes: list[dict] = Field(default_factory=list)
    deployments: list[dict] = Field(default_factory=list)  # every namespace
    statefulsets: list[dict] = Field(default_factory=list)  # every namespace
    pvcs: list[dict] = Field(default_factory=list)  # workspace volumes
    ledger: list[dict] = Field(default_factory=list)  # per-person ledger ConfigMaps
    certificates: list[dict] | None = None  # None: the cert-manager CRD is not installed
    users: dict[str, dict] | None = None  # username -> {"disabled": bool}, from parse_users
    users_database: Check | None = None  # parse_users' verdict; None: not a file backend


class Observed(Listing):
    """Everything one run looked at: the listing, one probe per endpoint."""

    api_latency: float | None = None
    api_error: str = ""
    authelia_status: int | None = None
    authelia_body: str = ""
    authelia_latency: float = 0.0
    authelia_error: str = "not probed"
    bucket: str = ""
    bucket_latency: float | None = None
    bucket_error: str = "not probed"


def workspace_deployments(deployments: list[dict], namespace: str) -> list[dict]:
    return [d for d in deployments if _meta(d).get("namespace") == namespace
            and (_meta(d).get("labels") or {}).get(NAME_LABEL) == WORKSPACE_APP
            and (_meta(d).get("labels") or {}).get(PART_OF_LABEL) == PART_OF]


def evaluate(obs: Observed, now: datetime, namespace: str, components: list[str],
             slow_seconds: float, *, dormancy: timedelta | None) -> tuple[list[Check], list[Gauge]]:
    """Every check and gauge of one run. Without the API server only the checks that do not
    need it are made; the ``api`` check says why the rest are missing."""
    checks = [check_api(obs.api_latency, obs.api_error, slow_seconds),
              check_authelia(obs.authelia_status, obs.authelia_body, obs.authelia_latency, obs.authelia_error,
                             slow_seconds),
              check_bucket(obs.bucket_latency, obs.bucket_error, obs.bucket, slow_seconds)]
    gauges = [Gauge(name="api.latency_seconds", value=round(obs.api_latency, 4))] if obs.api_latency else []
    if obs.api_latency is None:
        return checks, gauges
    workspaces = workspace_deployments(obs.deployments, namespace)
    checks.append(check_nodes(obs.nodes))
    checks += check_components(obs.deployments, obs.statefulsets, components)
    cert_checks, cert_gauges = check_certificates(obs.certificates, now)
    checks += cert_checks
    checks += [check_workspace_replicas(workspaces, now), check_workspace_volumes(obs.pvcs),
               check_leavers_running(workspaces, obs.ledger)]
    fresh, ages = check_backups(obs.pvcs, now)
    checks += [fresh, check_last_backup_run(obs.pvcs)]
    users = obs.users
    if obs.users_database is not None:
        checks.append(obs.users_database)
        have = {_user(d) for d in workspaces} | {_user(p) for p in obs.pvcs}
        checks += check_users(users, have, obs.ledger, now)
    gauges += cert_gauges + ages + counts(workspaces, users, now, dormancy)
    return checks, gauges
