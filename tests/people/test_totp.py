"""TOTP pre-provisioning: real kube-apiserver, real Prefect server, real SMTP server.

No kubelet runs here, so a background thread plays the job controller with
``finish_job`` for every provisioning Job that appears.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
import threading
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, unquote, urlparse

import pytest
import yaml

from flows.offboarding import purge_offboarded
from flows.onboarding import onboard_user
from tasks.core.settings import Settings, get_settings
from tasks.people import totp
from tasks.people.hr import parse_request
from tasks.people.ledger import Ledger
from tests.fixtures.kube import finish_job
from tests.fixtures.people import HIRE, event

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)


# -- RFC 4226/6238, computed here so the test does not trust the code under test -------------
def hotp(key: bytes, counter: int, digits: int = 6) -> str:
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    code = (struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 10 ** digits
    return str(code).zfill(digits)


def totp_code(key: bytes, at: float, period: int = 30, digits: int = 6) -> str:
    return hotp(key, int(at // period), digits)


def test_rfc6238_reference_vector():
    assert totp_code(b"12345678901234567890", 59, digits=8) == "94287082"
    assert totp_code(b"12345678901234567890", 1111111109, digits=8) == "07081804"


def test_minted_secret_is_unpadded_base32_of_32_random_bytes_and_gives_a_valid_totp():
    a, b = totp.mint_secret(), totp.mint_secret()
    assert a != b and "=" not in a and len(a) == 52
    key = base64.b32decode(a + "=" * (-len(a) % 8))
    assert len(key) == 32 and totp.decode_secret(a) == key
    code = totp_code(key, time.time())
    assert len(code) == 6 and code.isdigit()
    with pytest.raises(ValueError):
        totp.decode_secret("not base32!")

    uri = totp.otpauth_uri("alice", a, "VibeCode Ops")
    parsed = urlparse(uri)
    assert parsed.scheme == "otpauth" and parsed.netloc == "totp"
    assert unquote(parsed.path) == "/VibeCode Ops:alice"
    q = {k: v[0] for k, v in parse_qs(parsed.query).items()}
    assert q == {"secret": a, "issuer": "VibeCode Ops", "algorithm": "SHA1", "digits": "6", "period": "30"}


def test_expired_handoffs_decides_by_annotation_and_label():
    def secret(name, expires=None, purpose="totp-handoff", part_of="vibecode"):
        meta = {"name": name, "labels": {"app.kubernetes.io/part-of": part_of, "vibecode.dev/purpose": purpose}}
        if expires is not None:
            meta["annotations"] = {totp.EXPIRES_AT: expires}
        return {"metadata": meta}

    found = [secret("vibecode-totp-old", (NOW - timedelta(hours=1)).isoformat()),
             secret("vibecode-totp-exact", NOW.isoformat()),
             secret("vibecode-totp-fresh", (NOW + timedelta(hours=1)).isoformat()),
             secret("vibecode-totp-zulu", "2026-11-27T00:00:00Z"),
             secret("vibecode-totp-undated"),
             secret("vibecode-totp-garbled", "next tuesday"),
             secret("vibecode-totp-naive", "2026-11-27T00:00:00"),
             secret("someone-elses", (NOW - timedelta(days=9)).isoformat(), purpose="other"),
             secret("not-ours", (NOW - timedelta(days=9)).isoformat(), part_of="else")]
    assert totp.expired_handoffs(found, NOW) == sorted(
        ["vibecode-totp-old", "vibecode-totp-exact", "vibecode-totp-zulu", "vibecode-totp-undated",
         "vibecode-totp-garbled", "vibecode-totp-naive"])
    assert totp.expired_handoffs(found, NOW - timedelta(days=2)) == sorted(
        ["vibecode-totp-undated", "vibecode-totp-garbled", "vibecode-totp-naive"])
    assert totp.expired_handoffs([], NOW) == []


def test_manifests_are_accepted_and_the_job_holds_no_secret(kube, platform_namespace):
    s = Settings(platform_namespace=platform_namespace)
    value = totp.mint_secret()
    sec = kube.create(totp.handoff_secret("alice", value, s.identity, s.platform_namespace, NOW), exist_ok=False)
    job = kube.create(totp.provision_job("alice", s.identity, s.platform_namespace), exist_ok=False)

    assert base64.b64decode(sec["data"][totp.SECRET_KEY]).decode() == value
    meta = sec["metadata"]
    assert meta["name"] == "vibecode-totp-alice"
    assert {"app.kubernetes.io/part-of": "vibecode", "vibecode.dev/user": "alice",
            "vibecode.dev/purpose": "totp-handoff"}.items() <= meta["labels"].items()
    assert datetime.fromisoformat(meta["annotations"][totp.EXPIRES_AT]) == NOW + timedelta(hours=72)

    serialized = json.dumps(job) + json.dumps(totp.provision_job("alice", s.identity, s.platform_namespace))
    assert value not in serialized
    assert value[:16] not in serialized and base64.b64encode(value.encode()).decode() not in serialized
    spec = job["spec"]
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == "authelia/authelia:4.39.4" and spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 300
    assert c["args"] == ["storage", "user", "totp", "import", "/handoff/totp.yml",
                         "--config", "/config/configuration.yml"]
    # Pod Security Standards, restricted
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert all(set(v) - {"name"} <= {"secret", "emptyDir"} for v in pod["volumes"])
    config = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config["secret"]["secretName"] == "authelia-config"
    assert next(m for m in c["volumeMounts"] if m["name"] == "config") == {
        "name": "config", "mountPath": "/config", "readOnly": True}


def test_totp_secret_is_in_no_argv_or_environment_of_the_authelia_job(kube, platform_namespace):
    """The Authelia CLI reads the secret from a file of the hand-off Secret volume: the
    container's argv and environment (after the kubelet's $(VAR) expansion) never hold it."""
    s = Settings(platform_namespace=platform_namespace)
    value = totp.mint_secret()
    sec = kube.create(totp.handoff_secret("alice", value, s.identity, s.platform_namespace, NOW), exist_ok=False)
    job = kube.create(totp.provision_job("alice", s.identity, s.platform_namespace), exist_ok=False)
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]

    env = {e["name"]: e for e in c.get("env", [])}
    from_handoff = {n for n, e in env.items()
                    if (e.get("valueFrom") or {}).get("secretKeyRef", {}).get("name") == "vibecode-totp-alice"}
    assert from_handoff == set()  # nothing of the hand-off Secret reaches the environment...
    expanded = " ".join(c["command"] + c["args"])
    for name in env:
        expanded = expanded.replace(f"$({name})", env[name].get("value", "<secret>"))
    assert "<secret>" not in expanded and value not in expanded  # ...or the argv

    # The CLI's input is Authelia's TOTP export document, projected alone from the Secret.
    (vol,) = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "vibecode-totp-alice"]
    assert vol["secret"]["items"] == [{"key": "totp.yml", "path": "totp.yml"}]
    mount = next(m for m in c["volumeMounts"] if m["name"] == vol["name"])
    assert mount["readOnly"] is True and f"{mount['mountPath']}/totp.yml" in c["args"]
    doc = yaml.safe_load(base64.b64decode(sec["data"]["totp.yml"]))
    assert doc == {"totp_configurations": [{
        "created_at": NOW.isoformat(), "username": "alice", "issuer": "VibeCode", "algorithm": "SHA1",
        "digits": 6, "period": 30, "secret": value}]}


# -- the flow -----------------------------------------------------------------------------------
def _job_controller(kube, ns, outcome: dict, stop: threading.Event):
    """Finish every new provisioning Job once, as ``outcome['succeeded']`` says."""
    done: set[str] = set()
    while not stop.is_set():
        for job in kube.list("Job", ns, totp.HANDOFF_SELECTOR):
            uid = job["metadata"]["uid"]
            if uid not in done and not (job.get("status") or {}).get("conditions"):
                time.sleep(0.3)  # let the flow poll a running Job at least once
                finish_job(kube, ns, job["metadata"]["name"], outcome["succeeded"])
                done.add(uid)
        time.sleep(0.1)


@pytest.fixture
def totp_platform(prefect_server, helm_bin, platform, kube, monkeypatch):
    ns = platform["pns"]  # Authelia's configuration, the hand-off Secrets and their Jobs
    monkeypatch.setenv("VIBECODE_TOTP_PREPROVISION", "true")
    monkeypatch.setenv("VIBECODE_TOTP_POLL_SECONDS", "0.1")
    get_settings.cache_clear()
    kube.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                 "metadata": {"name": "authelia-config", "namespace": ns},
                 "stringData": {"configuration.yml": "storage: {}\n"}})
    minted: list[str] = []
    real = totp.mint_secret
    monkeypatch.setattr(totp, "mint_secret", lambda: minted.append(real()) or minted[-1])
    outcome = {"succeeded": True}
    stop = threading.Event()
    t = threading.Thread(target=_job_controller, args=(kube, ns, outcome, stop), daemon=True)
    t.start()
    yield {**platform, "totp": minted, "outcome": outcome}
    stop.set()
    t.join(timeout=5)


def _handoff(kube, ns):
    return kube.get("Secret", ns, "vibecode-totp-alice")


def _jobs(kube, ns):
    return kube.list("Job", ns, totp.HANDOFF_SELECTOR)


def _run_record(run_id, marker: str):
    """Parameters (the run's and its subflows'), logs and artifacts of a flow run, as one string."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [run_id]}))
        for _ in range(50):  # logs reach the server in batches, a moment after the run ends
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            if any(marker in log.message for log in logs):
                break
            time.sleep(0.2)
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return "\n".join([str(run.parameters), str(run.state.message), *(str(c.parameters) for c in children),
                      *(log.message for log in logs), *(str(a.data) + str(a.description) for a in artifacts),
                      *(str(tr.state.message) for tr in task_runs if tr.state)])


