#!/usr/bin/env python
"""Scale benchmark (rerunnable; not a test): the reaper, the health check and the backup's
planning step at 100, 1,000 and 10,000 workspaces, in one table. Writes
benchmarks/results/scale.json (merged, so a partial rerun keeps the other sizes).

Setup, as reaper_bench.py and health_bench.py do it, grown to 10,000:
- a real kube-apiserver v1.20.2 over etcd (envtest);
- per workspace the objects the workspace chart renders (``helm template`` of
  charts/vibecode-workspace with the flows' own values, once; the username substituted):
  its Deployment, its PVCs (workspace and extensions) and its Service, created as objects,
  with status as the controllers would leave it (three quarters running and Available, a
  quarter stopped; every PVC Bound) and the annotations the platform writes (backup
  outcome on the workspace PVC, ``stopped-at`` on the stopped ones, less than the 30 days of
  dormancy ago: a due deletion reads that workspace's restic repository, and there is no S3
  here, so none is due); a ledger ConfigMap
  each and the Authelia users Secret listing everyone (the health check reads both). The
  sizes are reached in turn: the objects of 100 stay and are topped up to 1,000, then 10,000;
- the code-server stand-in of reaper_bench.py: one asyncio server in its own process
  answering every workspace's ``/healthz`` (path ``/<user>/healthz``) after 50 ms;
- a real Prefect server (``prefect server start``, SQLite) for the flows.

Measured per size, each in a fresh child process (so its peak memory is its own):
- **reaper**: ``reap_idle_workspaces(dry_run=True)``, the flow run end to end;
- **health**: ``check_platform_health()``, the flow run end to end (Authelia and the bucket
  are pointed at a closed port, so those two checks are critical at once, as designed, and
  the run ends Failed; no sink configured);
- **backup planning**: what the nightly backup does before its first Job: the paged LISTs of
  volumes and pods, the targets, the batches (task bodies; a flow run would start backups).
Each is run once to warm up (imports, flow registration), then timed ``--runs`` times (3).
Figures: the best wall time (all are recorded: the machine is shared); API requests and
bytes served per run, by the API server's own
metrics (``apiserver_request_total``, ``apiserver_response_sizes_sum``); the child's peak
RSS (``ru_maxrss``: imports, Prefect client and all) and its RSS after imports.
Goals at 10,000: reaper <= 5 s, health <= 5 s, peak memory <= 300 MB; requests growing with
pages (``settings.kube_list_page_size``), not with workspaces.

The machine is shared (2 vCPU; other work runs at the same time): the 1-minute load average
is recorded with every figure.

    .venv/bin/python benchmarks/scale_bench.py [--sizes 100,1000,10000] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from reaper_bench import SERVER  # the code-server stand-in (one selector loop, 50 ms per /healthz)

from tasks.cluster.localnode.envtest import free_port

PLACEHOLDER = "zzbenchuser"
# The resources the measured steps read; the API server's own controllers (namespaces,
# services, endpoints, flow schemas) run in the background and are left out of the counts.
SECRET_LIMIT = 1024 * 1024
OURS = {"deployments", "persistentvolumeclaims", "jobs", "configmaps", "secrets", "nodes", "statefulsets", "pods",
        "certificates"}

CHILD = r'''
import json, os, resource, sys, time
what = sys.argv[1]

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

from tasks.cluster import kube as kube_adapter
from tasks.core.settings import get_settings
if what == "reaper":
    from flows.reaper import reap_idle_workspaces
    def run():
        r = reap_idle_workspaces(dry_run=True)
        return {"workspaces": len(r.rows), "counts": r.counts, "unknown": r.unknown}
elif what == "health":
    from flows.health import check_platform_health
    def run():
        state = check_platform_health(return_state=True)
        r = state.result(raise_on_failure=False)
        r = getattr(r, "report", r)
        return {"status": r.status.value, "critical": sorted(c.name for c in r.checks if c.status.value == "critical")}
else:
    from tasks.backup.plan import backup_targets
    from tasks.backup.steps import batches, find_workspace_nodes, list_workspace_volumes
    def run():
        s = get_settings()
        targets, failed = backup_targets([], list_workspace_volumes.fn(), find_workspace_nodes.fn())
        chunks, in_flight = batches(targets, s.backup.batch_size, s.backup.concurrency)
        return {"targets": len(targets), "failed": len(failed), "batches": len(chunks),
                "batches_in_flight": in_flight}
after_imports = rss_mb()
run()  # warm-up: first flow registration, connection pools
first_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # one run in a fresh process, as a worker runs it
print("warm", flush=True)
sys.stdin.readline()  # the parent reads the API server's counters now
runs = int(sys.argv[2])
calls = dict(kube_adapter.CALLS)
walls, cpus = [], []
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
for _ in range(runs):
    t, c = time.perf_counter(), cpu()
    out = run()
    walls.append(round(time.perf_counter() - t, 3))
    cpus.append(round(cpu() - c, 3))
if os.environ.get("VIBECODE_BENCH_PROFILE"):  # one more run under pyinstrument, written beside the results
    from pyinstrument import Profiler
    with Profiler(interval=0.005) as prof:
        run()
    with open(os.path.join(os.environ["VIBECODE_BENCH_PROFILE"], f"scale-{what}-profile.txt"), "w") as f:
        f.write(prof.output_text(unicode=False, color=False, show_all=False))
out.update(wall_seconds=min(walls), walls=walls, cpu_seconds=cpus, runs=runs, rss_after_imports_mb=round(after_imports, 1),
           peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           peak_rss_one_run_mb=round(first_peak, 1),
           adapter_requests=sum(v - calls.get(k, 0) for k, v in kube_adapter.CALLS.items()
                                if k != "LIST_RESTART") / runs,
           list_restarts=kube_adapter.CALLS["LIST_RESTART"] - calls.get("LIST_RESTART", 0))
print(json.dumps(out), flush=True)
'''


def metrics(env) -> dict[str, float]:
    """Requests and response bytes served (by verb and resource), from the API server's /metrics."""
    import httpx
    import yaml

    cfg = yaml.safe_load(env.kubeconfig.read_text())
    token = cfg["users"][0]["user"]["token"]
    ca = cfg["clusters"][0]["cluster"]["certificate-authority"]
    text = httpx.get(f"{env.url}/metrics", headers={"Authorization": f"Bearer {token}"}, verify=ca, timeout=60).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        for metric, prefix in (("apiserver_request_total{", "requests"), ("apiserver_response_sizes_sum{", "bytes")):
            if line.startswith(metric):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
                if not labels.get("resource"):
                    continue
                key = f"{prefix} {labels.get('verb', '')} {labels['resource']}"
                out[key] = out.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return out


