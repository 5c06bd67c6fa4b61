"""bootstrap_platform against the real API server, a real Prefect server and helm, with the
upstream charts' stand-ins served from an OCI registry on loopback (tests/fixtures/registry.py)
and the platform chart for real (its placeholder until charts/vibecode-platform exists).

The controllers and kubelets are played by :class:`tests.fixtures.platform.ControllerStandIn`
(a stand-in writing workload status), and the node's image list by a stand-in Node object.
"""

from __future__ import annotations

import asyncio
import base64

import pytest

from tasks.cluster import helm
from tasks.platform.plan import ORDER
from tests.fixtures.platform import ControllerStandIn, issue_ca_as_cert_manager, stand_in_node

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server", "helm_bin")]

KINDS = ("Namespace", "Secret", "ConfigMap", "Service", "ServiceAccount", "Deployment", "Job",
         "PersistentVolumeClaim", "NetworkPolicy", "CustomResourceDefinition")


def _namespaces(s) -> list[str]:
    return [s.platform_namespace, s.namespace, s.platform.cert_manager_namespace, s.platform.envoy_gateway_namespace]


def snapshot(kube, s) -> dict[tuple, str]:
    """(kind, namespace, name) -> resourceVersion of everything bootstrap owns or touched."""
    out = {}
    for ns in _namespaces(s):
        obj = kube.get("Namespace", None, ns)
        if obj:
            out[("Namespace", "", ns)] = obj["metadata"]["resourceVersion"]
        for kind in KINDS[1:-1]:
            for o in kube.list(kind, ns) if obj else []:
                out[(kind, ns, o["metadata"]["name"])] = o["metadata"]["resourceVersion"]
    for crd in kube.list("CustomResourceDefinition", None):
        out[("CustomResourceDefinition", "", crd["metadata"]["name"])] = crd["metadata"]["resourceVersion"]
    return out


def revisions(s) -> dict[str, int | None]:
    pairs = {"cert-manager": s.platform.cert_manager_namespace, "envoy-gateway": s.platform.envoy_gateway_namespace,
             s.platform.release: s.platform_namespace, s.platform.hr_gateway_release: s.platform_namespace,
             "ws-demo": s.namespace}
    out = {}
    for release, ns in pairs.items():
        st = helm.status(release, ns)
        out[release] = st.revision if st else None
    return out


def _secret_values(kube, s) -> dict[str, str]:
    sec = kube.get("Secret", s.platform_namespace, s.platform.secret_name)
    return {k: base64.b64decode(v).decode() for k, v in sec["data"].items()}


