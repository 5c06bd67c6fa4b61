"""The ledger's compare-and-swap on the real API server: ``Ledger.decide`` returns the record
as stored and the verdict of the very attempt that was stored, however many writers race."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tasks.core.errors import PermanentError
from tasks.people.ledger import Ledger
from tests.fixtures.concurrency import run_in_threads


def _bump(rec):
    """A decision whose verdict depends on what it read: the count it wrote."""
    n = int(rec.last_error or 0) + 1
    return replace(rec, last_error=str(n)), n


def test_racing_decisions_each_return_the_verdict_that_was_stored(kube, platform_namespace):
    ledger = Ledger()
    ledger.claim("alice", "E1001")

    results, errors = run_in_threads(lambda _: ledger.decide("alice", _bump), range(8))

    assert errors == []
    assert sorted(verdict for _, verdict in results) == list(range(1, 9))  # no verdict of a lost attempt
    assert all(rec.last_error == str(verdict) for rec, verdict in results)
    assert ledger.get("alice").last_error == "8"


def test_a_decision_that_changes_nothing_writes_nothing(kube, platform_namespace):
    ledger = Ledger()
    before = ledger.claim("bob", "E1002")

    rec, verdict = ledger.decide("bob", lambda r: (r, "unchanged"))

    assert verdict == "unchanged" and rec.resource_version == before.resource_version
    assert ledger.update("bob", lambda r: r).resource_version == before.resource_version


def test_no_record_is_refused(kube, platform_namespace):
    with pytest.raises(PermanentError, match="no ledger record for carol"):
        Ledger().decide("carol", lambda r: (r, None))
