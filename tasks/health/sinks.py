"""Where health results go: Datadog (through ``datadog-api-client``) and a Prometheus
Pushgateway (through ``prometheus_client``), the two places operators already watch.

Both are built from the same :class:`~tasks.health.checks.HealthReport`. Each sink raises
:class:`~tasks.core.errors.ServerError` (transient) or :class:`~tasks.core.errors.PermanentError` with
a message that never holds the API key; the flow records the failure against the sink and
keeps the checks.
"""

from __future__ import annotations

from tasks.core.errors import PermanentError, ServerError
from tasks.health.checks import Check, HealthReport, Status

PUSHGATEWAY_JOB = "vibecode_health"
SERIES_PER_REQUEST = 1000  # well under the intake's 500 kB per payload
_SERVICE_STATUS = {Status.OK: 0, Status.WARNING: 1, Status.CRITICAL: 2}  # Datadog's and ours


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


# -- Prometheus ---------------------------------------------------------------------------
def prometheus_name(gauge: str) -> str:
    return "vibecode_" + gauge.replace(".", "_")


def push_prometheus(report: HealthReport, url: str, env: str, cluster: str, timeout: float) -> int:
    """Replace the ``vibecode_health`` group for this env/cluster; returns the series count."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()
    status = Gauge("vibecode_health_check_status", "Check status: 0 ok, 1 warning, 2 critical",
                   ["check"], registry=registry)
    value = Gauge("vibecode_health_check_value", "The value the check judged", ["check"], registry=registry)
    for c in report.checks:
        status.labels(check=c.name).set(c.status.rank)
        value.labels(check=c.name).set(c.value)
    metrics: dict[tuple[str, tuple[str, ...]], Gauge] = {}
    for g in report.gauges:
        keys = tuple(sorted(g.labels))
        key = (g.name, keys)
        if key not in metrics:
            metrics[key] = Gauge(prometheus_name(g.name), f"VibeCode {g.name}", list(keys), registry=registry)
        (metrics[key].labels(**g.labels) if keys else metrics[key]).set(g.value)
    last = Gauge("vibecode_health_last_run_timestamp_seconds", "When the health run finished", registry=registry)
    last.set(report.finished.timestamp())
    try:
        push_to_gateway(url, job=PUSHGATEWAY_JOB, registry=registry, timeout=timeout,
                        grouping_key={"env": env, "cluster": cluster})
    except OSError as exc:  # URLError and connection errors
        raise ServerError(f"Pushgateway {url}: {exc}") from None
    return len(report.checks) * 2 + len(report.gauges) + 1


# -- Datadog --------------------------------------------------------------------------------
def datadog_series(report: HealthReport, env: str, cluster: str) -> list[tuple[str, float, list[str]]]:
    """(metric, value, tags) for every check and gauge; pure, so the test can state exactly
    what the intake must receive."""
    base = [f"env:{env}", f"cluster:{cluster}"]
    out = []
    for c in report.checks:
        out.append(("vibecode.health.status", float(c.status.rank), [*base, f"check:{c.name}"]))
        out.append(("vibecode.health.value", float(c.value), [*base, f"check:{c.name}"]))
    for g in report.gauges:
        out.append((f"vibecode.{g.name}", float(g.value), [*base, *(f"{k}:{v}" for k, v in sorted(g.labels.items()))]))
    return out


def service_check_name(check: Check) -> str:
    return f"vibecode.{check.name}"


def send_datadog(report: HealthReport, api_key: str, site: str, host: str | None, env: str, cluster: str,
                 timeout: float) -> int:
    """Gauges to ``/api/v2/series``, one service check per check to ``/api/v1/check_run``."""
    from datadog_api_client import ApiClient, Configuration
    from datadog_api_client.exceptions import ApiException
    from datadog_api_client.v1.api.service_checks_api import ServiceChecksApi
    from datadog_api_client.v1.model.service_check import ServiceCheck
    from datadog_api_client.v1.model.service_check_status import ServiceCheckStatus
    from datadog_api_client.v1.model.service_checks import ServiceChecks
    from datadog_api_client.v2.api.metrics_api import MetricsApi
    from datadog_api_client.v2.model.metric_intake_type import MetricIntakeType
    from datadog_api_client.v2.model.metric_payload import MetricPayload
    from datadog_api_client.v2.model.metric_point import MetricPoint
    from datadog_api_client.v2.model.metric_series import MetricSeries

    config = Configuration(host=host) if host else Configuration()
    if not host:
        config.server_variables["site"] = site
    config.api_key["apiKeyAuth"] = api_key
    config.request_timeout = timeout
    ts = int(report.finished.timestamp())
    series = [MetricSeries(metric=m, type=MetricIntakeType.GAUGE, points=[MetricPoint(timestamp=ts, value=v)],
                           tags=tags) for m, v, tags in datadog_series(report, env, cluster)]
    checks = ServiceChecks([ServiceCheck(check=service_check_name(c), host_name=cluster, status=ServiceCheckStatus(
        _SERVICE_STATUS[c.status]), timestamp=ts, message=c.message[:500],
        tags=[f"env:{env}", f"cluster:{cluster}", f"check:{c.name}"]) for c in report.checks])
    where = host or f"api.{site}"
    try:
        with ApiClient(config) as client:
            metrics = MetricsApi(client)
            for i in range(0, len(series), SERIES_PER_REQUEST):
                metrics.submit_metrics(body=MetricPayload(series=series[i:i + SERIES_PER_REQUEST]))
            ServiceChecksApi(client).submit_service_check(body=checks)
    except ApiException as exc:
        msg = _scrub(f"Datadog {where}: HTTP {exc.status} {exc.reason}", api_key)
        if exc.status in (408, 429) or (exc.status or 0) >= 500:
            raise ServerError(msg) from None
        raise PermanentError(msg) from None
    except Exception as exc:  # noqa: BLE001 - connection errors (urllib3's are not OSErrors), bad answers
        raise ServerError(_scrub(f"Datadog {where}: {type(exc).__name__}: {exc}", api_key)) from None
    return len(series)
