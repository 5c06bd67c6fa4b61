#!/usr/bin/env python
"""Backup benchmark (rerunnable; not a test). Prints results and writes benchmarks/results/backup.json.

1. Incremental: the Job's own ``restic backup`` of a 1 GiB workspace into the S3 server,
   then again unchanged. Each run gets a fresh restic cache, as the Job's emptyDir does,
   so the second run really has to find its parent snapshot in S3. Target: second <= 10%.
2. Orchestration overhead: N workspaces backed up (a) by running the same restic commands
   directly from a thread pool of ``backup_concurrency`` workers, (b) by the
   ``backup_workspaces`` flow against a real kube-apiserver and Prefect server, its Jobs
   run by the kubelet stand-in. Each side gets its own fresh bucket. Target: (b) <= 1.15 x (a).

    .venv/bin/python benchmarks/backup_bench.py [--big-mib 1024] [--workspaces 20] [--ws-mib 40]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.backup.repo import record_and_expire
from tasks.backup.restic import backup_args
from tasks.backup.retention import KeepPolicy
from tasks.core.settings import get_settings
from tests.fixtures.storage import backup_env_vars, make_tree, restic_for, start_s3


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 << 20)
            f.write(os.urandom(n))
            left -= n


def use_bucket(server, scratch: Path, poll: str | None = None) -> None:
    env = backup_env_vars(server, scratch / f"cache-{uuid.uuid4().hex[:6]}")
    env.pop("VIBECODE_BACKUP_POLL_SECONDS")  # the production default unless --poll-seconds
    if poll:
        env["VIBECODE_BACKUP_POLL_SECONDS"] = poll
    os.environ.update(env)
    get_settings.cache_clear()


def timed_backup(username: str, volume: Path, run_id: str, scratch: Path) -> float:
    restic = restic_for(get_settings(), username)
    restic.extra_env = {"RESTIC_CACHE_DIR": tempfile.mkdtemp(dir=scratch)}  # the Job's fresh emptyDir
    t = time.perf_counter()
    restic.run(backup_args(username, run_id), cwd=volume)
    return time.perf_counter() - t


def incremental(server, scratch: Path, big_mib: int) -> dict:
    use_bucket(server, scratch)
    volume = scratch / "big"
    volume.mkdir()
    make_tree(volume)
    write_random(volume / "big.bin", big_mib << 20)
    restic_for(get_settings(), "bench").ensure_init()
    first = timed_backup("bench", volume, "night1", scratch)
    second = timed_backup("bench", volume, "night2", scratch)
    return {"workspace_mib": big_mib, "first_seconds": round(first, 2), "second_seconds": round(second, 2),
            "ratio": round(second / first, 4), "target_ratio": 0.10, "ok": second <= 0.10 * first}


def direct_nightly(username: str, volume: Path, run_id: str, scratch: Path) -> None:
    """What one workspace's night costs in restic alone: the flow's exact command sequence."""
    s = get_settings()
    restic = restic_for(s, username)
    restic.ensure_init()
    timed_backup(username, volume, run_id, scratch)
    after = record_and_expire(restic, run_id, False, KeepPolicy.from_settings(s.backup), datetime.now(timezone.utc))
    assert after.snapshot_id
    ok, detail = restic.check(s.backup.verify_read_data_percent)
    assert ok, detail


def overhead(server, scratch: Path, n: int, ws_mib: int, poll: str | None) -> dict:
    from prefect.testing.utilities import prefect_test_harness

    from tasks.cluster import kube as kube_adapter
    from tasks.cluster.localnode import envtest
    from tests.fixtures.kube import finish_job  # noqa: F401 - imported for the kubelet stand-in
    from tests.fixtures.storage import JobKubelet

    users = [f"user{i:02d}" for i in range(n)]
    volumes = {}
    for u in users:
        d = scratch / f"pvc-{u}"
        d.mkdir()
        make_tree(d)
        write_random(d / "data.bin", ws_mib << 20)
        volumes[u] = d
    concurrency = get_settings().backup.concurrency

    # Both sides run with the API server and the Prefect server up, so the comparison is of
    # the orchestration itself, not of whether those processes share the 2 cores at all.
    env = envtest.start()
    try:
        os.environ["VIBECODE_KUBECONFIG"] = str(env.kubeconfig)
        ns = f"bench-{uuid.uuid4().hex[:6]}"
        os.environ["VIBECODE_NAMESPACE"] = ns
        get_settings.cache_clear()
        kube_adapter.reset_connections()
        kube = kube_adapter.connect()
        kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for u in users:
            kube.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                         "metadata": {"name": f"ws-{u}-workspace", "namespace": ns,
                                      "labels": {"app.kubernetes.io/part-of": "vibecode",
                                                 "vibecode.dev/volume": "workspace", "vibecode.dev/user": u}},
                         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
        kubelet = JobKubelet(kube, ns, scratch / "kubelet", volumes={f"ws-{u}-workspace": volumes[u] for u in users})
        kubelet.scratch.mkdir()
        with prefect_test_harness(server_startup_timeout=120):
            from flows.backup import backup_workspaces

            use_bucket(server, scratch)
            t = time.perf_counter()
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                list(pool.map(lambda u: direct_nightly(u, volumes[u], "direct", scratch), users))
            direct = time.perf_counter() - t

            use_bucket(server, scratch, poll)
            kubelet.start()
            t = time.perf_counter()
            report = backup_workspaces()
            flow = time.perf_counter() - t
            kubelet.stop()
        assert report.outcome.value == "Completed", report.table()
    finally:
        env.stop()
    return {"workspaces": n, "workspace_mib": ws_mib, "concurrency": concurrency,
            "poll_seconds": get_settings().backup.poll_seconds,
            "verify_read_data_percent": get_settings().backup.verify_read_data_percent,
            "direct_seconds": round(direct, 2), "flow_seconds": round(flow, 2),
            "flow_over_direct": round(flow / direct, 4), "target": 1.15, "ok": flow <= 1.15 * direct,
            "peak_concurrent_jobs": kubelet.peak}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--workspaces", type=int, default=20)
    ap.add_argument("--ws-mib", type=int, default=40)
    ap.add_argument("--poll-seconds", default=None, help="override settings.backup.poll_seconds (default 5)")
    ap.add_argument("--skip", choices=["incremental", "overhead"])
    args = ap.parse_args()
    server = start_s3()  # SeaweedFS, its own process, as real storage would be
    out = ROOT / "benchmarks" / "results" / "backup.json"
    results = json.loads(out.read_text()) if out.exists() else {}  # a partial rerun keeps the other figures
    results.update({"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                    "machine": platform.platform()})
    try:
        with tempfile.TemporaryDirectory(prefix="backup-bench-") as tmp:
            scratch = Path(tmp)
            if args.skip != "incremental":
                results["incremental"] = incremental(server, scratch, args.big_mib)
                print(json.dumps({"incremental": results["incremental"]}), flush=True)
                (scratch / "big" / "big.bin").unlink()
            if args.skip != "overhead":
                key = f"overhead_{args.workspaces}x{args.ws_mib}mib"
                results[key] = overhead(server, scratch, args.workspaces, args.ws_mib, args.poll_seconds)
                print(json.dumps({key: results[key]}), flush=True)
    finally:
        server.stop()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