def _assert_no_secret(haystack: str, secrets_: list[str]) -> None:
    assert secrets_
    for secret in secrets_:
        assert secret not in haystack
        assert base64.b64encode(secret.encode()).decode() not in haystack


def test_hire_preprovisions_totp_once_and_nothing_leaks(totp_platform, kube):
    ns, inbox, minted = totp_platform["pns"], totp_platform["inbox"], totp_platform["totp"]

    state = onboard_user(parse_request(HIRE), return_state=True)

    assert state.is_completed()
    assert len(minted) == 1
    sec = _handoff(kube, ns)
    assert base64.b64decode(sec["data"]["TOTP_SECRET"]).decode() == minted[0]
    assert sec["metadata"]["labels"]["vibecode.dev/purpose"] == "totp-handoff"
    expires = datetime.fromisoformat(sec["metadata"]["annotations"]["vibecode.dev/expires-at"])
    assert timedelta(hours=71) < expires - datetime.now(timezone.utc) <= timedelta(hours=72)
    (job,) = _jobs(kube, ns)
    assert any(c["type"] == "Complete" for c in job["status"]["conditions"])
    assert minted[0] not in json.dumps(job)
    assert Ledger().get("alice").state == "active" and Ledger().get("alice").seen(HIRE["event_id"])

    run_id = state.state_details.flow_run_id
    haystack = _run_record(run_id, "onboarded alice")
    assert "pre-provisioned (Job vibecode-totp-alice complete)" in haystack  # the artifact and the log say so
    assert "not implemented" not in haystack
    _assert_no_secret(haystack, minted)

    assert len(inbox.messages) == 1
    body = inbox.messages[0].get_content()
    assert "in person" in body and "administrator" in body
    _assert_no_secret(inbox.raw[0].decode(), minted)

    replay = onboard_user(parse_request(HIRE))  # the same event: a no-op
    again = onboard_user(parse_request(event("evt-2026-0002")))  # a second hire event for the same person
    assert replay.replay is True and again.replay is False
    assert len(minted) == 1 and len(_jobs(kube, ns)) == 1
    assert _jobs(kube, ns)[0]["metadata"]["uid"] == job["metadata"]["uid"]
    assert base64.b64decode(_handoff(kube, ns)["data"]["TOTP_SECRET"]).decode() == minted[0]


