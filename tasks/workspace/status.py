"""The platform at a glance: every person's workspace from one LIST each of Deployments,
home volumes and ledger records, and ``now``. Pure: no I/O, no clock.

Operators asked for one view with who has a workspace, whether it runs, what it costs
(requested CPU, memory, storage), when it was last used and last safely backed up, who
has left, and what needs a person's attention. ``vibecode status`` prints it and the
health flow keeps it as a Prefect table artifact with a fixed key, so the UI always shows
the current list. It reads only what the flows already write (labels, annotations,
status conditions, ledger records); it never probes a workspace.

"Last active" is the newest of the ``vibecode.dev/last-activity`` annotation (a resume
writes it) and the time the workspace last became available. code-server's heartbeat is
read by the reaper only (a probe per workspace would make this view cost N requests).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import Enum

from pydantic import BaseModel, Field

from tasks.backup.status import Outcome
from tasks.core.names import (
    DORMANT_DELETED_AT,
    IDLE_WARNED_AT,
    LAST_ACTIVITY,
    LAST_BACKUP_OUTCOME,
    LAST_BACKUP_REASON,
    NAME_LABEL,
    PART_OF,
    PART_OF_LABEL,
    RESTORING,
    STOP_REASON,
    STOPPED_AT,
    USER_LABEL,
    VOLUME_LABEL,
)
from tasks.core.timefmt import parse_time
from tasks.health.checks import BACKUP_WARNING, STUCK_AFTER, backup_age

ARTIFACT_KEY = "workspace-overview"  # fixed: the Prefect UI's Artifacts page always shows the latest


class State(str, Enum):
    RUNNING = "running"
    STARTING = "starting"  # wanted, not ready yet
    STOPPED = "stopped"  # scaled to zero, volumes kept
    DORMANT = "dormant"  # release uninstalled by the reaper, volumes kept
    ABSENT = "absent"  # a person on record without a workspace (e.g. a purged leaver)


LEAVER_STATES = ("terminated", "purged")


class WorkspaceRow(BaseModel):
    person: str
    state: State
    url: str
    cpu: str = ""  # requested by the pod template ("500m")
    memory: str = ""
    storage: str = ""  # requested by the listed volumes ("10Gi")
    last_active: datetime | None = None
    last_backup: datetime | None = None  # the last Completed and verified one
    employment: str = ""  # the ledger's state: onboarding | active | terminated | purged; "" = no HR record
    left_at: datetime | None = None
    note: str = ""  # why it is stopped, a pending idle warning, a restore in progress
    problems: list[str] = Field(default_factory=list)

    @property
    def leaver(self) -> bool:
        return self.employment in LEAVER_STATES


class Overview(BaseModel):
    at: datetime
    rows: list[WorkspaceRow]

    @property
    def counts(self) -> dict[str, int]:
        """Workspaces by state, every state present (zeros included) in a fixed order."""
        return {s.value: sum(r.state is s for r in self.rows) for s in State}

    @property
    def leavers(self) -> list[WorkspaceRow]:
        return [r for r in self.rows if r.leaver]

    @property
    def problems(self) -> list[tuple[str, str]]:
        return [(r.person, p) for r in self.rows for p in r.problems]

    def summary(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.counts.items() if n)
        return (f"{len(self.rows)} people: {counts or 'no workspaces'}; {len(self.leavers)} leavers; "
                f"{len(self.problems)} open problems")

    def table(self) -> list[dict[str, str]]:
        """Rows for a Prefect table artifact (and ``vibecode status``): strings only."""
        return [{"person": r.person, "state": r.state.value, "url": r.url, "cpu": r.cpu, "memory": r.memory,
                 "storage": r.storage, "last_active": when(r.last_active, self.at),
                 "last_backup": when(r.last_backup, self.at), "hr": r.employment or "-",
                 "note": r.note, "problems": "; ".join(r.problems)} for r in self.rows]


def when(t: datetime | None, now: datetime) -> str:
    """``2026-12-01 09:30 UTC (3h ago)``; ``-`` for never."""
    if t is None:
        return "-"
    return f"{t:%Y-%m-%d %H:%M} UTC ({ago(now - t)})"


def ago(d: timedelta) -> str:
    s = int(d.total_seconds())
    if s < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit} ago"
    return "just now"


# -- reading the listed objects -----------------------------------------------------------
def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def _labels(obj: dict) -> dict:
    return _meta(obj).get("labels") or {}


def _ann(obj: dict) -> dict:
    return _meta(obj).get("annotations") or {}


def _is_workspace(dep: dict, namespace: str) -> bool:
    labels = _labels(dep)
    return (_meta(dep).get("namespace") == namespace and labels.get(NAME_LABEL) == "code-server"
            and labels.get(PART_OF_LABEL) == PART_OF and bool(labels.get(USER_LABEL)))


def _available(dep: dict) -> tuple[bool, datetime | None]:
    for c in (dep.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Available":
            return c.get("status") == "True", parse_time(c.get("lastTransitionTime"))
    return False, None


def _requests(dep: dict) -> tuple[str, str]:
    """CPU and memory the pod template requests (summed when several containers ask)."""
    containers = (((dep.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    asks = [((c.get("resources") or {}).get("requests") or {}) for c in containers]
    return _sum([a.get("cpu") for a in asks]), _sum([a.get("memory") for a in asks])


_SUFFIX = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40}
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?")


def _sum(quantities: list[str | None]) -> str:
    """One quantity as written when there is one; several are added, in the first one's unit."""
    given = [str(q) for q in quantities if q not in (None, "")]
    if len(given) <= 1:
        return given[0] if given else ""
    matched = [_QUANTITY.fullmatch(q) for q in given]
    parsed = [m for m in matched if m is not None]
    if len(parsed) != len(matched):
        return " + ".join(given)
    total = sum(float(m[1]) * _SUFFIX[m[2] or ""] for m in parsed)
    unit = parsed[0][2] or ""
    return f"{total / _SUFFIX[unit]:g}{unit}"


