"""Register prefect.yaml's deployments with the configured Prefect server, through Prefect's
Python API (``RunnerDeployment.from_entrypoint(...).apply()``, what ``prefect deploy`` does
for a local project), and tell how the worker starts.

Re-running converges: a deployment is upserted by (flow, name) and each schedule carries a
fixed slug, so a second run updates the schedules instead of adding copies. The work pool
is created when missing (the process pool from Prefect's own default job template; the
kubernetes pool only where prefect-kubernetes is installed, else the platform bootstrap
creates it with the flows' job template).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from pathlib import Path

from pydantic import BaseModel

from tasks.core.errors import MissingPrerequisite
from tasks.deploy.spec import DeploymentSpec, PoolRef, PoolType, Project

ROOT = Path(__file__).resolve().parents[2]


class Registered(BaseModel):
    name: str  # flow/deployment, as run_deployment names it
    id: str
    pool: str
    schedules: list[str]  # "0 2 * * * (UTC)"
    concurrency: str  # "1, CANCEL_NEW" or ""
    tags: list[str]
    parameters: list[str]  # the form's fields (the flow's typed signature)


class Worker(BaseModel):
    pool: str
    type: PoolType
    argv: list[str]
    env: dict[str, str]
    cwd: str

    @property
    def shell(self) -> str:
        """The command to paste into a terminal, exactly what ``vibecode deploy`` runs."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return f"cd {shlex.quote(self.cwd)} && {env} {shlex.join(self.argv)}"


def api_url() -> str:
    """The server this process talks to; refuses Prefect's throw-away ephemeral server
    (deployments registered there vanish, and no worker could reach it)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise MissingPrerequisite([
            "PREFECT_API_URL is not set: start a server (`prefect server start`, the UI and API on "
            "http://127.0.0.1:4200) and `export PREFECT_API_URL=http://127.0.0.1:4200/api`"])
    return str(url)


def check_server() -> str:
    """Reachable and answering, before anything is registered."""
    from prefect.client.orchestration import get_client

    url = api_url()
    with get_client(sync_client=True) as client:
        error = client.api_healthcheck()
    if error is not None:
        raise MissingPrerequisite([f"the Prefect server at {url} does not answer ({type(error).__name__}: "
                                   f"{str(error)[:200]}); is `prefect server start` running?"])
    return url


def ensure_pool(kind: PoolType, ref: PoolRef) -> str:
    """``exists`` or ``created``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(ref.name)
            return "exists"
        except ObjectNotFound:
            pass
        if kind == "process":
            from prefect.workers.process import ProcessWorker

            template = ProcessWorker.get_default_base_job_template()
        else:
            try:
                from prefect_kubernetes.worker import KubernetesWorker
            except ImportError:
                raise MissingPrerequisite([
                    f"work pool {ref.name} (kubernetes) does not exist and prefect-kubernetes is not installed "
                    f"here: bring the platform up first (the bootstrap creates the pool with the flows' job "
                    f"template), or `pip install prefect-kubernetes`"]) from None
            template = KubernetesWorker.get_default_base_job_template()
        try:
            client.create_work_pool(WorkPoolCreate(name=ref.name, type=kind, base_job_template=template))
        except ObjectAlreadyExists:  # a concurrent deploy created it first
            return "exists"
    return "created"


def register(spec: DeploymentSpec, kind: PoolType, root: Path = ROOT) -> Registered:
    """Upsert one deployment. Entrypoints are relative to the repository root, as in the file."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import RunnerDeployment
    from prefect.schedules import Cron

    job_variables = dict(spec.work_pool.job_variables)
    if kind == "process":  # the worker starts each run in the repository, wherever it runs itself
        job_variables.setdefault("working_dir", str(root))
    schedules = [Cron(s.cron, timezone=s.timezone, active=s.active, slug=f"{spec.name}-{i}")
                 for i, s in enumerate(spec.schedules)]
    limit = None if spec.concurrency_limit is None else ConcurrencyLimitConfig(
        limit=spec.concurrency_limit.limit,
        collision_strategy=ConcurrencyLimitStrategy(spec.concurrency_limit.collision_strategy))
    with contextlib.chdir(root):
        deployment = RunnerDeployment.from_entrypoint(
            spec.entrypoint, name=spec.name, description=spec.description, tags=list(spec.tags),
            schedules=schedules, concurrency_limit=limit, parameters=dict(spec.parameters),
            work_pool_name=spec.work_pool.name, work_queue_name=spec.work_pool.work_queue_name,
            job_variables=job_variables, enforce_parameter_schema=True)
        deployment_id = deployment.apply()
    return Registered(
        name=f"{deployment.flow_name}/{spec.name}", id=str(deployment_id), pool=spec.work_pool.name,
        schedules=[f"{s.cron} ({s.timezone})" for s in spec.schedules],
        concurrency="" if spec.concurrency_limit is None
        else f"{spec.concurrency_limit.limit}, {spec.concurrency_limit.collision_strategy}",
        tags=list(spec.tags), parameters=sorted(deployment._parameter_openapi_schema.properties or {}))


def worker(project: Project, kind: PoolType, url: str, root: Path = ROOT) -> Worker:
    """How a worker for the pool starts: Prefect's own ``prefect worker start``."""
    prefect = Path(sys.executable).with_name("prefect")
    exe = str(prefect) if prefect.exists() else "prefect"
    ref = project.pool(kind)
    return Worker(pool=ref.name, type=kind, argv=[exe, "worker", "start", "--pool", ref.name, "--type", kind],
                  env={"PREFECT_API_URL": url}, cwd=str(root))


def _stderr_fd() -> int:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a capture: the process's own fd 2
        return 2


def run_worker(w: Worker) -> int:
    """Run the worker in the foreground until it stops or Ctrl-C; its exit code."""
    import subprocess

    # its output is log lines: on stderr, so stdout holds only the command's result
    proc = subprocess.Popen(w.argv, cwd=w.cwd, env={**os.environ, **w.env}, stdout=_stderr_fd())
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the worker got the same SIGINT: let it finish its shutdown
        proc.wait()
        return 0
