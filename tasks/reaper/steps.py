"""Prefect steps of idle workspace reaping and resume: decisions in :mod:`tasks.reaper.decide`,
probing in :mod:`tasks.reaper.probe`, cluster calls through :mod:`tasks.cluster.kube` and
:mod:`tasks.cluster.helm`.

One run: one paged LIST each of restic Jobs, Deployments and volumes (never a GET per
workspace), and every running workspace's ``/healthz`` probed, a bounded number at once, as
its Deployment's page arrives, all inside one task; then writes only for the workspaces whose
decision changes something. Dormant workspaces without a verified backup newer than their
stop get one from the backup flow; their deletion waits for a later run, which re-reads the
volumes' backup annotations.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import assert_never

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.backup.repo import repository_word
from tasks.backup.status import RepositoryWord
from tasks.cluster import helm, kube
from tasks.core import mail
from tasks.core.errors import Conflict, NotFound, PermanentError, is_transient
from tasks.core.names import (
    DORMANT_DELETED_AT,
    RESTIC_JOBS_SELECTOR,
    RESTORING_ANNOTATION,
    STOPPED_AT,
    WORKSPACE_DEPLOYMENT_SELECTOR,
    WORKSPACE_VOLUMES_SELECTOR,
    workspace_names,
)
from tasks.core.settings import get_settings
from tasks.core.steps import HELM, KUBE_API, call_retrying, retries_left, transient_retries
from tasks.reaper.decide import (
    RELEASE_CLAIM,
    Action,
    Decision,
    Probe,
    Workspace,
    busy_jobs,
    cancel_patch,
    claim_patch,
    decide,
    dormant_patch,
    policy_for,
    probe_target,
    probe_url,
    resume_annotations,
    rfc3339,
    stop_patch,
    warn_annotations,
    warning_message,
    workspaces_from,
)
from tasks.reaper.probe import Prober

RETRY = transient_retries(3)
Owners = dict[str, tuple[str, tuple[str, ...]]]


class OutcomeKind(StrEnum):
    """What a run's write for one workspace came to."""

    NONE = "none"  # nothing to write (keep)
    PLANNED = "planned"  # a dry run: nothing written
    DONE = "done"
    SKIPPED = "skipped"  # changed since the LIST (another run or a person acted first), or postponed
    FAILED = "failed"  # an error, or a backup that did not complete: nothing irreversible happened


class Outcome(BaseModel):
    kind: OutcomeKind = OutcomeKind.NONE
    detail: str = ""


NOTHING = Outcome()


class ReapRow(BaseModel):
    username: str
    action: Action
    rule: str = ""
    reason: str
    probe: str = ""
    idle_minutes: float | None = None
    outcome: str = ""  # what happened, for people (the detail of ``outcome_kind``)
    outcome_kind: OutcomeKind = OutcomeKind.NONE

    @property
    def failed(self) -> bool:
        """Whether this workspace's step failed (what the CLI's exit status reports)."""
        return self.outcome_kind is OutcomeKind.FAILED


class ReapReport(BaseModel):
    dry_run: bool
    now: datetime
    counts: dict[str, int]
    unknown: int  # running workspaces whose probe failed
    rows: list[ReapRow]
    unknown_exemptions: dict[str, str] = {}  # username -> the vibecode.dev/reap value we did not recognise

    @property
    def failed(self) -> bool:
        return any(r.failed for r in self.rows)

    def table(self) -> list[dict]:
        return [r.model_dump(mode="json") for r in self.rows]


@dataclass(frozen=True)
class Observed:
    """What a run reads: the workspaces, and the probes of those that run. One object: Prefect
    links a task's result one level deep, and would otherwise visit 10,000 workspaces and 7,500
    probes (0.5 s at that size, benchmarks/scale_bench.py)."""

    workspaces: list[Workspace]
    probes: dict[str, Probe]