def rendered(settings) -> list[dict]:
    """The workspace chart's Deployment, PVCs and Service for the placeholder user."""
    import yaml

    from tasks.core.names import workspace_names
    from tasks.workspace.values import workspace_values

    values = workspace_values(workspace_names(PLACEHOLDER), settings)
    helm = os.environ.get("HELM", str(Path.home() / ".cache" / "vibecode" / "bin" / "helm"))
    out = subprocess.run([helm, "template", f"ws-{PLACEHOLDER}", str(ROOT / "charts" / "vibecode-workspace"),
                          "--namespace", settings.namespace, "-f", "-"], input=json.dumps(values),
                         capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    return [d for d in docs if d["kind"] in ("Deployment", "PersistentVolumeClaim", "Service")]


def populate(kube, settings, start: int, stop: int) -> float:
    from tasks.core.names import STOPPED_AT
    from tests.fixtures.objects import backup_annotations, ledger, ts

    templates = json.dumps(rendered(settings))
    ns = settings.namespace

    def one(i: int) -> None:
        user = f"u{i:05d}"
        running = i % 4 != 0
        for obj in json.loads(templates.replace(PLACEHOLDER, user)):
            kind, name = obj["kind"], obj["metadata"]["name"]
            ann = obj["metadata"].setdefault("annotations", {})
            if kind == "Deployment":
                obj["spec"]["replicas"] = 1 if running else 0
                if not running:
                    ann[STOPPED_AT] = ts(timedelta(hours=i % 600))
            elif kind == "PersistentVolumeClaim" and name.endswith("-workspace"):
                ann.update(backup_annotations("Completed", timedelta(hours=2 + i % 20)))
                if not running:
                    ann[STOPPED_AT] = ts(timedelta(hours=i % 600))
            kube.create(obj)
            if kind == "Deployment" and running:
                kube.patch_status("Deployment", ns, name, {
                    "observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                    "updatedReplicas": 1,
                    "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                                    "lastUpdateTime": ts(timedelta(minutes=i % 300)),
                                    "lastTransitionTime": ts(timedelta(minutes=i % 300))}]})
            elif kind == "PersistentVolumeClaim":
                kube.patch_status("PersistentVolumeClaim", ns, name, {"phase": "Bound"})
        kube.create(ledger(settings.platform_namespace, user, "active"))

    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=12) as pool:
        for n, _ in enumerate(pool.map(one, range(start, stop)), 1):
            if n % 1000 == 0:
                print(f"  {start + n} workspaces ({time.perf_counter() - t:.0f}s)", file=sys.stderr, flush=True)
    return time.perf_counter() - t


