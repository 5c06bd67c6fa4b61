#!/usr/bin/env python
"""The cost of faults (rerunnable; not a test): the same onboarding burst with 0% and with 20%
of the API server's requests failing transiently, time and retries side by side. Merges the
figures into benchmarks/results/faults.json.

It runs tests/resilience/test_faults.py's onboarding test (the real API server, helm, Prefect
server and SMTP server, the fault proxy of tests/fixtures/faults.py in front of the API server)
once per share, in a pytest session of its own, and reads the row that test writes to
``$VIBECODE_FAULTS_TABLE``. The test also asserts the burst completed with nothing duplicated
or lost, so a figure is only recorded for a correct run.

    export KUBEBUILDER_ASSETS=$(scripts/setup-envtest.sh) PATH=~/.cache/vibecode/bin:$PATH
    .venv/bin/python benchmarks/faults_bench.py [--people 20] [--shares 0,0.2] [--seed 1919]
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


def run(share: float, people: int, seed: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as f:
        table = f.name
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VIBECODE_FAULT_SHARE": str(share),
           "VIBECODE_FAULT_PEOPLE": str(people), "VIBECODE_FAULT_SEED": str(seed), "VIBECODE_FAULTS_TABLE": table}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/resilience/test_faults.py", "-k", "onboarding"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    rows = [json.loads(line) for line in Path(table).read_text().splitlines() if line.strip()]
    Path(table).unlink(missing_ok=True)
    row = rows[-1] if rows else {}
    row.update({"share": share, "pytest_exit": proc.returncode, "session_seconds": round(time.monotonic() - t0, 1)})
    if proc.returncode:
        row["tail"] = proc.stdout[-1500:]
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=20)
    ap.add_argument("--shares", default="0,0.2")
    ap.add_argument("--seed", type=int, default=1919)
    args = ap.parse_args()
    rows = [run(float(s), args.people, args.seed) for s in args.shares.split(",")]
    print(f"{'share':>6} {'seconds':>8} {'faults':>7} {'task retries':>13} {'in-place':>9} {'completed':>10} "
          f"{'dups':>5} {'lost':>5}")
    for r in rows:
        print(f"{r['share']:>6} {r.get('seconds', '-'):>8} {r.get('faults injected', '-'):>7} "
              f"{r.get('task retries', '-'):>13} {sum((r.get('in-place retries') or {}).values()):>9} "
              f"{r.get('completed', '-'):>10} {r.get('duplicates', '-'):>5} {r.get('data lost', '-'):>5}")
    out = ROOT / "benchmarks" / "results" / "faults.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    results.update({"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "people": args.people, "seed": args.seed, "runs": rows})
    out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