@task(name="observe-workspaces", tags=[KUBE_API], **RETRY)
def observe_workspaces() -> Observed:
    """Jobs, Deployments and volumes, each read in pages and folded into the workspaces as
    the pages arrive: what is held is the decision's input (metadata, replicas, status), not
    10,000 full objects with their pod templates. Each running workspace's probe starts as its
    Deployment's page arrives, so the probes run while the volumes are still read (one task for
    both: a task's result cannot arrive page by page). The LISTs run one after the other: run
    at once they were no faster in CPU and held all three kinds at the same time (+40 MB at
    10,000, benchmarks/scale_bench.py)."""
    s = get_settings()
    client = kube.connect()

    def read(kind: str, sel: str):
        return (kube.lean(o, template="drop") for page in client.pages(kind, s.namespace, sel) for o in page)

    prober = Prober(s.reaper.probe_concurrency, s.reaper.probe_timeout_seconds)
    try:
        with kube.gc_paused():  # 10,000 workspaces' pages: see gc_paused
            jobs = list(read("Job", RESTIC_JOBS_SELECTOR))
            busy = busy_jobs(jobs)

            def probed(deployments):
                for d in deployments:
                    user = probe_target(d, busy)
                    if user:
                        prober.add(user, probe_url(s, user))
                    yield d

            # A volume is kept for its name, labels, annotations and resourceVersion (the dormancy
            # and backup rules read nothing else): two of them per workspace, held for the run.
            volumes = ({"metadata": v["metadata"]} for v in read("PersistentVolumeClaim", WORKSPACE_VOLUMES_SELECTOR))
            workspaces = workspaces_from(probed(read("Deployment", WORKSPACE_DEPLOYMENT_SELECTOR)), volumes, jobs,
                                         busy=busy)
    finally:
        probes = prober.results()  # also when a LIST failed: no probe is left running
    return Observed(workspaces, probes)


@task(name="read-owners", **RETRY)
def read_owners() -> Owners | None:
    """username -> (email, groups), one read of the directory; None when it cannot be read
    (then the gentlest policy applies and no warning is sent, so nothing is stopped)."""
    from tasks.people.identity import get_backend

    try:
        return {u: (st.email, tuple(st.groups)) for u, st in get_backend().list_users().items()}
    except Exception as exc:
        if is_transient(exc) and retries_left():  # one 503 must not postpone every warning of the run
            raise
        get_run_logger().warning("owner directory unreadable, warnings postponed: %s", exc)
        return None


@task(name="confirm-snapshots", tags=[KUBE_API], cache_policy=NO_CACHE)
def read_repositories(usernames: list[str]) -> dict[str, RepositoryWord]:
    """What each repository itself holds, for the workspaces whose deletion is due: the
    deletion rule checks the volume's annotation against it. One listing per repository;
    a repository that cannot be read is a word with an error (the rule defers), never a crash."""
    def one(user: str) -> tuple[str, RepositoryWord]:
        try:
            return user, repository_word(user)
        except Exception as exc:  # noqa: BLE001 - judged by the rule: unreadable means no deletion
            return user, RepositoryWord(error=f"{type(exc).__name__}: {exc}"[:300])

    with ThreadPoolExecutor(max_workers=max(1, min(4, len(usernames)))) as pool:
        return dict(pool.map(one, usernames))


def confirm_then_decide(workspaces: list[Workspace], decisions: dict[str, Decision], now: datetime,
                        policy_of, words: dict[str, RepositoryWord]) -> dict[str, Decision]:
    """Judge again, with what the repositories said, the workspaces whose deletion was due."""
    out = dict(decisions)
    for w in workspaces:
        if decisions[w.username].action is Action.CONFIRM:
            word = words.get(w.username, RepositoryWord(error="not asked"))
            out[w.username] = decide(replace(w, repository=word), None, now, policy_of(w.username))
    return out


SKIP = "skipped: changed or gone since it was listed (another run or a person acted first)"


