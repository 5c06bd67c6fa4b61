"""onboard_user end to end: real kube-apiserver + helm, real Prefect server, real SMTP server."""

from __future__ import annotations

import json
import sys
import time

import argon2
import pytest
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.onboarding import onboard_user, run_hr_event
from tasks.cluster import helm
from tasks.core.errors import InvalidInput
from tasks.core.settings import get_settings
from tasks.people.hr import parse_request
from tasks.people.ledger import Ledger
from tasks.people.steps import claim_username, ensure_identity
from tests.fixtures.concurrency import run_in_threads
from tests.fixtures.people import HIRE, event, users_file

pytestmark = pytest.mark.usefixtures("prefect_server", "helm_bin")


@pytest.mark.flows_identity  # runs as the flows' ServiceAccount (tests/fixtures/kube.py)
def test_hire_creates_user_workspace_and_exactly_one_email(platform, kube):
    ns, inbox = platform["ns"], platform["inbox"]

    result = onboard_user(parse_request(HIRE))

    assert result.username == "alice" and result.url == "https://alice.vibecode.dev" and not result.replay
    entry = users_file(kube)["alice"]
    assert entry["groups"] == ["developers", "engineering"] and entry["disabled"] is False
    assert entry["email"] == "alice@example.com"
    assert argon2.PasswordHasher().verify(entry["password"], platform["minted"][0])
    assert helm.status("ws-alice", ns) is not None
    assert kube.get("Deployment", ns, "ws-alice") is not None

    assert len(inbox.messages) == 1
    raw = inbox.raw[0].decode()
    assert "https://alice.vibecode.dev" in raw and "reset-password" in raw
    assert all(secret not in raw for secret in platform["minted"])
    assert entry["password"] not in raw and "argon2" not in raw

    rec = Ledger().get("alice")
    assert rec.state == "active" and rec.seen("evt-2026-0001") and rec.welcome_sent


def test_replays_and_duplicate_hires_converge_to_one_of_everything(platform, kube):
    ns, inbox = platform["ns"], platform["inbox"]
    onboard_user(parse_request(HIRE))
    revision = helm.status("ws-alice", ns).revision
    rv = kube.get("Secret", platform["pns"], "authelia-users")["metadata"]["resourceVersion"]

    replay = onboard_user(parse_request(HIRE))  # same event_id
    again = onboard_user(parse_request(event("evt-2026-0002")))  # same employee hired twice

    assert replay.replay is True
    assert again.replay is False and again.identity == "unchanged" and again.email == "already sent"
    assert list(users_file(kube)) == ["alice"]
    assert kube.get("Secret", platform["pns"], "authelia-users")["metadata"]["resourceVersion"] == rv
    assert helm.status("ws-alice", ns).revision == revision
    assert len(inbox.messages) == 1
    assert len(platform["minted"]) == 1  # one password ever minted


def test_update_changes_name_email_and_groups_in_place(platform, kube):
    onboard_user(parse_request(HIRE))
    upd = event("evt-2026-0003", "employee.updated", email="a.liddell@example.com", username=None,
                family_name="Hargreaves", groups=["sre"])
    result = onboard_user(parse_request(upd))  # username derived from the new email is ignored: E1001 is alice
    assert result.username == "alice" and result.identity == "updated"
    entry = users_file(kube)["alice"]
    assert entry["email"] == "a.liddell@example.com" and entry["displayname"] == "Alice Hargreaves"
    assert entry["groups"] == ["engineering", "sre"]
    assert set(users_file(kube)) == {"alice"} and len(platform["inbox"].messages) == 1


def test_a_username_held_by_another_employee_is_refused(platform, kube):
    onboard_user(parse_request(HIRE))
    with pytest.raises(InvalidInput, match="another employee"):
        onboard_user(parse_request(event("evt-9", employee_id="E2002", email="alice2@example.com")))
    assert users_file(kube)["alice"]["email"] == "alice@example.com"


def test_failure_between_identity_and_workspace_then_rerun_completes(platform, kube, monkeypatch):
    ns, inbox = platform["ns"], platform["inbox"]
    monkeypatch.setenv("VIBECODE_WORKSPACE_CHART", "/nonexistent/chart")  # the workspace step will fail
    get_settings.cache_clear()

    state = onboard_user(parse_request(HIRE), return_state=True)

    assert state.is_failed()
    assert "alice" in users_file(kube)  # identity made...
    assert helm.status("ws-alice", ns) is None and len(inbox.messages) == 0  # ...workspace and email not
    rec = Ledger().get("alice")
    assert rec.state == "onboarding" and rec.last_error and not rec.seen("evt-2026-0001")  # noticed

    monkeypatch.delenv("VIBECODE_WORKSPACE_CHART")
    get_settings.cache_clear()
    result = onboard_user(parse_request(HIRE))  # the rerun resumes

    assert result.identity == "unchanged" and result.email.startswith("sent")
    assert list(users_file(kube)) == ["alice"] and helm.status("ws-alice", ns) is not None
    assert len(inbox.messages) == 1
    rec = Ledger().get("alice")
    assert rec.state == "active" and rec.last_error == ""


