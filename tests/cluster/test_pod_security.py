"""Every pod spec the Python code builds meets Pod Security Standards "restricted".

The chart's Deployment is checked in test_chart.py with the same checker (tests/fixtures/pss.py);
here the Jobs built in Python: backup, restore (read-only and read-write mounts differ)
and the TOTP provisioning Job, with the settings that change their security context.
"""

from __future__ import annotations

import copy

import pytest

from tasks.backup.jobs import backup_job, restore_job
from tasks.core.names import workspace_names
from tasks.core.settings import Settings
from tasks.people import totp
from tests.fixtures.pss import restricted_violations


def _settings(**over) -> Settings:
    return Settings(namespace="ws", platform_namespace="platform", **over)


def _pod(job: dict) -> dict:
    assert job["kind"] == "Job"
    return job["spec"]["template"]["spec"]


BUILT_PODS = {
    "backup (running workspace, pinned to its node)":
        lambda s: _pod(backup_job(workspace_names("alice"), s.backup, s.namespace, "r1", node="node-1")),
    "backup (stopped workspace)": lambda s: _pod(backup_job(workspace_names("alice"), s.backup, s.namespace, "r1")),
    "restore into a new volume": lambda s: _pod(restore_job(workspace_names("alice"), s.backup, s.namespace, "r1",
                                                            "ws-alice-restore-r1", "latest")),
    "restore in place": lambda s: _pod(restore_job(workspace_names("alice"), s.backup, s.namespace, "r1",
                                                   "ws-alice-workspace", "0123abcd")),
    "totp provisioning": lambda s: _pod(totp.provision_job("alice", s.identity, s.platform_namespace)),
}


@pytest.mark.parametrize("which", sorted(BUILT_PODS))
@pytest.mark.parametrize("over", [{}, {"backup_run_as_user": 2001, "backup_run_as_group": 2002}],
                         ids=["defaults", "other-ids"])
def test_python_built_pod_specs_meet_pod_security_restricted(which, over):
    pod = BUILT_PODS[which](_settings(**over))
    assert restricted_violations(pod) == []
    # Explicit in the spec, not inherited from an image or a namespace default.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for c in pod["containers"]:
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("which", sorted(BUILT_PODS))
def test_the_checker_sees_a_broken_copy_of_each_python_built_pod(which):
    """The checker must be able to fail on these very specs, or the test above proves nothing."""
    pod = copy.deepcopy(BUILT_PODS[which](_settings()))
    pod["securityContext"]["runAsUser"] = 0
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    problems = " | ".join(restricted_violations(pod))
    for fragment in ("runAsUser 0", "allowPrivilegeEscalation", "hostPath"):
        assert fragment in problems, fragment