def test_failed_job_fails_the_run_leaves_no_secret_and_a_rerun_retries(totp_platform, kube):
    ns, minted = totp_platform["pns"], totp_platform["totp"]
    totp_platform["outcome"]["succeeded"] = False

    state = onboard_user(parse_request(HIRE), return_state=True)

    assert state.is_failed()
    assert "TOTP pre-provisioning for alice failed" in state.message
    assert _handoff(kube, ns) is None  # no orphaned secret
    (failed,) = _jobs(kube, ns)  # kept for its logs
    assert any(c["type"] == "Failed" for c in failed["status"]["conditions"])
    rec = Ledger().get("alice")
    assert not rec.seen(HIRE["event_id"]) and "TOTP" in rec.last_error and rec.welcome_sent
    assert len(totp_platform["inbox"].messages) == 1  # the rest of onboarding happened
    _assert_no_secret(_run_record(state.state_details.flow_run_id, "TOTP pre-provisioning"), minted)

    totp_platform["outcome"]["succeeded"] = True
    result = onboard_user(parse_request(HIRE))  # the rerun retries TOTP with a fresh secret

    assert result.replay is False and result.email == "already sent"
    assert len(minted) == 2 and minted[0] != minted[1]
    (job,) = _jobs(kube, ns)
    assert job["metadata"]["uid"] != failed["metadata"]["uid"]
    assert any(c["type"] == "Complete" for c in job["status"]["conditions"])
    assert base64.b64decode(_handoff(kube, ns)["data"]["TOTP_SECRET"]).decode() == minted[1]
    rec = Ledger().get("alice")
    assert rec.seen(HIRE["event_id"]) and rec.last_error == "" and rec.state == "active"
    assert len(totp_platform["inbox"].messages) == 1