def test_fifty_concurrent_hires_lose_and_duplicate_nothing(platform, kube):
    requests = [parse_request(event(f"evt-{i}", employee_id=f"E{i:04d}", username=f"hire{i:02d}",
                                    email=f"hire{i:02d}@example.com")) for i in range(50)]

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=50))
    def hire_identities(reqs):
        claims = claim_username.map(reqs)
        return ensure_identity.map(reqs, [r.username for r in reqs], wait_for=[claims]).result()

    assert hire_identities(requests) == ["created"] * 50
    users = users_file(kube)
    assert sorted(users) == sorted(r.username for r in requests)
    assert len({u["password"] for u in users.values()}) == 50
    assert len(Ledger().all()) == 50


def test_a_few_full_onboardings_run_concurrently(platform, kube):
    bodies = [event(f"evt-c{i}", employee_id=f"C{i}", username=f"conc{i}", email=f"conc{i}@example.com")
              for i in range(3)]
    _, errors = run_in_threads(run_hr_event, bodies)
    assert not errors
    assert sorted(users_file(kube)) == ["conc0", "conc1", "conc2"]
    assert sorted(m["To"].addresses[0].username for m in platform["inbox"].messages) == ["conc0", "conc1", "conc2"]
    assert all(helm.status(f"ws-conc{i}", platform["ns"]) for i in range(3))


HOSTILE = [{"username": "../../etc/passwd"}, {"username": "alice;rm -rf /"}, {"username": "аlice"},
           {"username": "x" * 10_000}, {"username": "admin"}, {"username": "kube-proxy"},
           {"username": None, "email": "$(reboot)@example.com"}, {"username": None, "email": "www@example.com"},
           {"email": "alice@example.com\r\nBcc: everyone@example.com"}, {"given_name": "<script>"}]


@pytest.mark.parametrize("patch", HOSTILE)
def test_hostile_requests_are_refused_and_create_nothing(platform, kube, patch):
    ns = platform["ns"]
    with pytest.raises(InvalidInput) as exc:
        run_hr_event(event(**patch))
    assert exc.value.field.startswith("employee.")
    assert users_file(kube) == {} and Ledger().all() == []
    assert kube.list("Deployment", ns, "app.kubernetes.io/part-of=vibecode") == []
    assert platform["inbox"].messages == []


def test_the_flow_itself_refuses_an_invalid_parameter(platform, kube):
    state = onboard_user(event(username="../../etc"), return_state=True)
    assert state.is_failed()
    assert users_file(kube) == {} and Ledger().all() == []


def test_no_secret_reaches_logs_artifacts_or_parameters(platform, kube):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    state = onboard_user(parse_request(HIRE), return_state=True)
    assert state.is_completed()
    run_id = state.state_details.flow_run_id
    secrets_ = [*platform["minted"], users_file(kube)["alice"]["password"]]
    assert platform["minted"]

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id={"any_": [run_id]}))  # provision_workspace subflow, if filterable
        for _ in range(50):  # logs reach the server in batches, a moment after the run ends
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            if any("onboarded alice" in log.message for log in logs):
                break
            time.sleep(0.2)
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    haystack = "\n".join([str(run.parameters), *(str(c.parameters) for c in children),
                          *(log.message for log in logs),
                          *(str(a.data) + str(a.description) for a in artifacts)])
    assert "onboarded alice" in haystack and "onboard-alice" in [a.key for a in artifacts]
    for secret in secrets_:
        assert secret not in haystack


def test_cli_onboard_and_offboard_run_the_flows(platform, kube, tmp_path, capsys):
    from vibecode_cli import main as cli

    hire = tmp_path / "hire.json"
    hire.write_text(json.dumps(HIRE))
    assert cli(["onboard", str(hire), "--json"]) == 0
    out = capsys.readouterr().out
    print(f"\n$ vibecode onboard hire.json --json\n{out}", file=sys.__stderr__)  # shown with -s
    assert json.loads(out)["url"] == "https://alice.vibecode.dev"  # stdout is the JSON document alone
    assert users_file(kube)["alice"]["disabled"] is False

    assert cli(["offboard", str(hire)]) == 2  # a hire is not an offboarding: refused, nothing changed
    assert "type" in capsys.readouterr().err
    assert users_file(kube)["alice"]["disabled"] is False

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli(["onboard", str(bad)]) == 2
    assert "event: is not JSON" in capsys.readouterr().err
