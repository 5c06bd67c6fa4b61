"""Prefect steps of bringing the platform up: one per component, each converging, each with a
plan mode that reports what it would do and changes nothing.

Every step returns an :class:`Outcome`: the component, what was (or would be) done and why,
and nothing secret. A step whose world already matches does no write at all, so a rerun
after success keeps every helm revision and resourceVersion, and a rerun after a failure
finds the earlier components unchanged and carries on at the one that failed.

No step here carries a concurrency tag (``kube-api``, ``helm``): bootstrap runs alone (its
deployment cancels a second run) and one step at a time, so a slot would protect nothing, and
each tagged task run holds a concurrency lease whose renewal thread its end waits for (up to
2 s per task, measured here: most of a no-op rerun's time before they were removed).
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from prefect import task
from pydantic import BaseModel

from tasks.cluster import helm, kube
from tasks.cluster.limits import desired_limits
from tasks.cluster.workpools import ensure_work_pools
from tasks.core.errors import NotFound, PermanentError, Timeout
from tasks.core.names import MANAGED_BY_LABEL, PART_OF, PART_OF_LABEL
from tasks.core.settings import get_settings
from tasks.core.steps import transient_retries
from tasks.platform import credentials
from tasks.platform.ca import ca_from_secret
from tasks.platform.lock import Lock, normalise
from tasks.platform.plan import CRDS, ClusterFacts, cluster_network, namespace_action, release_action
from tasks.platform.readiness import WORKLOADS, pending
from tasks.platform.releases import HR_GATEWAY_SECRET, DesiredRelease, namespaces

RETRY = transient_retries(2)
PSA_RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/audit": "restricted",
                  "pod-security.kubernetes.io/warn": "restricted"}


class Outcome(BaseModel):
    component: str
    action: str  # installed, upgraded, created, updated, unchanged, skipped; "would ..." in a plan
    detail: str = ""
    version: str = ""
    revision: int | None = None
    changed: bool = False
    seconds: float = 0.0  # how long the component took, its readiness gate included


def _ns_manifest(name: str, release: str | None, release_ns: str, restricted: bool) -> dict:
    """A namespace; with ``release``, one the platform chart renders too, marked so helm adopts
    it (the chart then sets its labels)."""
    labels = {PART_OF_LABEL: PART_OF, **(PSA_RESTRICTED if restricted else {})}
    meta: dict = {"name": name, "labels": labels}
    if release:
        labels[MANAGED_BY_LABEL] = "Helm"
        meta["annotations"] = {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": release_ns}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


@task(name="observe-cluster", **RETRY)
def observe_cluster(lock: Lock, bundle: bool, mirror: str | None, bundle_images: frozenset[str] = frozenset(),
                    bundle_charts: frozenset[str] = frozenset()) -> ClusterFacts:
    """The images on the nodes (what the kubelets report) and what settings say about pulls.
    A workspace or restic image set in settings other than the lock's is an override."""
    s = get_settings()
    overrides = dict(s.platform.image_overrides)
    for key, configured in (("code-server", s.workspace.image), ("restic", s.backup.restic_image)):
        if key in lock.images and normalise(configured) != normalise(lock.image(key).image):
            overrides.setdefault(key, configured)
    found: set[str] = set()
    nodes = kube.connect().list("Node", None)
    for node in nodes:
        for image in (node.get("status") or {}).get("images") or []:
            for name in image.get("names") or []:
                try:
                    found.add(normalise(name))
                except ValueError:
                    continue  # an image id (sha256:...) rather than a name
    has_key = s.health.datadog_api_key is not None or s.health.datadog_api_key_block is not None
    return ClusterFacts(registry_reachable=s.platform.registry_reachable, node_images=frozenset(found),
                        image_overrides=overrides, mirror_registry=mirror, datadog_key=has_key, bundle=bundle,
                        bundle_images=frozenset(bundle_images), bundle_charts=frozenset(bundle_charts),
                        network=cluster_network(nodes), by_tag=bundle and mirror is None)


