"""The platform at a glance (``vibecode status``): every person's workspace, its state, what
it requests, when it was last active and backed up, leavers and open problems. Read-only.
Orchestration only: the steps are in :mod:`tasks.workspace.status_steps`, the builder in
:mod:`tasks.workspace.status`. The health flow refreshes the same artifact every run.
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow
from prefect.utilities.annotations import quote

from tasks.core.steps import now as _now
from tasks.workspace.status import Overview
from tasks.workspace.status_steps import list_workspace_objects, publish_workspace_overview


@flow(name="platform-status")
def platform_status(now: datetime | None = None) -> Overview:
    """List workspaces, volumes and people once each, and publish the overview artifact.

    Args:
        now: The time to judge ages against (for replays and tests); default: the wall clock.
    """
    listed = list_workspace_objects()
    # quote(): Prefect would otherwise walk every listed object looking for futures
    overview = publish_workspace_overview(quote(listed), now or _now())  # type: ignore[call-overload]  # quote() is Prefect's wrapper
    assert overview is not None  # not quiet: a failure raises
    return overview
