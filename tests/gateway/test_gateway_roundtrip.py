"""SCIM create -> get -> deactivate -> reactivate through the live gateway drives the real
onboarding and offboarding flows.

How the runs are executed, honestly: no worker process runs here. The gateway creates
each flow run on the real Prefect server (``run_deployment``); the test reads that run
back and executes it in this process with Prefect's own engine,
``prefect.flow_engine.run_flow(flow, flow_run=<the run>, parameters=<its stored
parameters>)``, which is what a process worker runs in its subprocess. So the runs, their
ids and their parameters are exactly the ones the gateway created, and their final
states are read back from the server. Around them everything is real except the kubelet
(Deployments marked available, backup Jobs run by the Job kubelet stand-in) as in the
other onboarding tests.
"""

from __future__ import annotations

import pytest

from flows.offboarding import offboard_user
from flows.onboarding import onboard_user
from tests.fixtures.gateway import flow_runs, gateway_settings, start_gateway
from tests.fixtures.gateway_http import scim_event_id
from tests.fixtures.people import users_file
from tests.fixtures.scim_examples import ENTERPRISE, client_for, scim_user
from tests.fixtures.storage import make_tree

pytestmark = pytest.mark.usefixtures("prefect_server", "helm_bin")

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def _execute(run_id: str):
    """Run one gateway-created flow run to its end, as a worker would; return it re-read."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        flows = {"onboard-user": onboard_user, "offboard-user": offboard_user}
        deployment = client.read_deployment(run.deployment_id)
        run_flow(flows[deployment.name], flow_run=run, parameters=run.parameters, return_type="state")
        return client.read_flow_run(run_id)


def _run_for(hr_deployments, name: str, key: str):
    [run] = [r for r in flow_runs(hr_deployments[name]) if r.idempotency_key == key]
    return str(run.id)


def test_create_get_deactivate_reactivate_runs_the_real_flows(platform, kube, backup_settings, job_kubelet,
                                                              hr_deployments):
    ns = platform["ns"]
    gw = start_gateway(*gateway_settings(platform_namespace=ns, namespace=ns))
    try:
        with client_for(gw) as c:
            body = scim_user("alice@example.com", emails=[{"value": "alice@example.com", "primary": True}])
            body[ENTERPRISE]["employeeNumber"] = "E1001"
            created = c.post("/Users", json=body)
            assert created.status_code == 201, created.text
            uid = created.json()["id"]

            hired = _execute(_run_for(hr_deployments, "onboard-user/onboard-user", scim_event_id(gw, uid, 1)))
            assert hired.state.is_completed(), hired.state
            entry = users_file(kube)["alice"]
            assert entry["disabled"] is False and entry["email"] == "alice@example.com"
            assert kube.get("Deployment", ns, "ws-alice")["spec"]["replicas"] == 1
            assert len(platform["inbox"].messages) == 1

            make_tree(job_kubelet.claim_dir("ws-alice-workspace"))  # their work, for the final backup

            got = c.get(f"/Users/{uid}").json()
            assert got["active"] is True and got["userName"] == "alice@example.com"

            off = c.patch(f"/Users/{uid}", json={"schemas": [PATCH], "Operations": [
                {"op": "replace", "path": "active", "value": False}]})
            assert off.status_code in (200, 204) and c.get(f"/Users/{uid}").json()["active"] is False
            left = _execute(_run_for(hr_deployments, "offboard-user/offboard-user", scim_event_id(gw, uid, 2)))
            assert left.state.is_completed(), left.state
            assert users_file(kube)["alice"]["disabled"] is True
            assert kube.get("Deployment", ns, "ws-alice")["spec"]["replicas"] == 0
            assert any("-backup-" in r.job and r.returncode == 0 for r in job_kubelet.runs)  # the final backup ran

            on = c.patch(f"/Users/{uid}", json={"schemas": [PATCH], "Operations": [
                {"op": "replace", "value": {"active": True}}]})
            assert on.status_code in (200, 204) and c.get(f"/Users/{uid}").json()["active"] is True
            back = _execute(_run_for(hr_deployments, "onboard-user/onboard-user", scim_event_id(gw, uid, 3)))
            assert back.state.is_completed(), back.state
            assert users_file(kube)["alice"]["disabled"] is False
            assert kube.get("Deployment", ns, "ws-alice")["spec"]["replicas"] == 1
            assert c.get(f"/Users/{uid}").json()["meta"]["version"] == 'W/"3"'
    finally:
        gw.stop()