def _warn(client, ns: str, name: str, ws: Workspace, d: Decision, now: datetime,
          owner: tuple[str, tuple[str, ...]] | None) -> Outcome:
    """Claim, email, record: one guarded step, so of two runs that judged the same state only
    one emails; a failed send gives the claim back and records nothing (so nothing is stopped)."""
    s = get_settings()
    try:
        client.patch("Deployment", ns, name, claim_patch(ws, now))
    except (Conflict, NotFound):
        return Outcome(kind=OutcomeKind.SKIPPED, detail=SKIP)
    note = "annotated; no email address on file"
    if owner and owner[0]:
        lead = policy_for(s, owner[1]).warning_lead
        try:
            mail.send(warning_message(to_email=owner[0], username=ws.username, decision=d, stop_at=now + lead,
                                      sender=s.mail.sender, domain=s.domain))
        except Exception:
            try:
                client.annotate("Deployment", ns, name, RELEASE_CLAIM)
            except Exception:  # noqa: BLE001 - the claim lapses on its own (CLAIM_STALE)
                pass
            raise
        note = f"emailed {owner[0]}, annotated"
    client.annotate("Deployment", ns, name, warn_annotations(d, now))
    return Outcome(kind=OutcomeKind.DONE, detail=note)


# Calls per write, in place: the task is never retried, so these are a workspace's only
# chances. With a 20%-faulty API server (tests/resilience/test_faults.py) a write fails for
# good with probability 0.2**attempts: at 4, a run over 50 workspaces (about 60 writes) lost
# one in about ten runs; at 6, about one in 250, for at most 15 s of backoff on a write
# that keeps failing.
CALL_ATTEMPTS = 6


class _Retrying:
    """The client, each call retried in place on a transient failure (tasks.core.steps.call_retrying):
    every write here is idempotent or guarded by a resourceVersion, and the task itself is not
    retried (that would redo every other workspace's writes)."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        fn = getattr(self._client, name)
        return lambda *a, **kw: call_retrying("apply-reap-decisions", fn, *a, attempts=CALL_ATTEMPTS, **kw)


def _apply_one(ws: Workspace, d: Decision, now: datetime, owner: tuple[str, tuple[str, ...]] | None,
               owners_known: bool) -> Outcome:
    s = get_settings()
    client = _Retrying(kube.connect())
    ns, name = s.namespace, workspace_names(ws.username).deployment
    try:
        match d.action:
            case Action.KEEP | Action.BACKUP | Action.CONFIRM:  # backups are the flow's; confirm is judged again
                return NOTHING
            case Action.CANCEL_WARNING:
                client.patch("Deployment", ns, name, cancel_patch(ws))
                return Outcome(kind=OutcomeKind.DONE, detail="warning cleared")
            case Action.WARN:
                if not owners_known:
                    return Outcome(kind=OutcomeKind.SKIPPED, detail="postponed: owner directory unreadable")
                return _warn(client, ns, name, ws, d, now, owner)
            case Action.STOP:
                client.patch("Deployment", ns, name, stop_patch(ws, d, now))
                return Outcome(kind=OutcomeKind.DONE, detail="scaled to 0, volumes kept")
            case Action.DELETE:
                client.patch("Deployment", ns, name, dormant_patch(ws, now))
                stopped = ws.annotations.get(STOPPED_AT, "")
                for v in ws.volumes:
                    client.annotate("PersistentVolumeClaim", ns, v["metadata"]["name"],
                                    {STOPPED_AT: stopped, DORMANT_DELETED_AT: rfc3339(now)})
                gone = helm.uninstall(workspace_names(ws.username).release, ns, s)
                return Outcome(kind=OutcomeKind.DONE,
                               detail=f"release {'uninstalled' if gone else 'already absent'}; volumes kept")
            case Action.DELETE_VOLUMES:
                deleted = [v["metadata"]["name"] for v in ws.volumes
                           if client.delete("PersistentVolumeClaim", ns, v["metadata"]["name"],
                                            resource_version=v["metadata"].get("resourceVersion"))]
                return Outcome(kind=OutcomeKind.DONE, detail=f"deleted {', '.join(deleted) or 'nothing (already gone)'}")
            case _:
                assert_never(d.action)
    except (Conflict, NotFound):  # changed or gone since the LIST: the next run judges it afresh
        return Outcome(kind=OutcomeKind.SKIPPED, detail=SKIP)


@task(name="apply-reap-decisions", tags=[KUBE_API, HELM], **transient_retries(0))
def apply_decisions(changes: list[tuple[Workspace, Decision]], now: datetime,
                    owners: Owners | None) -> dict[str, Outcome]:
    """The writes, bounded by settings.kube_concurrency. One workspace's failure is its row's
    outcome, never the others'; a moved resourceVersion (it changed since the LIST) skips it."""
    def one(item: tuple[Workspace, Decision]) -> tuple[str, Outcome]:
        ws, d = item
        try:
            return ws.username, _apply_one(ws, d, now, (owners or {}).get(ws.username), owners is not None)
        except Exception as exc:  # noqa: BLE001 - reported per workspace
            return ws.username, Outcome(kind=OutcomeKind.FAILED, detail=f"failed: {type(exc).__name__}: {exc}"[:300])

    with ThreadPoolExecutor(max_workers=max(1, min(get_settings().kube_concurrency, len(changes) or 1))) as pool:
        return dict(pool.map(one, changes))


