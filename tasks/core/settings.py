"""One typed settings class for the whole project (env prefix ``VIBECODE_``), nested by concern.

``Settings`` holds what every part needs (cluster access, namespaces, the domain) and one
model per concern (``workspace``, ``identity``, ``mail``, ``backup``, ``health``,
``gateway``, ``reaper``), so a builder takes only the part it needs. Environment:
``VIBECODE_<CONCERN>__<FIELD>`` (``VIBECODE_BACKUP__CONCURRENCY=8``), and every flat name
the project used before the split (``VIBECODE_BACKUP_CONCURRENCY``) is still read: see
:data:`LEGACY_NAMES` and :class:`LegacyEnvSource`. The new name wins when both are set.

Secrets are ``SecretStr`` so they never appear in a repr, a log line or a Prefect
parameter; code that needs the value calls ``.get_secret_value()`` at the last moment.
Flows take no secret parameters: secrets come from here (environment), from Kubernetes
Secrets, or from Prefect Secret blocks.
"""

from __future__ import annotations

import os
import re
import string
from functools import lru_cache
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "VIBECODE_"
PREFECT_YAML = Path(__file__).resolve().parents[2] / "prefect.yaml"


@lru_cache(maxsize=4)
def prefect_yaml_timezone(path: Path = PREFECT_YAML) -> str:
    """``definitions.timezone`` of prefect.yaml: the one place the schedules' timezone is set.
    The backup retention counts days in the same zone, so its setting defaults to this (a
    deployment without the file, e.g. a bare wheel, falls back to UTC)."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        return "UTC"
    return str(((doc.get("definitions") or {}).get("timezone")) or "UTC")


class ReapGroupPolicy(BaseModel):
    """A group's overrides of the reaper's defaults; unset fields keep the default."""

    model_config = {"extra": "forbid", "hide_input_in_errors": True}

    idle_timeout_seconds: int | None = Field(None, ge=60, description="Idle time before the workspace is stopped")
    warning_lead_seconds: int | None = Field(None, ge=0, description="How long before a stop the owner is warned")
    max_session_seconds: int | None = Field(None, ge=0, description="Stop after this long running even if a tab "
                                                                    "keeps it alive; 0 disables")
    dormancy_days: int | None = Field(None, ge=0, description="Uninstall a stopped workspace after this long "
                                                              "(verified backup required); 0 disables")
    volume_dormancy_days: int | None = Field(None, ge=0, description="Delete its volumes after this long "
                                                                     "(verified backup required); 0 disables")


POLICY_FIELDS = tuple(ReapGroupPolicy.model_fields)
_OFF_WHEN_ZERO = frozenset({"max_session_seconds", "dormancy_days", "volume_dormancy_days"})
_PROBE_PLACEHOLDERS = {"username", "service", "namespace"}


def _lenient(a: int, b: int, key: str) -> int:
    """The gentler of two values: longer waits, longer warnings, and 0 (off) beats any period."""
    if key in _OFF_WHEN_ZERO and (a == 0 or b == 0):
        return 0
    return max(a, b)


def check_probe_base(template: str, field_name: str) -> str:
    """A base URL (template): http(s), a host, no query or fragment, known placeholders only."""
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"{field_name}: not a valid template: {exc}") from None
    if names - _PROBE_PLACEHOLDERS:
        raise ValueError(f"{field_name}: unknown placeholder(s) {sorted(names - _PROBE_PLACEHOLDERS)}; "
                         f"allowed: {sorted(_PROBE_PLACEHOLDERS)}")
    sample = template.format(username="u", service="ws-u", namespace="ns")
    parts = urlsplit(sample)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{field_name}: must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment or "?" in sample or "#" in sample:
        raise ValueError(f"{field_name}: must not have a query or fragment (a query string makes "
                         f"code-server count the probe as activity)")
    return template


# Kubernetes quantities as the workspace chart's values.schema.json accepts them.
CPU_QUANTITY = r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)m?$"
BYTES_QUANTITY = r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)([kMGTPE]|[KMGTPE]i)?$"


class WorkspaceSettings(BaseModel):
    """One person's code-server workspace: chart, image, volumes, readiness."""

    model_config = {"extra": "forbid", "hide_input_in_errors": True}

    chart: Path = Field(
        Path(__file__).resolve().parents[2] / "charts" / "vibecode-workspace",
        description="Path of the vibecode-workspace Helm chart")
    image: str = Field(
        "vibecode.local/workspace:4.139.1-1",
        description="Workspace image: the one built from images/workspace (`vibecode image build`, the "
                    "lock's `code-server` entry) by default; named by its tag, workspaces run it by the "
                    "lock's digest. Where you pushed it, or another image, to run that instead")
    assistant_secret: str | None = Field(
        None, description="Secret (workspaces' namespace) holding the AI assistant's key; none: no key is "
                          "injected and the workspace says how to get one")
    assistant_secret_key: str = Field(
        "ANTHROPIC_API_KEY", pattern=r"^[-._a-zA-Z0-9]+$", description="Key of that Secret holding the key")
    storage_class: str | None = Field(
        None, description="StorageClass of workspace volumes (default: the cluster's default class)")
    size: str = Field("10Gi", description="Size of a workspace's home volume")
    extensions_size: str = Field("2Gi", description="Size of a workspace's extensions volume")
    # What the scheduler reserves per workspace (requests) and what the kubelet enforces
    # (limits). The defaults are the chart's; a small node packs more people by lowering
    # the requests, since an idle code-server uses a fraction of them.
    cpu_request: str = Field("500m", pattern=CPU_QUANTITY, description="CPU a workspace requests (scheduling)")
    memory_request: str = Field("1Gi", pattern=BYTES_QUANTITY, description="Memory a workspace requests (scheduling)")
    cpu_limit: str = Field("2", pattern=CPU_QUANTITY, description="CPU a workspace may use at most")
    memory_limit: str = Field("4Gi", pattern=BYTES_QUANTITY,
                              description="Memory a workspace may use at most (then its editor is OOM-killed)")
    ready_timeout_seconds: float = Field(
        300, gt=0,
        description="How long provisioning waits for a workspace to become available (then retried as transient)")
    ready_poll_seconds: float = Field(
        2, gt=0, description="Pause before watching a Deployment again after its watch broke while provisioning")


