"""Bring the platform up: the cluster (KIND, or one that is already running), then every
component in dependency order, each behind a readiness gate, then a demo workspace.

Orchestration only: the steps are in :mod:`tasks.platform.steps` (and :mod:`tasks.cluster.steps`),
the decisions in :mod:`tasks.platform.plan`, the pins in ``deployments/platform.lock.yaml``.
Every step converges: a rerun after success changes nothing and says so; a rerun after a
failure finds the components before it unchanged and resumes at the one that failed. With
``plan`` it reports what it would create or upgrade, and why, and changes nothing. With
``bundle`` (a directory :func:`flows.bundle.bundle` wrote) it installs with no network:
charts from the bundle, images from the mirror registry it pushes them to.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from flows.workspace import provision_workspace
from tasks.cluster import kube
from tasks.cluster.steps import ensure_kind_cluster, kind_cluster_exists
from tasks.core.names import Username, workspace_names
from tasks.core.settings import get_settings
from tasks.platform.bundle_steps import open_bundle, publish_bundle_images
from tasks.platform.lock import load_lock, normalise
from tasks.platform.plan import ORDER, PLATFORM_PARTS, components, decide, image_ref
from tasks.platform.releases import DesiredRelease, desired_releases
from tasks.platform.report import summary_markdown
from tasks.platform.steps import (
    Outcome,
    await_ready,
    ensure_namespaces,
    ensure_platform_secrets,
    ensure_tag_limits,
    ensure_work_pools_step,
    install_component,
    list_platform_gateways,
    observe_cluster,
    read_platform_facts,
)
from tasks.workspace.values import platform_gateway, workspace_values


class BootstrapResult(BaseModel):
    plan: bool
    changed: bool
    cluster: str
    components: list[Outcome]
    workspace_url: str | None = None
    failed_at: str | None = None
    # The demo workspace, as `vibecode up` prints it (the fields of ProvisionResult)
    username: str = ""
    url: str = ""
    release: str = ""
    revision: int | None = None
    ready: str = ""


def _use_cluster(cluster_name: str, existing_kubeconfig: Path | None, kube_context: str | None, plan: bool) -> str:
    """Point settings (and every cached client) at the cluster; create KIND's unless planning."""
    logger = get_run_logger()
    if existing_kubeconfig is None:
        kubeconfig = Path.home() / ".cache" / "vibecode" / f"kubeconfig-{cluster_name}"
        if plan and not kind_cluster_exists(cluster_name, kubeconfig):
            raise RuntimeError(f"plan: the KIND cluster {cluster_name} does not exist; a run would create it "
                               f"(kind {get_settings().platform.lock_file.name} node image) and install everything")
        state = ensure_kind_cluster(cluster_name, kubeconfig, load_lock(get_settings().platform.lock_file)
                                    .node_image.pinned_ref)
        where = f"KIND cluster {cluster_name} ({state})"
    else:
        kubeconfig = existing_kubeconfig
        where = f"the running cluster of {kubeconfig}" + (f", context {kube_context}" if kube_context else "")
    os.environ["VIBECODE_KUBECONFIG"] = str(kubeconfig)
    if kube_context:
        os.environ["VIBECODE_KUBE_CONTEXT"] = kube_context
    get_settings.cache_clear()
    kube.reset_connections()
    logger.info("using %s%s", where, " (KIND not used)" if existing_kubeconfig else "")
    return where


