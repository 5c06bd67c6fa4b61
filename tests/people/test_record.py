"""The ledger record's decisions, table-driven: event order, employment transitions,
the welcome-email claim, and the wire format. Pure: no server."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from tasks.people.record import (
    WELCOME_CLAIM_SECONDS,
    Record,
    State,
    Welcome,
    WelcomeStatus,
    admit,
    claim_welcome,
    finish_event,
    from_data,
    release_welcome,
    stale_reason,
    to_data,
    welcome_sent,
)

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def t(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def rec(**kw) -> Record:
    return Record("alice", "E1", **kw)


# (record before, event kind, occurred_at, stale?)
ORDER = [
    (rec(), "hire", t(0), False),
    (rec(left_at=t(5)), "hire", t(4), True),  # the late hire after a termination
    (rec(left_at=t(5)), "hire", t(5), False),  # equal times are one HR change, not stale
    (rec(left_at=t(5)), "hire", t(6), False),  # a real re-hire
    (rec(hired_at=t(5)), "termination", t(4), True),  # a late termination after a re-hire
    (rec(hired_at=t(5)), "termination", t(6), False),
    (rec(changed_at=t(5)), "update", t(4), True),  # an older update after a newer one
    (rec(changed_at=t(5)), "update", t(6), False),
    (rec(changed_at=t(5)), "hire", t(4), False),  # starts its employment; keeps the newer data (below)
    (rec(changed_at=t(5)), "termination", t(4), False),  # data and employment do not conflict
    (rec(left_at=t(5)), "update", t(4), False),  # a leaver's data still follows HR
    # the very same moment: HR's event ids order them
    (rec(left_at=t(5), left_by="evt-0002"), "hire", t(5), True),
    (rec(left_at=t(5), left_by="evt-0002"), "hire", t(5), False),
    (rec(changed_at=t(5), changed_by="evt-0002"), "update", t(5), True),
]
ORDER_IDS = ["", "", "", "", "", "", "", "", "", "", "", "evt-0001", "evt-0003", "evt-0001"]


@pytest.mark.parametrize("before, kind, at, stale, event_id", [(*row, i) for row, i in zip(ORDER, ORDER_IDS,
                                                                                             strict=True)])
def test_stale_reason_table(before, kind, at, stale, event_id):
    reason = stale_reason(before, kind, at, event_id)
    assert (reason is not None) == stale
    if stale:
        assert reason.startswith("stale: ") and at.isoformat() in reason


def test_a_stale_event_is_recorded_and_changes_nothing_else():
    before = rec(state=State.TERMINATED, left_at=t(5), terminated_at=NOW)
    a = admit(before, "hire", "evt-late", t(4), NOW)
    assert not a.applies and "termination" in a.ignored
    # and remembered as the newest hire seen: a termination older than it is stale in HR's order too
    assert a.record == replace(before, events=("evt-late",), hired_at=t(4), hired_by="evt-late")


# (record before, kind, occurred_at) -> expected fields after
TRANSITIONS = [
    (rec(), "hire", t(1), dict(state=State.ONBOARDING, hired_at=t(1), changed_at=t(1))),
    (rec(state=State.ACTIVE, hired_at=t(1), changed_at=t(1)), "update", t(2),
     dict(state=State.ACTIVE, changed_at=t(2))),
    (rec(state=State.ACTIVE, hired_at=t(1)), "termination", t(3),
     dict(state=State.TERMINATED, left_at=t(3), terminated_at=NOW, welcome=Welcome())),
    (rec(state=State.TERMINATED, left_at=t(3), terminated_at=t(4)), "termination", t(3),  # second one
     dict(state=State.TERMINATED, terminated_at=t(4))),  # keeps the first retention start
    (rec(state=State.TERMINATED, left_at=t(3), terminated_at=t(4), welcome=Welcome(WelcomeStatus.SENT, "", t(1)),
         last_error="x"), "hire", t(9),
     dict(state=State.ONBOARDING, terminated_at=None, welcome=Welcome(), last_error="", hired_at=t(9))),
    (rec(state=State.PURGED, left_at=t(3), purged_at=t(8)), "hire", t(9),
     dict(state=State.ONBOARDING, purged_at=t(8))),  # purged_at stays until the restore is done
    (rec(state=State.TERMINATED, changed_at=t(1)), "update", t(4),  # a leaver's data, not their access
     dict(state=State.TERMINATED, changed_at=t(4), changed_by="evt", person='{"p": 1}')),
    (rec(state=State.TERMINATED, left_at=t(3), changed_at=t(5), person='{"p": 0}'), "hire", t(4),
     dict(state=State.ONBOARDING, hired_at=t(4), changed_at=t(5), person='{"p": 0}')),  # newer data kept
]


@pytest.mark.parametrize("before, kind, at, expect", TRANSITIONS)
def test_admit_transitions(before, kind, at, expect):
    a = admit(before, kind, "evt", at, NOW, person='{"p": 1}')
    assert a.applies
    for k, v in expect.items():
        assert getattr(a.record, k) == v, k


def test_the_outcome_does_not_depend_on_arrival_order():
    """Every order of one person's events, three of them at the very same moment, ends in
    one record (events aside, which keep their arrival order): what the soak relies on."""
    from itertools import permutations

    events = [("hire", "e1", t(0)), ("update", "e2", t(1)), ("termination", "e3", t(1)),
              ("hire", "e4", t(1)), ("update", "e5", t(0.5))]
    ends = set()
    for order in permutations(events):
        r = rec()
        for kind, eid, at in order:
            r = admit(r, kind, eid, at, NOW, person=eid if kind != "termination" else "").record
        ends.add(replace(r, events=(), terminated_at=None, welcome=Welcome()))
    assert len(ends) == 1, ends
    (end,) = ends
    assert end.person == "e4" and end.state is State.ONBOARDING and end.left_at == t(1)


def test_a_replayed_event_is_admitted_unchanged():
    before = rec(events=("evt",), left_at=t(5))
    assert admit(before, "hire", "evt", t(1), NOW).record == before


# (welcome before, run asking, now) -> (step, welcome after)
FRESH = T0 + timedelta(seconds=10)
OLD = T0 + timedelta(seconds=WELCOME_CLAIM_SECONDS + 1)
WELCOME = [
    (Welcome(), "r1", T0, "send", Welcome(WelcomeStatus.CLAIMED, "r1", T0)),
    (Welcome(WelcomeStatus.SENT, "", T0), "r1", FRESH, "already sent", Welcome(WelcomeStatus.SENT, "", T0)),
    (Welcome(WelcomeStatus.CLAIMED, "r2", T0), "r1", FRESH, "busy", Welcome(WelcomeStatus.CLAIMED, "r2", T0)),
    (Welcome(WelcomeStatus.CLAIMED, "r2", T0), "r1", OLD, "send", Welcome(WelcomeStatus.CLAIMED, "r1", OLD)),
    (Welcome(WelcomeStatus.CLAIMED, "r1", T0), "r1", FRESH, "send", Welcome(WelcomeStatus.CLAIMED, "r1", FRESH)),
]


@pytest.mark.parametrize("before, run, now, step, after", WELCOME)
def test_claim_welcome_table(before, run, now, step, after):
    new, got = claim_welcome(rec(welcome=before), run, now)
    assert got == step and new.welcome == after


@pytest.mark.parametrize("state", [State.TERMINATED, State.PURGED])
@pytest.mark.parametrize("welcome", [Welcome(), Welcome(WelcomeStatus.CLAIMED, "r2", T0)])
def test_no_welcome_is_claimed_for_a_person_who_has_left_meanwhile(state, welcome):
    """The HR soak's 40-event run: a hire's run reached its welcome after the termination
    of the same person was admitted, and welcomed a leaver."""
    before = rec(state=state, welcome=welcome)
    assert claim_welcome(before, "r1", FRESH) == (before, "left")
    assert welcome_sent(before, FRESH) == before  # a mark after the termination's reset leaves it alone


def test_release_and_sent():
    mine = rec(welcome=Welcome(WelcomeStatus.CLAIMED, "r1", T0))
    assert release_welcome(mine, "r1").welcome == Welcome()
    assert release_welcome(mine, "r2") == mine  # never someone else's claim
    assert welcome_sent(mine, NOW).welcome_sent


@pytest.mark.parametrize("raw, expected", [
    ("", Welcome()),
    (f"claimed:abc-123:{T0.isoformat()}", Welcome(WelcomeStatus.CLAIMED, "abc-123", T0)),
    (f"sent:{T0.isoformat()}", Welcome(WelcomeStatus.SENT, "", T0)),
    (Welcome(WelcomeStatus.CLAIMED, "r", T0).encode(), Welcome(WelcomeStatus.CLAIMED, "r", T0)),
])
def test_welcome_reads_the_old_strings_and_its_own_encoding(raw, expected):
    assert Welcome.decode(raw) == expected


def test_record_round_trips_through_configmap_data():
    full = rec(state=State.TERMINATED, events=("a", "b"), welcome=Welcome(WelcomeStatus.SENT, "", T0),
               terminated_at=NOW, hired_at=t(1), changed_at=t(2), left_at=t(3), last_error="boom")
    data = to_data(full)
    assert all(isinstance(v, str) for v in data.values()) and data["state"] == "terminated"
    assert from_data(data) == full
    assert finish_event(full, "c", State.PURGED) == replace(full, events=("a", "b", "c"), state=State.PURGED,
                                                            last_error="")
    with pytest.raises(ValueError):
        from_data({**data, "state": "deleted"})  # a state we never write is an error, not a string


def test_a_run_does_not_undo_the_employment_a_newer_event_began():
    """A termination's run that ends after a re-hire was admitted, and a hire's run that ends
    after a termination was, record their event but leave the state the newer one set."""
    rehired, ended = rec(state=State.ONBOARDING), rec(state=State.TERMINATED)
    assert finish_event(rehired, "evt-term", State.TERMINATED).state is State.ONBOARDING
    assert finish_event(ended, "evt-hire", State.ACTIVE).state is State.TERMINATED
    assert finish_event(rehired, "evt-hire", State.ACTIVE).state is State.ACTIVE
    assert finish_event(ended, "evt-term", State.PURGED).state is State.PURGED
    assert finish_event(ended, "evt-term", State.PURGED).seen("evt-term")