class IdentitySettings(BaseModel):
    """Who works here: Authelia (file or LDAP backend), TOTP, HR's groups, leavers."""

    model_config = {"extra": "forbid", "hide_input_in_errors": True}

    authelia_url: str = Field(
        "https://auth.vibecode.dev", description="Public URL of Authelia (login and password-reset links)")
    authelia_verify_url: str = Field(
        "http://authelia.vibecode-platform.svc.cluster.local:9091/api/verify",
        description="In-cluster URL the ingress asks to authorise each workspace request")
    authelia_users_secret: str = Field(
        "authelia-users",
        description="Secret (platform namespace) holding users_database.yml for the file backend")
    authelia_deployment: str = Field(
        "authelia", description="Authelia Deployment, rolled when the users file changes")
    department_groups: dict[str, list[str]] = Field(
        default_factory=dict, description="HR department -> groups granted to its people")
    default_groups: list[str] = Field(default_factory=lambda: ["users"], description="Groups every person gets")
    ldap_url: str = Field("ldap://127.0.0.1:389", description="LDAP server (ldaps:// or ldap:// with StartTLS)")
    ldap_base_dn: str = Field(
        "dc=vibecode,dc=dev", description="Base DN; people under ou=people, groups under ou=groups")
    ldap_bind_dn: str = Field("cn=admin,dc=vibecode,dc=dev", description="DN the flows bind as")
    ldap_password: SecretStr | None = Field(None, description="Password of ldap_bind_dn (secret)")
    totp_preprovision: bool = Field(
        False,
        description="Register a TOTP secret for each hire through an Authelia CLI Job, handed over in person")
    totp_issuer: str = Field("VibeCode", description="Issuer shown in authenticator apps")
    totp_handoff_hours: float = Field(
        72, gt=0, description="Life of an uncollected TOTP hand-off Secret; the purge deletes it afterwards")
    totp_job_timeout_seconds: float = Field(
        300, gt=0, description="The TOTP Job's activeDeadlineSeconds, and how long onboarding waits for it")
    totp_poll_seconds: float = Field(1, gt=0, description="Pause before re-listing after a broken Job watch")
    authelia_image: str = Field("authelia/authelia:4.39.4", description="Authelia image the TOTP Job runs")
    authelia_config_secret: str = Field(
        "authelia-config",
        description="Secret holding Authelia's configuration.yml, mounted at /config in the TOTP Job")
    privileged_groups: list[str] = Field(
        default_factory=lambda: ["admins"],
        description="Groups that are never granted from HR input (an HR request naming one is refused); "
                    "only an administrator grants them, outside the HR feed.")
    hr_allowed_groups: list[str] | None = Field(
        None, description="The groups an HR request may name; unset means default_groups plus every "
                          "group in department_groups. Privileged groups are refused even if listed.")
    ldap_start_tls: bool = Field(
        False, description="Upgrade an ldap:// connection with StartTLS before binding (ldaps:// is TLS "
                           "from the first byte and needs no StartTLS).")
    ldap_ca_file: Path | None = Field(
        None, description="PEM file of the CA(s) trusted for the LDAP server's certificate; unset means "
                          "the system's trust store.")
    ldap_allow_insecure_bind: bool = Field(
        False, description="INSECURE: allow sending the bind password over plain ldap:// without StartTLS. "
                           "Off by default; a warning is logged on every such bind.")
    offboard_retention_days: int = Field(
        30, ge=0,
        description="Days a leaver's workspace volumes are kept (with a verified backup) before deletion")
    backend: Literal["file", "ldap"] = Field(
        "file", description="Where identities live: Authelia's file database in a Secret, or LDAP")

    @model_validator(mode="after")
    def _hr_never_grants_privileged_groups(self) -> "IdentitySettings":
        privileged = set(self.privileged_groups)
        for name, groups in (("default_groups", self.default_groups),
                             ("hr_allowed_groups", self.hr_allowed_groups or []),
                             *((f"department_groups.{d}", g) for d, g in self.department_groups.items())):
            bad = sorted(privileged.intersection(groups))
            if bad:
                raise ValueError(f"identity.{name} names privileged group(s) {bad}: HR input never grants those")
        return self