@task(name="ensure-namespaces", **RETRY)
def ensure_namespaces(plan: bool) -> Outcome:
    """The platform's namespaces. Those the platform chart renders (platform, workspaces, ops)
    are made ready for helm to own: created marked for adoption, or adopted when an operator
    made them first (:func:`tasks.platform.plan.namespace_action`)."""
    s = get_settings()
    client = kube.connect()
    chart_owned = (s.platform_namespace, s.namespace, s.platform.ops_namespace)
    done: dict[str, list[str]] = {"created": [], "adopted": [], "present": []}
    for name in dict.fromkeys([*namespaces(s), *chart_owned]):
        existing = client.get("Namespace", None, name)
        if name not in chart_owned:
            action = "create" if existing is None else "ours"
        else:
            try:
                action = namespace_action(existing, s.platform.release, s.platform_namespace)
            except ValueError as exc:
                raise PermanentError(str(exc)) from None
        if action == "create" and not plan:
            adopt = s.platform.release if name in chart_owned else None
            client.create(_ns_manifest(name, adopt, s.platform_namespace, restricted=name == s.namespace))
        elif action == "adopt" and not plan:
            client.patch("Namespace", None, name, {"metadata": {
                "labels": {MANAGED_BY_LABEL: "Helm"},
                "annotations": {"meta.helm.sh/release-name": s.platform.release,
                                "meta.helm.sh/release-namespace": s.platform_namespace}}})
        done["created" if action == "create" else "adopted" if action == "adopt" else "present"].append(name)
    if not done["created"] and not done["adopted"]:
        return Outcome(component="namespaces", action="unchanged", detail=", ".join(done["present"]))
    detail = "; ".join(f"{'would be ' if plan else ''}{k}: {', '.join(v)}" for k, v in done.items()
                       if v and k != "present")
    return Outcome(component="namespaces", action="would create" if plan else "created", detail=detail,
                   changed=not plan)


def _ensure_secret(client, manifest: dict, plan: bool, update: bool) -> str | None:
    """Create ``manifest`` if absent (or, with ``update``, make its data match); the action, or None."""
    meta = manifest["metadata"]
    existing = client.get("Secret", meta["namespace"], meta["name"])
    if existing is None:
        if not plan:
            client.create(manifest)
        return "create"
    if update and not credentials.same_data(existing, manifest):
        if not plan:
            client.patch("Secret", meta["namespace"], meta["name"], {"data": manifest["data"]})
        return "update"
    return None


@task(name="ensure-platform-secrets", **RETRY)
def ensure_platform_secrets(plan: bool) -> Outcome:
    """Generate the platform secrets once; afterwards only a missing key is added. The Secrets
    derived from them (HR gateway, backups) are created when absent and never overwritten (an
    operator may manage them); the SMTP password follows settings."""
    s = get_settings()
    client = kube.connect()
    ns, name = s.platform_namespace, s.platform.secret_name
    done: list[str] = []
    existing = client.get("Secret", ns, name)
    missing = credentials.missing_keys(existing)
    if existing is None:
        values = credentials.generate(missing, secrets.token_urlsafe)
        if not plan:
            client.create(credentials.platform_secret(name, ns, values))
        done.append(f"{name} ({len(missing)} keys)")
    elif missing:
        values = credentials.generate(missing, secrets.token_urlsafe)
        if not plan:
            client.patch("Secret", ns, name, credentials.added_keys_patch(values))
        done.append(f"{name}: added {', '.join(missing)}")
    platform = {**credentials.decode(existing), **(values if missing else {})}
    wanted = [(credentials.users_secret(s.identity.authelia_users_secret, ns), False),
              (credentials.hr_gateway_secret(HR_GATEWAY_SECRET, ns, platform), False),
              (credentials.backup_secret(s.backup.secret, s.namespace, platform), False)]
    if s.mail.smtp_password is not None:
        wanted.append((credentials.smtp_secret(ns, s.mail.smtp_password.get_secret_value()), True))
    for manifest, update in wanted:
        action = _ensure_secret(client, manifest, plan, update)
        if action:
            done.append(f"{manifest['metadata']['name']} ({action})")
    if not done:
        return Outcome(component="platform-secrets", action="unchanged",
                       detail=f"{name} and the Secrets derived from it exist; nothing generated")
    return Outcome(component="platform-secrets", action="would create" if plan else "created",
                   detail="; ".join(done), changed=not plan)


