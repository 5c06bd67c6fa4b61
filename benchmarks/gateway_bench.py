#!/usr/bin/env python
"""HR gateway benchmark (rerunnable; not a test). Prints results and merges them into
benchmarks/results/gateway.json.

The gateway runs as `vibecode gateway` in its own process pinned to one core (CPU 0);
the Prefect server (the real one, on SQLite, with the onboard-user / offboard-user
deployments registered) and this load generator share the other core. Every request is a
freshly signed HR webhook; the gateway verifies it, validates the event and creates the
flow run with ``run_deployment(..., timeout=0)`` before answering 202 (nothing waits for
the flow). Figures:

- ``new_events``: each request a new event -> one new flow run each: requests/s, latency
  p50/p99 of the 202, and the gateway's own CPU time per request (from /proc), whence
  ``capacity_per_core_rps`` = requests per CPU-second of the gateway process: what one
  core of gateway sustains once Prefect is not the bottleneck;
- ``repeated_event``: the same event posted again and again (each signed afresh, as
  retries are): the idempotent path, no new run;
- ``refused``: wrongly signed requests (401): the cost of turning away a flood.

    .venv/bin/python benchmarks/gateway_bench.py [--requests 1000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx

from tasks.cluster.localnode.envtest import free_port
from tasks.gateway import signature

GATEWAY_CPU, OTHERS_CPU = 0, 1


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def event(event_id: str | None = None) -> bytes:
    n = uuid.uuid4().hex[:10]
    return json.dumps({"event_id": event_id or f"bench-{uuid.uuid4().hex}", "type": "employee.hired",
                       "occurred_at": "2026-11-28T09:00:00Z",
                       "employee": {"employee_id": f"E{n}", "email": f"b{n}@example.com", "given_name": "Bench",
                                    "family_name": "Mark", "username": f"b{n}"}}).encode()


async def load(url: str, bodies: list[bytes], key: bytes, concurrency: int, expect: int) -> dict:
    latencies: list[float] = []
    codes: dict[int, int] = {}
    queue: asyncio.Queue = asyncio.Queue()
    for i, b in enumerate(bodies):
        queue.put_nowait((i, b))

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            i, body = queue.get_nowait()
            header = signature.sign(key, int(time.time()), body)
            t0 = time.perf_counter()
            resp = await client.post(url, content=body, headers={"Content-Type": "application/json",
                                                                 signature.HEADER: header})
            latencies.append(time.perf_counter() - t0)
            codes[resp.status_code] = codes.get(resp.status_code, 0) + 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    latencies.sort()
    return {"requests": len(bodies), "wall_seconds": round(wall, 2), "rps": round(len(bodies) / wall, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 1),
            "status_counts": codes, "all_expected": codes == {expect: len(bodies)}}


def measure(name: str, pid: int, url: str, bodies: list[bytes], key: bytes, concurrency: int, expect: int) -> dict:
    cpu0 = cpu_seconds(pid)
    out = asyncio.run(load(url, bodies, key, concurrency, expect))
    used = cpu_seconds(pid) - cpu0
    out["gateway_cpu_seconds"] = round(used, 2)
    out["gateway_cpu_ms_per_request"] = round(used / len(bodies) * 1000, 2)
    out["capacity_per_core_rps"] = round(len(bodies) / used, 1) if used else None
    print(f"{name}: {json.dumps(out)}")
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args()
    if (os.cpu_count() or 1) < 2:
        print("needs 2 CPUs (one for the gateway, one for Prefect and the load)", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {OTHERS_CPU})  # this process and the Prefect server it starts
    load_before = [round(x, 2) for x in os.getloadavg()]

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from tests.fixtures.gateway import register_hr_deployments

    with prefect_test_harness(server_startup_timeout=120):
        register_hr_deployments()
        key = secrets.token_urlsafe(40)
        port = free_port()
        env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(),
               "VIBECODE_GATEWAY_WEBHOOK_SECRETS": json.dumps([key]),
               "VIBECODE_GATEWAY_SCIM_TOKEN": secrets.token_urlsafe(40),
               "VIBECODE_GATEWAY_RATE_PER_SECOND": "100000", "VIBECODE_GATEWAY_RATE_BURST": "100000",
               "PREFECT_LOGGING_LEVEL": "WARNING"}
        proc = subprocess.Popen([sys.executable, "-c", "import sys, vibecode_cli; sys.exit(vibecode_cli.main())",
                                 "gateway", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=lambda: os.sched_setaffinity(0, {GATEWAY_CPU}))
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the gateway did not start")
                time.sleep(0.2)
            url = f"{base}/v1/hr/events"
            same = event("bench-same")
            measure("warm-up", proc.pid, url, [event() for _ in range(50)], key.encode(), 4, 202)
            results = {
                "new_events": measure("new_events", proc.pid, url, [event() for _ in range(args.requests)],
                                      key.encode(), args.concurrency, 202),
                # Trailing whitespace makes each retry its own delivery (an identical one is a replay).
                "repeated_event": measure("repeated_event", proc.pid, url,
                                          [same + b" " * i for i in range(args.requests)],
                                          key.encode(), args.concurrency, 202),
                "refused": measure("refused", proc.pid, url, [event() for _ in range(args.requests)],
                                   secrets.token_bytes(32), args.concurrency, 401),
            }
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    results.update(concurrency=args.concurrency, gateway_cpu="1 core (pinned)",
                   prefect_and_load_cpu="the other core",
                   # The machine is shared: a load average well above 2 means the figures are
                   # those of a contended machine, not of the code alone.
                   loadavg_before=load_before, loadavg_after=[round(x, 2) for x in os.getloadavg()])
    out = ROOT / "benchmarks" / "results" / "gateway.json"
    recorded = json.loads(out.read_text()) if out.exists() else {}
    recorded.update({"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                     "machine": platform.platform(), "webhook": results})
    out.write_text(json.dumps(recorded, indent=2) + "\n")
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
