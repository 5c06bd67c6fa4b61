"""Pod Security Standards "restricted", as a checker every test that builds a pod spec uses.

One checker for the chart's Deployment and for every pod spec the Python code builds
(backup, restore and TOTP Jobs), so a pod that a restricted namespace would refuse is
caught by a test, not by the API server of a real cluster.
"""

from __future__ import annotations

from typing import Any

# Pod Security Standards "restricted": the only volume types allowed.
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}

# Baseline: the sysctls and SELinux types a pod may set.
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range"}
SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t"}


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """Every way ``pod_spec`` breaks Pod Security Standards "restricted" (and baseline)."""
    problems: list[str] = []
    psc = pod_spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            problems.append(f"pod: {flag}")
    if psc.get("runAsUser") == 0:
        problems.append("pod: runAsUser 0")
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            problems.append(f"pod: sysctl {sysctl.get('name')}")
    if (psc.get("seLinuxOptions") or {}).get("type") not in SELINUX_TYPES:
        problems.append("pod: seLinuxOptions.type")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        problems.append(f"pod: seccompProfile {pod_seccomp}")

    containers = [
        *(pod_spec.get("initContainers") or []),
        *(pod_spec.get("containers") or []),
        *(pod_spec.get("ephemeralContainers") or []),
    ]
    if not containers:
        problems.append("pod: no containers")
    for c in containers:
        name = c.get("name", "?")
        sc = c.get("securityContext") or {}
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            problems.append(f"{name}: runAsUser 0")
        if sc.get("procMount") not in (None, "Default"):
            problems.append(f"{name}: procMount {sc['procMount']}")
        if (sc.get("seLinuxOptions") or {}).get("type") not in SELINUX_TYPES:
            problems.append(f"{name}: seLinuxOptions.type")
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{name}: capabilities.drop lacks ALL")
        extra_caps = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if extra_caps:
            problems.append(f"{name}: capabilities.add {sorted(extra_caps)}")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile {seccomp}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort {port['hostPort']}")

    for vol in pod_spec.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds or not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {vol.get('name')}: type {sorted(kinds)}")
    return problems
