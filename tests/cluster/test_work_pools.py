"""The work pools on a real Prefect server on PostgreSQL, and the kubernetes pool's Job as the
real API server sees it: rendered by prefect-kubernetes for a real flow run, created with a
server-side dry run, and checked against Pod Security "restricted"."""

from __future__ import annotations

import copy
import json
import re

import pytest

from tasks.cluster import workpools
from tasks.core.errors import PermanentError
from tasks.core.settings import Settings
from tests.fixtures.pss import restricted_violations

SECRET_FIELDS = {name for concern in ("backup", "mail", "identity", "health")
                 for name, f in Settings.model_fields[concern].annotation.model_fields.items()
                 if "SecretStr" in str(f.annotation)}


def _container(manifest: dict) -> dict:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return container


def test_the_template_fixes_identity_namespace_and_takes_secrets_only_by_reference():
    template = workpools.kubernetes_template()
    manifest = template["job_configuration"]["job_manifest"]
    pod = manifest["spec"]["template"]["spec"]
    assert template["job_configuration"]["namespace"] == manifest["metadata"]["namespace"] == "vibecode-ops"
    assert pod["serviceAccountName"] == "vibecode-flows"
    # Not variables: a deployment's job_variables cannot pick another identity or namespace.
    assert {"namespace", "service_account_name", "cluster_config"}.isdisjoint(template["variables"]["properties"])
    assert restricted_violations(pod) == []
    env = _container(manifest)["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert {r["name"] for r in refs.values()} == {"vibecode-platform-secrets"}
    assert {refs[n]["key"] for n in ("VIBECODE_BACKUP__RESTIC_PASSWORD", "VIBECODE_BACKUP__S3_ACCESS_KEY_ID",
                                     "VIBECODE_BACKUP__S3_SECRET_ACCESS_KEY")} == {
        "restic-password", "s3-access-key-id", "s3-secret-access-key"}
    # Every secret setting the template passes is a reference; no value is written anywhere.
    for e in env:
        field = e["name"].removeprefix("VIBECODE_").split("__")[-1].lower()
        if field in SECRET_FIELDS:
            assert "value" not in e and "secretKeyRef" in e["valueFrom"], e
    assert not re.search(r"(?i)password\"?\s*:\s*\"[^{]", json.dumps(template))
    # Gateway secrets (webhook HMAC, SCIM token) are the gateway's: flows never read them.
    assert not [e for e in env if "GATEWAY" in e["name"]]


def test_resources_have_requests_and_limits_by_default():
    props = workpools.kubernetes_template()["variables"]["properties"]
    for key in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
        assert props[key]["default"], key
    assert props["active_deadline_seconds"]["default"] > 0


def test_a_changed_template_is_applied_to_an_existing_pool(prefect_pg):
    from prefect.client.orchestration import get_client

    name = "vibecode-kubernetes-t1"
    template = workpools.kubernetes_template()
    with prefect_pg.settings(), get_client(sync_client=True) as client:
        assert workpools.ensure_work_pool(name, "kubernetes", template, client) == "created"
        assert workpools.ensure_work_pool(name, "kubernetes", template, client) == "unchanged"
        changed = copy.deepcopy(template)
        changed["variables"]["properties"]["memory_limit"]["default"] = "3Gi"
        changed["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]["env"].append(
            {"name": "VIBECODE_EXAMPLE", "value": "x"})
        # What Prefect itself does with a changed template once the pool exists: nothing.
        from prefect.client.schemas.actions import WorkPoolCreate
        from prefect.exceptions import ObjectAlreadyExists

        with pytest.raises(ObjectAlreadyExists):
            client.create_work_pool(WorkPoolCreate(name=name, type="kubernetes", base_job_template=changed))
        assert client.read_work_pool(name).base_job_template == template

        assert workpools.ensure_work_pool(name, "kubernetes", changed, client) == "updated"
        assert client.read_work_pool(name).base_job_template == changed
        assert workpools.ensure_work_pool(name, "kubernetes", changed, client) == "unchanged"


def test_a_pool_of_another_type_is_refused_and_left_alone(prefect_pg):
    from prefect.client.orchestration import get_client

    name = "vibecode-kubernetes-t2"
    with prefect_pg.settings(), get_client(sync_client=True) as client:
        workpools.ensure_work_pool(name, "process", workpools.process_template(), client)
        with pytest.raises(PermanentError, match="type 'process'"):
            workpools.ensure_work_pool(name, "kubernetes", workpools.kubernetes_template(), client)
        assert client.read_work_pool(name).type == "process"


def test_bootstrap_pools_are_both_kept_in_step(prefect_pg):
    with prefect_pg.settings():
        first = workpools.ensure_work_pools()
        again = workpools.ensure_work_pools()
    assert set(first) == {"vibecode-ops", "vibecode-kubernetes"}
    assert set(first.values()) <= {"created", "unchanged"} and set(again.values()) == {"unchanged"}


async def _render_for_a_flow_run(api_url: str) -> dict:
    """What the kubernetes worker does for a run: the pool's template, the deployment's and
    the run's job variables, prefect-kubernetes' own preparation (labels, command, env)."""
    from prefect.client.orchestration import get_client
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    async with get_client() as client:
        pool = await client.read_work_pool(workpools.KUBERNETES_POOL)
        flow_id = await client.create_flow_from_name("backup-workspaces")
        deployment_id = await client.create_deployment(
            flow_id=flow_id, name="backup-workspaces-k8s", work_pool_name=pool.name,
            entrypoint="flows/backup.py:backup_workspaces",
            job_variables={"memory_limit": "2Gi", "env": {"VIBECODE_BACKUP__CONCURRENCY": "4"}})
        run = await client.create_flow_run_from_deployment(deployment_id, job_variables={"cpu_limit": "2"})
        config = await KubernetesWorkerJobConfiguration.resolve_for_flow_run(
            run, client=client, work_pool=pool, worker_name="test-worker")
        return {"manifest": config.job_manifest, "run": run, "api_url": api_url}


def test_the_rendered_job_of_a_real_flow_run_passes_a_server_side_dry_run_and_pod_security(
        prefect_pg, kube, flows_identity):
    import asyncio

    with prefect_pg.settings():
        workpools.ensure_work_pools()
        rendered = asyncio.run(_render_for_a_flow_run(prefect_pg.api_url))
    manifest, run = rendered["manifest"], rendered["run"]
    container = _container(manifest)
    env = {e["name"]: e for e in container["env"]}
    assert env["PREFECT__FLOW_RUN_ID"]["value"] == str(run.id)
    assert env["PREFECT_API_URL"]["value"] == prefect_pg.api_url
    assert env["VIBECODE_BACKUP__CONCURRENCY"]["value"] == "4"
    assert env["VIBECODE_BACKUP__RESTIC_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "restic-password"
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    assert container["args"][:3] == ["prefect", "flow-run", "execute"]

    # prefect-kubernetes' validator insists on two Job fields inside the pod template (its own
    # default template puts them there); the API server drops unknown pod fields (1.20) or
    # warns (fieldValidation=Warn, the default since 1.27), and our typed client refuses to
    # send them. They are the only such keys; everything else goes to the server as rendered.
    sent = copy.deepcopy(manifest)
    pod_spec = sent["spec"]["template"]["spec"]
    assert (pod_spec.pop("completions"), pod_spec.pop("parallelism")) == (1, 1)

    accepted = kube.create(sent, dry_run=True)  # the API server validates, defaults and admits it

    assert accepted["metadata"]["namespace"] == "vibecode-ops" and accepted["metadata"]["name"].startswith(
        manifest["metadata"]["generateName"])
    pod = accepted["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "vibecode-flows"
    assert restricted_violations(pod) == [] and restricted_violations(manifest["spec"]["template"]["spec"]) == []
    assert kube.list("Job", "vibecode-ops") == []  # a dry run stores nothing
