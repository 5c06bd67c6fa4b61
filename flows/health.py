"""Platform health every five minutes: what operators need to know, in Datadog and Prometheus.
Orchestration only: the steps are in :mod:`tasks.health.checks.steps`.

One paged LIST per kind (never a GET per workspace) and one probe per endpoint feed the pure
checks of :mod:`tasks.health.checks.checks`; the sinks of :mod:`tasks.health.checks.sinks` publish the
result. A critical check fails the run (so a Prefect automation can page); a warning does
not. A sink that is down is named in the result and never hides the checks.
"""

from __future__ import annotations

import time
from datetime import timedelta

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.utilities.annotations import quote

from tasks.core.settings import get_settings
from tasks.core.steps import now as _now
from tasks.core.steps import table_artifact
from tasks.health.checks import HealthReport, Listing, Observed, Status, evaluate
from tasks.health.steps import (
    PlatformUnhealthy,
    list_cluster_objects,
    outcome,
    probe_api,
    probe_authelia,
    probe_backup_bucket,
    to_datadog,
    to_pushgateway,
)
from tasks.workspace.status_steps import publish_workspace_overview


@flow(name="check-platform-health")
def check_platform_health() -> HealthReport:
    """Check the platform, publish to every configured sink, fail when anything is critical.

    The probes and LISTs share one budget (``settings.health.budget_seconds``): whatever has
    not answered by then is reported critical, so a hung API server makes this run fail
    loudly on time instead of holding the schedule's only slot."""
    s = get_settings()
    logger = get_run_logger()
    started = _now()
    deadline = time.monotonic() + s.health.budget_seconds
    api, objects = probe_api.submit(), list_cluster_objects.submit()
    authelia, bucket = probe_authelia.submit(), probe_backup_bucket.submit()

    def left() -> float:
        return max(0.0, deadline - time.monotonic())

    latency: float | None
    listed: Listing | None
    latency, api_error = outcome(api, left())
    listed, list_error = outcome(objects, left())
    if latency is not None and listed is None:  # reachable, yet a LIST failed: that is the finding
        latency, api_error = None, list_error
    http_probe: tuple[int | None, str, float, str] | None
    http_probe, crash = outcome(authelia, left())
    status, body, seconds, http_error = http_probe or (None, "", 0.0, crash)
    bucket_probe: tuple[float | None, str] | None
    bucket_probe, bucket_crash = outcome(bucket, left())
    bucket_latency, bucket_error = bucket_probe or (None, bucket_crash)
    listing = listed if isinstance(listed, Listing) else Listing()
    # model_construct: the listing is validated already; validating again copies every listed object
    obs = Observed.model_construct(**dict(listing), api_latency=latency, api_error=api_error,
                                   authelia_status=status, authelia_body=body, authelia_latency=seconds,
                                   authelia_error=http_error, bucket=s.backup.s3_bucket,
                                   bucket_latency=bucket_latency, bucket_error=bucket_error)
    dormancy = timedelta(days=s.reaper.dormancy_days) if s.reaper.dormancy_days else None
    checks, gauges = evaluate(obs, _now(), s.namespace, s.health.components, s.health.slow_seconds,
                              dormancy=dormancy)
    # quote(): Prefect passes the value as it is (mypy sees a wrapper, hence the ignores)
    publish_workspace_overview(quote(dict(listed) if isinstance(listed, Listing) else None),  # type: ignore[call-overload]
                               _now(), quiet=True)  # the UI's workspace list (workspace-overview)
    report = HealthReport(started=started, finished=_now(), checks=checks, gauges=gauges)

    sinks = {"pushgateway": (to_pushgateway, bool(s.health.pushgateway_url)),
             "datadog": (to_datadog, s.health.datadog_api_key is not None or bool(s.health.datadog_api_key_block))}
    # quote(): Prefect would otherwise walk every gauge looking for futures to resolve
    futures = {name: sink.submit(quote(report))  # type: ignore[call-overload]
               for name, (sink, configured) in sinks.items() if configured}
    for name, (_, configured) in sinks.items():
        if not configured:
            report.sinks[name] = "not configured"
            continue
        result, error = outcome(futures[name])
        report.sinks[name] = result if error == "" else f"failed: {error}"
        if error:
            logger.error("sink %s failed: %s", name, error)

    for c in report.ordered():
        log = {Status.OK: logger.info, Status.WARNING: logger.warning, Status.CRITICAL: logger.error}[c.status]
        log("%s %s: %s", c.status.value, c.name, c.message)
    table_artifact("platform-health", report.table(), f"Platform health: {report.status.value}; sinks: "
                   + ", ".join(f"{k} {v}" for k, v in report.sinks.items()))
    create_markdown_artifact(key="platform-health-summary", markdown=report.markdown(),
                             description=f"Platform health: {report.status.value}")
    if report.status is Status.CRITICAL:
        raise PlatformUnhealthy(report)
    return report
