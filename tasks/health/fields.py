"""What of each listed object the health checks and the workspace overview read, and nothing else.

At 10,000 workspaces the health flow holds four kinds of object (40,000 in all). Whole, they
are ~4 KB each; the checks read a dozen scalars of them. Projecting each object as its page
arrives keeps the flow's memory near the result's size instead of the fleet's: the decoded
page is dropped at once, and what stays is a few small dicts of short strings. Everything
here is pure; ``tests/health/test_health_fields.py`` checks that the checks and the overview
say exactly the same of the projected objects as of the whole ones.
"""

from __future__ import annotations

import sys
from functools import lru_cache

from tasks.core.names import NAME_LABEL, PART_OF_LABEL, USER_LABEL, VOLUME_LABEL

OUR_ANNOTATIONS = USER_LABEL.split("/")[0] + "/"  # vibecode.dev/: every annotation the platform writes and reads
LABELS = (NAME_LABEL, PART_OF_LABEL, USER_LABEL, VOLUME_LABEL)
STATUS = ("replicas", "readyReplicas", "availableReplicas", "phase", "notAfter")
CONDITION = ("type", "status", "reason", "lastTransitionTime")
LEDGER_DATA = ("username", "state", "terminated_at", "last_error")  # of a ledger record's data


def observed(obj: dict) -> dict:
    """The fields of a Node, Deployment, StatefulSet, PersistentVolumeClaim, ConfigMap or
    Certificate that :mod:`tasks.health.checks` and :mod:`tasks.workspace.status` read:
    identity, the platform's labels and annotations, desired replicas and requests, the
    status counters and conditions, a ConfigMap's data."""
    meta = obj.get("metadata") or {}
    out_meta = {k: meta[k] for k in ("name", "namespace", "creationTimestamp") if k in meta}
    labels = meta.get("labels") or {}
    if picked := {k: _shared(labels[k]) for k in LABELS if k in labels}:
        out_meta["labels"] = picked
    ann = meta.get("annotations") or {}
    if ours := {k: _shared(v) for k, v in ann.items() if k.startswith(OUR_ANNOTATIONS)}:
        out_meta["annotations"] = ours
    out: dict = {"metadata": out_meta}
    spec = obj.get("spec")
    if isinstance(spec, dict):
        out["spec"] = _spec(spec)
    status = obj.get("status")
    if isinstance(status, dict):
        out["status"] = _status(status)
    if "data" in obj:
        data = obj["data"] or {}
        out["data"] = {k: _shared(data[k]) for k in LEDGER_DATA if k in data}
    return out


def _spec(spec: dict) -> dict:
    out: dict = {}
    if "replicas" in spec:
        out["replicas"] = spec["replicas"]
    requests = (spec.get("resources") or {}).get("requests")
    if requests:  # a volume's size
        out["resources"] = _requests_of_volume(tuple(sorted(requests.items())))
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers")
    if containers:  # a workspace's CPU and memory
        out["template"] = _template(tuple(tuple(sorted(((c.get("resources") or {}).get("requests") or {}).items()))
                                          for c in containers))
    return out


# Thousands of workspaces ask for the same sizes: one shared (never modified) structure per
# distinct request, instead of six nested containers per object.
@lru_cache(maxsize=256)
def _requests_of_volume(requests: tuple) -> dict:
    return {"requests": dict(requests)}


@lru_cache(maxsize=256)
def _template(requests: tuple) -> dict:
    return {"spec": {"containers": [{"resources": {"requests": dict(r)}} for r in requests]}}


def _status(status: dict) -> dict:
    out = {k: _shared(status[k]) for k in STATUS if k in status}
    conditions = status.get("conditions")
    if conditions:
        out["conditions"] = [{k: _shared(c[k]) for k in CONDITION if k in c} for c in conditions]
    return out


def _shared(value):
    """One string object for the values thousands of objects repeat ("True", "Bound",
    "Completed", "vibecode", a condition's reason): each decoded page has its own copies."""
    return sys.intern(value) if isinstance(value, str) and len(value) <= 40 else value