def probe_note(p: Probe | None) -> str:
    if p is None:
        return ""
    if not p.ok:
        return f"failed: {p.error}"
    return f"{p.status}, last heartbeat {rfc3339(p.last_heartbeat) if p.last_heartbeat else 'never'}"


class ResumeResult(BaseModel):
    username: str
    was: str
    ready: str


@task(name="start-workspace", tags=[KUBE_API], **RETRY)
def start_workspace(username: str) -> str:
    """Scale a stopped workspace back to one replica; what it found, for the report.

    Guarded: the restore flow sets its guard on the Deployment before it checks that the
    workspace is stopped, and this scale is written with the resourceVersion read here, so
    either the restore sees the replica and refuses, or this sees the guard (or a Conflict,
    retried, then the guard) and refuses. Run after :func:`tasks.workspace.steps.check_restore_guard`,
    which clears a lapsed guard."""
    s = get_settings()
    names = workspace_names(username)
    client = kube.connect()
    dep = client.get("Deployment", s.namespace, names.deployment)
    if dep is None:
        return "absent"
    ann = dep["metadata"].get("annotations") or {}
    if ann.get(RESTORING_ANNOTATION):
        raise PermanentError(f"workspace {username} is being restored ({RESTORING_ANNOTATION}="
                             f"{ann[RESTORING_ANNOTATION]}); it can start when the restore has finished")
    was = ann.get(STOPPED_AT)
    client.patch("Deployment", s.namespace, names.deployment,
                 {"metadata": {"resourceVersion": dep["metadata"]["resourceVersion"]}, "spec": {"replicas": 1}})
    return f"stopped at {was}" if was else f"{dep['spec'].get('replicas', 1)} replica(s)"


@task(name="clear-stop-marks", tags=[KUBE_API], **RETRY)
def clear_stop_marks(username: str, now: datetime) -> None:
    s = get_settings()
    names = workspace_names(username)
    client = kube.connect()
    client.annotate("Deployment", s.namespace, names.deployment, resume_annotations(now))
    for v in client.list("PersistentVolumeClaim", s.namespace, names.selector):
        if (v["metadata"].get("annotations") or {}).get(STOPPED_AT):
            client.annotate("PersistentVolumeClaim", s.namespace, v["metadata"]["name"],
                            {STOPPED_AT: None, DORMANT_DELETED_AT: None})


@task(name="has-kept-volume", tags=[KUBE_API], **RETRY)
def has_kept_volume(username: str) -> bool:
    """Whether the workspace volume is still there (a dormant workspace keeps it)."""
    s = get_settings()
    names = workspace_names(username)
    vols = kube.connect().list("PersistentVolumeClaim", s.namespace, names.selector)
    return any(v["metadata"]["name"] == names.workspace_pvc for v in vols)