@flow(name="bootstrap-platform")
def bootstrap_platform(
    cluster_name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,30}$")] = "vibecode",
    workspace_user: Username = "demo",
    existing_kubeconfig: Path | None = None,
    kube_context: Annotated[str | None, Field(max_length=253)] = None,
    bundle: Path | None = None,
    plan: bool = False,
) -> BootstrapResult:
    """``existing_kubeconfig`` (and ``kube_context``): a cluster that is already running; KIND
    is then not used. ``bundle``: install from an air-gapped bundle. ``plan``: change nothing,
    report what would change and why."""
    logger = get_run_logger()
    names = workspace_names(workspace_user)  # validates before anything changes
    cluster = _use_cluster(cluster_name, existing_kubeconfig, kube_context, plan)
    s = get_settings()
    lock = load_lock(s.platform.lock_file)
    mirror: str | None = None
    in_bundle: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
    if bundle is not None:
        lock, mirror, images_in, charts_in = open_bundle(bundle)
        in_bundle = (images_in, charts_in)  # the bundle's own lock, checked against its contents
        if not plan:
            logger.info("bundle images: %s", publish_bundle_images(bundle, mirror, cluster_name
                                                                   if existing_kubeconfig is None else None))
    facts = observe_cluster(lock, bundle is not None, mirror, *in_bundle)
    workspace_image = image_ref(lock, "code-server", facts)
    if normalise(workspace_image) != normalise(s.workspace.image):  # the bundle's mirror
        os.environ["VIBECODE_WORKSPACE__IMAGE"] = workspace_image
        get_settings.cache_clear()
        s = get_settings()
    verdicts, parts = decide(lock, facts)
    releases = desired_releases(s, lock, facts, parts)
    releases["demo-workspace"] = DesiredRelease("demo-workspace", names.release, s.namespace, None,
                                                s.workspace.chart, workspace_values(names, s))
    outcomes: list[Outcome] = []
    result = BootstrapResult(plan=plan, changed=False, cluster=cluster, components=outcomes)
    try:
        for name in ORDER:
            verdict = verdicts[name]
            if not verdict.run:
                outcomes.append(Outcome(component=name, action="skipped", detail=verdict.reason))
                logger.warning("%s: not installed: %s", name, verdict.reason)
                continue
            result.failed_at = name
            started = time.monotonic()
            outcome = _component(name, releases, lock, bundle, plan)
            outcome.seconds = round(time.monotonic() - started, 2)
            if name == "vibecode-platform":
                off = [f"{p} ({v.reason})" for p, v in parts.items() if not v.run]
                outcome.detail += f"; off here: {'; '.join(off)}" if off else ""
            outcomes.append(outcome)
            if name == "demo-workspace" and not plan:
                result.workspace_url = result.url = outcome.detail.rsplit(" at ", 1)[-1]
                result.username, result.release = names.username, names.release
                result.revision, result.ready = outcome.revision, outcome.detail.rsplit("; at ", 1)[0]
            logger.info("%s: %s%s", name, outcome.action, f" ({outcome.detail})" if outcome.detail else "")
        result.failed_at = None
    finally:
        result.components = outcomes
        result.changed = any(o.changed for o in outcomes)
        running = {c.name: c.images for c in components(lock)}
        running["vibecode-platform"] = tuple(i for p, (imgs, _) in PLATFORM_PARTS.items() if parts[p].run for i in imgs)
        images = {k: image_ref(lock, k, facts) for o in outcomes if o.action != "skipped"
                  for k in running.get(o.component, ())}
        platform_facts = read_platform_facts() if not result.failed_at else {}
        markdown = summary_markdown(outcomes, lock, images, platform_facts, plan=plan, cluster=cluster,
                                    workspace_url=result.workspace_url)
        if result.failed_at:
            markdown += f"\n**Stopped at {result.failed_at}**: a rerun resumes there (the components above are done).\n"
        create_markdown_artifact(key="bootstrap-platform", markdown=markdown,
                                 description="Bootstrap plan" if plan else "The platform after bootstrap")
    logger.info("bootstrap %s: %s", "plan" if plan else "run",
                "changes planned" if plan and any(o.action.startswith("would") for o in outcomes)
                else ("changed " + ", ".join(o.component for o in outcomes if o.changed)) if result.changed
                else "nothing changed")
    return result


def _component(name: str, releases: dict[str, DesiredRelease], lock, bundle: Path | None, plan: bool) -> Outcome:
    if name == "namespaces":
        return ensure_namespaces(plan)
    if name == "platform-secrets":
        return ensure_platform_secrets(plan)
    if name == "tag-limits":
        return ensure_tag_limits(plan)
    if name == "work-pools":
        return ensure_work_pools_step(plan)
    desired = releases[name]
    if name == "demo-workspace":
        return _demo_workspace(desired, lock, bundle, plan)
    outcome = install_component(desired, lock, bundle, plan)
    if not plan:
        outcome.detail = "; ".join(filter(None, [outcome.detail, await_ready(name, desired.release,
                                                                            desired.namespace)]))
    return outcome


def _demo_workspace(desired: DesiredRelease, lock, bundle: Path | None, plan: bool) -> Outcome:
    """The demo workspace: provisioned by its own flow, unless its release already matches what
    provisioning would install (then only its readiness is checked, so a rerun stays cheap)."""
    names = workspace_names(desired.values["username"])
    s = get_settings()
    gateway = platform_gateway(list_platform_gateways(), s)
    desired = replace(desired, values=workspace_values(names, s, gateway=gateway))
    decided = install_component(desired, lock, bundle, plan=True)  # decides only
    if plan:
        return decided
    url = f"https://{names.host(s.domain)}"
    if decided.action == "unchanged":
        ready = await_ready("demo-workspace", desired.release, desired.namespace)
        return Outcome(component="demo-workspace", action="unchanged", revision=decided.revision,
                       detail=f"{decided.detail}; {ready}; at {url}")
    ws = provision_workspace(names.username)
    return Outcome(component="demo-workspace", action="installed" if ws.revision == 1 else "upgraded",
                   revision=ws.revision, changed=ws.changed, detail=f"{ws.ready}; at {ws.url}")
