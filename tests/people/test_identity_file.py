"""Authelia's file backend: the users Secret on a real kube-apiserver, updated by CAS."""

from __future__ import annotations

import base64
import hashlib
from concurrent.futures import ThreadPoolExecutor

import argon2
import pytest
import yaml

from tasks.people.identity import UserSpec, filedb, passwords

ALICE = UserSpec(username="alice", email="alice@example.com", given_name="Alice", family_name="Liddell",
                 groups=("developers", "users"), employee_id="E1001")


def _file(kube, platform_namespace) -> str:
    secret = kube.get("Secret", platform_namespace, "authelia-users")
    return base64.b64decode(secret["data"][filedb.USERS_KEY]).decode()


# -- pure ------------------------------------------------------------------------------
def test_upsert_is_a_noop_when_nothing_changed_and_keeps_the_password():
    doc, change = filedb.apply_upsert({"users": {}}, ALICE, lambda: "HASH1")
    assert change == "created" and doc["users"]["alice"]["password"] == "HASH1"
    same, change = filedb.apply_upsert(doc, ALICE, lambda: pytest.fail("no new hash for an update"))
    assert change == "unchanged" and same is doc
    moved = UserSpec(**{**ALICE.__dict__, "email": "a.liddell@example.com", "groups": ("users",)})
    doc2, change = filedb.apply_upsert(doc, moved, lambda: "HASH2")
    assert change == "updated"
    assert doc2["users"]["alice"]["email"] == "a.liddell@example.com"
    assert doc2["users"]["alice"]["groups"] == ["users"] and doc2["users"]["alice"]["password"] == "HASH1"


def test_disable_scrambles_and_reenable_keeps_the_entry():
    doc, _ = filedb.apply_upsert({"users": {}}, ALICE, lambda: "HASH1")
    off, change = filedb.apply_disable(doc, "alice", lambda: "SCRAMBLED")
    assert change == "disabled" and off["users"]["alice"]["disabled"] is True
    assert off["users"]["alice"]["password"] == "SCRAMBLED" and off["users"]["alice"]["groups"] == ["developers", "users"]
    assert filedb.apply_disable(off, "alice", lambda: "X")[1] == "unchanged"
    assert filedb.apply_disable(off, "bob", lambda: "X")[1] == "absent"
    on, change = filedb.apply_upsert(off, ALICE, lambda: pytest.fail("re-enable must not mint a password"))
    assert change == "enabled" and on["users"]["alice"]["disabled"] is False


# -- against the API server -----------------------------------------------------------------
def test_a_data_only_upsert_changes_a_leavers_data_never_their_access():
    """A leaver's late update (grants_access=False): new data, still disabled, same scrambled
    password; on someone not disabled yet it does not disable (that is the disable's, which
    also scrambles); on no one it adds them disabled."""
    doc, _ = filedb.apply_upsert({"users": {}}, ALICE, lambda: "HASH1")
    off, _ = filedb.apply_disable(doc, "alice", lambda: "SCRAMBLED")
    late = UserSpec(**{**ALICE.__dict__, "family_name": "Hargreaves", "grants_access": False})
    kept, change = filedb.apply_upsert(off, late, lambda: pytest.fail("no password for a data change"))
    entry = kept["users"]["alice"]
    assert change == "updated" and entry["family_name"] == "Hargreaves" and entry["disabled"] is True
    assert entry["password"] == "SCRAMBLED"
    still, _ = filedb.apply_upsert(doc, late, lambda: pytest.fail("no password"))
    assert still["users"]["alice"]["disabled"] is False and still["users"]["alice"]["family_name"] == "Hargreaves"
    # on no one: added disabled with an unusable password, as the hire and the termination
    # it overtook would have left them (HR's order)
    added, change = filedb.apply_upsert({"users": {}}, late, lambda: "UNUSABLE")
    assert change == "created" and added["users"]["alice"]["disabled"] is True
    assert added["users"]["alice"]["password"] == "UNUSABLE" and added["users"]["alice"]["family_name"] == "Hargreaves"


def test_create_writes_an_authelia_argon2id_hash_and_rolls_authelia(authelia_users, kube, platform_namespace, monkeypatch):
    minted = []
    real = passwords.random_secret
    monkeypatch.setattr(passwords, "random_secret", lambda: minted.append(real()) or minted[-1])

    assert authelia_users.upsert(ALICE) == "created"

    text = _file(kube, platform_namespace)
    entry = yaml.safe_load(text)["users"]["alice"]
    assert entry["groups"] == ["developers", "users"] and entry["disabled"] is False
    assert entry["displayname"] == "Alice Liddell" and entry["email"] == "alice@example.com"
    assert entry["password"].startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    params = argon2.extract_parameters(entry["password"])
    assert (params.salt_len, params.hash_len) == (16, 32)
    assert argon2.PasswordHasher().verify(entry["password"], minted[0])  # the hash verifies...
    assert minted[0] not in text  # ...and the password itself was never stored

    dep = kube.get("Deployment", platform_namespace, "authelia")
    assert dep["spec"]["template"]["metadata"]["annotations"][filedb.CHECKSUM_ANNOTATION] == \
        hashlib.sha256(text.encode()).hexdigest()

    rv = kube.get("Secret", platform_namespace, "authelia-users")["metadata"]["resourceVersion"]
    assert authelia_users.upsert(ALICE) == "unchanged"
    assert kube.get("Secret", platform_namespace, "authelia-users")["metadata"]["resourceVersion"] == rv  # no write


