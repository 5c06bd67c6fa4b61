"""The session-wide secrets-hygiene check (tests/fixtures/secrets_hygiene.py) can fail: a secret
the product generates, planted in each kind of sink, is found there and named without being
printed, and one kept in its Secret is not. Each test takes back what it planted, so the
session's own check stays about the rest of the suite."""

from __future__ import annotations

import base64
import logging
import secrets
import time
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.people.identity import passwords
from tests.fixtures import secrets_hygiene as hygiene
from tests.fixtures.secret_stores import scan_kube, scan_prefect


def _forms(secret: str) -> list[str]:
    return [secret, base64.b64encode(secret.encode()).decode()]


def _take(secret: str) -> list[hygiene.Finding]:
    return [f for form in _forms(secret) for f in hygiene.planted(form)]


def _quiet_logger(name: str) -> logging.Logger:
    """A logger whose records reach no handler (so no captured output holds the plant), only
    the record factory every record passes through."""
    log = logging.getLogger(name)
    log.propagate = False
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    return log


def test_a_generated_secret_in_a_log_record_or_its_exception_is_found(request):
    secret = passwords.random_secret()  # the product's generator: registered through secrets.token_bytes
    try:
        _quiet_logger("vibecode.hygiene.plant").warning("your password is %s", secret)
        try:
            try:
                raise RuntimeError(f"login refused for {base64.b64encode(secret.encode()).decode()}")
            except RuntimeError as exc:
                raise ValueError("login failed") from exc  # the cause holds it, not the exception logged
        except ValueError:
            _quiet_logger("vibecode.hygiene.exc").exception("login failed")  # nor the message
        _quiet_logger("vibecode.hygiene.clean").warning("onboarded alice")
    finally:
        found = _take(secret)
    assert {f.place for f in found} == {"logger 'vibecode.hygiene.plant'", "logger 'vibecode.hygiene.exc'"}
    assert {f.sink for f in found} == {"log record"}
    assert {f.test for f in found} == {request.node.nodeid}
    assert all(f.origin.startswith("tasks/people/identity/passwords.py:") for f in found)
    assert all(secret not in str(f) and f.form not in str(f) and hygiene.redacted(f.form) in str(f) for f in found)


def test_a_secret_in_a_failure_report_or_captured_output_is_found():
    secret = secrets.token_urlsafe(24)  # a test's own secret: registered as well
    report = pytest.TestReport("tests/x.py::t", ("tests/x.py", 1, "t"), {}, "failed",
                               f"AssertionError: {secret!r} != 'x'", "call",
                               sections=[("Captured stdout call", "nothing here")])
    try:
        hygiene.pytest_runtest_logreport(report)
        passed = pytest.TestReport("tests/x.py::u", ("tests/x.py", 2, "u"), {}, "passed", None, "call",
                                   sections=[("Captured stdout call", f"token: {secret}")])
        hygiene.pytest_runtest_logreport(passed)
    finally:
        found = _take(secret)
    assert sorted((f.sink, f.place, f.test) for f in found) == [
        ("failure report", "call", "tests/x.py::t"), ("test output", "Captured stdout call", "tests/x.py::u")]


def test_short_values_and_libraries_values_are_not_registered():
    short = secrets.token_hex(5)  # a name's suffix, 10 characters: would match by chance
    scope: dict = {}
    exec(compile("import secrets\nv = secrets.token_urlsafe(32)", str(hygiene.ROOT / ".venv/lib/x.py"), "exec"),
         scope)  # a library's token (a lock's, a multipart boundary) is not a secret of ours
    assert short not in hygiene.REGISTRY.origin and scope["v"] not in hygiene.REGISTRY.origin
    mine = secrets.token_hex(6)
    assert hygiene.REGISTRY.origin[mine].startswith("tests/resilience/test_secrets_hygiene.py:")


@given(st.text(alphabet="abcXYZ019_-+/= .:\n\"", max_size=40), st.text(alphabet="abc-.: ", max_size=40))
def test_the_registry_finds_a_form_at_any_offset(before, after):
    registry = hygiene.Registry()
    registry.add("Zq3_kP9-xW2mT7vRy", "here:1")
    absent = hygiene.Registry()
    absent.add("Zq3_kP9-xW2mT7vRQ", "here:2")  # the same but for its last character
    text = before + "Zq3_kP9-xW2mT7vRy" + after
    assert registry.find(text) == {"Zq3_kP9-xW2mT7vRy"}
    assert absent.find(text) == set()


def test_a_secret_in_a_cluster_object_or_a_prefect_artifact_is_found_and_one_in_its_secret_is_not(
        kube, namespace, apiserver, prefect_server, prefect_secrets_scan):
    from prefect.artifacts import create_markdown_artifact
    from prefect.client.orchestration import get_client

    secret = passwords.random_secret()
    started = time.time()
    ref = {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "holder", "key": "password"}}}
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "holder", "namespace": namespace},
         "stringData": {"password": secret}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plant", "namespace": namespace},
         "data": {"settings.yaml": f"password: {secret}\n"}},
        *({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
           "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
               "metadata": {"labels": {"app": name}},
               "spec": {"containers": [{"name": "c", "image": "busybox", "env": [env]}]}}}}
          for name, env in (("literal", {"name": "PASSWORD", "value": secret}), ("by-reference", ref))),
    ]
    artifact: UUID | None = None
    try:
        for obj in objects:
            kube.create(obj)
        created = create_markdown_artifact(markdown=f"# Welcome\npassword: `{secret}`", key="hygiene-plant")
        assert isinstance(created, UUID)  # called outside a coroutine: the id, not an awaitable
        artifact = created
        in_kube = {f.place for f in scan_kube(apiserver.kubeconfig, hygiene.REGISTRY) if f.form in _forms(secret)}
        in_prefect = {f.place for f in scan_prefect(hygiene.REGISTRY, started, prefect_secrets_scan) if f.form in _forms(secret)}
    finally:
        for obj in objects:
            kube.delete(obj["kind"], namespace, obj["metadata"]["name"])
        if artifact is not None:
            with get_client(sync_client=True) as client:
                client.delete_artifact(artifact)
        _take(secret)
    assert in_kube == {f"ConfigMap {namespace}/plant", f"Deployment {namespace}/literal"}
    assert "artifact hygiene-plant" in in_prefect
    assert {p.split()[0] for p in in_prefect} <= {"artifact", "artifact_collection", "events"}  # its events hold it too
    left = scan_kube(apiserver.kubeconfig, hygiene.REGISTRY)
    assert [f for f in left if f.form in _forms(secret)] == []  # deleted: the cluster does not keep it
