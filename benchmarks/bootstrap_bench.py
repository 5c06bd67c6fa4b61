#!/usr/bin/env python
"""Bootstrap benchmark (rerunnable; not a test). Prints results and merges them into
benchmarks/results/bootstrap.json.

1. ``noop`` (target: 10 s or less): a platform bootstrapped on a real kube-apiserver (envtest)
   with a real Prefect server, the upstream charts' stand-ins and test images on a loopback OCI
   registry and the controller stand-in of tests/fixtures/platform.py (during that first run
   only: its polling would count); then ``--rounds``
   reruns, each timed from call to return, with the requests it caused: the Kubernetes API
   requests of our adapter (tasks.cluster.kube.CALLS, by verb), every request the API server
   served (the delta of ``apiserver_request_total`` on its /metrics: helm's included), and
   the helm processes started (tasks.cluster.helm.CALLS, by subcommand).
2. ``node``: a fresh bootstrap on the real one-node cluster (tasks/cluster/localnode/node.py),
   the way scripts/up runs it (no registry reachable: the images built on this machine),
   timed per component, then one no-op rerun.

    .venv/bin/python benchmarks/bootstrap_bench.py [--rounds 5] [--skip node]

Needs the test stack (scripts/setup.sh --test); part 2 needs root and the node's binaries.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PATH"] = f"{Path.home() / '.cache/vibecode/bin'}:{os.environ['PATH']}"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
RESULTS = ROOT / "benchmarks" / "results" / "bootstrap.json"


def _apiserver_requests(url: str, kubeconfig: Path) -> Counter:
    """Requests the API server has served, by verb, from its own metrics (helm's included)."""
    import re

    import httpx
    import yaml

    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    token = cfg["users"][0]["user"]["token"]
    ca = cfg["clusters"][0]["cluster"]["certificate-authority"]
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, verify=ca, timeout=30).text
    counts: Counter = Counter()
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            counts[labels.get("verb", "")] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def _seconds(outcomes) -> dict[str, float]:
    return {o.component: round(o.seconds, 2) for o in outcomes}


def noop(rounds: int) -> dict:
    from prefect.testing.utilities import prefect_test_harness

    from flows.bootstrap import bootstrap_platform
    from tasks.cluster import helm
    from tasks.cluster import kube as kube_adapter
    from tasks.cluster.limits import ensure_concurrency_limits
    from tasks.cluster.localnode import envtest
    from tasks.core.settings import get_settings
    from tests.fixtures.platform import ControllerStandIn, stand_in_node
    from tests.fixtures.registry import make_upstream

    env = envtest.start()
    work = Path(tempfile.mkdtemp(prefix="bootstrap-bench-"))
    suffix = uuid.uuid4().hex[:6]
    os.environ.update({
        "VIBECODE_KUBECONFIG": str(env.kubeconfig), "KUBECONFIG": str(env.kubeconfig),
        "VIBECODE_PLATFORM_NAMESPACE": f"pf-{suffix}", "VIBECODE_NAMESPACE": f"ws-{suffix}",
        "VIBECODE_PLATFORM__CERT_MANAGER_NAMESPACE": f"cm-{suffix}",
        "VIBECODE_PLATFORM__ENVOY_GATEWAY_NAMESPACE": f"eg-{suffix}",
        "VIBECODE_PLATFORM__READY_POLL_SECONDS": "0.2"})
    get_settings.cache_clear()
    kube_adapter.reset_connections()
    try:
        up = make_upstream(work, Path(helm.helm_executable()))
        os.environ["VIBECODE_PLATFORM__LOCK_FILE"] = str(up.lock_file)
        get_settings.cache_clear()
        s = get_settings()
        kube = kube_adapter.connect()
        stand_in_node(kube, ["docker.io/library/vibecode-ops:0.1.0"])
        namespaces = {s.platform_namespace, s.namespace, s.platform.cert_manager_namespace,
                      s.platform.envoy_gateway_namespace}
        with prefect_test_harness(server_startup_timeout=180):
            ensure_concurrency_limits()
            with ControllerStandIn(kube, namespaces):  # only for the first run: then all is ready
                t0 = time.perf_counter()
                first = bootstrap_platform(existing_kubeconfig=env.kubeconfig)
                fresh = time.perf_counter() - t0
            runs = []
            for _ in range(rounds):
                kube_before, helm_before = Counter(kube_adapter.CALLS), Counter(helm.CALLS)
                served_before = _apiserver_requests(env.url, env.kubeconfig)
                t0 = time.perf_counter()
                result = bootstrap_platform(existing_kubeconfig=env.kubeconfig)
                took = time.perf_counter() - t0
                served = _apiserver_requests(env.url, env.kubeconfig) - served_before
                served["GET"] -= 1  # the first metrics read itself
                assert not result.changed, [o for o in result.components if o.changed]
                runs.append({"seconds": round(took, 2),
                             "our_api_requests": dict(Counter(kube_adapter.CALLS) - kube_before),
                             "api_requests_served": dict(served), "api_requests_served_total": sum(served.values()),
                             "helm_processes": dict(Counter(helm.CALLS) - helm_before),
                             "per_component_seconds": _seconds(result.components)})
        up.registry.stop()
    finally:
        env.stop()
    secs = [r["seconds"] for r in runs]
    return {"target_seconds": 10, "fresh_bootstrap_seconds": round(fresh, 2),
            "fresh_per_component_seconds": _seconds(first.components),
            "noop_median_seconds": statistics.median(secs), "noop_max_seconds": max(secs), "rounds": runs,
            "load_average_1m": round(os.getloadavg()[0], 2)}