class MailSettings(BaseModel):
    """Outgoing mail: welcome mails, idle warnings, backup failure notices."""

    model_config = {"extra": "forbid", "hide_input_in_errors": True}

    smtp_host: str = Field("127.0.0.1", description="SMTP server for welcome mails and failure notices")
    smtp_port: int = Field(25, description="SMTP port")
    smtp_username: str | None = Field(None, description="SMTP login (none: send without authenticating)")
    smtp_password: SecretStr | None = Field(None, description="SMTP password (secret)")
    smtp_starttls: bool = Field(False, description="Upgrade the SMTP connection with STARTTLS before logging in")
    ops_email: str | None = Field(None, description="Where backup failure notices go (none sent when unset)")
    smtp_ssl: bool = Field(
        False, description="Implicit TLS (SMTPS, usually port 465): TLS from the first byte.")
    smtp_ca_file: Path | None = Field(
        None, description="PEM file of the CA(s) trusted for the SMTP server's certificate; unset means "
                          "the system's trust store.")
    smtp_allow_insecure_auth: bool = Field(
        False, description="INSECURE: allow SMTP AUTH (sending smtp_password) without STARTTLS or SMTPS. "
                           "Off by default; a warning is logged on every such login.")
    sender: str = Field("VibeCode <noreply@vibecode.dev>", description="From: address of every mail")


class BackupSettings(BaseModel):
    """Workspace backups: the S3 bucket, restic, the Jobs, retention and verification."""

    model_config = {"extra": "forbid", "hide_input_in_errors": True}

    s3_endpoint: str = Field("http://127.0.0.1:9000", description="S3-compatible endpoint of the backup bucket")
    s3_bucket: str = Field("vibecode-backups", description="Bucket holding one restic repository per workspace")
    s3_region: str = Field("us-east-1", description="Region of the bucket")
    s3_access_key_id: SecretStr | None = Field(None, description="S3 access key id (secret)")
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret access key (secret)")
    restic_password: SecretStr | None = Field(
        None, description="Password of every workspace's restic repository (secret)")
    restic_image: str = Field("restic/restic:0.14.0", description="Image of the backup and restore Jobs")
    keep_last: int = Field(0, ge=0, description="restic --keep-last: extra same-day runs to keep (manual backups)")
    keep_daily: int = Field(7, ge=0, description="restic --keep-daily")
    keep_weekly: int = Field(4, ge=0, description="restic --keep-weekly")
    keep_monthly: int = Field(6, ge=0, description="restic --keep-monthly")
    verify_read_data_percent: int = Field(
        5, ge=0, le=100, description="Share of pack data `restic check` reads after each backup")
    restic_binary: str = Field(
        "restic", description="restic executable on the worker (repository maintenance runs there)")
    restic_new_password: SecretStr | None = Field(
        None, description="Set only to rotate the restic password: `vibecode rotate-restic-password` adds a key "
                          "for it to every repository, writes it into the backup Secret, then removes the key of "
                          "restic_password. Afterwards set restic_password to it and unset this.")
    timezone: str = Field(
        default_factory=prefect_yaml_timezone,
        description="Timezone the daily/weekly/monthly keep rules count days in. Derived from prefect.yaml's "
                    "definitions.timezone (the schedules' one place); `vibecode deploy` refuses a different value")
    concurrency: int = Field(
        4, ge=1, le=64,
        description="Backup Jobs in flight at once in one run (protects nodes, storage and the API server): "
                    "the next Job is created when one finishes")
    batch_size: int = Field(
        50, ge=1, le=1000,
        description="Workspaces per Prefect task run of the nightly backup (a task run per workspace would cost "
                    "Prefect's tens of milliseconds 10,000 times)")
    timeout_seconds: float = Field(
        3600, gt=0, description="A backup Job's deadline; past it the Job is deleted and the workspace Failed")
    secret: str = Field(
        "vibecode-backup",
        description="Secret in the workspace namespace that backup Jobs read their credentials from")
    poll_seconds: float = Field(1, gt=0, description="Pause before re-listing after a failed Job watch")
    run_as_user: int = Field(
        1000, ge=1, description="uid of backup Jobs (the workspace's uid, so 0600 files are readable)")
    run_as_group: int = Field(1000, ge=1, description="gid of backup Jobs")
    job_ttl_seconds: int = Field(
        7 * 86400, ge=0, description="ttlSecondsAfterFinished of backup Jobs (Kubernetes 1.21+)")