def users_secret_for(settings, n: int) -> dict:
    from tests.fixtures.objects import user, users_secret

    secret = users_secret(settings.platform_namespace, {f"u{i:05d}": user() for i in range(n)})
    secret["metadata"]["name"] = settings.identity.authelia_users_secret
    return secret


def measure(env, what: str, child_env: dict, runs: int) -> dict:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, what, str(runs)], env=child_env, cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout and proc.stdin
    line = proc.stdout.readline().strip()
    if line != "warm":
        proc.wait(60)
        raise RuntimeError(f"{what}: child said {line!r}")
    load = os.getloadavg()[0]
    before = metrics(env)
    proc.stdin.write("\n")
    proc.stdin.flush()
    out = json.loads(proc.stdout.readline())
    proc.wait(300)
    after = metrics(env)
    diff = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}
    ours = {k: v for k, v in diff.items() if k.rsplit(" ", 1)[1] in OURS}  # not the API server's own loops
    out["api_requests"] = round(sum(v for k, v in ours.items() if k.startswith("requests ")) / runs, 1)
    out["api_requests_by_kind"] = {k.removeprefix("requests "): round(v / runs, 1) for k, v in ours.items()
                                   if k.startswith("requests ")}
    out["bytes_read"] = int(sum(v for k, v in ours.items() if k.startswith("bytes ")) / runs)
    out["load_average_1m"] = round(load, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--latency-ms", type=float, default=50)
    ap.add_argument("--only", default="reaper,health,backup-planning")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per step (the best is the figure)")
    ap.add_argument("--hold", metavar="FILE", help="after the last size, keep the world up and write the child's "
                    "environment to FILE as JSON (to profile by hand: see hold_world); stop with Ctrl-C or TERM")
    args = ap.parse_args()
    sizes = sorted(int(x) for x in args.sizes.split(","))

    from tasks.cluster import kube as kube_adapter
    from tasks.cluster.localnode import envtest
    from tasks.cluster.localnode.prefectserver import start_prefect_server
    from tasks.core.settings import get_settings

    out_path = ROOT / "benchmarks" / "results" / "scale.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    env = envtest.start(service_ip_range="10.96.0.0/12")  # 10,000 workspace Services
    port = free_port()
    endpoint = subprocess.Popen([sys.executable, "-c", SERVER, str(args.latency_ms / 1000), str(port)],
                                stdout=subprocess.PIPE, text=True)
    assert endpoint.stdout and endpoint.stdout.readline().strip() == "ready"
    for attempt in range(3):  # a free port can be taken by another process before the server binds it
        try:
            prefect = start_prefect_server()
            break
        except RuntimeError:
            if attempt == 2:
                raise
    closed = free_port()
    try:
        os.environ.update({
            "VIBECODE_KUBECONFIG": str(env.kubeconfig), "VIBECODE_NAMESPACE": "bench-ws",
            "VIBECODE_PLATFORM_NAMESPACE": "bench-platform",
            "VIBECODE_REAP_PROBE_URL": f"http://127.0.0.1:{port}/{{username}}",
            "VIBECODE_AUTHELIA_HEALTH_URL": f"http://127.0.0.1:{closed}/api/health",
            "VIBECODE_S3_ENDPOINT": f"http://127.0.0.1:{closed}", "VIBECODE_S3_BUCKET": "bench",
            "VIBECODE_S3_ACCESS_KEY_ID": "bench-not-a-secret", "VIBECODE_S3_SECRET_ACCESS_KEY": "bench-not-a-secret",
            "VIBECODE_HEALTH_COMPONENTS": "[]"})
        get_settings.cache_clear()
        kube_adapter.reset_connections()
        s = get_settings()
        kube = kube_adapter.connect()
        for ns in (s.namespace, s.platform_namespace):
            kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        node = "bench-node"
        kube.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
        from tests.fixtures.objects import ts

        kube.patch_status("Node", None, node, {"conditions": [{"type": "Ready", "status": "True",
                                                               "reason": "KubeletReady", "lastHeartbeatTime": ts(),
                                                               "lastTransitionTime": ts()}]})
        child_env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": prefect.api_url,
                     "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        have = 0
        for n in sizes:
            setup = populate(kube, s, have, n)
            have = n
            secret = users_secret_for(s, n)
            users_db = "file backend (the users Secret)"
            if len(json.dumps(secret["data"])) > SECRET_LIMIT:  # the file backend cannot hold this many
                users_db = (f"none read: {n:,} users do not fit the file backend's one Secret "
                            f"(Kubernetes caps a Secret at 1 MiB); this size runs as the LDAP backend does")
                child_env["VIBECODE_AUTHELIA_BACKEND"] = "ldap"
            elif kube.get("Secret", s.platform_namespace, secret["metadata"]["name"]) is None:
                kube.create(secret)
            else:
                kube.patch("Secret", s.platform_namespace, secret["metadata"]["name"], {"data": secret["data"]})
            print(f"{n} workspaces ready (+{setup:.0f}s)", file=sys.stderr, flush=True)
            row: dict = {"setup_seconds": round(setup, 1), "page_size": s.kube_list_page_size, "users_database": users_db,
                         "probe_concurrency": s.reaper.probe_concurrency, "probe_latency_ms": args.latency_ms}
            for what in args.only.split(","):
                row[what] = measure(env, what.split("-")[0], child_env, args.runs)
                print(f"  {what}: {json.dumps(row[what])}", file=sys.stderr, flush=True)
            results[f"workspaces_{n}"] = row
            results.update({"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            "cpus": os.cpu_count(), "machine": platform.platform(),
                            "note": "2 vCPU shared with other work (see each figure's load_average_1m); the API "
                                    "server, etcd, the Prefect server, the /healthz stand-in and the measured "
                                    "process all run on this machine"})
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(results, indent=2) + "\n")
        if args.hold:
            hold_world(Path(args.hold), child_env)
    finally:
        endpoint.terminate()
        prefect.stop()
        env.stop()
    print(table(results))


