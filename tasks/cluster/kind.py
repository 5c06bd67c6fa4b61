"""Create or reuse the local KIND cluster.

KIND and Docker are the only things the main job needs that our package registries
cannot provide, so a missing prerequisite is a clear, permanent error that says exactly
what to install, instead of a stack trace from deep inside ``kind``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tasks.core.errors import PermanentError, ServerError

KIND_VERSION = "v0.32.0"  # = deployments/platform.lock.yaml kind.version (a test holds them equal)

DOCKER_HELP = ("Docker is needed to run KIND. Install Docker Engine (Debian: `apt-get install docker.io`, "
               "or https://docs.docker.com/engine/install/) and make sure `docker info` works for this user.")
KIND_HELP = (f"kind {KIND_VERSION} is needed to create the local cluster (its node image, kindest/node v1.36.1, "
             f"is pinned by digest in deployments/platform.lock.yaml). Install it with Go: "
             f"`go install sigs.k8s.io/kind@{KIND_VERSION}` (puts it in ~/go/bin), or download the "
             f"release binary from https://kind.sigs.k8s.io/docs/user/quick-start/#installation.")


def parse_version(output: str) -> tuple[int, ...] | None:
    """``kind version`` prints e.g. ``kind v0.32.0 go1.26.1 linux/amd64``."""
    for word in output.split():
        if word.startswith("v") and word[1:2].isdigit():
            try:
                return tuple(int(p) for p in word[1:].split("-")[0].split("."))
            except ValueError:
                return None
    return None


def missing_prerequisites(which=shutil.which, run=subprocess.run) -> list[str]:
    """What is missing for KIND, as instructions for a person; empty when all is there."""
    problems = []
    if not which("docker"):
        problems.append(DOCKER_HELP)
    else:
        ok = run(["docker", "info"], capture_output=True, text=True).returncode == 0
        if not ok:
            problems.append("The docker client is installed but no Docker engine answers (`docker info` fails). "
                            + DOCKER_HELP)
    if not which("kind"):
        problems.append(KIND_HELP)
    else:
        found = run(["kind", "version"], capture_output=True, text=True)
        version = parse_version(getattr(found, "stdout", "") or "")
        wanted = parse_version(KIND_VERSION)
        if version is not None and wanted is not None and version < wanted:
            problems.append(f"kind {'.'.join(map(str, version))} is older than {KIND_VERSION}, which the pinned node "
                            f"image is made for. " + KIND_HELP)
    return problems


def parse_clusters(output: str) -> list[str]:
    """``kind get clusters`` prints one name a line, or 'No kind clusters found.' on stderr."""
    return [line.strip() for line in output.splitlines() if line.strip() and " " not in line.strip()]


def create_args(name: str, config: Path, kubeconfig: Path, image: str) -> list[str]:
    """``image``: the node image, pinned by digest in the lock (kindest/node:vX@sha256:...)."""
    return ["kind", "create", "cluster", "--name", name, "--config", str(config), "--image", image,
            "--kubeconfig", str(kubeconfig), "--wait", "120s"]


def cluster_exists(name: str) -> bool:
    """Whether KIND has this cluster (False where kind or Docker is missing)."""
    if missing_prerequisites():
        return False
    listed = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True)
    return listed.returncode == 0 and name in parse_clusters(listed.stdout)


def ensure_cluster(name: str, config: Path, kubeconfig: Path, image: str) -> str:
    """Create the cluster if absent; always (re)write its kubeconfig. Returns created|reused."""
    problems = missing_prerequisites()
    if problems:
        raise PermanentError("cannot run the platform on KIND here:\n- " + "\n- ".join(problems))
    listed = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True)
    if listed.returncode != 0:
        raise ServerError(f"kind get clusters failed: {listed.stderr.strip()}")
    kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    if name in parse_clusters(listed.stdout):
        res = subprocess.run(["kind", "export", "kubeconfig", "--name", name, "--kubeconfig", str(kubeconfig)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise ServerError(f"kind export kubeconfig failed: {res.stderr.strip()}")
        return "reused"
    res = subprocess.run(create_args(name, config, kubeconfig, image), capture_output=True, text=True)
    if res.returncode != 0:
        raise ServerError(f"kind create cluster failed: {res.stderr.strip()[-2000:]}")
    return "created"
