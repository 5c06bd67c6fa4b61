#!/usr/bin/env python
"""Health benchmark (rerunnable; not a test). Prints results and writes benchmarks/results/health.json.

1,000 workspaces' objects (Deployment with status, PVC Bound with backup annotations, ledger
ConfigMap, an entry in the users database) are created in a real kube-apiserver; then the
``check-platform-health`` flow runs against it on a real Prefect server, publishing to a real
Pushgateway and to the loopback Datadog intake stand-in. Every request the Kubernetes client
sends during a run is counted by verb and path. Targets: a run under 5 s, at most one LIST
per kind.

    .venv/bin/python benchmarks/health_bench.py [--workspaces 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import statistics
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.cluster import kube as kube_adapter
from tasks.core.settings import get_settings
from tests.fixtures.objects import (
    backup_annotations,
    deployment,
    ledger,
    pvc,
    ts,
    user,
    users_secret,
    workspace,
)


def populate(kube: kube_adapter.Kube, ns: str, n: int) -> float:
    """Create n workspaces as provisioning, onboarding and backups leave them."""
    users = [f"user{i:04d}" for i in range(n)]

    def one(name: str) -> None:
        i = int(name[4:])
        running = i % 4 != 0  # a quarter stopped
        kube.create(workspace(ns, name, 1 if running else 0))
        if running:
            kube.patch_status("Deployment", ns, f"ws-{name}", {"replicas": 1, "readyReplicas": 1,
                                                               "availableReplicas": 1})
        kube.create(pvc(ns, name, backup_annotations("Completed", timedelta(hours=2 + i % 20))))
        kube.patch_status("PersistentVolumeClaim", ns, f"ws-{name}-workspace", {"phase": "Bound"})
        kube.create(ledger(ns, name, "active"))

    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, users))
    kube.create(users_secret(ns, {u: user() for u in users}))
    kube.create(deployment(ns, "authelia", 1))
    kube.patch_status("Deployment", ns, "authelia", {"replicas": 1, "availableReplicas": 1, "readyReplicas": 1})
    node = f"bench-{ns}"
    kube.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
    kube.patch_status("Node", None, node, {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                                           "lastHeartbeatTime": ts(), "lastTransitionTime": ts()}]})
    return time.perf_counter() - t


class RequestCounter:
    """Counts what the Kubernetes client sends, by verb and path (names folded)."""

    def __init__(self, kube: kube_adapter.Kube) -> None:
        self.counts: Counter = Counter()
        rest = kube.api_client.rest_client
        original = rest.request

        def counted(method, url, *args, **kw):
            path = re.sub(r"^https?://[^/]+", "", url).split("?")[0]
            self.counts[f"{method} {path}"] += 1
            return original(method, url, *args, **kw)

        rest.request = counted

    def take(self) -> dict[str, int]:
        out, self.counts = dict(self.counts), Counter()
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspaces", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    from tasks.cluster.localnode import envtest
    from tests.fixtures.health import Pushgateway, _AutheliaHandler, _DatadogHandler, _Recorder
    from tests.fixtures.storage import start_s3

    out = ROOT / "benchmarks" / "results" / "health.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    results.update({"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                    "machine": platform.platform()})
    env = envtest.start()
    gateway = Pushgateway().start()
    s3 = start_s3()
    try:
        with _Recorder(_AutheliaHandler) as authelia, _Recorder(_DatadogHandler) as intake:
            ns = f"bench-{uuid.uuid4().hex[:6]}"
            bucket = f"health-{uuid.uuid4().hex[:8]}"
            os.environ.update({
                "VIBECODE_KUBECONFIG": str(env.kubeconfig), "VIBECODE_NAMESPACE": ns,
                "VIBECODE_PLATFORM_NAMESPACE": ns, "VIBECODE_AUTHELIA_HEALTH_URL": f"{authelia.url}/api/health",
                "VIBECODE_S3_ENDPOINT": s3.url, "VIBECODE_S3_BUCKET": bucket,
                "VIBECODE_S3_ACCESS_KEY_ID": s3.access_key, "VIBECODE_S3_SECRET_ACCESS_KEY": s3.secret_key,
                "VIBECODE_HEALTH_COMPONENTS": f'["{ns}/authelia"]', "VIBECODE_PUSHGATEWAY_URL": gateway.url,
                "VIBECODE_DATADOG_HOST": intake.url, "VIBECODE_DATADOG_API_KEY": secrets.token_hex(16)})
            get_settings.cache_clear()
            kube_adapter.reset_connections()
            kube = kube_adapter.connect()
            kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            s3.client().create_bucket(Bucket=bucket)
            setup_seconds = populate(kube, ns, args.workspaces)
            print(f"created {args.workspaces} workspaces in {setup_seconds:.1f}s", flush=True)
            counter = RequestCounter(kube)
            with prefect_test_harness(server_startup_timeout=120):
                from flows.health import check_platform_health

                seconds, cpu, requests, report = [], [], {}, None
                load_before = os.getloadavg()
                for _ in range(args.runs):
                    counter.take()
                    t, c = time.perf_counter(), time.process_time()
                    state = check_platform_health(return_state=True)
                    seconds.append(time.perf_counter() - t)
                    cpu.append(time.process_time() - c)
                    report = state.result(raise_on_failure=False)
                    report = getattr(report, "report", report)  # a critical run carries it on its error
                    requests = counter.take()
            series = sum(len(r["json"]["series"]) for r in intake.requests if r["path"] == "/api/v2/series")
    finally:
        gateway.stop()
        s3.stop()
        env.stop()
    lists = {k: v for k, v in requests.items() if k.startswith("GET") and not k.endswith("/version")
             and not re.search(r"/secrets/[^/]+$", k)}
    key = f"run_{args.workspaces}_workspaces"
    results[key] = {
        "workspaces": args.workspaces, "runs": args.runs, "seconds": [round(s, 3) for s in seconds],
        "median_seconds": round(statistics.median(seconds), 3), "target_seconds": 5.0,
        "min_seconds": round(min(seconds), 3),
        # CPU of this process (flow, tasks, clients); the API and Prefect servers run apart
        "client_cpu_seconds": [round(x, 3) for x in cpu],
        "ok": statistics.median(seconds) < 5.0 and all(v == 1 for v in lists.values()),
        # the machine is shared: a load average far above the CPU count stretches every figure
        "load_average_1m_before_after": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
        "api_requests_per_run": requests, "api_request_total": sum(requests.values()),
        "max_lists_per_kind": max(lists.values()), "status": report.status.value,
        "checks": len(report.checks), "gauges": len(report.gauges), "sinks": report.sinks,
        "datadog_series_per_run": series // max(1, args.runs), "setup_seconds": round(setup_seconds, 1)}
    print(json.dumps({key: results[key]}, indent=2), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