class HealthSettings(BaseModel):
    """Platform health checks and where their metrics go (Datadog, Pushgateway)."""

    model_config = {"extra": "forbid", "hide_input_in_errors": True}

    datadog_api_key: SecretStr | None = Field(None, description="Datadog API key; sent only in the DD-API-KEY "
                                              "header. Unset (and no block) turns the Datadog sink off")
    datadog_api_key_block: str | None = Field(None, description="Name of a Prefect Secret block holding the "
                                              "Datadog API key, used when datadog_api_key is unset")
    datadog_site: str = Field("datadoghq.com", description="Datadog site (datadoghq.com, datadoghq.eu, ...)")
    datadog_host: str | None = Field(None, description="Send to this base URL instead of the site's API "
                                     "(a self-hosted proxy, or a test receiver)")
    pushgateway_url: str | None = Field(None, description="Prometheus Pushgateway base URL; unset turns the "
                                        "Pushgateway sink off")
    metrics_env: str = Field("production", description="The `env` tag/label on every metric")
    metrics_cluster: str = Field("vibecode", description="The `cluster` tag/label on every metric")
    authelia_health_url: str = Field("http://authelia.vibecode-platform.svc.cluster.local:9091/api/health",
                                     description="Authelia's health endpoint, reached in-cluster")
    components: list[str] = Field(
        default_factory=lambda: ["envoy-gateway-system/envoy-gateway", "cert-manager/cert-manager",
                                 "cert-manager/cert-manager-webhook", "cert-manager/cert-manager-cainjector",
                                 "vibecode-platform/authelia", "vibecode-platform/authelia-redis",
                                 "vibecode-platform/authelia-postgresql", "vibecode-platform/seaweedfs",
                                 "vibecode-platform/vibecode-gateway"],
        description="namespace/name of the platform Deployments and StatefulSets to check (as bootstrap's "
                    "releases render them: a test keeps the two equal); those that do not exist are not "
                    "installed here and are skipped")
    slow_seconds: float = Field(2.0, gt=0, description="An API server, Authelia or bucket answer "
                                       "slower than this is a warning")
    timeout_seconds: float = Field(5.0, gt=0, description="Timeout of each probe and each sink request")
    budget_seconds: float = Field(
        120, gt=0, le=280, description="The whole run's budget for its probes and LISTs: what has not answered "
                                       "by then is reported critical, so a hung API server pages instead of "
                                       "silencing the 5-minute schedule (CANCEL_NEW)")


class GatewaySettings(BaseModel):
    """The HR gateway (`vibecode gateway`): signed HR webhooks and SCIM 2.0."""

    model_config = {"extra": "forbid", "hide_input_in_errors": True}

    webhook_secrets: list[SecretStr] = Field(
        default_factory=list,
        description="Shared HMAC secrets for VibeCode-Signature (JSON list; two during a rotation), "
                    "each at least 32 bytes")
    scim_token: SecretStr | None = Field(
        None, description="Bearer token identity providers send to /scim/v2 (at least 32 bytes)")
    host: str = Field("127.0.0.1", description="Address the gateway listens on")
    port: int = Field(8080, ge=1, le=65535, description="Port the gateway listens on")
    max_body_bytes: int = Field(65536, ge=1024, le=1 << 20,
                                        description="Largest request body accepted (413 above it)")
    signature_tolerance_seconds: int = Field(
        300, ge=30, le=3600, description="How far a signature's timestamp may be from now")
    rate_per_second: float = Field(20, gt=0, description="Requests per second per client (token refill)")
    rate_burst: int = Field(40, ge=1, description="Requests a client may send at once (bucket size)")
    rate_ipv4_prefix: int = Field(32, ge=8, le=32, description="IPv4 clients are rate limited per network "
                                  "of this prefix length (32: per address; 24: a /24 counts as one client)")
    rate_ipv6_prefix: int = Field(64, ge=32, le=128, description="IPv6 clients are rate limited per network "
                                  "of this prefix length (64: one host or line is usually given a /64)")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="CIDRs of proxies (the ingress controller) whose X-Forwarded-For names the client")
    retry_after_seconds: int = Field(10, ge=1, description="Retry-After sent with 503 and 429")
    prefect_timeout_seconds: float = Field(
        20, gt=0, description="How long one request waits for the Prefect API before answering 503")
    onboard_deployment: str = Field("onboard-user/onboard-user",
                                            description="Deployment for employee.hired / employee.updated")
    offboard_deployment: str = Field("offboard-user/offboard-user",
                                             description="Deployment for employee.terminated")
    scim_max_results: int = Field(100, ge=1, le=1000, description="Largest SCIM list page")


class PlatformSettings(BaseModel):
    """Bootstrap of the platform (flows/bootstrap.py): the lock, the charts, where they go."""

    model_config = {"extra": "forbid", "hide_input_in_errors": True}

    lock_file: Path = Field(
        Path(__file__).resolve().parents[2] / "deployments" / "platform.lock.yaml",
        description="The lock of every upstream chart and image the platform runs")
    chart: Path = Field(
        Path(__file__).resolve().parents[2] / "charts" / "vibecode-platform",
        description="Path of the vibecode-platform chart (Gateway, issuers, Authelia, its stores, policies)")
    release: str = Field("vibecode-platform", description="Release of the platform chart (platform namespace)")
    secret_name: str = Field(
        "vibecode-platform-secrets",
        description="Secret (platform namespace) of the generated platform secrets; bootstrap creates it once")
    cert_manager_namespace: str = Field("cert-manager", description="Namespace of the cert-manager release")
    ops_namespace: str = Field("vibecode-ops", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
                               description="The flows' namespace (the Prefect worker's Jobs), which the platform "
                                           "chart creates and its NetworkPolicies admit as the prober")
    envoy_gateway_namespace: str = Field(
        "envoy-gateway-system", description="Namespace of the Envoy Gateway release")
    hr_gateway_chart: Path = Field(
        Path(__file__).resolve().parents[2] / "deployments" / "gateway", description="The HR gateway's chart")
    hr_gateway_release: str = Field("vibecode-gateway", description="Release of the HR gateway (platform namespace)")
    registry_reachable: bool = Field(
        True, description="Whether the nodes can pull the pinned images (from their registries, or the "
                          "bundle's mirror). False on a cluster that cannot (this machine's one-node "
                          "cluster): a component then runs only if its images are already on a node")
    image_overrides: dict[str, str] = Field(
        default_factory=dict,
        description="Lock image key -> an image built on this machine instead of the pinned one "
                    "(scripts/up's one-node cluster: seaweedfs, postgres, redis); reported as such")
    mirror_registry: str | None = Field(
        None, description="Air-gapped installs: the registry (host[:port]) the cluster pulls the bundle's "
                          "images from; pods then run <mirror>/<path>@<pinned digest>")
    mirror_push_registry: str | None = Field(
        None, description="Where this machine pushes the bundle's images, when it reaches the mirror at "
                          "another address than the nodes do (default: mirror_registry)")
    ready_timeout_seconds: float = Field(
        600, gt=0, description="How long bootstrap waits for each component to become ready")
    ready_poll_seconds: float = Field(1.0, gt=0, description="Pause between readiness checks")
    storage_class: str | None = Field(
        None, description="StorageClass of the platform's volumes (SeaweedFS, PostgreSQL, Redis); unset: the "
                          "chart's default (the cluster's default class)")
    s3_store_size: str | None = Field(
        None, description="Size of SeaweedFS's volume (the backups); unset: the chart's default")


