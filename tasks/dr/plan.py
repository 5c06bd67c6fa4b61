"""What the platform backup holds, how a backup set is chosen, and the order of a recovery. Pure.

The platform's own state is five things, each its own restic snapshot (restic stores one
stdin stream per snapshot) tagged with the run that took it, so one night's snapshots form a
*set*. Recovery restores one complete set, never a mix of nights: the ledger of Tuesday with
Authelia's rows of Monday would give a Tuesday hire no second factor.

The order of a recovery is what keeps the old keys alive. The platform Secrets come back
first, before anything could generate new ones: bootstrap keeps a Secret that exists, so
with the recovered ones in place every workspace restic repository and Authelia's encrypted
storage (its TOTP secrets are encrypted with ``authelia-storage-encryption-key``) stay
readable. The databases come back after bootstrap installed their servers, the ledger before
the workspaces, because the ledger says who is active (reprovisioned and restored) and who
has left (kept disabled; their ``terminated_at``, the retention clock, restored as it was).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable
from urllib.parse import quote, unquote, urlsplit

from tasks.backup.restic import Snapshot
from tasks.core.errors import InvalidInput

HOST = "vibecode-platform"  # restic --host of every platform snapshot
PLATFORM_TAG = "platform"
RUN_TAG_PREFIX = "platform-run="
ITEM_TAG_PREFIX = "item="
DEFAULT_PREFIX = "_platform"  # no username can start with "_": no workspace repository collides


@dataclass(frozen=True)
class Item:
    name: str
    filename: str  # --stdin-filename: what `restic dump` is asked for
    kind: str  # "db" (pg_dump custom format), "json", "yaml"
    required: bool = True
    why: str = ""


ITEMS: tuple[Item, ...] = (
    Item("platform-secrets", "platform-secrets.json", "json",
         why="the keys of Authelia's storage, every restic repository, the HR gateway, the stores"),
    Item("users-database", "users_database.yml", "yaml", why="who may sign in (leavers disabled)"),
    Item("ledger", "ledger.json", "json", why="who works here, who left and when (the retention clock)"),
    Item("authelia-db", "authelia.pgdump", "db", why="TOTP and WebAuthn registrations, consents"),
    Item("prefect-db", "prefect.pgdump", "db", required=False,
         why="run history and schedules (a new Prefect can start without them)"),
)
ITEM_BY_NAME = {i.name: i for i in ITEMS}

# The order of a recovery, each with why it comes where it does.
ORDER: tuple[tuple[str, str], ...] = (
    ("choose-set", "the newest complete set of snapshots (or the one asked for); nothing changes before"),
    ("namespaces", "the Secrets and the ledger need their namespaces"),
    ("platform-secrets", "before bootstrap: it keeps a Secret that exists, so no new key is generated"),
    ("users-database", "before bootstrap too: Authelia's first start reads the people, not an empty file"),
    ("bootstrap", "installs Authelia, its PostgreSQL and the rest with the recovered Secrets"),
    ("authelia-db", "into the PostgreSQL bootstrap installed; readable with the recovered encryption key"),
    ("prefect-db", "run history and schedules"),
    ("ledger", "who is active and who has left, before any workspace is touched"),
    ("workspaces", "every active person's workspace, with their newest good snapshot"),
)
STEPS = tuple(name for name, _ in ORDER)


def run_tag(run_id: str) -> str:
    return f"{RUN_TAG_PREFIX}{run_id}"


def item_tag(name: str) -> str:
    return f"{ITEM_TAG_PREFIX}{name}"


def backup_args(item: Item, run_id: str) -> list[str]:
    """restic backup of one item from stdin; the host is fixed so every set is one lineage."""
    return ["backup", "--stdin", "--stdin-filename", item.filename, "--host", HOST, "--tag", PLATFORM_TAG,
            "--tag", item_tag(item.name), "--tag", run_tag(run_id)]


def dump_args(snapshot_id: str, item: Item) -> list[str]:
    return ["dump", snapshot_id, f"/{item.filename}"]


def repository(setting: str | None, s3_endpoint: str, s3_bucket: str) -> str:
    return setting or f"s3:{s3_endpoint.rstrip('/')}/{s3_bucket}/{DEFAULT_PREFIX}"


def parse_source(url: str) -> str:
    """``vibecode recover --from``: a restic repository (``s3:http://host:9000/bucket/_platform``)
    or the same as ``s3://host:9000/bucket/_platform`` (https unless the host is loopback-style
    ``http://`` given explicitly). Returns restic's form."""
    url = url.strip()
    if url.startswith("s3:http://") or url.startswith("s3:https://"):
        rest = url[3:]
    elif url.startswith("s3://"):
        rest = "https://" + url[5:]
    else:
        raise InvalidInput("from", "must be s3:http(s)://host[:port]/bucket[/prefix] or s3://host/bucket[/prefix]")
    parts = urlsplit(rest)
    path = [p for p in parts.path.split("/") if p]
    if not parts.hostname or not path:
        raise InvalidInput("from", "names no host or no bucket")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidInput("from", "must carry no credentials, query or fragment (credentials come from the env)")
    return f"s3:{parts.scheme}://{parts.netloc}/{'/'.join(path)}"


@dataclass(frozen=True)
class Dsn:
    """A PostgreSQL connection without its password (for a command line) and the password
    (for ``PGPASSWORD``): a password never appears in ``ps``."""

    uri: str
    password: str = field(repr=False, default="")

    def __repr__(self) -> str:
        return f"Dsn({self.uri!r})"


def split_dsn(url: str, setting: str) -> Dsn:
    """postgresql://user:pw@host:port/db (``+asyncpg`` and other drivers, as Prefect writes it,
    accepted) -> the URI without the password, and the password."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres") or not parts.hostname or not parts.path.strip("/"):
        raise InvalidInput(setting, "is not postgresql://user:password@host:port/database")
    user = quote(unquote(parts.username or ""), safe="")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    port = f":{parts.port}" if parts.port else ""
    uri = f"postgresql://{user + '@' if user else ''}{host}{port}/{parts.path.strip('/')}"
    if parts.query:
        uri += f"?{parts.query}"
    return Dsn(uri, unquote(parts.password or ""))


def pg_dump_args(dsn: Dsn) -> list[str]:
    """Custom format: compressed, restorable table by table, one consistent snapshot of the
    database (pg_dump runs in one repeatable-read transaction)."""
    return ["pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--dbname={dsn.uri}"]


def pg_restore_args(dsn: Dsn) -> list[str]:
    """Into an existing database; ``--clean --if-exists`` makes a rerun replace, not duplicate,
    and ``--single-transaction`` makes a killed restore leave the database as it was."""
    return ["pg_restore", "--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction",
            "--exit-on-error", f"--dbname={dsn.uri}"]


# -- choosing a set ------------------------------------------------------------------------
@dataclass(frozen=True)
class BackupSet:
    run_id: str
    time: datetime
    snapshots: dict[str, str]  # item name -> snapshot id
    missing: tuple[str, ...] = ()  # optional items the set lacks

    @property
    def complete(self) -> bool:
        return all(i.name in self.snapshots for i in ITEMS if i.required)


def _tag_value(tags: Iterable[str], prefix: str) -> str | None:
    return next((t[len(prefix):] for t in tags if t.startswith(prefix)), None)


def backup_sets(snapshots: list[Snapshot]) -> list[BackupSet]:
    """Every run's set, oldest first. A partial snapshot, one of another host or one without a
    run or item tag is no member of any set."""
    runs: dict[str, dict[str, Snapshot]] = {}
    for snap in snapshots:
        run, item = _tag_value(snap.tags, RUN_TAG_PREFIX), _tag_value(snap.tags, ITEM_TAG_PREFIX)
        if snap.hostname != HOST or not snap.good or run is None or item not in ITEM_BY_NAME:
            continue
        mine = runs.setdefault(run, {})
        if item not in mine or snap.time > mine[item].time:
            mine[item] = snap
    sets = [BackupSet(run, max(s.time for s in items.values()), {k: v.id for k, v in items.items()},
                      tuple(i.name for i in ITEMS if i.name not in items))
            for run, items in runs.items()]
    return sorted(sets, key=lambda s: s.time)


def choose_set(snapshots: list[Snapshot], wanted: str = "latest") -> BackupSet:
    """The newest complete set, or the set of run ``wanted``. An incomplete set (a night that
    died half-way) is never chosen: its absence is reported by name."""
    sets = backup_sets(snapshots)
    if wanted != "latest":
        found = [s for s in sets if s.run_id == wanted]
        if not found:
            raise InvalidInput("set", f"no platform backup of run {wanted!r}")
        if not found[0].complete:
            raise InvalidInput("set", f"the platform backup of run {wanted!r} lacks "
                                      f"{', '.join(n for n in found[0].missing if ITEM_BY_NAME[n].required)}")
        return found[0]
    complete = [s for s in sets if s.complete]
    if not complete:
        raise InvalidInput("from", f"holds no complete platform backup ({len(sets)} incomplete)")
    return complete[-1]


# -- resuming ------------------------------------------------------------------------------
def remaining(done: dict[str, str], run_id: str) -> list[str]:
    """The steps still to run. ``done`` (the progress record: step -> run id of the set it
    restored) counts only for the same set: recovering another set starts over."""
    return [step for step in STEPS if done.get(step) != run_id]


def live_platform_refusal(run_id: str, progress: dict[str, str], people: int, users_file: bool,
                          force: bool) -> str | None:
    """Why a recovery must not start on this cluster, or None. Recovery is for a new, empty
    cluster: on one that runs a platform it would replace the Secrets, the users database and
    the ledger of the people working there with the backup's, an irreversible step on a typo'd
    kubeconfig. A rerun of the same recovery (its progress record names this set) carries on;
    ``force`` is the operator saying the cluster's platform is to be replaced."""
    if force or run_id in progress.values():
        return None
    if not people and not users_file:
        return None
    found = [f"{people} people in its ledger" if people else "", "Authelia's users database" if users_file else ""]
    return (f"this cluster already runs a platform ({' and '.join(f for f in found if f)}): recovery restores onto "
            "a new, empty cluster; point the kubeconfig at that one, or pass force to replace this platform's "
            "Secrets, users database and ledger with the backup's")


# -- the platform Secrets ------------------------------------------------------------------
# role -> what it is. Namespaces and names come from the recovering cluster's settings. ``ca``
# is cert-manager's CA (kubernetes.io/tls): recovered before cert-manager starts, it is the CA
# cert-manager goes on issuing from, so people's browsers keep trusting the platform.
SECRET_ROLES = ("platform", "backup", "hr-gateway", "ca")
META = "_meta"  # role -> the Secret's type and cert-manager's annotations, beside the data
# cert-manager reissues a Certificate whose Secret lacks its issuer annotations: keep those.
KEPT_ANNOTATION_PREFIX = "cert-manager.io/"


def secrets_document(secrets: dict[str, dict | None]) -> str:
    """role -> the Secret's ``data`` (base64, as the API holds it); absent ones are left out.
    A Secret that is not Opaque, or carries cert-manager's annotations, has them under
    ``_meta`` (older documents have none: their Secrets are all Opaque)."""
    present = {role: m for role, m in sorted(secrets.items()) if m is not None}
    doc: dict = {role: dict(sorted((m.get("data") or {}).items())) for role, m in present.items()}
    meta = {}
    for role, m in present.items():
        kept = {k: v for k, v in ((m.get("metadata") or {}).get("annotations") or {}).items()
                if k.startswith(KEPT_ANNOTATION_PREFIX)}
        if m.get("type", "Opaque") != "Opaque" or kept:
            meta[role] = {"type": m.get("type", "Opaque"), "annotations": dict(sorted(kept.items()))}
    if meta:
        doc[META] = meta
    return json.dumps(doc, sort_keys=True)


def secret_manifests(document: str, where: dict[str, tuple[str, str]], labels: dict[str, str]) -> list[dict]:
    """The Secrets to recreate: ``where`` maps each role to (namespace, name) on this cluster."""
    data = json.loads(document)
    meta = data.pop(META, {})
    unknown = sorted(set(data) - set(where))
    if unknown:
        raise InvalidInput("platform-secrets", f"names roles this version does not know: {', '.join(unknown)}")
    out = []
    for role in sorted(data):
        m = meta.get(role, {})
        metadata: dict = {"name": where[role][1], "namespace": where[role][0], "labels": dict(labels)}
        if m.get("annotations"):
            metadata["annotations"] = dict(m["annotations"])
        out.append({"apiVersion": "v1", "kind": "Secret", "type": m.get("type", "Opaque"), "metadata": metadata,
                    "data": data[role]})
    return out


def secret_action(existing: dict | None, wanted: dict) -> str:
    """create | unchanged | replace. A Secret that differs was generated on the new cluster
    after the loss (bootstrap run first): the recovered keys are the ones the data needs."""
    if existing is None:
        return "create"
    return "unchanged" if (existing.get("data") or {}) == wanted["data"] else "replace"


def decode_value(secret: dict, key: str) -> str:
    return base64.b64decode((secret.get("data") or {})[key]).decode()


# -- the ledger ----------------------------------------------------------------------------
_SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation", "selfLink")


def clean_configmap(cm: dict) -> dict:
    """A ConfigMap as it can be created on another cluster: no server-assigned fields."""
    meta = {k: v for k, v in cm["metadata"].items() if k not in _SERVER_FIELDS and k != "namespace"}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": dict(cm.get("data") or {})}


def ledger_document(configmaps: list[dict]) -> str:
    return json.dumps(sorted((clean_configmap(c) for c in configmaps), key=lambda c: c["metadata"]["name"]),
                      sort_keys=True)


def ledger_manifests(document: str, namespace: str) -> list[dict]:
    out = []
    for cm in json.loads(document):
        cm["metadata"]["namespace"] = namespace
        out.append(cm)
    return out


def configmap_action(existing: dict | None, wanted: dict) -> str:
    """create | unchanged | kept. A record that exists and differs was written on the new
    cluster after recovery began (an HR event): it is newer than the backup and is kept."""
    if existing is None:
        return "create"
    same = (existing.get("data") or {}) == wanted["data"] and \
        (existing["metadata"].get("labels") or {}) == (wanted["metadata"].get("labels") or {})
    return "unchanged" if same else "kept"


# -- the people ----------------------------------------------------------------------------
@dataclass(frozen=True)
class People:
    active: tuple[str, ...]  # reprovisioned, newest good snapshot restored
    leavers: tuple[str, ...]  # stay disabled; their workspaces are not recreated
    pending: tuple[str, ...]  # onboarding not finished: the HR event's rerun finishes it


def people(records: list[tuple[str, str]]) -> People:
    """(username, state) pairs from the ledger -> who gets a workspace back."""
    by = {"active": [], "left": [], "pending": []}  # type: dict[str, list[str]]
    for user, state in records:
        by["active" if state == "active" else "left" if state in ("terminated", "purged") else "pending"].append(user)
    return People(*(tuple(sorted(by[k])) for k in ("active", "left", "pending")))


def workspace_row(username: str, snapshot: str | None, outcome: str, detail: str = "") -> dict[str, str]:
    return {"what": f"workspace {username}", "snapshot": (snapshot or "")[:8], "outcome": outcome, "detail": detail}


# -- retention -----------------------------------------------------------------------------
def retention_forget(snapshots: list[Snapshot], policy, now: datetime) -> list[str]:
    """Retention per item (a night holds one snapshot of each), over verified snapshots only,
    and never a member of the newest complete set: the one a recovery would use today."""
    from tasks.backup.retention import plan_retention

    sets = [s for s in backup_sets(snapshots) if s.complete]
    protect = set(sets[-1].snapshots.values()) if sets else set()
    forget: list[str] = []
    for item in ITEMS:
        mine = [s for s in snapshots if s.hostname == HOST and item_tag(item.name) in s.tags]
        forget += [i for i in plan_retention(mine, policy, now).forget if i not in protect]
    return sorted(forget)
