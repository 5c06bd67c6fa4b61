"""Pure builders for backup and restore Jobs (k8up's model: our own pod mounts the PVC).

Mounting the claim in a Job - rather than reading it through the workspace pod, as
Velero's file-system backup does - covers stopped workspaces too. A ReadWriteOnce
volume that a running workspace holds can only be mounted on that node, so the Job is
pinned there with node affinity (the scheduler still checks resources, unlike nodeName).

Secrets reach the container only through ``secretKeyRef``; a manifest never holds one.
"""

from __future__ import annotations

from tasks.backup_status import (  # noqa: F401 - the annotation contract, re-exported
    LAST_BACKUP_OUTCOME,
    LAST_BACKUP_REASON,
    LAST_BACKUP_SNAPSHOT,
    LAST_BACKUP_TIME,
    LAST_BACKUP_VERIFIED,
    has_verified_backup,
)
from tasks.names import PART_OF, WorkspaceNames
from tasks.objects import restricted_container_security
from tasks.restic import SECRET_ENV, backup_args, plain_env, restore_args
from tasks.settings import Settings

DATA_DIR = "/data"  # the PVC; restic runs here and backs up "."
CACHE_DIR = "/cache"
WORKSPACE_POD_SELECTOR = f"app.kubernetes.io/name=code-server,app.kubernetes.io/part-of={PART_OF}"
USER_LABEL = "vibecode.dev/user"
RUN_LABEL = "vibecode.dev/backup-run"


def job_name(names: WorkspaceNames, kind: str, run_id: str) -> str:
    return f"{names.release}-{kind}-{run_id}"  # <= 3+32+8+9 characters: fits a label value


def backup_secret(settings: Settings, namespace: str) -> dict | None:
    """The platform Secret the Jobs read, from settings; None when settings do not hold it
    (then an operator manages the Secret, e.g. with sealed-secrets)."""
    values = {"RESTIC_PASSWORD": settings.restic_password, "AWS_ACCESS_KEY_ID": settings.s3_access_key_id,
              "AWS_SECRET_ACCESS_KEY": settings.s3_secret_access_key}
    if any(v is None for v in values.values()):
        return None
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": settings.backup_secret, "namespace": namespace,
                         "labels": {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/component": "backup"}},
            "stringData": {k: v.get_secret_value() for k, v in values.items()}}


def workspace_nodes(pods: list[dict]) -> dict[str, str]:
    """username -> node of a pod that holds (or is about to hold) the workspace volume."""
    nodes: dict[str, str] = {}
    for pod in pods:
        user = (pod.get("metadata", {}).get("labels") or {}).get(USER_LABEL)
        node = (pod.get("spec") or {}).get("nodeName")
        phase = (pod.get("status") or {}).get("phase", "Pending")
        if user and node and phase in ("Pending", "Running", "Unknown"):
            nodes[user] = node
    return nodes


def _restic_job(names: WorkspaceNames, settings: Settings, *, name: str, component: str, run_id: str,
                claim: str, read_only: bool, args: list[str], node: str | None) -> dict:
    env = [{"name": k, "value": v} for k, v in plain_env(settings, names.username, CACHE_DIR).items()]
    env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": settings.backup_secret, "key": k}}}
            for k in SECRET_ENV]
    env.append({"name": "TMPDIR", "value": "/tmp"})
    labels = {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/component": component,
              USER_LABEL: names.username, RUN_LABEL: run_id}
    pod_security = {"runAsNonRoot": True, "runAsUser": settings.backup_run_as_user,
                    "runAsGroup": settings.backup_run_as_group, "seccompProfile": {"type": "RuntimeDefault"}}
    if not read_only:  # a fresh restore volume must be writable by the workspace's uid
        pod_security |= {"fsGroup": settings.backup_run_as_group, "fsGroupChangePolicy": "OnRootMismatch"}
    pod = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security,
        "containers": [{
            "name": "restic",
            "image": settings.restic_image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["restic"],
            "args": args,
            "workingDir": DATA_DIR,
            "env": env,
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}},
            "securityContext": restricted_container_security(),
            "volumeMounts": [{"name": "data", "mountPath": DATA_DIR, "readOnly": read_only},
                             {"name": "cache", "mountPath": CACHE_DIR},
                             {"name": "tmp", "mountPath": "/tmp"}],
        }],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}},
                    {"name": "cache", "emptyDir": {"sizeLimit": "2Gi"}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}],
    }
    if node:
        pod["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": settings.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,  # a retry would only hide which files failed; the next night retries
            "activeDeadlineSeconds": int(settings.backup_timeout_seconds),
            "ttlSecondsAfterFinished": settings.backup_job_ttl_seconds,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def backup_job(names: WorkspaceNames, settings: Settings, run_id: str, node: str | None = None) -> dict:
    return _restic_job(names, settings, name=job_name(names, "backup", run_id), component="backup",
                       run_id=run_id, claim=names.workspace_pvc, read_only=True,
                       args=backup_args(names.username, run_id), node=node)


def restore_job(names: WorkspaceNames, settings: Settings, run_id: str, claim: str, snapshot: str) -> dict:
    return _restic_job(names, settings, name=job_name(names, "restore", run_id), component="restore",
                       run_id=run_id, claim=claim, read_only=False,
                       args=restore_args(names.username, snapshot), node=None)


def restore_pvc(names: WorkspaceNames, source: dict, run_id: str) -> dict:
    """A new claim shaped like the workspace's, labelled so backups and the reaper skip it."""
    spec = source.get("spec") or {}
    new_spec = {"accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "resources": {"requests": {"storage": spec["resources"]["requests"]["storage"]}}}
    if spec.get("storageClassName"):
        new_spec["storageClassName"] = spec["storageClassName"]
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": f"{names.release}-restore-{run_id}", "namespace": source["metadata"]["namespace"],
                         "labels": {**names.labels, "vibecode.dev/volume": "restore", RUN_LABEL: run_id}},
            "spec": new_spec}


def job_state(job: dict | None) -> tuple[str, str]:
    """(running | succeeded | failed, reason) from a Job's conditions, as ``kubectl wait`` reads them."""
    if job is None:
        return "failed", "the Job disappeared"
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return "succeeded", "Complete"
        if cond.get("type") == "Failed":
            return "failed", cond.get("message") or cond.get("reason") or "the pod failed"
    return "running", f"{status.get('active', 0)} pod(s) active"