class RecoverySettings(BaseModel):
    """The platform's own backup (Authelia's and Prefect's databases, the users database, the
    ledger, the platform Secrets) and disaster recovery from it (flows/platform_backup.py,
    flows/recover.py). Its restic password must live outside the cluster as well: recovery
    starts on a cluster that has nothing, so it reads the password from here or a Prefect
    Secret block only, never from a Secret."""

    model_config = {"extra": "forbid", "hide_input_in_errors": True}

    repository: str | None = Field(
        None, description="restic repository of the platform backup (s3:<endpoint>/<bucket>/<prefix>); "
                          "unset: <backup.s3_endpoint>/<backup.s3_bucket>/_platform (no username can be "
                          "'_platform', so no workspace repository collides with it)")
    password: SecretStr | None = Field(
        None, description="Password of the platform repository (secret). Keep it outside the cluster too "
                          "(a password manager): without it nothing of the platform can be recovered")
    password_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding the password; the first platform backup "
                          "creates it (and says so once) when neither this nor `password` is set")
    authelia_db_url: SecretStr | None = Field(
        None, description="postgresql://user:password@host:port/db of Authelia's storage (secret: it holds a "
                          "password, which is passed to pg_dump/pg_restore in PGPASSWORD only)")
    prefect_db_url: SecretStr | None = Field(
        None, description="postgresql(+asyncpg)://... of Prefect's database (secret); unset: not backed up")
    keep_daily: int = Field(14, ge=1, description="restic --keep-daily of the platform repository")
    keep_weekly: int = Field(8, ge=0, description="restic --keep-weekly")
    keep_monthly: int = Field(12, ge=0, description="restic --keep-monthly")
    verify_read_data_percent: int = Field(
        100, ge=0, le=100, description="Share of pack data `restic check` reads after a platform backup "
                                       "(it is small: all of it by default)")
    pg_bin: Path = Field(Path("/usr/lib/postgresql/15/bin"),
                         description="Folder of pg_dump, pg_restore and psql (the server's major version)")
    progress_configmap: str = Field(
        "vibecode-recovery", description="ConfigMap (platform namespace) recording which recovery steps are "
                                         "done, so a rerun resumes")


