#!/usr/bin/env python
"""The HR soak at full size (rerunnable; not a test): 200 HR events over 50 people, with
duplicates, out-of-order deliveries and events at the very same moment, delivered 4 at a
time, interleaved with backup and reaper runs, under 10% faults, against a serial
fault-free replay of the same events on a fresh world. Merges the figures into
benchmarks/results/soak.json.

It runs tests/resilience/test_soak.py (the suite runs it at 20 events over 5 people) with a
larger size, in a pytest session of its own, and reads the row that test appends to
``$VIBECODE_SOAK_TABLE``. The test asserts that both worlds end equal with nothing
duplicated, so a run that does not is recorded with its differences and pytest's exit code.

    export KUBEBUILDER_ASSETS=$(scripts/setup-envtest.sh) PATH=~/.cache/vibecode/bin:$PATH
    .venv/bin/python benchmarks/soak_bench.py [--events 200] [--people 50] [--seed 1919] [--share 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(events: int, people: int, seed: int, share: float) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as f:
        table = f.name
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VIBECODE_SOAK_EVENTS": str(events),
           "VIBECODE_SOAK_PEOPLE": str(people), "VIBECODE_SOAK_SEED": str(seed), "VIBECODE_SOAK_SHARE": str(share),
           "VIBECODE_SOAK_TABLE": table}
    t0 = time.monotonic()
    # --timeout=0: the suite's 900 s per test is for the suite's size; 200 events take about an hour
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=0",
                           "tests/resilience/test_soak.py"], cwd=ROOT, env=env, capture_output=True, text=True)
    rows = [json.loads(line) for line in Path(table).read_text().splitlines() if line.strip()]
    Path(table).unlink(missing_ok=True)
    row = rows[-1] if rows else {}
    row.update({"pytest_exit": proc.returncode, "session_seconds": round(time.monotonic() - t0, 1)})
    if proc.returncode:  # the assertion, then the end of the output
        row["error"] = [line for line in proc.stdout.splitlines() if line.startswith("E ")][:40]
        row["tail"] = proc.stdout[-1500:]
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--people", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1919)
    ap.add_argument("--share", type=float, default=0.1)
    args = ap.parse_args()
    row = run(args.events, args.people, args.seed, args.share)
    for k in ("events", "distinct", "people", "duplicated deliveries", "overtaken", "same moment", "faults injected",
              "task retries", "redelivered", "still failing", "interleaved", "differences", "duplicates",
              "replay seconds", "soak seconds", "pytest_exit", "session_seconds"):
        print(f"{k:>22}: {row.get(k, '-')}")
    out = ROOT / "benchmarks" / "results" / "soak.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    results.update({"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "load average at the end": os.getloadavg()[0], "run": row})
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
