"""Prefect steps of the platform health check: the probes, the listing, the sinks.

One paged LIST per kind (never a GET per workspace) and one probe per endpoint feed the pure
checks of :mod:`tasks.health.checks.checks`; the sinks of :mod:`tasks.health.checks.sinks` publish the result.
A critical check fails the run (so a Prefect automation can page); a warning does not. A
sink that is down is named in the result and never hides the checks.
"""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from prefect import task
from prefect.futures import PrefectFuture

from tasks.cluster import kube
from tasks.core.errors import NotFound, PermanentError
from tasks.core.names import WORKSPACE_PVC_SELECTOR
from tasks.core.settings import get_settings
from tasks.core.steps import KUBE_API, transient_retries
from tasks.health.checks import HealthReport, Listing, Status, parse_users, redact
from tasks.health.fields import observed
from tasks.health.probes import probe_bucket, probe_http
from tasks.health.sinks import push_prometheus, send_datadog
from tasks.people.ledger import SELECTOR as LEDGER_SELECTOR
from tasks.people.usersdb import USERS_KEY

RETRY = transient_retries(2, backoff_factor=1)  # a run every 5 minutes: retry briefly, never pile up


class PlatformUnhealthy(PermanentError):
    """At least one check is critical. Carries the report so the CLI can still print it."""

    def __init__(self, report: HealthReport):
        self.report = report
        crit = [c.name for c in report.checks if c.status is Status.CRITICAL]
        super().__init__(f"{len(crit)} critical checks: {', '.join(crit)}")

    def __reduce__(self):  # Prefect may persist the exception; keep the report with it
        return type(self), (self.report,)


@task(name="probe-api", tags=[KUBE_API], **RETRY)
def probe_api() -> float:
    return kube.connect().ping()


@task(name="list-cluster-objects", tags=[KUBE_API], **RETRY)
def list_cluster_objects() -> Listing:
    """One LIST per kind; Deployments and StatefulSets across namespaces, because the
    platform components live in several and the workspaces are among them."""
    s = get_settings()
    client = kube.connect()
    try:
        certificates = [observed(c) for c in client.list_all("Certificate")]
    except NotFound:  # the cert-manager CRD is not installed
        certificates = None
    users, users_database = None, None
    if s.identity.backend == "file":  # parsed here: password hashes never leave this task
        secret = client.get("Secret", s.platform_namespace, s.identity.authelia_users_secret)
        raw = ((secret or {}).get("data") or {}).get(USERS_KEY)
        text = base64.b64decode(raw).decode("utf-8", "replace") if raw else None
        users, users_database = parse_users(text, f"Secret {s.platform_namespace}/{s.identity.authelia_users_secret} "
                                                  + ("not found" if secret is None else f"has no {USERS_KEY}"))
        users = redact(users)

    def read(kind: str, namespace: str | None = None, sel: str | None = None) -> list[dict]:
        """Every page, each object cut to what the checks and the overview read as its page
        arrives (:func:`tasks.health.fields.observed`): memory follows the result, not the fleet."""
        return [observed(o) for page in client.pages(kind, namespace, sel, all_namespaces=namespace is None,
                                                     ahead=False)  # three at once: no page held ahead
                for o in page]

    kinds = {"nodes": ("Node",), "deployments": ("Deployment",), "statefulsets": ("StatefulSet",),
             "pvcs": ("PersistentVolumeClaim", s.namespace, WORKSPACE_PVC_SELECTOR),
             "ledger": ("ConfigMap", s.platform_namespace, LEDGER_SELECTOR)}
    # Three LISTs at once: the API server prepares one kind's pages while this process decodes
    # another's. The collector stays paused meanwhile (kube.gc_paused: 70% of the CPU otherwise).
    with kube.gc_paused(), ThreadPoolExecutor(max_workers=3, thread_name_prefix="list") as pool:
        futures = {key: pool.submit(read, *args) for key, args in kinds.items()}
        listed = {key: f.result() for key, f in futures.items()}
    # model_construct: validating would copy 40,000 dicts at 10,000 workspaces, for fields built just above
    return Listing.model_construct(nodes=listed["nodes"], deployments=listed["deployments"],
                                   statefulsets=listed["statefulsets"], pvcs=listed["pvcs"], ledger=listed["ledger"],
                                   certificates=certificates, users=users, users_database=users_database)


@task(name="probe-authelia", **RETRY)
def probe_authelia() -> tuple[int | None, str, float, str]:
    s = get_settings()
    return probe_http(s.health.authelia_health_url, s.health.timeout_seconds)


@task(name="probe-bucket", **RETRY)
def probe_backup_bucket() -> tuple[float | None, str]:
    return probe_bucket(get_settings())


@task(name="push-pushgateway", **RETRY)
def to_pushgateway(report: HealthReport) -> str:
    s = get_settings()
    if not s.health.pushgateway_url:
        raise PermanentError("no Pushgateway URL configured (VIBECODE_HEALTH__PUSHGATEWAY_URL)")
    n = push_prometheus(report, s.health.pushgateway_url, s.health.metrics_env, s.health.metrics_cluster, s.health.timeout_seconds)
    return f"ok ({n} series)"


def _datadog_key() -> str | None:
    """From settings, else from the named Prefect Secret block; never a parameter."""
    s = get_settings()
    if s.health.datadog_api_key is not None:
        return s.health.datadog_api_key.get_secret_value()
    if s.health.datadog_api_key_block:
        from prefect.blocks.system import Secret

        block = cast(Secret, Secret.load(s.health.datadog_api_key_block))  # sync here: a task, not a coroutine
        return str(block.get())
    return None


@task(name="send-datadog", **RETRY)
def to_datadog(report: HealthReport) -> str:
    s = get_settings()
    key = _datadog_key()
    if key is None:
        raise PermanentError("no Datadog API key configured (VIBECODE_HEALTH__DATADOG_API_KEY or its Secret block)")
    n = send_datadog(report, key, s.health.datadog_site, s.health.datadog_host, s.health.metrics_env, s.health.metrics_cluster,
                     s.health.timeout_seconds)
    return f"ok ({n} series)"


def outcome(future: PrefectFuture[Any], timeout: float | None = None) -> tuple[Any, str]:
    """(result, "") or (None, the error): a probe that failed, or did not answer within
    ``timeout`` (the rest of the run's budget), is a finding, not a crash or a hang."""
    try:
        return future.result(timeout=timeout), ""
    except TimeoutError:
        return None, f"no answer within the run's budget ({get_settings().health.budget_seconds:g}s)"
    except Exception as exc:  # noqa: BLE001 - becomes the check's message
        return None, str(exc) or type(exc).__name__
