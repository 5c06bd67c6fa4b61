"""The platform backup's contents, the choice of a backup set and the recovery order (pure)."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.backup.restic import PARTIAL_TAG, Snapshot
from tasks.backup.retention import KeepPolicy
from tasks.core.errors import InvalidInput
from tasks.dr import plan

T0 = datetime(2026, 11, 1, 3, 0, tzinfo=timezone.utc)


def snap(item: str, run: str, t: datetime, host: str = plan.HOST, partial: bool = False, n: int = 0) -> Snapshot:
    tags = (plan.PLATFORM_TAG, plan.item_tag(item), plan.run_tag(run), *((PARTIAL_TAG,) if partial else ()))
    return Snapshot(id=f"{run}-{item}-{n}".ljust(16, "0"), time=t, tags=tags, hostname=host)


def night(run: str, t: datetime, items=None) -> list[Snapshot]:
    return [snap(i.name, run, t + timedelta(seconds=k)) for k, i in enumerate(plan.ITEMS)
            if items is None or i.name in items]


def test_items_cover_what_the_issue_names():
    assert {i.name for i in plan.ITEMS} == {"platform-secrets", "users-database", "ledger", "authelia-db",
                                           "prefect-db"}
    assert [i.name for i in plan.ITEMS if not i.required] == ["prefect-db"]
    assert len({i.filename for i in plan.ITEMS}) == len(plan.ITEMS)


def test_secrets_come_back_before_bootstrap_and_the_ledger_before_workspaces():
    order = list(plan.STEPS)
    assert order[0] == "choose-set"
    assert order.index("namespaces") < order.index("platform-secrets") < order.index("bootstrap")
    assert order.index("users-database") < order.index("bootstrap")
    assert order.index("bootstrap") < order.index("authelia-db") < order.index("ledger") < order.index("workspaces")
    assert set(plan.ITEM_BY_NAME) <= set(order)


@pytest.mark.parametrize("nights, wanted, expect", [
    ([night("a", T0), night("b", T0 + timedelta(days=1))], "latest", "b"),
    # the newest night died after two items: the one before is the newest complete set
    ([night("a", T0), night("b", T0 + timedelta(days=1), {"platform-secrets", "ledger"})], "latest", "a"),
    # Prefect's database is optional: a night without it is complete
    ([night("a", T0), night("b", T0 + timedelta(days=1), {"platform-secrets", "users-database", "ledger",
                                                          "authelia-db"})], "latest", "b"),
    ([night("a", T0), night("b", T0 + timedelta(days=1))], "a", "a"),
])
def test_choose_set(nights, wanted, expect):
    assert plan.choose_set([s for n in nights for s in n], wanted).run_id == expect


def test_a_partial_or_foreign_snapshot_is_no_member():
    snaps = night("a", T0, {"platform-secrets", "users-database", "ledger"})
    snaps += [snap("authelia-db", "a", T0, partial=True), snap("authelia-db", "a", T0, host="alice", n=1)]
    with pytest.raises(InvalidInput, match="no complete platform backup"):
        plan.choose_set(snaps)
    with pytest.raises(InvalidInput, match="lacks authelia-db"):
        plan.choose_set(snaps, "a")
    with pytest.raises(InvalidInput, match="no platform backup of run 'zz'"):
        plan.choose_set(snaps, "zz")


def test_a_rerun_of_one_run_uses_its_newest_snapshot_of_an_item():
    snaps = night("a", T0) + [snap("ledger", "a", T0 + timedelta(hours=1), n=1)]
    assert plan.choose_set(snaps).snapshots["ledger"].startswith("a-ledger-1")


@pytest.mark.parametrize("done, run, expect", [
    ({}, "a", list(plan.STEPS)),
    ({"choose-set": "a", "namespaces": "a", "platform-secrets": "a"}, "a", list(plan.STEPS[3:])),
    ({s: "a" for s in plan.STEPS}, "a", []),
    ({s: "a" for s in plan.STEPS}, "b", list(plan.STEPS)),  # another set starts over
])
def test_remaining(done, run, expect):
    assert plan.remaining(done, run) == expect


@pytest.mark.parametrize("url, expect", [
    ("s3:http://127.0.0.1:8333/bkp/_platform", "s3:http://127.0.0.1:8333/bkp/_platform"),
    ("s3://s3.example.com/bkp/_platform/", "s3:https://s3.example.com/bkp/_platform"),
    ("s3:https://s3.example.com//bkp", "s3:https://s3.example.com/bkp"),
])
def test_parse_source(url, expect):
    assert plan.parse_source(url) == expect


@pytest.mark.parametrize("url", ["http://host/bkp", "s3:http://host", "s3:http://k:s@host/bkp", "s3://host/b?x=1", ""])
def test_parse_source_refuses(url):
    with pytest.raises(InvalidInput) as err:
        plan.parse_source(url)
    assert err.value.field == "from"


@pytest.mark.parametrize("url, uri, password", [
    ("postgresql://authelia:s3cr%40t@127.0.0.1:5432/authelia", "postgresql://authelia@127.0.0.1:5432/authelia", "s3cr@t"),
    ("postgresql+asyncpg://prefect:pw@db.svc:5432/prefect", "postgresql://prefect@db.svc:5432/prefect", "pw"),
    ("postgres://u@h/d?sslmode=require", "postgresql://u@h/d?sslmode=require", ""),
])
def test_split_dsn_keeps_the_password_off_the_command_line(url, uri, password):
    dsn = plan.split_dsn(url, "recovery.authelia_db_url")
    assert (dsn.uri, dsn.password) == (uri, password)
    assert not password or password not in repr(dsn) and password not in " ".join(plan.pg_dump_args(dsn))


@pytest.mark.parametrize("url", ["mysql://u:p@h/d", "postgresql://u:p@h", "not a url"])
def test_split_dsn_refuses(url):
    with pytest.raises(InvalidInput) as err:
        plan.split_dsn(url, "recovery.authelia_db_url")
    assert err.value.field == "recovery.authelia_db_url"


def _b64(v: str) -> str:
    return base64.b64encode(v.encode()).decode()


def test_secrets_round_trip_to_the_new_clusters_names():
    found = {"platform": {"data": {"restic-password": _b64("p")}}, "backup": {"data": {"RESTIC_PASSWORD": _b64("p")}},
             "hr-gateway": None}
    doc = plan.secrets_document(found)
    where = {"platform": ("pf", "vibecode-platform-secrets"), "backup": ("ws", "vibecode-backup"),
             "hr-gateway": ("pf", "vibecode-hr-gateway")}
    out = plan.secret_manifests(doc, where, {"a": "b"})
    assert [(m["metadata"]["namespace"], m["metadata"]["name"]) for m in out] == [("ws", "vibecode-backup"),
                                                                                   ("pf", "vibecode-platform-secrets")]
    assert out[1]["data"] == found["platform"]["data"]
    with pytest.raises(InvalidInput, match="roles this version does not know"):
        plan.secret_manifests(json.dumps({"other": {}}), where, {})


@pytest.mark.parametrize("existing, expect", [
    (None, "create"), ({"data": {"k": "dg=="}}, "unchanged"), ({"data": {"k": "eA=="}}, "replace")])
def test_secret_action(existing, expect):
    assert plan.secret_action(existing, {"data": {"k": "dg=="}}) == expect


def test_ledger_document_drops_server_fields_and_round_trips():
    cm = {"metadata": {"name": "vibecode-user-alice", "namespace": "old", "resourceVersion": "7", "uid": "u",
                       "creationTimestamp": "2026", "managedFields": [], "labels": {"x": "y"}},
          "data": {"state": "active"}}
    (back,) = plan.ledger_manifests(plan.ledger_document([cm]), "new")
    assert back == {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "vibecode-user-alice", "namespace": "new", "labels": {"x": "y"}},
                    "data": {"state": "active"}}
    assert plan.configmap_action(None, back) == "create"
    assert plan.configmap_action({**back, "metadata": {**back["metadata"], "resourceVersion": "1"}}, back) == "unchanged"
    assert plan.configmap_action({**back, "data": {"state": "terminated"}}, back) == "kept"


@pytest.mark.parametrize("records, active, leavers, pending", [
    ([("bob", "active"), ("alice", "active")], ("alice", "bob"), (), ()),
    ([("carol", "terminated"), ("dave", "purged"), ("erin", "onboarding")], (), ("carol", "dave"), ("erin",)),
])
def test_people(records, active, leavers, pending):
    assert plan.people(records) == plan.People(active, leavers, pending)


def test_retention_never_expires_the_newest_complete_set():
    now = T0 + timedelta(days=40)
    snaps = [s for d in range(40) for s in night(f"r{d}", T0 + timedelta(days=d))]
    # the last night lacks the ledger: the newest complete set is the night before
    snaps = [s for s in snaps if not (plan.run_tag("r39") in s.tags and plan.item_tag("ledger") in s.tags)]
    forget = set(plan.retention_forget(snaps, KeepPolicy(daily=3, weekly=0, monthly=0), now))
    newest = plan.choose_set(snaps)
    assert newest.run_id == "r38" and not forget & set(newest.snapshots.values())
    kept = [s for s in snaps if s.id not in forget]
    assert plan.choose_set(kept).run_id == "r38"
    assert len(forget) > 100


@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from([i.name for i in plan.ITEMS]), st.booleans()),
                max_size=30))
def test_a_chosen_set_is_always_complete_and_of_one_run(members):
    snaps = [snap(item, f"r{run}", T0 + timedelta(days=run), partial=partial, n=k)
             for k, (run, item, partial) in enumerate(members)]
    try:
        chosen = plan.choose_set(snaps)
    except InvalidInput:
        assert not any(s.complete for s in plan.backup_sets(snaps))
        return
    assert chosen.complete
    by_id = {s.id: s for s in snaps}
    assert {plan.run_tag(chosen.run_id) in by_id[i].tags and by_id[i].good for i in chosen.snapshots.values()} == {True}
    assert chosen.time == max(s.time for s in plan.backup_sets(snaps) if s.complete)


def test_the_ca_comes_back_as_kubernetes_io_tls_with_cert_manager_s_annotations_and_nothing_else():
    """cert-manager reissues a Certificate whose Secret lacks its issuer annotations (a new CA
    that every browser must be told to trust): they travel with the data; others do not."""
    ca = {"type": "kubernetes.io/tls", "data": {"tls.crt": _b64("C"), "tls.key": _b64("K"), "ca.crt": _b64("C")},
          "metadata": {"annotations": {"cert-manager.io/issuer-name": "vibecode-selfsigned",
                                       "cert-manager.io/issuer-kind": "ClusterIssuer",
                                       "kubectl.kubernetes.io/last-applied-configuration": "{}"}}}
    doc = plan.secrets_document({"ca": ca, "platform": {"data": {"k": _b64("v")}}})
    where = {"ca": ("cert-manager", "vibecode-ca"), "platform": ("pf", "vibecode-platform-secrets")}
    by = {m["metadata"]["name"]: m for m in plan.secret_manifests(doc, where, {"a": "b"})}
    assert by["vibecode-ca"]["type"] == "kubernetes.io/tls" and by["vibecode-ca"]["data"] == ca["data"]
    assert by["vibecode-ca"]["metadata"]["annotations"] == {"cert-manager.io/issuer-name": "vibecode-selfsigned",
                                                            "cert-manager.io/issuer-kind": "ClusterIssuer"}
    assert by["vibecode-platform-secrets"]["type"] == "Opaque"
    assert "annotations" not in by["vibecode-platform-secrets"]["metadata"]
    # A document written before the CA was saved (no _meta) still restores, all Opaque.
    old = json.dumps({"platform": {"k": _b64("v")}})
    assert [m["type"] for m in plan.secret_manifests(old, where, {})] == ["Opaque"]


@pytest.mark.parametrize(("progress", "people", "users_file", "force", "refused"), [
    ({}, 0, False, False, False),                      # a new, empty cluster
    ({}, 3, True, False, True),                        # a live platform
    ({}, 0, True, False, True),                        # a users database and nobody in the ledger yet
    ({}, 3, False, False, True),
    ({"platform-secrets": "run1"}, 3, True, False, False),  # this recovery's own rerun carries on
    ({"platform-secrets": "run0"}, 3, True, False, True),   # another set's recovery ran here
    ({}, 3, True, True, False),                        # the operator says replace it
])
def test_a_recovery_starts_only_on_an_empty_cluster_or_its_own_rerun(progress, people, users_file, force, refused):
    said = plan.live_platform_refusal("run1", progress, people, users_file, force)
    assert (said is not None) == refused
    if refused:
        assert "already runs a platform" in said and "force" in said
        assert (f"{people} people" in said) == bool(people)