def node_run() -> dict:
    from prefect.testing.utilities import prefect_test_harness

    from flows.bootstrap import bootstrap_platform
    from tasks.cluster import kube as kube_adapter
    from tasks.cluster.limits import ensure_concurrency_limits
    from tasks.cluster.localnode import node as node_harness
    from tasks.core.settings import get_settings
    from tasks.platform.localup import node_environment

    why = node_harness.unavailable()
    if why:
        return {"skipped": f"no real node on this machine: {why}"}
    from tasks.cluster.localnode import gateway_image, images

    node = node_harness.start()
    try:
        gateway = gateway_image.hr_gateway_image()  # as scripts/up does
        images.import_all([gateway], node.ctr)
        time.sleep(15)  # the kubelet reports the new image with its next node status
        os.environ.update(node_environment(node.kubeconfig, {**node.images, "vibecode-ops": gateway.name},
                                           node_harness.STORAGE_CLASS))
        suffix = uuid.uuid4().hex[:6]
        os.environ.update({"VIBECODE_PLATFORM_NAMESPACE": f"pf-{suffix}", "VIBECODE_NAMESPACE": f"ws-{suffix}"})
        get_settings.cache_clear()
        kube_adapter.reset_connections()
        with prefect_test_harness(server_startup_timeout=180):
            ensure_concurrency_limits()
            t0 = time.perf_counter()
            first = bootstrap_platform(existing_kubeconfig=node.kubeconfig)
            fresh = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = bootstrap_platform(existing_kubeconfig=node.kubeconfig)
            rerun = time.perf_counter() - t0
    finally:
        node.stop()
    return {"fresh_bootstrap_seconds": round(fresh, 2), "per_component_seconds": _seconds(first.components),
            "actions": {o.component: o.action for o in first.components},
            "skipped": {o.component: o.detail for o in first.components if o.action == "skipped"},
            "noop_rerun_seconds": round(rerun, 2), "noop_changed": again.changed,
            "load_average_1m": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--skip", action="append", default=[], choices=["noop", "node"])
    args = ap.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
            "platform": platform.platform()}
    if "noop" not in args.skip:
        results["noop_rerun"] = {**meta, **noop(args.rounds)}
        print(json.dumps(results["noop_rerun"], indent=2))
    if "node" not in args.skip:
        results["node_fresh"] = {**meta, **node_run()}
        print(json.dumps(results["node_fresh"], indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
