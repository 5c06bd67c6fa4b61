"""Steps that onboarding and offboarding both take on one person's ledger record and
workspace. Orchestration only: the decisions are in :mod:`tasks.identity.record`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from prefect import task
from pydantic import BaseModel

from flows.common import KUBE_API, transient_retries
from tasks.identity.ledger import Ledger
from tasks.identity.record import Admission, EventKind, Record, State, admit, finish_event
from tasks.kube import connect
from tasks.names import workspace_names
from tasks.settings import get_settings

RETRY = transient_retries(4, backoff_factor=1)


class EventResult(BaseModel):
    """What an HR event did to one person (each process adds its own steps)."""

    username: str
    event_id: str
    identity: str
    workspace: str
    ignored: str = ""  # why a stale event changed nothing


@task(name="admit-event", tags=[KUBE_API], **RETRY)
def admit_event(username: str, kind: EventKind, event_id: str, occurred_at: datetime, now: datetime) -> Admission:
    """Judge the event against the newest applied ones and, if it is not stale, record its
    effect on the employment, in one compare-and-swap (a stale event is recorded only)."""
    verdict: list[Admission] = []

    def change(r: Record) -> Record:
        verdict[:] = [admit(r, kind, event_id, occurred_at, now)]
        return verdict[0].record

    rec = Ledger().update(username, change)
    return Admission(rec, verdict[0].ignored)


@task(name="scale-workspace", tags=[KUBE_API], **RETRY)
def scale_workspace(username: str, replicas: int) -> str:
    s = get_settings()
    kube = connect(s)
    name = workspace_names(username).deployment
    dep = kube.get("Deployment", s.namespace, name)
    if dep is None:
        return "absent"
    if dep["spec"].get("replicas") == replicas:
        return f"already at {replicas}"
    kube.scale(s.namespace, name, replicas)
    return f"scaled to {replicas}"


@task(name="record-event", tags=[KUBE_API], **RETRY)
def record_event(username: str, event_id: str, state: State | None = None) -> Record:
    """Last step: only a run that did everything marks its event done."""
    return Ledger().update(username, lambda r: finish_event(r, event_id, state))


def note_failure(username: str, exc: BaseException) -> None:
    """Leave the failure on the record, so a half-done person is noticed (best effort)."""
    try:
        Ledger().update(username, lambda r: replace(r, last_error=f"{type(exc).__name__}: {str(exc)[:300]}"))
    except Exception:  # noqa: BLE001 - the original failure is what matters
        pass
