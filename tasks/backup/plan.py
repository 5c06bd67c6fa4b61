"""What the backup and restore flows decide, pure: which workspaces a run backs up, whether a
restore may write into a workspace's own volume, which snapshot "latest" is, and whether
the pre-restore copy is good enough to replace anything with.

The flows and steps (:mod:`flows.backup`, :mod:`flows.restore`,
:mod:`tasks.backup.restore_steps`) read the cluster and the repository, ask here, and act.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.backup.jobs import workspace_nodes
from tasks.backup.restic import Snapshot, newest_good
from tasks.backup.status import Outcome, Recorded, WorkspaceResult
from tasks.core.errors import InvalidInput
from tasks.core.names import USER_LABEL, validate_username, workspace_names


@dataclass(frozen=True)
class Target:
    """One workspace a backup run backs up: its volume and the node of a pod using it."""

    username: str
    pvc: str
    node: str | None


def backup_targets(wanted: list[str], volumes: dict[str, str],
                   nodes: dict[str, str]) -> tuple[list[Target], list[WorkspaceResult]]:
    """(what to back up, what failed before starting), from the named usernames (``wanted``,
    already validated; empty: every volume), the volumes found (username label -> PVC) and
    the nodes of running workspace pods. A volume whose user label is no valid username and
    a named workspace without a volume are failures of this run, reported, never skipped."""
    targets: list[Target] = []
    failed: list[WorkspaceResult] = []
    for user in wanted or sorted(volumes):
        pvc = volumes.get(user)
        try:
            validate_username(user)
        except InvalidInput as exc:
            failed.append(WorkspaceResult(username=user or "?", pvc=pvc or "", outcome=Outcome.FAILED,
                                          reason=f"volume has no valid {USER_LABEL} label: {exc}"))
            continue
        if pvc is None:
            failed.append(WorkspaceResult(username=user, pvc="", outcome=Outcome.FAILED,
                                          reason="no workspace volume found"))
            continue
        targets.append(Target(user, pvc, nodes.get(user)))
    return targets, failed


def in_place_refusal(username: str, pvc: dict | None, deployment: dict | None, pods: list[dict]) -> str | None:
    """Why a restore must not write into the workspace's own volume now (None: it may).

    Only a stopped workspace is overwritten: nothing may be writing to the volume while the
    restore replaces its contents. Asked after the restore guard is set, so nothing can
    start the workspace afterwards."""
    if pvc is None:
        return f"{workspace_names(username).workspace_pvc} does not exist; restore into a new volume"
    if deployment is not None and (deployment.get("spec", {}).get("replicas", 1) or 0) > 0:
        return f"refusing to overwrite running workspace {username}: scale it to zero first"
    if workspace_nodes(pods):
        return f"refusing to overwrite workspace {username}: a pod still uses its volume"
    return None


def pick_snapshot(snapshots: list[Snapshot], username: str, wanted: str) -> Snapshot | None:
    """``latest``: the newest good snapshot (not partial, not a pre-restore copy); else the
    snapshot whose id starts with ``wanted`` (validated by tasks.core.names). Only this
    workspace's snapshots count."""
    own = [x for x in snapshots if x.hostname == username]
    if wanted == "latest":
        return newest_good(own, username)
    return next((x for x in own if x.id.startswith(wanted)), None)


def pre_restore_refusal(username: str, job_succeeded: bool, job_reason: str, recorded: Recorded) -> str | None:
    """Why the pre-restore copy is not enough to replace the volume with (None: it is). An
    in-place restore deletes what is there, so it needs a verified snapshot of it first."""
    if job_succeeded and recorded.snapshot_id is not None and recorded.verified is True:
        return None
    why = job_reason if not job_succeeded else recorded.check_detail or "no snapshot was saved"
    return (f"refusing to replace {username}'s volume: the pre-restore backup is not verified ({why}); "
            "nothing was changed")