def _chart_source(lock: Lock, desired: DesiredRelease, bundle: Path | None, plan: bool) -> tuple[Path | None, str, str]:
    """(archive or directory, chart version, digest) for a release. In a plan an upstream chart
    that is not cached is not pulled: its version and digest come from the lock."""
    if desired.chart_key is None:
        if desired.chart_path is None:
            raise PermanentError(f"{desired.component}: neither a chart of ours nor a locked one")
        chart = Path(desired.chart_path)
        if not (chart / "Chart.yaml").is_file():
            raise PermanentError(f"{desired.component}: no chart at {chart}")
        import yaml

        version = str(yaml.safe_load((chart / "Chart.yaml").read_text())["version"])
        return chart, version, helm.chart_digest(chart)
    pin = lock.chart(desired.chart_key)
    name = pin.name(desired.chart_key)
    if plan and bundle is None:
        cached = helm.CHART_CACHE / f"{name}-{pin.version}-{(pin.digest or '').removeprefix('sha256:')[:16]}.tgz"
        return (cached if cached.is_file() else None), str(pin.version), (pin.digest or "").removeprefix("sha256:")
    path = helm.fetch_chart(name, pin.repository, pin.version, pin.digest, bundle_dir=bundle)
    return path, str(pin.version), helm.chart_digest(path)


@task(name="install-component", task_run_name="install-{desired.component}", **RETRY)
def install_component(desired: DesiredRelease, lock: Lock, bundle: Path | None, plan: bool) -> Outcome:
    """Install or upgrade one release, or leave it as it is when chart and values match."""
    s = get_settings()
    chart, version, digest = _chart_source(lock, desired, bundle, plan)
    state = helm.release_state(desired.release, desired.namespace, s)
    decision = release_action(state, version, digest, desired.values)
    why = "; ".join(decision.reasons)
    if decision.action == "unchanged" and state is not None:
        return Outcome(component=desired.component, action="unchanged", detail=why, version=version,
                       revision=state.revision)
    if plan:
        return Outcome(component=desired.component, action=f"would {decision.action}", detail=why, version=version)
    if chart is None:  # only a plan leaves an upstream chart unfetched
        raise PermanentError(f"{desired.component}: chart archive missing")
    result = helm.install_or_upgrade(desired.release, chart, desired.values, desired.namespace, s)
    return Outcome(component=desired.component, action="installed" if state is None else "upgraded", detail=why,
                   version=version, revision=result.revision, changed=result.changed)


@task(name="await-component-ready", task_run_name="await-{component}", **RETRY)
def await_ready(component: str, release: str, namespace: str) -> str:
    """Wait until every workload of the release is available and its CRDs are served.

    One LIST per kind and namespace per check; a timeout is transient (images may still be
    pulling), a failed rollout is not."""
    s = get_settings()
    client = kube.connect()
    state = helm.release_state(release, namespace, s)
    if state is None:
        raise NotFound(f"{component}: release {namespace}/{release} is not installed")
    wanted = {(k, ns, n) for k, ns, n in state.resources if k in WORKLOADS}
    crds = set(CRDS.get(component, ())) | {n for k, _, n in state.resources if k == "CustomResourceDefinition"}
    deadline = time.monotonic() + s.platform.ready_timeout_seconds
    while True:
        objects: dict[tuple[str, str | None, str], dict | None] = {}
        for kind, ns in sorted({(k, ns) for k, ns, _ in wanted}):
            listed = {o["metadata"]["name"]: o for o in client.list(kind, ns)}
            objects.update({(k, n_s, n): listed.get(n) for k, n_s, n in wanted if (k, n_s) == (kind, ns)})
        for name in crds:
            objects[("CustomResourceDefinition", "", name)] = client.get("CustomResourceDefinition", None, name)
        try:
            waiting = pending(objects)
        except ValueError as exc:
            raise PermanentError(f"{component}: {exc}") from None
        if not waiting:
            return f"{len(wanted)} workloads available, {len(crds)} CRDs established"
        if time.monotonic() >= deadline:
            raise Timeout(f"{component} not ready after {s.platform.ready_timeout_seconds:.0f}s: {'; '.join(waiting[:5])}")
        time.sleep(s.platform.ready_poll_seconds)


