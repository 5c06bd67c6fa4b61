#!/usr/bin/env python
"""What Prefect itself costs per flow run (rerunnable; not a test). Prints results and
merges them into benchmarks/results/prefect.json.

A flow that does nothing, and one that runs three trivial tasks (the shape of
``resume_workspace``), called in-process against a real ``prefect server start``, N times
each; the figure is the wall time of the call, i.e. Prefect's bookkeeping alone. Variants:

- ``default``: Prefect 3.9.1 as installed;
- ``no_heartbeat``: flow-run heartbeats off (``flows.heartbeat_frequency = None``): the engine
  then starts no heartbeat thread, so it does not join it at the end of the run (the
  thread sleeps in whole seconds: the join costs up to 1 s, half a second on average);
- with ``--profile``, a pyinstrument profile of the default empty runs.

    .venv/bin/python benchmarks/prefect_overhead_bench.py [--runs 10] [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"


def timed(fn, runs: int) -> dict:
    fn()  # warm: imports, client, the server's caches
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
            "min_s": round(min(times), 3)}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]

    from tasks.cluster.localnode import prefectserver as localprefect

    pg = localprefect.start_postgres() if args.database == "postgresql" else None
    server = localprefect.start_prefect_server(pg.url if pg else None)
    try:
        from prefect import flow, task
        from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        @task
        def step(i: int) -> int:
            return i

        @flow(name="empty")
        def empty() -> None:
            return None

        @flow(name="three-tasks")
        def three() -> int:
            return step(1) + step(2) + step(3)

        out: dict = {}
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            out["default"] = {"empty_flow": timed(empty, args.runs), "three_task_flow": timed(three, args.runs)}
            with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
                from prefect.settings import get_current_settings

                assert get_current_settings().flows.heartbeat_frequency is None
                out["no_heartbeat"] = {"empty_flow": timed(empty, args.runs),
                                       "three_task_flow": timed(three, args.runs)}
            if args.profile:
                from pyinstrument import Profiler

                prof = Profiler(interval=0.001, async_mode="disabled")
                prof.start()
                for _ in range(args.runs):
                    empty()
                prof.stop()
                (ROOT / "benchmarks" / "results" / "prefect-empty-flow-profile.txt").write_text(
                    prof.output_text(unicode=False, color=False))
    finally:
        server.stop()
        if pg:
            pg.stop()
    d, n = out["default"]["empty_flow"]["median_s"], out["no_heartbeat"]["empty_flow"]["median_s"]
    out.update(database=args.database, runs=args.runs,
               heartbeat_join_share_of_empty_run=round((d - n) / d, 2) if d else None,
               loadavg_before=load_before, loadavg_after=[round(x, 2) for x in os.getloadavg()])
    print(json.dumps(out, indent=1))
    path = ROOT / "benchmarks" / "results" / "prefect.json"
    recorded = json.loads(path.read_text()) if path.exists() else {}
    recorded.update({"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                     "machine": platform.platform(), f"flow_run_overhead_{args.database}": out})
    path.write_text(json.dumps(recorded, indent=2) + "\n")
    print(f"written to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