class ReaperSettings(BaseModel):
    """Idle reaping (decisions in tasks.reaper.decide): timeouts, dormancy, probes."""

    model_config = {"extra": "forbid", "hide_input_in_errors": True}

    idle_timeout_seconds: int = Field(7200, ge=60, description="A workspace whose last activity (code-server's "
                                      "lastHeartbeat, or the last-activity annotation) is older "
                                      "than this is warned, then stopped")
    warning_lead_seconds: int = Field(900, ge=0, description="The owner is emailed this long before a stop; "
                                           "a stop needs a warning at least this old. Must be below the idle "
                                           "timeout")
    max_session_seconds: int = Field(12 * 3600, ge=0, description="A workspace running this long is warned "
                                          "and stopped even if an open tab keeps it alive; 0 disables")
    dormancy_days: int = Field(30, ge=0, description="A workspace stopped by the reaper this long has its "
                                    "release uninstalled (volumes kept) once a verified backup newer than the "
                                    "stop exists; 0 disables")
    volume_dormancy_days: int = Field(90, ge=0, description="After this long stopped its volumes are "
                                           "deleted too (same backup rule); 0 disables; at least the dormancy")
    group_policies: dict[str, ReapGroupPolicy] = Field(default_factory=dict, description="Per-group "
                                                            "overrides (Authelia group -> fields of "
                                                            "ReapGroupPolicy); a member of several gets the "
                                                            "most lenient value of each")
    probe_url: str = Field("http://{service}.{namespace}.svc.cluster.local:80", description="Base URL of "
                                "a workspace's code-server; {username}, {service} and {namespace} are filled "
                                "in and /healthz appended. No query string. The API server's service proxy "
                                "may keep its connection to the pod open, and code-server renews its "
                                "heartbeat while any connection is open: prefer the Service address")
    probe_urls: dict[str, str] = Field(default_factory=dict, description="username -> base URL, overriding "
                                            "reap_probe_url for that workspace")
    probe_concurrency: int = Field(
        200, ge=1, le=2000,
        description="Probes in flight at once. 10,000 workspaces answering in 50 ms take 10,000 / 200 x 0.05 = "
                    "2.5 s at 200; each probe in flight holds one socket on the prober's event loop")
    probe_timeout_seconds: float = Field(
        3, gt=0, le=60,
        description="Whole probe (connect, send, read to the end); a timeout counts as unknown, never as idle. "
                    "A run waits at most about this long past its last probe started")


    @field_validator("probe_url")
    @classmethod
    def _probe_url_template(cls, v: str) -> str:
        return check_probe_base(v, "reaper.probe_url")

    @field_validator("probe_urls")
    @classmethod
    def _probe_urls(cls, v: dict[str, str]) -> dict[str, str]:
        return {user: check_probe_base(url, f"reaper.probe_urls.{user}") for user, url in v.items()}

    def defaults(self) -> dict[str, int]:
        """The policy fields (names of :class:`ReapGroupPolicy`) as set for everyone."""
        return {"idle_timeout_seconds": self.idle_timeout_seconds, "warning_lead_seconds": self.warning_lead_seconds,
                "max_session_seconds": self.max_session_seconds, "dormancy_days": self.dormancy_days,
                "volume_dormancy_days": self.volume_dormancy_days}

    def values_for(self, groups: tuple[str, ...] | None) -> dict[str, int]:
        """The policy fields for an owner in ``groups``: the defaults overridden by their groups'
        (the most lenient value of each when they are in several); ``None`` (owner unknown,
        the directory could not be read) takes the most lenient of every group and the defaults."""
        values = self.defaults()
        chosen = [self.group_policies[g] for g in (self.group_policies if groups is None else groups)
                  if g in self.group_policies]
        if not chosen:
            return values
        merged: dict[str, int] | None = None
        for gp in chosen:
            v = {k: getattr(gp, k) if getattr(gp, k) is not None else values[k] for k in POLICY_FIELDS}
            merged = v if merged is None else {k: _lenient(merged[k], v[k], k) for k in POLICY_FIELDS}
        assert merged is not None
        if groups is None:
            merged = {k: _lenient(merged[k], values[k], k) for k in POLICY_FIELDS}
        return merged

    @model_validator(mode="after")
    def _policies_coherent(self) -> "ReaperSettings":
        for prefix, v in [("reaper.", self.defaults()),
                          *((f"reaper.group_policies.{g}.", self.values_for((g,))) for g in self.group_policies)]:
            if v["warning_lead_seconds"] >= v["idle_timeout_seconds"]:
                raise ValueError(f"{prefix}warning_lead_seconds ({v['warning_lead_seconds']}) must be below the "
                                 f"idle timeout ({v['idle_timeout_seconds']})")
            if v["max_session_seconds"] and v["warning_lead_seconds"] >= v["max_session_seconds"]:
                raise ValueError(f"{prefix}max_session_seconds ({v['max_session_seconds']}) must exceed the "
                                 f"warning lead")
            if v["volume_dormancy_days"] and v["dormancy_days"] and v["volume_dormancy_days"] < v["dormancy_days"]:
                raise ValueError(f"{prefix}volume_dormancy_days ({v['volume_dormancy_days']}) must be at least "
                                 f"dormancy_days ({v['dormancy_days']})")
        return self


CONCERNS: dict[str, type[BaseModel]] = {
    "workspace": WorkspaceSettings, "identity": IdentitySettings, "mail": MailSettings, "backup": BackupSettings,
    "health": HealthSettings, "gateway": GatewaySettings, "reaper": ReaperSettings, "platform": PlatformSettings,
    "recovery": RecoverySettings,
}

