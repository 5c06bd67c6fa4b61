"""The health flow keeps only :func:`tasks.health.fields.observed` of each listed object (its
memory at 10,000 workspaces). That is safe only if every check, gauge and overview row is the
same on the projection as on the whole object: proved here on generated worlds whose objects
carry everything a real API server adds (managedFields, uids, helm's labels and annotations,
container specs, condition messages) beside every field the checks read, in every state.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.core.names import (
    DORMANT_DELETED_AT,
    IDLE_WARNED_AT,
    LAST_ACTIVITY,
    LAST_BACKUP_REASON,
    RESTORING_ANNOTATION,
    STOP_REASON,
    STOPPED_AT,
)
from tasks.health.checks import Observed, evaluate
from tasks.health.fields import observed
from tasks.workspace.status import build_overview
from tests.fixtures.objects import backup_annotations, ledger, pvc, workspace

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
NS, PLATFORM = "vibecode-workspaces", "vibecode-system"
NOISE_META = {"uid": "6f1c", "resourceVersion": "4711", "generation": 3,
              "managedFields": [{"manager": "helm", "operation": "Update", "fieldsV1": {"f:spec": {}}}]}
HELM_LABELS = {"helm.sh/chart": "vibecode-workspace-0.4.0", "app.kubernetes.io/managed-by": "Helm"}
HELM_ANN = {"meta.helm.sh/release-name": "ws-x", "deployment.kubernetes.io/revision": "2"}


def at(hours: float) -> str:
    return (NOW - timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def condition(kind: str, status: str, hours: float, reason: str) -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": "ReplicaSet has successfully progressed.",
            "lastUpdateTime": at(hours), "lastTransitionTime": at(hours)}


person = st.fixed_dictionaries({
    "replicas": st.sampled_from([0, 1]), "ready": st.sampled_from([0, 1]),
    "available_hours": st.sampled_from([None, 0.05, 1.0, 30.0]), "deadline": st.booleans(),
    "annotations": st.lists(st.sampled_from([STOPPED_AT, STOP_REASON, IDLE_WARNED_AT, LAST_ACTIVITY,
                                             RESTORING_ANNOTATION]), unique=True),
    "containers": st.integers(1, 2), "has_deployment": st.booleans(), "has_volume": st.booleans(),
    "phase": st.sampled_from(["Bound", "Pending", "Lost"]),
    "backup": st.sampled_from([None, ("Completed", 3.0, True), ("Completed", 30.0, True), ("Failed", 2.0, False),
                               ("Completed", 60.0, False), ("PartiallyFailed", 5.0, True)]),
    "dormant": st.booleans(),
    "state": st.sampled_from([None, "active", "terminated", "purged"]),
    "left_hours": st.sampled_from([0.01, 2.0]), "last_error": st.booleans(),
})


def build(i: int, p: dict) -> tuple[dict | None, dict | None, dict | None]:
    user = f"u{i:03d}"
    dep = vol = rec = None
    if p["has_deployment"]:
        dep = workspace(NS, user, p["replicas"])
        dep["metadata"].update(NOISE_META, creationTimestamp=at(48))
        dep["metadata"]["labels"].update(HELM_LABELS)
        dep["metadata"]["annotations"] = {**HELM_ANN, **{k: (at(5) if k != STOP_REASON and k != RESTORING_ANNOTATION
                                                              else "idle for 2h") for k in p["annotations"]}}
        dep["spec"]["strategy"] = {"type": "Recreate"}
        dep["spec"]["template"]["spec"]["containers"] = [
            {"name": f"c{n}", "image": "vibecode.local/workspace:4.139.1-1", "args": ["--auth", "none"],
             "env": [{"name": "X", "value": "y"}],
             "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}}}
            for n in range(p["containers"])]
        conditions = [condition("Progressing", "False" if p["deadline"] else "True", 40,
                                "ProgressDeadlineExceeded" if p["deadline"] else "NewReplicaSetAvailable")]
        if p["available_hours"] is not None:
            conditions.append(condition("Available", "True" if p["ready"] else "False", p["available_hours"],
                                        "MinimumReplicasAvailable"))
        dep["status"] = {"observedGeneration": 3, "replicas": p["replicas"], "readyReplicas": p["ready"],
                         "availableReplicas": p["ready"], "updatedReplicas": p["ready"], "conditions": conditions}
    if p["has_volume"]:
        ann = {"pv.kubernetes.io/bind-completed": "yes"}
        if p["backup"]:
            outcome, hours, verified = p["backup"]
            ann.update({k: v for k, v in backup_annotations(outcome, timedelta(0), verified).items()})
            for k in [k for k in ann if k.endswith("time")]:
                ann[k] = at(hours)
            if outcome != "Completed":
                ann[LAST_BACKUP_REASON] = "restic exited 1"
        if p["dormant"]:
            ann[DORMANT_DELETED_AT] = at(200)
        vol = pvc(NS, user, ann)
        vol["metadata"].update(NOISE_META, creationTimestamp=at(100))
        vol["spec"].update(volumeName=f"pv-{user}", storageClassName="local-path", volumeMode="Filesystem")
        vol["status"] = {"phase": p["phase"], "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}
    if p["state"]:
        rec = ledger(PLATFORM, user, p["state"], timedelta(hours=p["left_hours"]) if p["state"] != "active" else None)
        rec["metadata"].update(NOISE_META)
        if p["last_error"]:
            rec["data"]["last_error"] = "helm: timed out waiting for the condition"
    return dep, vol, rec


def nodes_and_components() -> tuple[list[dict], list[dict], list[dict]]:
    node = {"metadata": {"name": "n1", **NOISE_META, "labels": {"kubernetes.io/os": "linux"}},
            "status": {"conditions": [condition("Ready", "True", 100, "KubeletReady")],
                       "capacity": {"cpu": "2"}, "nodeInfo": {"kubeletVersion": "v1.20.2"}}}
    authelia = {"metadata": {"name": "authelia", "namespace": PLATFORM, **NOISE_META},
                "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "authelia"}]}}},
                "status": {"replicas": 2, "readyReplicas": 1, "availableReplicas": 1}}
    pg = {"metadata": {"name": "postgresql", "namespace": PLATFORM, **NOISE_META},
          "spec": {"replicas": 1}, "status": {"replicas": 1, "readyReplicas": 1}}
    cert = {"metadata": {"name": "wildcard", "namespace": PLATFORM, **NOISE_META},
            "spec": {"secretName": "wildcard-tls", "dnsNames": ["*.vibecode.dev"]},
            "status": {"notAfter": at(-24 * 10), "conditions": [condition("Ready", "True", 5, "Ready")]}}
    return [node], [authelia], [pg, cert]


@settings(max_examples=60, deadline=None)
@given(st.lists(person, min_size=1, max_size=12))
def test_checks_gauges_and_overview_are_the_same_on_the_projection_as_on_whole_objects(people):
    deps, vols, recs = [], [], []
    for i, p in enumerate(people):
        dep, vol, rec = build(i, p)
        deps += [dep] if dep else []
        vols += [vol] if vol else []
        recs += [rec] if rec else []
    nodes, statefulsets, (pg, cert) = nodes_and_components()
    users = {f"u{i:03d}": {"disabled": p["state"] in ("terminated", "purged") and i % 2 == 0}
             for i, p in enumerate(people)}
    whole = dict(nodes=nodes, deployments=deps + statefulsets, statefulsets=[pg], pvcs=vols, ledger=recs,
                 certificates=[cert], users=users)
    cut = {k: ([observed(o) for o in v] if k != "users" else v) for k, v in whole.items()}
    probes = dict(api_latency=0.01, authelia_status=200, authelia_body='{"status":"OK"}', authelia_latency=0.01,
                  authelia_error="", bucket="b", bucket_latency=0.01, bucket_error="")
    components = [f"{PLATFORM}/authelia", f"{PLATFORM}/postgresql"]

    def run(listing):
        from tasks.health.checks import Check, Status

        obs = Observed(**listing, **probes, users_database=Check(name="users.database", status=Status.OK, value=1,
                                                                 message="ok"))
        return evaluate(obs, NOW, NS, components, 1.0, dormancy=timedelta(days=30))

    assert run(cut) == run(whole)
    full_rows = build_overview(whole["deployments"], vols, recs, NOW, NS, "vibecode.dev").rows
    assert build_overview(cut["deployments"], cut["pvcs"], cut["ledger"], NOW, NS, "vibecode.dev").rows == full_rows
    assert len(full_rows) == len({r.person for r in full_rows}) > 0 or not (deps or vols or recs)


_RUNNING = {"replicas": 1, "ready": 1, "available_hours": 1.0, "deadline": False, "annotations": [STOPPED_AT],
            "containers": 2, "has_deployment": True, "has_volume": True, "phase": "Bound",
            "backup": ("Completed", 3.0, True), "dormant": False, "state": "active", "left_hours": 1.0,
            "last_error": False}


def test_the_projection_drops_the_bulk_and_keeps_what_is_read():
    dep, vol, rec = build(7, _RUNNING)
    cut = observed(dep)
    assert set(cut["metadata"]) == {"name", "namespace", "creationTimestamp", "labels", "annotations"}
    assert set(cut["metadata"]["annotations"]) == {STOPPED_AT}  # helm's and Kubernetes' own are gone
    assert "helm.sh/chart" not in cut["metadata"]["labels"] and cut["metadata"]["labels"]["vibecode.dev/user"] == "u007"
    assert cut["spec"] == {"replicas": 1, "template": {"spec": {"containers": [
        {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}] * 2}}}
    assert [set(c) for c in cut["status"]["conditions"]] == [{"type", "status", "reason", "lastTransitionTime"}] * 2
    assert observed(vol)["spec"] == {"resources": {"requests": {"storage": "1Gi"}}}
    assert observed(rec)["data"] == {k: rec["data"][k] for k in ("username", "state", "terminated_at", "last_error")
                                     if k in rec["data"]} and "employee_id" in rec["data"]
    assert observed(dep)["spec"]["template"] is observed(build(8, {**_RUNNING})[0])["spec"]["template"]  # shared
    assert len(repr(cut)) < len(repr(dep)) / 2
