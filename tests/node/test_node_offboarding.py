"""Onboarding, then offboarding on a real node: final backup, judged deletion, end to end.

The hire starts a real code-server pod; the person's work is written into its volume;
the termination scales it to zero (the pod really stops), the final backup runs as a real
restic pod into the S3 server on the node's address, and the deletion is judged on that
verified backup: deferred within retention, done by the purge after it, where the real
PVC protection controller then removes the volumes once no pod uses them.

Authelia's image cannot be had here, so its Deployment is kept at zero replicas: the
file backend's roll is an annotation on it, and access ends in the users Secret.
"""

from __future__ import annotations

import base64
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from flows.offboarding import offboard_user, purge_offboarded
from flows.onboarding import onboard_user
from tasks.cluster import helm
from tasks.core.settings import get_settings
from tasks.people.hr import parse_request
from tasks.people.ledger import Ledger
from tests.fixtures.identity import authelia_deployment_manifest
from tests.fixtures.node import pv_dir, wait_for
from tests.fixtures.storage import restic_for

pytestmark = [pytest.mark.node, pytest.mark.usefixtures("node_cluster", "prefect_server", "helm_bin")]

HIRE = {"event_id": "evt-n-0001", "type": "employee.hired", "occurred_at": "2026-11-28T09:00:00Z",
        "employee": {"employee_id": "E2001", "email": "dora@example.com", "given_name": "Dora",
                     "family_name": "Maar", "username": "dora", "department": "engineering",
                     "groups": ["developers"]}}
TERMINATE = {**HIRE, "event_id": "evt-n-0002", "type": "employee.terminated"}


@pytest.fixture
def node_platform(node_kube, node_namespace, node_backup_settings, smtp_inbox, monkeypatch):
    from tasks.people.identity.filedb import USERS_KEY

    monkeypatch.setenv("VIBECODE_READY_POLL_SECONDS", "1")
    monkeypatch.setenv("VIBECODE_DEPARTMENT_GROUPS", '{"engineering": ["engineering"]}')
    monkeypatch.setenv("VIBECODE_HR_ALLOWED_GROUPS", '["developers", "engineering", "users"]')
    get_settings.cache_clear()
    s = get_settings()
    node_kube.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": s.identity.authelia_users_secret, "namespace": node_namespace},
                      "stringData": {USERS_KEY: "users: {}\n"}})
    authelia = authelia_deployment_manifest(node_namespace, s.identity.authelia_deployment)
    authelia["spec"]["replicas"] = 0
    node_kube.create(authelia)
    return {"ns": node_namespace, "inbox": smtp_inbox, "settings": node_backup_settings}


def _users(kube, ns) -> dict:
    from tasks.people.identity.filedb import USERS_KEY

    secret = kube.get("Secret", ns, get_settings().identity.authelia_users_secret)
    return yaml.safe_load(base64.b64decode(secret["data"][USERS_KEY]))["users"]


def _live_pods(kube, ns):
    return [p["metadata"]["name"] for p in kube.list("Pod", ns, "vibecode.dev/user=dora,app.kubernetes.io/name=code-server")]


def test_offboarding_backs_up_for_real_then_deletes_only_after_retention(node_cluster, node_kube, node_platform):
    kube, ns = node_kube, node_platform["ns"]
    onboarded = onboard_user(parse_request(HIRE))
    assert onboarded.username == "dora" and len(node_platform["inbox"].messages) == 1
    assert len(_live_pods(kube, ns)) == 1
    work = pv_dir(node_cluster, kube, ns, "ws-dora-workspace")
    (work / "thesis.md").write_text("chapter one\n" * 1000)
    subprocess.run(["chown", "-R", "1000:1000", str(work)], check=True)

    result = offboard_user(parse_request(TERMINATE))

    assert result.identity == "disabled" and _users(kube, ns)["dora"]["disabled"] is True
    assert result.workspace == "scaled to 0"
    wait_for("the code-server pod to stop", lambda: not _live_pods(kube, ns), timeout=90)
    assert result.backup.startswith("Completed") and "verified" in result.backup, result.backup
    assert result.deletion.startswith("defer"), result.deletion  # within retention: kept
    assert helm.status("ws-dora", ns) is not None
    assert {p["metadata"]["name"] for p in kube.list("PersistentVolumeClaim", ns, "vibecode.dev/user=dora")} \
        == {"ws-dora-workspace", "ws-dora-extensions"}
    (job,) = kube.list("Job", ns, "app.kubernetes.io/component=backup,vibecode.dev/user=dora")
    (pod,) = kube.list("Pod", ns, f"job-name={job['metadata']['name']}")
    assert pod["status"]["phase"] == "Succeeded"  # the final backup ran as a real pod
    restic = restic_for(node_platform["settings"], "dora")
    assert restic.run(["dump", "latest", "/thesis.md", "--host", "dora"]).stdout == "chapter one\n" * 1000

    early = purge_offboarded(now=datetime.now(timezone.utc) + timedelta(days=29))
    assert early["dora"].startswith("defer") and helm.status("ws-dora", ns) is not None

    done = purge_offboarded(now=datetime.now(timezone.utc) + timedelta(days=31))

    assert "uninstalled" in done["dora"], done
    assert helm.status("ws-dora", ns) is None
    assert "ws-dora-workspace" in done["dora"] and "ws-dora-extensions" in done["dora"], done
    # The real PVC protection controller lets a claim go once no pod names it. The finished
    # final-backup pod still did (Kubernetes 1.20 counts finished pods and its Job TTL clean-up
    # is alpha), so the purge deletes the user's finished Jobs first: both claims really go.
    assert kube.list("Job", ns, "vibecode.dev/user=dora") == []
    for claim in ("ws-dora-extensions", "ws-dora-workspace"):
        wait_for(f"{claim} to be deleted", lambda c=claim: kube.get("PersistentVolumeClaim", ns, c) is None,
                 timeout=90)
    assert Ledger().get("dora").state == "purged"
    assert _users(kube, ns)["dora"]["disabled"] is True  # identity kept for audit
