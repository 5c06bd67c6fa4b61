"""Settings for bootstrap on this machine's one-node cluster (scripts/up), as environment (pure).

The node can pull nothing (no registry is reachable), so bootstrap is told so, and told which
pinned images were built on this machine instead (tasks/cluster/localnode/images.py):
the components whose images exist neither way are reported as not runnable, with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

# node image name (tasks.cluster.localnode.images) -> the lock entry it stands in for
LOCAL_BUILDS = {"seaweedfs": "seaweedfs", "postgres": "postgres", "redis": "redis", "vibecode-ops": "hr-gateway"}


def node_environment(kubeconfig: Path | str, images: dict[str, str], storage_class: str) -> dict[str, str]:
    """``images``: the node's short name -> reference (what ``node.py up`` prints)."""
    overrides = {LOCAL_BUILDS[k]: ref for k, ref in images.items() if k in LOCAL_BUILDS}
    env = {"VIBECODE_KUBECONFIG": str(kubeconfig), "KUBECONFIG": str(kubeconfig),
           "VIBECODE_STORAGE_CLASS": storage_class,
           "VIBECODE_PLATFORM__STORAGE_CLASS": storage_class,
           "VIBECODE_PLATFORM__S3_STORE_SIZE": "10Gi",  # the node's local volumes hold 20Gi each
           "VIBECODE_PLATFORM__REGISTRY_REACHABLE": "false",
           "VIBECODE_PLATFORM__IMAGE_OVERRIDES": json.dumps(overrides, sort_keys=True)}
    if "code-server" in images:
        env["VIBECODE_WORKSPACE_IMAGE"] = images["code-server"]
    if "restic" in images:
        env["VIBECODE_RESTIC_IMAGE"] = images["restic"]
    return env


def shell_exports(env: dict[str, str]) -> str:
    import shlex

    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))


if __name__ == "__main__":  # scripts/up: python -m tasks.platform.localup NODE_JSON [name=ref ...]
    import sys

    info = json.loads(Path(sys.argv[1]).read_text())
    extra = dict(arg.split("=", 1) for arg in sys.argv[2:])  # images imported after the node started
    print(shell_exports(node_environment(info["kubeconfig"], {**info["images"], **extra}, info["storage_class"])),
          end="")