# The flat names of the settings before they were nested: flat name -> (concern, field).
LEGACY_NAMES: dict[str, tuple[str, str]] = {
    "workspace_chart": ("workspace", "chart"),
    "workspace_image": ("workspace", "image"),
    "storage_class": ("workspace", "storage_class"),
    "workspace_size": ("workspace", "size"),
    "extensions_size": ("workspace", "extensions_size"),
    "ready_timeout_seconds": ("workspace", "ready_timeout_seconds"),
    "ready_poll_seconds": ("workspace", "ready_poll_seconds"),
    "authelia_url": ("identity", "authelia_url"),
    "authelia_verify_url": ("identity", "authelia_verify_url"),
    "authelia_users_secret": ("identity", "authelia_users_secret"),
    "authelia_deployment": ("identity", "authelia_deployment"),
    "department_groups": ("identity", "department_groups"),
    "default_groups": ("identity", "default_groups"),
    "ldap_url": ("identity", "ldap_url"),
    "ldap_base_dn": ("identity", "ldap_base_dn"),
    "ldap_bind_dn": ("identity", "ldap_bind_dn"),
    "ldap_password": ("identity", "ldap_password"),
    "totp_preprovision": ("identity", "totp_preprovision"),
    "totp_issuer": ("identity", "totp_issuer"),
    "totp_handoff_hours": ("identity", "totp_handoff_hours"),
    "totp_job_timeout_seconds": ("identity", "totp_job_timeout_seconds"),
    "totp_poll_seconds": ("identity", "totp_poll_seconds"),
    "authelia_image": ("identity", "authelia_image"),
    "authelia_config_secret": ("identity", "authelia_config_secret"),
    "privileged_groups": ("identity", "privileged_groups"),
    "hr_allowed_groups": ("identity", "hr_allowed_groups"),
    "ldap_start_tls": ("identity", "ldap_start_tls"),
    "ldap_ca_file": ("identity", "ldap_ca_file"),
    "ldap_allow_insecure_bind": ("identity", "ldap_allow_insecure_bind"),
    "offboard_retention_days": ("identity", "offboard_retention_days"),
    "authelia_backend": ("identity", "backend"),
    "smtp_host": ("mail", "smtp_host"),
    "smtp_port": ("mail", "smtp_port"),
    "smtp_username": ("mail", "smtp_username"),
    "smtp_password": ("mail", "smtp_password"),
    "smtp_starttls": ("mail", "smtp_starttls"),
    "ops_email": ("mail", "ops_email"),
    "smtp_ssl": ("mail", "smtp_ssl"),
    "smtp_ca_file": ("mail", "smtp_ca_file"),
    "smtp_allow_insecure_auth": ("mail", "smtp_allow_insecure_auth"),
    "mail_sender": ("mail", "sender"),
    "s3_endpoint": ("backup", "s3_endpoint"),
    "s3_bucket": ("backup", "s3_bucket"),
    "s3_region": ("backup", "s3_region"),
    "s3_access_key_id": ("backup", "s3_access_key_id"),
    "s3_secret_access_key": ("backup", "s3_secret_access_key"),
    "restic_password": ("backup", "restic_password"),
    "restic_image": ("backup", "restic_image"),
    "keep_last": ("backup", "keep_last"),
    "keep_daily": ("backup", "keep_daily"),
    "keep_weekly": ("backup", "keep_weekly"),
    "keep_monthly": ("backup", "keep_monthly"),
    "verify_read_data_percent": ("backup", "verify_read_data_percent"),
    "restic_binary": ("backup", "restic_binary"),
    "restic_new_password": ("backup", "restic_new_password"),
    "backup_timezone": ("backup", "timezone"),
    "backup_concurrency": ("backup", "concurrency"),
    "backup_batch_size": ("backup", "batch_size"),
    "backup_timeout_seconds": ("backup", "timeout_seconds"),
    "backup_secret": ("backup", "secret"),
    "backup_poll_seconds": ("backup", "poll_seconds"),
    "backup_run_as_user": ("backup", "run_as_user"),
    "backup_run_as_group": ("backup", "run_as_group"),
    "backup_job_ttl_seconds": ("backup", "job_ttl_seconds"),
    "datadog_api_key": ("health", "datadog_api_key"),
    "datadog_api_key_block": ("health", "datadog_api_key_block"),
    "datadog_site": ("health", "datadog_site"),
    "datadog_host": ("health", "datadog_host"),
    "pushgateway_url": ("health", "pushgateway_url"),
    "metrics_env": ("health", "metrics_env"),
    "metrics_cluster": ("health", "metrics_cluster"),
    "authelia_health_url": ("health", "authelia_health_url"),
    "health_components": ("health", "components"),
    "health_slow_seconds": ("health", "slow_seconds"),
    "health_timeout_seconds": ("health", "timeout_seconds"),
    "health_budget_seconds": ("health", "budget_seconds"),
    "gateway_webhook_secrets": ("gateway", "webhook_secrets"),
    "gateway_scim_token": ("gateway", "scim_token"),
    "gateway_host": ("gateway", "host"),
    "gateway_port": ("gateway", "port"),
    "gateway_max_body_bytes": ("gateway", "max_body_bytes"),
    "gateway_signature_tolerance_seconds": ("gateway", "signature_tolerance_seconds"),
    "gateway_rate_per_second": ("gateway", "rate_per_second"),
    "gateway_rate_burst": ("gateway", "rate_burst"),
    "gateway_rate_ipv4_prefix": ("gateway", "rate_ipv4_prefix"),
    "gateway_rate_ipv6_prefix": ("gateway", "rate_ipv6_prefix"),
    "gateway_trusted_proxies": ("gateway", "trusted_proxies"),
    "gateway_retry_after_seconds": ("gateway", "retry_after_seconds"),
    "gateway_prefect_timeout_seconds": ("gateway", "prefect_timeout_seconds"),
    "gateway_onboard_deployment": ("gateway", "onboard_deployment"),
    "gateway_offboard_deployment": ("gateway", "offboard_deployment"),
    "gateway_scim_max_results": ("gateway", "scim_max_results"),
    "idle_timeout_seconds": ("reaper", "idle_timeout_seconds"),
    "reap_warning_lead_seconds": ("reaper", "warning_lead_seconds"),
    "reap_max_session_seconds": ("reaper", "max_session_seconds"),
    "reap_dormancy_days": ("reaper", "dormancy_days"),
    "reap_volume_dormancy_days": ("reaper", "volume_dormancy_days"),
    "reap_group_policies": ("reaper", "group_policies"),
    "reap_probe_url": ("reaper", "probe_url"),
    "reap_probe_urls": ("reaper", "probe_urls"),
    "reap_probe_concurrency": ("reaper", "probe_concurrency"),
    "reap_probe_timeout_seconds": ("reaper", "probe_timeout_seconds"),
}