def test_a_missing_authelia_config_fails_before_minting(totp_platform, kube):
    ns = totp_platform["pns"]
    kube.delete("Secret", ns, "authelia-config")
    state = onboard_user(parse_request(HIRE), return_state=True)
    assert state.is_failed() and "authelia-config" in state.message
    assert totp_platform["totp"] == [] and _handoff(kube, ns) is None and _jobs(kube, ns) == []


def test_cli_hands_off_once(totp_platform, kube, capsys):
    from vibecode_cli import main as cli

    ns = totp_platform["pns"]
    assert cli(["totp-handoff", "alice"]) == 1  # nothing yet
    assert "nothing to hand off" in capsys.readouterr().err

    onboard_user(parse_request(HIRE))
    (secret,) = totp_platform["totp"]

    assert cli(["totp-handoff", "alice"]) == 0
    out = capsys.readouterr().out
    assert out.count(f"otpauth://totp/VibeCode%3Aalice?secret={secret}&issuer=VibeCode") == 1
    assert _handoff(kube, ns) is None  # one-time

    assert cli(["totp-handoff", "alice"]) == 1
    captured = capsys.readouterr()
    assert "nothing to hand off for alice" in captured.err and secret not in captured.out + captured.err
    assert cli(["totp-handoff", "../etc"]) == 2


def test_cli_refuses_before_authelia_has_the_secret(kube, platform_namespace, capsys):
    from vibecode_cli import main as cli

    s = get_settings()
    value = totp.mint_secret()
    kube.create(totp.handoff_secret("bob", value, s.identity, s.platform_namespace, datetime.now(timezone.utc)))
    kube.create(totp.provision_job("bob", s.identity, s.platform_namespace))  # no controller: still running
    assert cli(["totp-handoff", "bob"]) == 1
    captured = capsys.readouterr()
    assert "not registered" in captured.err and value not in captured.out + captured.err
    assert kube.get("Secret", platform_namespace, "vibecode-totp-bob") is not None