async def _run_records(flow_run_ids):
    """Every log line, artifact and parameter the Prefect server holds for these runs (and
    their task runs and subflows)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    async with get_client() as client:
        runs = list(flow_run_ids)
        children = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=runs)))
        runs += [c.id for c in children]
        logs: list = []
        while True:  # the server pages at 200
            page = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=runs)),
                                          limit=200, offset=len(logs))
            logs += page
            if len(page) < 200:
                break
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=runs)), limit=200)
        params = [(await client.read_flow_run(r)).parameters for r in runs]
        tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": runs}), limit=200)
    return logs, artifacts, params, tasks


def _bootstrap(apiserver, **kw):
    from flows.bootstrap import bootstrap_platform

    state = bootstrap_platform(existing_kubeconfig=apiserver.kubeconfig, return_state=True, **kw)
    return state


def test_bootstrap_installs_in_order_reruns_as_a_no_op_and_keeps_its_secrets_out_of_records(
        kube, apiserver, platform_env):
    s = platform_env
    node = stand_in_node(kube, ["docker.io/library/vibecode-ops:0.1.0"])
    try:
        with ControllerStandIn(kube, set(_namespaces(s))):
            first = _bootstrap(apiserver)
            assert first.is_completed(), first
            result = first.result()
            assert [o.component for o in result.components] == list(ORDER)
            actions = {o.component: o.action for o in result.components}
            assert actions == {"namespaces": "created", "platform-secrets": "created", "cert-manager": "installed",
                               "envoy-gateway": "installed", "vibecode-platform": "installed", "hr-gateway": "installed",
                               "datadog": "skipped", "tag-limits": actions["tag-limits"],
                               "work-pools": actions["work-pools"], "demo-workspace": "installed"}
            assert "no Datadog API key" in next(o.detail for o in result.components if o.component == "datadog")
            (fingerprint,) = issue_ca_as_cert_manager(kube)  # cert-manager's part, played
            secrets_before = _secret_values(kube, s)
            revs, rvs = revisions(s), snapshot(kube, s)
            assert all(revs.values()), revs

            again = _bootstrap(apiserver)
            assert again.is_completed(), again
            rerun = again.result()
    finally:
        kube.delete("Node", None, node)

    assert not rerun.changed
    assert {o.action for o in rerun.components} == {"unchanged", "skipped"}
    assert revisions(s) == revs  # same helm revisions
    assert snapshot(kube, s) == rvs  # same resourceVersions: nothing written at all
    assert _secret_values(kube, s) == secrets_before  # generated once, reused

    logs, artifacts, params, task_runs = asyncio.run(_run_records([first.state_details.flow_run_id,
                                                                   again.state_details.flow_run_id]))
    # Components ran in dependency order, each gated: a component's install started after the
    # previous one's readiness gate had finished.
    runs = sorted((t for t in task_runs if t.flow_run_id == first.state_details.flow_run_id and t.start_time),
                  key=lambda t: t.start_time)
    names = [t.name for t in runs]
    gated = [n for n in names if n.startswith(("install-", "await-"))]
    assert gated == ["install-cert-manager", "await-cert-manager", "install-envoy-gateway", "await-envoy-gateway",
                     "install-vibecode-platform", "await-vibecode-platform", "install-hr-gateway", "await-hr-gateway",
                     "install-demo-workspace"]  # the demo workspace's decision, before its own flow
    by_name = {t.name: t for t in runs}
    for before, after in zip(gated[1::2], gated[2::2], strict=False):
        assert by_name[before].end_time <= by_name[after].start_time, (before, after)
    text = "\n".join([l.message for l in logs] + [str(a.data) for a in artifacts] + [str(p) for p in params])
    summaries = {a.flow_run_id: a.data for a in artifacts if a.key == "bootstrap-platform"}
    assert "nothing changed" in summaries[again.state_details.flow_run_id]
    changed = sum(o.changed for o in result.components)  # the Prefect limits and pools: new or not, per session
    assert changed >= 6 and f"{changed} component(s) changed" in summaries[first.state_details.flow_run_id]
    assert f"SHA-256 fingerprint {fingerprint}" in summaries[again.state_details.flow_run_id]  # read from the cluster
    assert f"https://auth.{s.domain}" in summaries[again.state_details.flow_run_id]  # the Gateway's listeners
    leaked = [k for k, v in secrets_before.items() if v in text]
    assert not leaked, f"secret values of {leaked} appear in logs, artifacts or parameters"
    assert len(logs) > 10 and len(artifacts) >= 2  # the scan looked at real records


def test_a_failure_at_one_component_leaves_the_earlier_ones_untouched_and_a_rerun_resumes_there(
        kube, apiserver, platform_env, monkeypatch):
    """Envoy Gateway's controller never reports ready on the first run (the stand-in holds its
    Deployment back): bootstrap stops at its readiness gate. The rerun changes nothing before
    it, and completes."""
    from tasks.core.settings import get_settings

    s = platform_env
    eg = s.platform.envoy_gateway_namespace
    monkeypatch.setenv("VIBECODE_PLATFORM__READY_TIMEOUT_SECONDS", "2")
    get_settings.cache_clear()
    with ControllerStandIn(kube, set(_namespaces(s)), hold={eg}) as standin:
        failed = _bootstrap(apiserver)
        assert failed.is_failed()
        assert "envoy-gateway not ready after 2s" in str(failed.message), failed.message
        assert helm.status(s.platform.release, s.platform_namespace) is None  # nothing after k was started
        # What the components before k made: the namespaces (but the two the platform chart adopts
        # and labels when it is installed), the CRDs, cert-manager's objects, the generated Secrets.
        adopted = {s.platform_namespace, s.namespace}
        earlier = {k: v for k, v in snapshot(kube, s).items()
                   if (k[0] == "Namespace" and k[2] not in adopted) or k[0] == "CustomResourceDefinition"
                   or k[1] == s.platform.cert_manager_namespace or (k[0] == "Secret" and k[1] in adopted)}
        cert_manager = helm.status("cert-manager", s.platform.cert_manager_namespace).revision
        eg_revision = helm.status("envoy-gateway", eg).revision
        standin.hold.clear()
        monkeypatch.setenv("VIBECODE_PLATFORM__READY_TIMEOUT_SECONDS", "30")
        get_settings.cache_clear()
        ok = _bootstrap(apiserver)
    assert ok.is_completed(), ok
    actions = {o.component: o.action for o in ok.result().components}
    assert actions["namespaces"] == actions["platform-secrets"] == actions["cert-manager"] == "unchanged"
    assert actions["envoy-gateway"] == "unchanged"  # installed by the failed run; now it passed its gate
    assert actions["vibecode-platform"] == "installed" and actions["demo-workspace"] == "installed"
    after = snapshot(kube, s)
    assert {k: after.get(k) for k in earlier} == earlier  # the components before k: not one write
    assert helm.status("cert-manager", s.platform.cert_manager_namespace).revision == cert_manager
    assert helm.status("envoy-gateway", eg).revision == eg_revision
    logs, artifacts, *_ = asyncio.run(_run_records([failed.state_details.flow_run_id]))
    summary = next(a.data for a in artifacts if a.key == "bootstrap-platform")
    assert "Stopped at envoy-gateway" in summary


def test_plan_mode_says_what_would_change_and_why_and_changes_nothing(kube, apiserver, platform_env, monkeypatch):
    from tasks.core.settings import get_settings

    s = platform_env
    fresh = _bootstrap(apiserver, plan=True).result()
    actions = {o.component: o.action for o in fresh.components}
    assert actions["namespaces"] == "would create" and actions["platform-secrets"] == "would create"
    assert actions["cert-manager"] == actions["envoy-gateway"] == actions["vibecode-platform"] == "would install"
    assert actions["demo-workspace"] == "would install" and not fresh.changed
    assert all(kube.get("Namespace", None, ns) is None for ns in _namespaces(s))  # nothing was created

    with ControllerStandIn(kube, set(_namespaces(s))):
        assert _bootstrap(apiserver).is_completed()
    revs, rvs = revisions(s), snapshot(kube, s)
    monkeypatch.setenv("VIBECODE_DOMAIN", "example.org")
    monkeypatch.setenv("VIBECODE_AUTHELIA_URL", "https://auth.example.org")
    get_settings.cache_clear()
    planned = _bootstrap(apiserver, plan=True).result()
    by = {o.component: o for o in planned.components}
    assert by["vibecode-platform"].action == "would upgrade" and "values changed at domain" in by["vibecode-platform"].detail
    assert by["demo-workspace"].action == "would upgrade" and "domain" in by["demo-workspace"].detail
    assert by["cert-manager"].action == by["envoy-gateway"].action == by["namespaces"].action == "unchanged"
    assert revisions(s) == revs and snapshot(kube, s) == rvs


def test_namespaces_an_operator_made_first_are_adopted_not_a_failed_install(kube, apiserver, platform_env):
    """An operator created the workspace namespace and the ops namespace before bootstrap (for
    the Prefect worker, say), without helm's ownership metadata: helm would refuse to install
    the platform chart over them. Bootstrap adopts them, and the chart then owns them."""
    s = platform_env
    OPS_NAMESPACE = s.platform.ops_namespace
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": s.namespace}})
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPS_NAMESPACE}})
    with ControllerStandIn(kube, set(_namespaces(s))):
        state = _bootstrap(apiserver)
    assert state.is_completed(), state
    first = {o.component: o for o in state.result().components}
    assert f"adopted: {s.namespace}, {OPS_NAMESPACE}" in first["namespaces"].detail
    assert first["vibecode-platform"].action == "installed"
    for ns in (s.namespace, OPS_NAMESPACE):
        meta = kube.get("Namespace", None, ns)["metadata"]
        assert meta["annotations"]["meta.helm.sh/release-namespace"] == s.platform_namespace
        assert meta["labels"]["pod-security.kubernetes.io/enforce"]  # the chart's labels, now it owns them


def test_onboarding_after_bootstrap_writes_the_platform_charts_secrets_and_routes_through_its_gateway(
        kube, apiserver, platform_env, smtp_inbox, monkeypatch):
    """The names come from the cluster: the Secrets the chart's Authelia mounts (read from the
    release's own Deployment) and the Gateway it labelled, not from settings."""
    import yaml

    from flows.onboarding import onboard_user
    from tasks.core.settings import get_settings
    from tasks.people.hr import parse_request
    from tasks.platform.values import GATEWAY_SELECTOR
    from tests.fixtures.people import HIRE

    s = platform_env
    monkeypatch.setenv("VIBECODE_HR_ALLOWED_GROUPS", '["developers", "users"]')
    get_settings.cache_clear()
    with ControllerStandIn(kube, set(_namespaces(s))):
        assert _bootstrap(apiserver).is_completed()
        state = helm.release_state(s.platform.release, s.platform_namespace)
        authelia = next(n for k, _, n in state.resources if k == "Deployment")
        dep = kube.get("Deployment", s.platform_namespace, authelia)
        mounted = {v["secret"]["secretName"] for v in dep["spec"]["template"]["spec"]["volumes"] if "secret" in v}
        secrets = {n: kube.get("Secret", s.platform_namespace, n) for n in mounted}
        users_secret = next(n for n, sec in secrets.items() if "users_database.yml" in (sec.get("data") or {}))
        config_secret = next(n for n, sec in secrets.items() if "configuration.yml" in (sec.get("data") or {}))
        assert config_secret in {n for k, _, n in state.resources if k == "Secret"}  # the chart renders it
        before = secrets[users_secret]["metadata"]["resourceVersion"]

        result = onboard_user(parse_request(HIRE))

    users = yaml.safe_load(base64.b64decode(kube.get("Secret", s.platform_namespace, users_secret)["data"]
                                            ["users_database.yml"]))["users"]
    assert "alice" in users and kube.get("Secret", s.platform_namespace, users_secret)["metadata"][
        "resourceVersion"] != before
    rolled = kube.get("Deployment", s.platform_namespace, authelia)
    assert rolled["metadata"]["generation"] > dep["metadata"]["generation"]  # onboarding rolled the chart's Authelia
    gateways = kube.list_all("Gateway", GATEWAY_SELECTOR)
    assert len(gateways) == 1
    gw = gateways[0]
    route = kube.get("HTTPRoute", s.namespace, "ws-alice")
    parent = route["spec"]["parentRefs"][0]
    assert (parent["name"], parent["namespace"]) == (gw["metadata"]["name"], gw["metadata"]["namespace"])
    listener = next(lst for lst in gw["spec"]["listeners"] if lst["name"] == parent["sectionName"])
    assert listener["hostname"] == f"*.{s.domain}" and route["spec"]["hostnames"] == [f"alice.{s.domain}"]
    assert result.username == "alice"