def hold_world(path: Path, child_env: dict) -> None:
    """Keep the API server, the stand-in and Prefect up for by-hand runs of one step, e.g.
    ``env $(jq -r 'to_entries[] | "\\(.key)=\\(.value)"' FILE) python -c "$(python -c
    'import scale_bench; print(scale_bench.CHILD)')" reaper 1`` (the child waits for a line on stdin)."""
    import signal

    path.write_text(json.dumps(child_env))
    print(f"holding the world; the child's environment is in {path}; Ctrl-C or TERM ends it", file=sys.stderr,
          flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a background job ignores Ctrl-C's INT
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def table(results: dict) -> str:
    """The one table: per size and step, wall, the flow process's CPU, requests, bytes, peak RSS."""
    lines = ["| workspaces | step | best wall s | CPU s (best) | API requests | bytes read | peak RSS MB, one run "
             "(all runs) | load 1m |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for key in sorted((k for k in results if k.startswith("workspaces_")), key=lambda k: int(k.split("_")[1])):
        for what in ("reaper", "health", "backup-planning"):
            r = results[key].get(what)
            if r:
                cpu = min(r["cpu_seconds"]) if r.get("cpu_seconds") else "-"
                lines.append(f"| {int(key.split('_')[1]):,} | {what} | {r['wall_seconds']} | {cpu} | {r['api_requests']} | "
                             f"{r['bytes_read']:,} | {r.get('peak_rss_one_run_mb', '-')} ({r['peak_rss_mb']}) | "
                             f"{r['load_average_1m']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