@pytest.mark.usefixtures("prefect_server")
def test_purge_deletes_expired_handoff_secrets_only(kube, platform_namespace):
    s = get_settings()
    now = datetime.now(timezone.utc)
    kube.create(totp.handoff_secret("old", totp.mint_secret(), s.identity, s.platform_namespace, now - timedelta(hours=73)))
    kube.create(totp.handoff_secret("new", totp.mint_secret(), s.identity, s.platform_namespace, now - timedelta(hours=1)))

    out = purge_offboarded(now=now)

    assert out == {"(expired TOTP hand-offs)": "deleted: vibecode-totp-old"}
    assert kube.get("Secret", platform_namespace, "vibecode-totp-old") is None
    assert kube.get("Secret", platform_namespace, "vibecode-totp-new") is not None
    assert purge_offboarded(now=now) == {}


def test_waiting_for_a_job_that_never_ends_is_a_transient_timeout(kube, platform_namespace):
    from tasks.core.errors import Timeout, is_transient
    from tasks.people.totp_steps import _wait_for_job

    s = get_settings()
    kube.create(totp.provision_job("carol", s.identity, s.platform_namespace))  # no controller: it never ends
    t0 = time.monotonic()
    with pytest.raises(Timeout) as exc:
        _wait_for_job(kube, platform_namespace, "vibecode-totp-carol", timeout=0.6, first_poll=0.1)
    assert is_transient(exc.value) and time.monotonic() - t0 < 3
    finish_job(kube, platform_namespace, "vibecode-totp-carol", succeeded=False)
    assert _wait_for_job(kube, platform_namespace, "vibecode-totp-carol", timeout=5, first_poll=0.1)[0] == "failed"


# (Job state, Secret state) -> plan
PLANS = [
    ("succeeded", "valid", totp.ProvisionPlan(done=True)),
    ("succeeded", "absent", totp.ProvisionPlan(done=True)),  # handed off already: still done
    ("running", "valid", totp.ProvisionPlan()),  # only wait
    ("failed", "valid", totp.ProvisionPlan(delete_job=True, delete_secret=True, create_secret=True, create_job=True)),
    ("failed", "absent", totp.ProvisionPlan(delete_job=True, delete_secret=True, create_secret=True,
                                            create_job=True)),
    ("absent", "absent", totp.ProvisionPlan(create_secret=True, create_job=True)),
    ("absent", "valid", totp.ProvisionPlan(create_job=True)),  # a concurrent run's secret is reused
    ("absent", "expired", totp.ProvisionPlan(delete_secret=True, create_secret=True, create_job=True)),
]


@pytest.mark.parametrize("job, secret, plan", PLANS)
def test_provision_plan_table(job, secret, plan):
    assert totp.provision_plan(job, secret) == plan


def test_handoff_verdict_table():
    s = Settings()
    fresh = totp.handoff_secret("alice", totp.mint_secret(), s.identity, s.platform_namespace, NOW)
    assert totp.handoff_verdict(None, "succeeded", NOW) == "nothing"
    assert totp.handoff_verdict(fresh, "running", NOW) == "not registered"
    assert totp.handoff_verdict(fresh, "absent", NOW) == "not registered"
    assert totp.handoff_verdict(fresh, "succeeded", NOW) == "hand off"
    assert totp.handoff_verdict(fresh, "succeeded", NOW + timedelta(hours=73)) == "expired"
    assert totp.secret_state(None, NOW) == "absent"
    assert totp.secret_state(fresh, NOW) == "valid"
    assert totp.secret_state(fresh, NOW + timedelta(hours=73)) == "expired"
