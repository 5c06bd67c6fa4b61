"""Onboarding and offboarding under wrong input, late events, races and production limits.

Real kube-apiserver, helm, Prefect server (with the tag limits bootstrap creates), SMTP
server, and the backup flow's restic Jobs run by the kubelet stand-in into the S3 server.
Each test is named after the failure it rules out.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import datetime, timezone

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.offboarding import offboard_user
from flows.onboarding import onboard_user
from tasks.cluster.limits import KUBE_API, ensure_concurrency_limits
from tasks.core.errors import BackupRequired, InvalidInput
from tasks.core.settings import Settings, get_settings
from tasks.people.hr import parse_request
from tasks.people.identity import UserSpec, get_backend
from tasks.people.ledger import Ledger
from tasks.people.record import State
from tests.fixtures.concurrency import run_in_threads
from tests.fixtures.people import HIRE, event, users_file
from tests.fixtures.storage import make_tree

pytestmark = pytest.mark.usefixtures("prefect_server", "helm_bin")

HIRED = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


def _replicas(kube, ns, user="alice"):
    return kube.get("Deployment", ns, f"ws-{user}")["spec"]["replicas"]


def _artifacts(flow_run_id) -> str:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return "\n".join(str(a.data) for a in found)


def test_termination_with_an_unknown_employee_id_changes_nothing(platform, kube, backup_calls):
    ns = platform["ns"]
    (backup_calls.kubelet.claim_dir("ws-bob-workspace") / "notes.md").write_text("bob's work\n")
    onboard_user(parse_request(HIRE))  # alice is E1001
    onboard_user(parse_request(event("evt-bob", employee_id="E2002", username="bob", email="bob@example.com")))
    before = Ledger().get("alice")

    # Names alice's username, but no one was ever onboarded as E9999.
    with pytest.raises(InvalidInput) as exc:
        offboard_user(parse_request(event("evt-x", "employee.terminated", employee_id="E9999")))

    assert exc.value.field == "employee.employee_id" and "nothing" in str(exc.value)
    assert users_file(kube)["alice"]["disabled"] is False and _replicas(kube, ns) == 1
    assert Ledger().get("alice") == before and Ledger().by_employee("E9999") is None

    # E2002's termination, even naming alice, acts on the username E2002 owns: bob.
    left = offboard_user(parse_request(event("evt-y", "employee.terminated", employee_id="E2002")))
    assert users_file(kube)["bob"]["disabled"] is True and _replicas(kube, ns, "bob") == 0
    assert users_file(kube)["alice"]["disabled"] is False and _replicas(kube, ns) == 1
    assert Ledger().get("bob").state is State.TERMINATED and Ledger().get("alice").state is State.ACTIVE
    assert left.username == "bob" and left.deletion.startswith("defer")


def test_a_late_hire_after_a_termination_does_not_reenable_the_leaver(platform, kube, backup_calls):
    ns, inbox = platform["ns"], platform["inbox"]
    backup_calls.verified = True
    onboard_user(parse_request(HIRE))  # occurred 09:00
    terminate = event("evt-term", "employee.terminated")
    terminate["occurred_at"] = "2026-11-28T17:00:00Z"
    offboard_user(parse_request(terminate))
    late = event("evt-hire-retry")
    late["occurred_at"] = "2026-11-28T12:00:00Z"  # HR's retry of an earlier hire, delivered after

    state = onboard_user(parse_request(late), return_state=True)

    result = state.result()
    assert result.ignored.startswith("stale: hire of 2026-11-28T12:00:00+00:00 is older than the termination")
    assert users_file(kube)["alice"]["disabled"] is True and _replicas(kube, ns) == 0
    rec = Ledger().get("alice")
    assert rec.state is State.TERMINATED and rec.seen("evt-hire-retry")  # recorded, ignored
    assert len(inbox.messages) == 1  # no second welcome
    assert "stale: hire of 2026-11-28T12:00:00+00:00" in _artifacts(state.state_details.flow_run_id)
    assert onboard_user(parse_request(late)).replay is True  # and its replay is a plain replay

    # A late update is as harmless: it does not touch the leaver, and a real re-hire still works.
    newer = event("evt-rehire")
    newer["occurred_at"] = "2026-12-01T09:00:00Z"
    assert onboard_user(parse_request(newer)).identity == "enabled"
    assert users_file(kube)["alice"]["disabled"] is False and _replicas(kube, ns) == 1
    stale_term = event("evt-term-retry", "employee.terminated")
    stale_term["occurred_at"] = "2026-11-30T09:00:00Z"  # older than the re-hire
    assert offboard_user(parse_request(stale_term)).ignored.startswith("stale: termination")
    assert users_file(kube)["alice"]["disabled"] is False and _replicas(kube, ns) == 1


def test_concurrent_hires_of_one_employee_under_two_usernames_make_one_identity(platform, kube, monkeypatch):
    """Both runs look the employee up before either claims (a gate lines them up there),
    which is the interleaving a check-then-claim loses."""
    ns = platform["ns"]
    real = Ledger.by_employee
    gate = threading.Barrier(2, timeout=60)
    calls = {"n": 0}
    lock = threading.Lock()

    def looked_up_together(self, employee_id):
        found = real(self, employee_id)
        with lock:
            calls["n"] += 1
            first_two = calls["n"] <= 2
        if first_two:
            gate.wait()
        return found

    monkeypatch.setattr(Ledger, "by_employee", looked_up_together)
    bodies = [event("evt-d1", employee_id="E7", username="dana", email="dana@example.com"),
              event("evt-d2", employee_id="E7", username="dana2", email="dana@example.com")]
    results, errors = run_in_threads(lambda body: onboard_user(parse_request(body)), bodies)
    assert not errors and len(results) == 2
    (owner,) = {r.username for r in results}
    assert owner in ("dana", "dana2")
    assert [u for u in users_file(kube) if u.startswith("dana")] == [owner]
    assert [r.username for r in Ledger().all()] == [owner]
    assert [d["metadata"]["name"] for d in kube.list("Deployment", ns, "app.kubernetes.io/part-of=vibecode")] \
        == [f"ws-{owner}"]
    assert len(platform["inbox"].messages) == 1


def _leaver(kube, ns, kubelet, i: int) -> str:
    """An onboarded person whose workspace is its volume (what the final backup and the
    deletion rule read); the identity and ledger record are the real ones."""
    user, emp = f"leaver{i}", f"L{i}"
    Ledger().claim(user, emp)
    Ledger().update(user, lambda r: replace(r, state=State.ACTIVE, hired_at=HIRED, changed_at=HIRED))
    get_backend().upsert(UserSpec(user, f"{user}@example.com", "Lea", "Ver", ("users",), emp))
    kube.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {"name": f"ws-{user}-workspace", "namespace": ns,
                              "labels": {"app.kubernetes.io/part-of": "vibecode", "vibecode.dev/volume": "workspace",
                                         "vibecode.dev/user": user}},
                 "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    make_tree(kubelet.claim_dir(f"ws-{user}-workspace"))
    return emp


def test_ten_offboardings_at_once_all_finish_with_kube_api_limited_to_five(platform, kube, backup_settings,
                                                                          job_kubelet):
    ns = platform["ns"]
    emps = [_leaver(kube, ns, job_kubelet, i) for i in range(10)]
    limits = ensure_concurrency_limits(Settings(kube_concurrency=5))
    assert limits[KUBE_API] == 5
    results, errors = [], []

    def run(i, emp):
        try:
            body = event(f"evt-leave-{i}", "employee.terminated", employee_id=emp, username=f"leaver{i}",
                         email=f"leaver{i}@example.com")
            results.append(offboard_user(parse_request(body)))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    try:
        threads = [threading.Thread(target=run, args=(i, e), daemon=True) for i, e in enumerate(emps)]
        started = time.monotonic()
        for t in threads:
            t.start()
        deadline = started + 600  # a deadlock fails here instead of hanging the suite
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = sum(t.is_alive() for t in threads)
    finally:
        ensure_concurrency_limits(get_settings())
    assert stuck == 0, f"{stuck} of 10 offboardings still waiting after 600 s"
    users = users_file(kube)
    assert all(users[f"leaver{i}"]["disabled"] for i in range(10))  # access ended for every one
    # A run whose final backup failed (e.g. the test's Prefect server answering 503 under
    # this load) ends safely: access removed, nothing deleted. Its rerun completes it.
    assert all(isinstance(e, BackupRequired) and "nothing deleted" in str(e) for e in errors), errors
    for e in errors:
        i = int(str(e).split(":", 1)[0].removeprefix("leaver"))
        body = event(f"evt-leave-{i}", "employee.terminated", employee_id=f"L{i}", username=f"leaver{i}",
                     email=f"leaver{i}@example.com")
        results.append(offboard_user(parse_request(body)))
    assert sorted(r.username for r in results) == sorted(f"leaver{i}" for i in range(10))
    assert all(r.identity in ("disabled", "unchanged") and r.backup.startswith("Completed")
               and r.deletion.startswith("defer") for r in results)
    assert all(users[f"leaver{i}"]["disabled"] for i in range(10))
    assert {r.state for r in Ledger().all()} == {State.TERMINATED}


def test_objects_land_in_their_own_namespaces(platform, kube):
    ns, pns = platform["ns"], platform["pns"]
    assert ns != pns and get_settings().namespace == ns and get_settings().platform_namespace == pns
    onboard_user(parse_request(HIRE))
    ledger_sel = "app.kubernetes.io/part-of=vibecode,vibecode.dev/component=onboarding"
    assert [c["metadata"]["name"] for c in kube.list("ConfigMap", pns, ledger_sel)] == ["vibecode-user-alice"]
    assert kube.list("ConfigMap", ns, ledger_sel) == []
    assert kube.get("Secret", pns, "authelia-users") is not None and kube.get("Secret", ns, "authelia-users") is None
    assert kube.get("Deployment", ns, "ws-alice") is not None and kube.get("Deployment", pns, "ws-alice") is None
