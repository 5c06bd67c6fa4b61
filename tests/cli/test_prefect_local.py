"""scripts/prefect-local, what scripts/up runs after the bootstrap: a Prefect server on SQLite
that outlives the command, every deployment of prefect.yaml registered on it, a process worker
polling the pool, and `stop` leaving none of the processes it started."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tasks.cluster.localnode.envtest import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "scripts" / "prefect-local"), *argv], env=env, capture_output=True, text=True,
                          timeout=400, cwd=ROOT)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_server_deployments_and_worker_come_up_and_go_away(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(VIBECODE_CACHE=str(tmp_path), VIBECODE_PREFECT_PORT=str(free_port()))
    started = _run("start", env=env)
    state = tmp_path / "prefect"
    pids = {}
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.startswith("export PREFECT_API_URL=http://127.0.0.1:"), started.stdout
        url = started.stdout.strip().split("=", 1)[1]
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        assert (state / "home").is_dir()  # its own SQLite database, not the user's ~/.prefect
        again = _run("start", env=env)  # a second start finds the running server
        assert again.returncode == 0 and again.stdout == started.stdout
        pids["server"] = int((state / "server.pid").read_text())

        env["PREFECT_API_URL"] = url
        deployed = _run("deploy", env=env)
        assert deployed.returncode == 0, deployed.stderr
        result = json.loads((state / "deploy.json").read_text())
        names = {d["name"] for d in result["deployments"]}
        listed = httpx.post(f"{url}/deployments/filter", json={}, timeout=30).json()
        assert {f"{d['name']}" for d in listed} == {n.split("/", 1)[1] for n in names}
        assert len(names) >= 10 and any(n.endswith("/backup-workspaces") for n in names), names
        pids["worker"] = int((state / "worker.pid").read_text())
        pool = result["pool"]
        deadline = time.monotonic() + 120
        while True:  # the worker announces itself with a heartbeat once it polls the pool
            workers = httpx.post(f"{url}/work_pools/{pool}/workers/filter", json={}, timeout=30).json()
            if workers or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert workers and workers[0]["status"] == "ONLINE", workers
    finally:
        stopped = _run("stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    ps = subprocess.run(["ps", "-o", "pid,ppid,stat,cmd", "-p", ",".join(map(str, pids.values()))],
                        capture_output=True, text=True).stdout
    assert not any(_alive(pid) for pid in pids.values()), (pids, ps, stopped.stderr)
    assert not (state / "server.pid").exists() and not (state / "worker.pid").exists()