def test_disable_then_reenable_on_the_secret(authelia_users, kube, platform_namespace):
    authelia_users.upsert(ALICE)
    before = yaml.safe_load(_file(kube, platform_namespace))["users"]["alice"]["password"]
    assert authelia_users.disable("alice") == "disabled"
    state = authelia_users.get("alice")
    assert state.disabled is True and state.groups == ("developers", "users")
    assert state.extra["password"] != before
    assert authelia_users.disable("alice") == "unchanged"
    assert authelia_users.upsert(ALICE) == "enabled"
    assert authelia_users.get("alice").disabled is False


def test_fifty_concurrent_writers_lose_nothing_and_duplicate_nothing(authelia_users, kube, platform_namespace):
    specs = [UserSpec(username=f"user{i:02d}", email=f"user{i:02d}@example.com", given_name="U",
                      family_name=f"N{i}", groups=("users",), employee_id=f"E{i}") for i in range(50)]
    with ThreadPoolExecutor(max_workers=50) as pool:
        changes = list(pool.map(authelia_users.upsert, specs))
    assert changes == ["created"] * 50
    text = _file(kube, platform_namespace)
    users = yaml.safe_load(text)["users"]
    assert sorted(users) == [s.username for s in specs]
    assert text.count("user07@example.com") == 1
    assert len({u["password"] for u in users.values()}) == 50


# -- the Authelia roll is converged, not a side effect of a write ----------------------------
def _template_checksum(kube, platform_namespace):
    dep = kube.get("Deployment", platform_namespace, "authelia")
    return (dep["spec"]["template"]["metadata"].get("annotations") or {}).get(filedb.CHECKSUM_ANNOTATION)


def test_retry_after_a_failed_authelia_roll_still_rolls_authelia_onto_the_disabled_user(authelia_users, kube,
                                                                                      platform_namespace):
    """The Secret write succeeds but the roll fails (here: the Deployment is missing); the retry
    finds the file "unchanged" and must still put its checksum on Authelia's pod template."""
    from tasks.core.errors import PermanentError
    from tests.fixtures.identity import authelia_deployment_manifest

    authelia_users.upsert(ALICE)
    kube.delete("Deployment", platform_namespace, "authelia")
    with pytest.raises(PermanentError, match="Authelia Deployment .* not found"):
        authelia_users.disable("alice")
    assert yaml.safe_load(_file(kube, platform_namespace))["users"]["alice"]["disabled"] is True  # the write landed

    kube.create(authelia_deployment_manifest(platform_namespace))  # the platform is back, without our annotation
    assert _template_checksum(kube, platform_namespace) is None
    assert authelia_users.disable("alice") == "unchanged"  # the retry
    assert _template_checksum(kube, platform_namespace) == hashlib.sha256(_file(kube, platform_namespace).encode()).hexdigest()


def test_an_unchanged_upsert_repairs_a_stale_checksum_and_an_up_to_date_one_is_not_rewritten(authelia_users, kube,
                                                                                          platform_namespace):
    authelia_users.upsert(ALICE)
    current = hashlib.sha256(_file(kube, platform_namespace).encode()).hexdigest()
    kube.patch("Deployment", platform_namespace, "authelia",
               {"spec": {"template": {"metadata": {"annotations": {filedb.CHECKSUM_ANNOTATION: "stale"}}}}})
    assert authelia_users.upsert(ALICE) == "unchanged"
    assert _template_checksum(kube, platform_namespace) == current
    generation = kube.get("Deployment", platform_namespace, "authelia")["metadata"]["generation"]
    assert authelia_users.upsert(ALICE) == "unchanged"
    assert authelia_users.disable("nobody") == "absent"
    assert kube.get("Deployment", platform_namespace, "authelia")["metadata"]["generation"] == generation  # no needless roll


def test_a_missing_authelia_deployment_is_an_error_not_silence(authelia_users, kube, platform_namespace):
    from tasks.core.errors import PermanentError

    kube.delete("Deployment", platform_namespace, "authelia")
    with pytest.raises(PermanentError, match="Authelia Deployment .* not found"):
        authelia_users.upsert(ALICE)
    with pytest.raises(PermanentError, match="not found"):
        authelia_users.disable("bob")  # even when there is nothing to change
