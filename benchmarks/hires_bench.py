#!/usr/bin/env python
"""20 full hires at once (rerunnable; not a test). Prints results and merges them into
benchmarks/results/hires.json.

A full hire is what the HR gateway starts for ``employee.hired``: ``run_hr_event`` ->
``onboard_user`` (claim the username in the ledger, identity in Authelia's users Secret,
helm install of the workspace chart, wait until available, welcome email, ledger record),
against a real kube-apiserver, helm 4, a real SMTP server and a real Prefect server.
The kubelet stand-in marks each workspace Deployment available as soon as it appears.
All hires start at once from threads, as concurrent flow runs arrive.

Where the time goes: every task run's duration as Prefect recorded it (summed per task name,
and its share of the hires' total), the flow runs' own duration, and, with ``--profile``, a
pyinstrument profile of the whole run (HTML beside the results, not committed).

    .venv/bin/python benchmarks/hires_bench.py [--hires 20] [--database sqlite|postgresql] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("KUBEBUILDER_ASSETS", str(Path.home() / ".cache/vibecode/envtest/1.20.2"))
os.environ["PATH"] = f"{Path.home() / '.cache/vibecode/bin'}:{os.environ['PATH']}"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"


def kubelet(kube, ns: str, stop: threading.Event) -> None:
    """Play controller + kubelet: every workspace Deployment becomes available at once.
    Watches instead of polling, so the stand-in adds no delay of its own."""
    from tests.fixtures.kube import mark_deployment_available

    while not stop.is_set():
        for kind, dep in kube.list_watch("Deployment", ns, "app.kubernetes.io/part-of=vibecode", timeout_seconds=2):
            items = dep if kind == "SYNC" else [dep] if kind in ("ADDED", "MODIFIED") else []
            for d in items:
                status = d.get("status") or {}
                if (status.get("observedGeneration") != d["metadata"]["generation"]
                        or status.get("replicas", 0) != d["spec"].get("replicas", 1)):
                    mark_deployment_available(kube, ns, d["metadata"]["name"])
            if stop.is_set():
                return


def hire(i: int) -> dict:
    return {"event_id": f"bench-hire-{i}", "type": "employee.hired", "occurred_at": "2026-11-28T09:00:00Z",
            "employee": {"employee_id": f"B{i:04d}", "email": f"hire{i:02d}@example.com", "given_name": "Bench",
                         "family_name": "Hire" + "abcdefghijklmnopqrstuvwxyz"[i % 26] * (1 + i // 26), "username": f"hire{i:02d}", "department": "engineering",
                         "groups": ["developers"]}}


def task_breakdown(flow_run_ids: list) -> dict:
    """Per task name: count, total and mean seconds, from Prefect's own records."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        ids = list(flow_run_ids)
        subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=ids)), limit=200)
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=200)
        all_ids = ids + [r.id for r in subflows]
        tasks = []
        for offset in range(0, 5000, 200):
            page = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=all_ids)),
                                         limit=200, offset=offset)
            tasks += page
            if len(page) < 200:
                break
    per: dict[str, list[float]] = defaultdict(list)
    waited: dict[str, list[float]] = defaultdict(list)
    for t in tasks:
        if t.start_time and t.end_time:
            per[t.name.rsplit("-", 1)[0]].append(
                (t.end_time - t.start_time).total_seconds())
            if t.created:  # created -> running: the wait for tag slots (and the engine's own steps)
                waited[t.name.rsplit("-", 1)[0]].append((t.start_time - t.created).total_seconds())
    flow_secs = [(r.end_time - r.start_time).total_seconds() for r in runs if r.start_time and r.end_time]
    sub_secs = [(r.end_time - r.start_time).total_seconds() for r in subflows if r.start_time and r.end_time]
    total_task = sum(sum(v) for v in per.values())
    return {"flow_runs": len(runs), "subflow_runs": len(subflows), "task_runs": len(tasks),
            "flow_run_seconds_mean": round(statistics.mean(flow_secs), 2) if flow_secs else None,
            "subflow_seconds_mean": round(statistics.mean(sub_secs), 2) if sub_secs else None,
            "task_seconds_total": round(total_task, 1),
            "waited_for_slots_seconds_total": round(sum(sum(v) for v in waited.values()), 1),
            "tasks": {k: {"count": len(v), "total_s": round(sum(v), 1), "mean_s": round(statistics.mean(v), 3),
                          "share": round(sum(v) / total_task, 3) if total_task else None,
                          "mean_wait_before_running_s": round(statistics.mean(waited[k]), 3) if waited[k] else None}
                      for k, v in sorted(per.items(), key=lambda kv: -sum(kv[1]))}}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--hires", type=int, default=20)
    p.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--slot-wait", type=float, default=None,
                   help="the server's PREFECT_SERVER_TASKS_TAG_CONCURRENCY_SLOT_WAIT_SECONDS (Prefect's default: 10)")
    args = p.parse_args()
    if args.slot_wait is not None:
        os.environ["PREFECT_SERVER_TASKS_TAG_CONCURRENCY_SLOT_WAIT_SECONDS"] = str(args.slot_wait)
    load_before = [round(x, 2) for x in os.getloadavg()]

    from aiosmtpd.controller import Controller

    from tasks.cluster import kube as kube_adapter
    from tasks.cluster.localnode import envtest
    from tasks.cluster.localnode import prefectserver as localprefect
    from tasks.core.settings import get_settings
    from tests.fixtures.identity import Inbox, authelia_deployment_manifest

    env = envtest.start()
    inbox = Inbox()
    smtp_port = envtest.free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    pg = server = harness = None
    stop = threading.Event()
    try:
        if args.database == "postgresql":
            pg = localprefect.start_postgres()
            server = localprefect.start_prefect_server(pg.url)
            os.environ["PREFECT_API_URL"] = server.api_url
        else:
            from prefect.testing.utilities import prefect_test_harness

            harness = prefect_test_harness(server_startup_timeout=180)
            harness.__enter__()
        ns, pns = "bench-workspaces", "bench-platform"
        os.environ.update({
            "VIBECODE_KUBECONFIG": str(env.kubeconfig), "VIBECODE_NAMESPACE": ns, "VIBECODE_PLATFORM_NAMESPACE": pns,
            "VIBECODE_SMTP_HOST": "127.0.0.1", "VIBECODE_SMTP_PORT": str(smtp_port),
            "VIBECODE_READY_POLL_SECONDS": "0.2", "VIBECODE_DEPARTMENT_GROUPS": '{"engineering": ["engineering"]}',
            "VIBECODE_HR_ALLOWED_GROUPS": '["developers", "engineering", "users"]',
            "PREFECT_LOGGING_LEVEL": "WARNING"})
        get_settings.cache_clear()
        kube_adapter.reset_connections()
        kube = kube_adapter.connect()
        s = get_settings()
        for name in (ns, pns):
            kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        from tasks.people.identity.filedb import USERS_KEY

        kube.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": {"name": s.identity.authelia_users_secret, "namespace": pns},
                     "stringData": {USERS_KEY: "users: {}\n"}})
        kube.create(authelia_deployment_manifest(pns, s.identity.authelia_deployment))
        from tasks.cluster.limits import ensure_concurrency_limits

        limits = ensure_concurrency_limits()
        threading.Thread(target=kubelet, args=(kube, ns, stop), daemon=True).start()

        # Warm-up outside the measurement: one empty flow run (imports, client, server
        # caches) and one hire, as a running worker would be warm.
        from prefect import flow

        from flows.onboarding import onboard_user
        from tasks.people.hr import parse_request

        @flow(name="empty")
        def empty() -> None:
            return None

        t0 = time.perf_counter()
        empty()
        empty_flow_s = time.perf_counter() - t0
        single_prof = None
        if args.profile:  # the single hire runs in this thread, so the profile sees all of it
            from pyinstrument import Profiler

            single_prof = Profiler(interval=0.002, async_mode="disabled")
            single_prof.start()
        t0 = time.perf_counter()
        warm = onboard_user(parse_request(hire(999)), return_state=True)
        one_hire_s = time.perf_counter() - t0
        if single_prof:
            single_prof.stop()
            (ROOT / "benchmarks" / "results" / "hires-single-profile.txt").write_text(
                single_prof.output_text(unicode=False, color=False, show_all=True))
        one_hire_breakdown = task_breakdown([warm.state_details.flow_run_id])

        results: list = []
        errors: list = []
        states: list = []

        def one(i: int) -> None:
            try:
                state = onboard_user(parse_request(hire(i)), return_state=True)
                states.append(state)
                results.append(state.result())
            except BaseException as exc:  # noqa: BLE001 - counted
                errors.append(repr(exc))

        profiler = None
        threads = [threading.Thread(target=one, args=(i,)) for i in range(args.hires)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        if profiler:
            profiler.stop()
            out_html = ROOT / "benchmarks" / "results" / "hires-profile.html"
            out_html.write_text(profiler.output_html())
            (ROOT / "benchmarks" / "results" / "hires-profile.txt").write_text(
                profiler.output_text(unicode=False, color=False, show_all=False))
        users = set()
        import base64

        import yaml

        secret = kube.get("Secret", pns, s.identity.authelia_users_secret)
        users = set(yaml.safe_load(base64.b64decode(secret["data"][USERS_KEY]))["users"])
        breakdown = task_breakdown([st.state_details.flow_run_id for st in states])
        out = {
            "hires": args.hires, "database": args.database, "wall_seconds": round(wall, 1),
            "seconds_per_hire": round(wall / args.hires, 2), "target_seconds": 40,
            "completed": len(results), "errors": errors[:5], "error_count": len(errors),
            "identities": len(users - {"hire999"}), "emails": len(inbox.messages) - 1,
            "single_hire_seconds": round(one_hire_s, 2), "empty_flow_run_seconds": round(empty_flow_s, 2),
            "tag_limits": limits, "where_the_time_goes": breakdown, "single_hire_breakdown": one_hire_breakdown,
            "server_tag_slot_wait_seconds": args.slot_wait if args.slot_wait is not None else "10 (default)",
        }
    finally:
        stop.set()
        if harness:
            harness.__exit__(None, None, None)
        if server:
            server.stop()
        if pg:
            pg.stop()
        smtp.stop()
        env.stop()
    out.update(cpus=os.cpu_count(), loadavg_before=load_before, loadavg_after=[round(x, 2) for x in os.getloadavg()])
    print(json.dumps(out, indent=1))
    path = ROOT / "benchmarks" / "results" / "hires.json"
    recorded = json.loads(path.read_text()) if path.exists() else {}
    recorded.update({"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
                     f"concurrent_hires_{args.database}": out})
    path.write_text(json.dumps(recorded, indent=2) + "\n")
    print(f"written to {path.relative_to(ROOT)}")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