def _nest_legacy(values: dict[str, Any]) -> dict[str, Any]:
    """Move flat (pre-split) keys into their concern, without overriding a nested value."""
    out = {k: v for k, v in values.items() if k not in LEGACY_NAMES}
    for flat, value in values.items():
        if flat in LEGACY_NAMES:
            concern, name = LEGACY_NAMES[flat]
            part = out.get(concern)
            if isinstance(part, BaseModel):
                part = part.model_dump()
            part = dict(part or {})
            part.setdefault(name, value)
            out[concern] = part
    return out


def _is_complex(annotation: Any) -> bool:
    """Whether the environment carries this type as JSON (lists, dicts, models, optional or not)."""
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        return any(_is_complex(a) for a in get_args(annotation) if a is not type(None))
    if origin in (list, dict, tuple, set, frozenset) or annotation in (list, dict, tuple, set, frozenset):
        return True
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


class LegacyEnvSource(PydanticBaseSettingsSource):
    """Reads ``VIBECODE_<FLAT_NAME>`` for every name in :data:`LEGACY_NAMES` (case-insensitive,
    JSON for lists, dicts and models, as the environment source does), so deployments written
    before the split keep working. Ranked below the nested names."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the environment itself

    def __call__(self) -> dict[str, Any]:
        env = {k.upper(): v for k, v in os.environ.items()}
        out: dict[str, dict[str, Any]] = {}
        for flat, (concern, name) in LEGACY_NAMES.items():
            raw = env.get(f"{ENV_PREFIX}{flat}".upper())
            if raw is None:
                continue
            field = CONCERNS[concern].model_fields[name]
            value: Any = raw
            if _is_complex(field.annotation):
                value = self.decode_complex_value(name, field, raw)
            out.setdefault(concern, {})[name] = value
        return out


class Settings(BaseSettings):
    """Everything configurable, from the environment (``VIBECODE_*``); see the module docstring."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore",
                                      hide_input_in_errors=True)

    kubeconfig: Path | None = Field(
        None, description="Kubeconfig for out-of-cluster runs; in a pod the service account is used unless set")
    kube_context: str | None = Field(None, description="Context in the kubeconfig (default: its current context)")
    kind_cluster_name: str = Field("vibecode", description="KIND cluster that `vibecode up` creates or reuses")
    namespace: str = Field(
        "vibecode-workspaces",
        description="Namespace of the workspaces (releases, PVCs, backup Jobs and their Secret)")
    platform_namespace: str = Field(
        "vibecode-platform",
        description="Namespace of the platform: Authelia, its users Secret, ledger records, TOTP hand-offs")
    domain: str = Field(
        "vibecode.dev", description="Base DNS domain; a workspace is served at <username>.<domain>")
    helm_binary: Path | None = Field(
        None, description="helm executable (default: PATH, then ~/.cache/vibecode/bin)")
    helm_pending_grace_seconds: float = Field(
        300, ge=0, description="A helm release pending-install/-upgrade/-rollback for longer than this is taken "
                               "as stuck (helm was killed) and recovered: rolled back to its last deployed "
                               "revision, or uninstalled if none was. Younger, it may be another run at work.")
    kube_concurrency: int = Field(
        10, ge=1, le=100,
        description="Server-side limit of concurrent Kubernetes API tasks (tag kube-api), and the client pool size")
    kube_request_timeout_seconds: float = Field(
        30, gt=0, le=600,
        description="Client-side timeout of every Kubernetes API call (a watch adds its own server-side timeout); "
                    "a call past it is a transient error, retried by its task")
    kube_list_page_size: int = Field(
        500, ge=1, le=10000,
        description="Objects per LIST page (limit/continue): the API server and etcd build one page at a time, "
                    "so neither side holds a whole 10,000-object response")

    workspace: WorkspaceSettings = Field(default_factory=WorkspaceSettings, description=WorkspaceSettings.__doc__)
    identity: IdentitySettings = Field(default_factory=IdentitySettings, description=IdentitySettings.__doc__)
    mail: MailSettings = Field(default_factory=MailSettings, description=MailSettings.__doc__)
    backup: BackupSettings = Field(default_factory=BackupSettings, description=BackupSettings.__doc__)
    health: HealthSettings = Field(default_factory=HealthSettings, description=HealthSettings.__doc__)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings, description=GatewaySettings.__doc__)
    reaper: ReaperSettings = Field(default_factory=ReaperSettings, description=ReaperSettings.__doc__)
    platform: PlatformSettings = Field(default_factory=PlatformSettings, description=PlatformSettings.__doc__)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings, description=RecoverySettings.__doc__)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return init_settings, env_settings, LegacyEnvSource(settings_cls), dotenv_settings, file_secret_settings

    def __init__(self, **values: Any) -> None:
        """``Settings(backup_concurrency=8)`` still works: flat keyword names are nested before
        the sources are merged, so a keyword still outranks the environment."""
        super().__init__(**_nest_legacy(values))

    def replace(self, **changes: Any) -> "Settings":
        """A validated copy with ``changes`` (flat or nested names), the environment not read again."""
        merged = self.model_dump()
        for concern, part in _nest_legacy(changes).items():
            if concern in CONCERNS and isinstance(part, dict):
                merged[concern] = {**merged[concern], **part}
            else:
                merged[concern] = part
        return type(self).model_validate(merged)

    @field_validator("domain")
    @classmethod
    def _domain_is_dns(cls, v: str) -> str:
        if not re.fullmatch(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", v):
            raise ValueError(f"{v!r} is not a lowercase DNS domain")
        return v


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()
