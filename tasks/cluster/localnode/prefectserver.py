"""A throw-away PostgreSQL cluster and a real Prefect server on it, both on loopback.

SQLite is Prefect's single-machine default and stays ours; a team's server runs on
PostgreSQL, where many flow runs can write at once (SQLite serialises every write: under
the HR gateway's load it answered "database is locked"). This module starts what a team
runs, from Debian's ``postgresql-15`` and Prefect's own ``prefect server start``, for the
test suite, the benchmarks and a developer's laptop (``python -m tasks.cluster.localnode.prefectserver``).

PostgreSQL refuses to run as root, so as root the cluster is made and run by the
``postgres`` user Debian's package creates. It listens on 127.0.0.1 only,
with a password generated per run (scram-sha-256) and its socket inside the data folder;
nothing is written outside that folder.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tasks.cluster.localnode.envtest import free_port

PG_BIN = Path(os.environ.get("VIBECODE_PG_BIN", "/usr/lib/postgresql/15/bin"))
DB_NAME = "prefect"
DB_USER = "prefect"


def _as_db_owner() -> dict:
    """Popen arguments for commands that must not run as root: as root, Debian's ``postgres``
    user (the process itself switches, so signals reach postgres, not a wrapper)."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


@dataclass
class Postgres:
    port: int
    password: str = field(repr=False)  # a failure report prints the object
    datadir: Path
    proc: subprocess.Popen
    _tmp: tempfile.TemporaryDirectory = field(repr=False)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL Prefect takes (``PREFECT_API_DATABASE_CONNECTION_URL``)."""
        return f"postgresql+asyncpg://{DB_USER}:{self.password}@127.0.0.1:{self.port}/{DB_NAME}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: PostgreSQL's "smart" shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._tmp.cleanup()


def start_postgres(durable: bool = True, timeout: float = 60) -> Postgres:
    """initdb + postgres on a free loopback port. ``durable=False`` turns fsync off: a test
    database that is thrown away need not survive a power cut, and it saves the 2-core
    machine's disk a lot of flushes. Benchmarks keep the default, as a team would."""
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError(f"{PG_BIN}/initdb not found: apt-get install postgresql-15 (scripts/setup.sh --test)")
    tmp = tempfile.TemporaryDirectory(prefix="vibecode-pg-")
    root = Path(tmp.name)
    datadir, password = root / "data", secrets.token_urlsafe(24)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:  # the postgres user owns the cluster and must read the password file
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    pwfile.chmod(0o600)
    subprocess.run([str(PG_BIN / "initdb"), "-D", str(datadir), "-U", DB_USER, "--pwfile", str(pwfile),
                    "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=root, **_as_db_owner())
    pwfile.unlink()
    port = free_port()
    # Loopback only, password only (initdb's --auth wrote pg_hba.conf), socket kept private.
    options = ["-c", "listen_addresses=127.0.0.1", "-p", str(port), "-c", f"unix_socket_directories={datadir}",
               "-c", "max_connections=200", "-c", "log_min_messages=warning"]
    if not durable:
        options += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    log = open(root / "postgres.log", "ab")
    proc = subprocess.Popen([str(PG_BIN / "postgres"), "-D", str(datadir), *options],
                            stdout=log, stderr=log, cwd=root, **_as_db_owner())
    pg = Postgres(port, password, datadir, proc, tmp)
    env = {**os.environ, "PGPASSWORD": password}
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            text = (root / "postgres.log").read_text()[-2000:]
            tmp.cleanup()
            raise RuntimeError(f"postgres exited with {proc.returncode}:\n{text}")
        ready = subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-q"])
        if ready.returncode == 0:
            break
        if time.monotonic() > deadline:
            pg.stop()
            raise RuntimeError(f"postgres not ready on 127.0.0.1:{port} after {timeout}s")
        time.sleep(0.2)
    subprocess.run([str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", DB_USER, "-d", "postgres",
                    "-v", "ON_ERROR_STOP=1", "-q", "-c", f"CREATE DATABASE {DB_NAME}"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return pg


@dataclass
class PrefectServer:
    api_url: str
    proc: subprocess.Popen
    home: tempfile.TemporaryDirectory = field(repr=False)
    log: Path = field(repr=False, default=Path())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.home.cleanup()


def server_env(database_url: str | None, home: Path) -> dict[str, str]:
    """The environment of ``prefect server start``: the database (None = SQLite in ``home``),
    no telemetry (it would leave loopback), no UI build step, and a task denied a tag slot
    told to ask again within 1 s instead of Prefect's 10 (benchmarks/README.md, hires)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false",
               PREFECT_SERVER_UI_ENABLED="false", PREFECT_LOGGING_SERVER_LEVEL="WARNING",
               PREFECT_SERVER_TASKS_TAG_CONCURRENCY_SLOT_WAIT_SECONDS=os.environ.get(
                   "PREFECT_SERVER_TASKS_TAG_CONCURRENCY_SLOT_WAIT_SECONDS", "1"))
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    else:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    return env


def start_prefect_server(database_url: str | None = None, workers: int = 1, timeout: float = 180,
                         cpus: set[int] | None = None, services: bool = True) -> PrefectServer:
    """``prefect server start`` on a free loopback port; returns when ``/api/health`` answers.

    ``workers`` > 1 runs several API processes, which only PostgreSQL can serve (SQLite's
    one writer would make them queue behind each other's locks). ``cpus`` pins the server
    (benchmarks keep it off the gateway's core). ``services`` False: the API alone, no
    scheduler or other loop writing to the database behind a test that compares its rows.

    The port is free when chosen, but the server binds it only after its imports (seconds on
    a busy machine), and meanwhile another process may take it (an outgoing connection's
    local port included; seen on this machine under load): a server that found its port
    taken is started again on another, twice at most."""
    for _ in range(2):
        try:
            return _start_prefect_server(database_url, workers, timeout, cpus, services)
        except _PortTaken:
            pass
    return _start_prefect_server(database_url, workers, timeout, cpus, services)


class _PortTaken(RuntimeError):
    pass


def _start_prefect_server(database_url: str | None, workers: int, timeout: float, cpus: set[int] | None,
                          services: bool) -> PrefectServer:
    home = tempfile.TemporaryDirectory(prefix="vibecode-prefect-")
    port = free_port()
    log = Path(home.name) / "server.log"
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port),
           "--no-ui", "--analytics-off"]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    if not services:
        cmd.append("--no-services")
    proc = subprocess.Popen(cmd, env=server_env(database_url, Path(home.name)), stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    server = PrefectServer(f"http://127.0.0.1:{port}/api", proc, home, log)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            text = log.read_text()[-3000:]
            home.cleanup()
            error = _PortTaken if "address already in use" in text else RuntimeError
            raise error(f"prefect server exited with {proc.returncode}:\n{text}")
        try:
            if httpx.get(f"{server.api_url}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"prefect server not healthy after {timeout}s; log {log}")
        time.sleep(0.3)


def main() -> int:
    """``python -m tasks.cluster.localnode.prefectserver``: PostgreSQL + a Prefect server until Ctrl-C."""
    pg = start_postgres()
    server = start_prefect_server(pg.url)
    print(f"PostgreSQL on 127.0.0.1:{pg.port} (data {pg.datadir}, thrown away on exit)")
    print(f"Prefect server: export PREFECT_API_URL={server.api_url}")
    try:
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
