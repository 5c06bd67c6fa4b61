"""Pure builders for backup and restore Jobs (k8up's model: our own pod mounts the PVC).

Mounting the claim in a Job - rather than reading it through the workspace pod, as
Velero's file-system backup does - covers stopped workspaces too. A ReadWriteOnce
volume that a running workspace holds can only be mounted on that node, so the Job is
pinned there.

Secrets reach the container only through ``secretKeyRef``; a manifest never holds one.
The pod skeleton (restricted security, termination messages) is :func:`tasks.cluster.objects.restricted_job`.
"""

from __future__ import annotations

from collections.abc import Iterable

from tasks.backup.restic import NIGHTLY_TAG, SECRET_ENV, backup_script, plain_env, restore_script
from tasks.cluster.objects import restricted_job
from tasks.core.names import (
    BACKUP_RUN_LABEL,
    COMPONENT_LABEL,
    PART_OF,
    PART_OF_LABEL,
    USER_LABEL,
    VOLUME_LABEL,
    WorkspaceNames,
)
from tasks.core.settings import BackupSettings

DATA_DIR = "/data"  # the PVC; restic runs here and backs up "."
CACHE_DIR = "/cache"
RUN_LABEL = BACKUP_RUN_LABEL
SHELL = ["/bin/sh", "-c"]  # the restic image is Alpine-based: its busybox sh runs the scripts of tasks.backup.restic


def job_name(names: WorkspaceNames, kind: str, run_id: str) -> str:
    return f"{names.release}-{kind}-{run_id}"  # <= 3+32+11+9 characters: fits a label value


def backup_secret(backup: BackupSettings, namespace: str) -> dict | None:
    """The platform Secret the Jobs read, from settings; None when settings do not hold it
    (then an operator manages the Secret, e.g. with sealed-secrets)."""
    values = {"RESTIC_PASSWORD": backup.restic_password, "AWS_ACCESS_KEY_ID": backup.s3_access_key_id,
              "AWS_SECRET_ACCESS_KEY": backup.s3_secret_access_key}
    present = {k: v for k, v in values.items() if v is not None}
    if len(present) < len(values):
        return None
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": backup.secret, "namespace": namespace,
                         "labels": {PART_OF_LABEL: PART_OF, COMPONENT_LABEL: "backup"}},
            "stringData": {k: v.get_secret_value() for k, v in present.items()}}


def workspace_nodes(pods: Iterable[dict]) -> dict[str, str]:
    """username -> node of a pod that holds (or is about to hold) the workspace volume."""
    nodes: dict[str, str] = {}
    for pod in pods:
        user = (pod.get("metadata", {}).get("labels") or {}).get(USER_LABEL)
        node = (pod.get("spec") or {}).get("nodeName")
        phase = (pod.get("status") or {}).get("phase", "Pending")
        if user and node and phase in ("Pending", "Running", "Unknown"):
            nodes[user] = node
    return nodes


def _restic_job(names: WorkspaceNames, backup: BackupSettings, namespace: str, *, name: str, component: str,
                run_id: str, claim: str, read_only: bool, script: str, node: str | None) -> dict:
    env: list[dict] = [{"name": k, "value": v} for k, v in plain_env(backup, names.username, CACHE_DIR).items()]
    env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": backup.secret, "key": k}}}
            for k in SECRET_ENV]
    env.append({"name": "TMPDIR", "value": "/tmp"})
    labels = {PART_OF_LABEL: PART_OF, COMPONENT_LABEL: component, USER_LABEL: names.username, RUN_LABEL: run_id}
    container = {
        "name": "restic",
        "image": backup.restic_image,
        "command": SHELL,
        "args": [script],
        "workingDir": DATA_DIR,
        "env": env,
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}},
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR, "readOnly": read_only},
                         {"name": "cache", "mountPath": CACHE_DIR},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}},
               {"name": "cache", "emptyDir": {"sizeLimit": "2Gi"}},
               {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}]
    return restricted_job(name=name, namespace=namespace, labels=labels, container=container,
                          volumes=volumes, run_as_user=backup.run_as_user, run_as_group=backup.run_as_group,
                          # a fresh restore volume must be writable by the workspace's uid
                          fs_group=None if read_only else backup.run_as_group,
                          node=node, deadline_seconds=int(backup.timeout_seconds),
                          ttl_seconds=backup.job_ttl_seconds)


def backup_job(names: WorkspaceNames, backup: BackupSettings, namespace: str, run_id: str,
               node: str | None = None, kind: str = "backup", tag: str = NIGHTLY_TAG) -> dict:
    """``kind``/``tag``: "backup"/nightly, or "prerestore"/pre-restore before an in-place restore."""
    return _restic_job(names, backup, namespace, name=job_name(names, kind, run_id), component=kind,
                       run_id=run_id, claim=names.workspace_pvc, read_only=True,
                       script=backup_script(names.username, run_id, tag), node=node)


def restore_job(names: WorkspaceNames, backup: BackupSettings, namespace: str, run_id: str, claim: str,
                snapshot: str, empty: bool = False) -> dict:
    return _restic_job(names, backup, namespace, name=job_name(names, "restore", run_id), component="restore",
                       run_id=run_id, claim=claim, read_only=False,
                       script=restore_script(names.username, snapshot, run_id, empty), node=None)


def restore_pvc(names: WorkspaceNames, source: dict, run_id: str) -> dict:
    """A new claim shaped like the workspace's, labelled so backups and the reaper skip it."""
    spec = source.get("spec") or {}
    new_spec = {"accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "resources": {"requests": {"storage": spec["resources"]["requests"]["storage"]}}}
    if spec.get("storageClassName"):
        new_spec["storageClassName"] = spec["storageClassName"]
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": f"{names.release}-restore-{run_id}", "namespace": source["metadata"]["namespace"],
                         "labels": {**names.labels, VOLUME_LABEL: "restore", RUN_LABEL: run_id}},
            "spec": new_spec}