@task(name="ensure-tag-limits", **RETRY)
def ensure_tag_limits(plan: bool) -> Outcome:
    """The Prefect tag concurrency limits; written only where they differ."""
    from prefect.client.orchestration import get_client

    want = desired_limits(get_settings())
    with get_client(sync_client=True) as client:
        have: dict[str, int | None] = {}
        for tag in want:
            try:
                have[tag] = client.read_concurrency_limit_by_tag(tag).concurrency_limit
            except Exception:  # noqa: BLE001 - Prefect raises ObjectNotFound for a missing limit
                have[tag] = None
        differ = {t: v for t, v in want.items() if have.get(t) != v}
        if not plan:
            for tag, limit in differ.items():
                client.create_concurrency_limit(tag=tag, concurrency_limit=limit)
    if not differ:
        return Outcome(component="tag-limits", action="unchanged", detail=", ".join(f"{t}={v}" for t, v in want.items()))
    return Outcome(component="tag-limits", action="would set" if plan else "set", changed=not plan,
                   detail=", ".join(f"{t}: {have.get(t)} -> {v}" for t, v in differ.items()))


@task(name="ensure-work-pools", **RETRY)
def ensure_work_pools_step(plan: bool) -> Outcome:
    """The Prefect work pools (process, kubernetes), their job templates in step with git."""
    pools = ensure_work_pools(plan=plan)
    changed = {n: a for n, a in pools.items() if a != "unchanged"}
    detail = ", ".join(f"{n}: {a}" for n, a in pools.items())
    if not changed:
        return Outcome(component="work-pools", action="unchanged", detail=detail)
    return Outcome(component="work-pools", action="would set" if plan else "set", changed=not plan, detail=detail)


@task(name="read-platform-facts", **RETRY)
def read_platform_facts() -> dict[str, str]:
    """What the summary shows that only the cluster knows: the CA's fingerprint (from the
    Certificate marked isCA, whatever its name) and the Gateway's listener host names."""
    s = get_settings()
    client = kube.connect()
    facts: dict[str, str] = {}
    try:
        certs = client.list_all("Certificate")
    except NotFound:
        certs = []
    for cert in certs:
        spec = cert.get("spec") or {}
        if not spec.get("isCA"):
            continue
        where = f"{cert['metadata']['namespace']}/{spec.get('secretName', '')}"
        try:
            ca = ca_from_secret(client.get("Secret", cert["metadata"]["namespace"], spec.get("secretName", "")), where)
            facts["ca"] = f"{ca.subject} (Secret {where}), SHA-256 fingerprint {ca.sha256}"
        except PermanentError as exc:
            facts["ca"] = f"not issued yet: {exc}"
    try:
        gateways = client.list("Gateway", s.platform_namespace)
    except NotFound:
        gateways = []
    hosts = [lst.get("hostname") for g in gateways for lst in (g.get("spec") or {}).get("listeners") or []
             if lst.get("hostname")]
    if hosts:
        facts["hosts"] = ", ".join(f"https://{h}" for h in hosts)
    return facts


@task(name="list-platform-gateways", **RETRY)
def list_platform_gateways() -> list[dict]:
    """The Gateways the platform chart labels for workspaces (one LIST by label), as provisioning
    finds them; none when the Gateway API is not installed at all."""
    from tasks.platform.values import GATEWAY_SELECTOR

    try:
        return kube.connect().list_all("Gateway", GATEWAY_SELECTOR)
    except NotFound:
        return []