def _ledger(cms: list[dict]) -> dict[str, dict]:
    return {d["username"]: d for cm in cms for d in [cm.get("data") or {}] if d.get("username")}


def build_overview(deployments: list[dict], volumes: list[dict], ledger: list[dict], now: datetime,
                   namespace: str, domain: str) -> Overview:
    """One row per person who has a workspace Deployment, a workspace volume or a ledger record.

    ``deployments`` may span namespaces (the health flow lists them cluster-wide): only the
    workspaces in ``namespace`` count. ``volumes`` are the home volumes (label
    ``vibecode.dev/volume=workspace``); storage is what they request."""
    deps = {_labels(d)[USER_LABEL]: d for d in deployments if _is_workspace(d, namespace)}
    vols: dict[str, list[dict]] = {}
    for v in volumes:
        user = _labels(v).get(USER_LABEL)
        if user and _meta(v).get("namespace", namespace) == namespace:
            vols.setdefault(user, []).append(v)
    people = _ledger(ledger)
    rows = [_row(user, deps.get(user), vols.get(user, []), people.get(user), now, domain)
            for user in sorted(set(deps) | set(vols) | set(people))]
    return Overview(at=now, rows=rows)


def _row(user: str, dep: dict | None, vols: list[dict], person: dict | None, now: datetime,
         domain: str) -> WorkspaceRow:
    problems: list[str] = []
    note = ""
    home = next((v for v in vols if _labels(v).get(VOLUME_LABEL, "workspace") == "workspace"), None)
    employment = (person or {}).get("state", "")
    left_at = parse_time((person or {}).get("terminated_at"))
    cpu = memory = ""
    last_active = None
    if dep is not None:
        want = int((dep.get("spec") or {}).get("replicas", 1) or 0)
        ready = int((dep.get("status") or {}).get("readyReplicas") or 0)
        available, since = _available(dep)
        cpu, memory = _requests(dep)
        ann = _ann(dep)
        marks = [t for t in (parse_time(ann.get(LAST_ACTIVITY)), since if available else None) if t is not None]
        last_active = max(marks) if marks else None
        if want == 0:
            state = State.STOPPED
            stopped = parse_time(ann.get(STOPPED_AT))
            note = f"stopped {ago(now - stopped)}: {ann.get(STOP_REASON) or 'by the reaper'}" if stopped \
                else "scaled to zero by hand"
        elif ready >= want:
            state = State.RUNNING
            warned = parse_time(ann.get(IDLE_WARNED_AT))
            if warned:
                note = f"idle warning sent {ago(now - warned)}"
        else:
            state = State.STARTING
            began = since or parse_time(_meta(dep).get("creationTimestamp"))
            if began is not None and now - began > STUCK_AFTER:
                problems.append(f"not ready for {ago(now - began).removesuffix(' ago')}")
        if ann.get(RESTORING):
            note = f"restore running ({ann[RESTORING]})"
        if employment in LEAVER_STATES and want > 0:
            problems.append("has left, but the workspace still runs")
    elif vols:
        state = State.DORMANT
        gone = parse_time(_ann(home or vols[0]).get(DORMANT_DELETED_AT))
        note = f"release uninstalled {ago(now - gone)}; volumes kept" if gone else "no Deployment; volumes kept"
    else:
        state = State.ABSENT
        note = "workspace deleted" if employment == "purged" else "no workspace"

    last_backup = None
    if home is not None:
        age, good = backup_age(home, now)
        last_backup = now - age if good else None
        ann = _ann(home)
        outcome = ann.get(LAST_BACKUP_OUTCOME)
        if outcome and outcome != Outcome.COMPLETED.value:
            reason = ann.get(LAST_BACKUP_REASON, "")
            problems.append(f"last backup {outcome}" + (f": {reason}" if reason else ""))
        if age > BACKUP_WARNING:
            problems.append(f"no verified backup for {ago(age).removesuffix(' ago')}" if good
                            else f"never backed up (volume {ago(age).removesuffix(' ago')} old)")
        phase = (home.get("status") or {}).get("phase")
        if phase == "Lost":
            problems.append("home volume Lost")
    elif dep is not None:
        problems.append("no home volume found")
    if person and person.get("last_error"):
        problems.append(f"last HR run failed: {person['last_error'][:160]}")
    storage = _sum([((v.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage") for v in vols])
    return WorkspaceRow(person=user, state=state, url=f"https://{user}.{domain}", cpu=cpu, memory=memory,
                        storage=storage, last_active=last_active, last_backup=last_backup, employment=employment,
                        left_at=left_at, note=note, problems=problems)
