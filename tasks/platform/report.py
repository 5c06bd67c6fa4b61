"""The platform summary a person reads after bootstrap (pure): a markdown artifact."""

from __future__ import annotations

from typing import Iterable, Mapping

from tasks.platform.lock import Lock


def summary_markdown(outcomes: Iterable, lock: Lock, images: Mapping[str, str], facts: Mapping[str, str],
                     *, plan: bool, cluster: str, workspace_url: str | None) -> str:
    """``outcomes``: :class:`tasks.platform.steps.Outcome`; ``images``: lock key -> what pods run."""
    outcomes = list(outcomes)
    changed = [o for o in outcomes if o.changed]
    title = "Bootstrap plan" if plan else "Platform"
    if plan:
        verdict = "nothing would change" if all(o.action in ("unchanged", "skipped") for o in outcomes) else \
            "changes are planned (nothing was changed)"
    else:
        verdict = "nothing changed: the platform already matched" if not changed else \
            f"{len(changed)} component(s) changed: {', '.join(o.component for o in changed)}"
    lines = [f"# {title}: {verdict}", "", f"Cluster: {cluster}", ""]
    lines += ["| component | action | version | revision | seconds | detail |", "|---|---|---|---|---|---|"]
    for o in outcomes:
        detail = o.detail.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {o.component} | {o.action} | {o.version or ''} | {o.revision or ''} | "
                     f"{o.seconds or ''} | {detail} |")
    lines += ["", "## URLs", ""]
    if facts.get("hosts"):
        lines.append(f"- Gateway listeners: {facts['hosts']}")
    if workspace_url:
        lines.append(f"- Demo workspace: {workspace_url}")
    if not facts.get("hosts") and not workspace_url:
        lines.append("- none yet")
    lines += ["", "## Trust", "", f"- CA: {facts.get('ca', 'no CA here (cert-manager is not installed)')}", ""]
    lines += ["## Images", "", "| entry | runs |", "|---|---|"]
    for key, ref in sorted(images.items()):
        note = "" if ref.endswith(lock.image(key).digest or "\0") else " (not the pinned upstream image)"
        lines.append(f"| {key} | `{ref}`{note} |")
    return "\n".join(lines) + "\n"
