"""One typed settings class for the whole project (env prefix ``VIBECODE_``).

Secrets are ``SecretStr`` so they never appear in a repr, a log line or a Prefect
parameter; code that needs the value calls ``.get_secret_value()`` at the last moment.
Flows take no secret parameters: secrets come from here (environment), from Kubernetes
Secrets, or from Prefect Secret blocks.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ReapGroupPolicy(BaseModel):
    """A group's overrides of the reaper's defaults; unset fields keep the default."""

    model_config = {"extra": "forbid"}

    idle_timeout_seconds: int | None = Field(None, ge=60, description="Idle time before the workspace is stopped")
    warning_lead_seconds: int | None = Field(None, ge=0, description="How long before a stop the owner is warned")
    max_session_seconds: int | None = Field(None, ge=0, description="Stop after this long running even if a tab "
                                                                    "keeps it alive; 0 disables")
    dormancy_days: int | None = Field(None, ge=0, description="Uninstall a stopped workspace after this long "
                                                              "(verified backup required); 0 disables")
    volume_dormancy_days: int | None = Field(None, ge=0, description="Delete its volumes after this long "
                                                                     "(verified backup required); 0 disables")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIBECODE_", env_nested_delimiter="__", extra="ignore")

    # Cluster
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
    workspace_chart: Path = Field(
        Path(__file__).resolve().parents[2] / "charts" / "vibecode-workspace",
        description="Path of the vibecode-workspace Helm chart")
    workspace_image: str = Field(
        "codercom/code-server:4.101.2", description="code-server image of every workspace")
    storage_class: str | None = Field(
        None, description="StorageClass of workspace volumes (default: the cluster's default class)")
    workspace_size: str = Field("10Gi", description="Size of a workspace's home volume")
    extensions_size: str = Field("2Gi", description="Size of a workspace's extensions volume")
    ready_timeout_seconds: float = Field(
        300, gt=0,
        description="How long provisioning waits for a workspace to become available (then retried as transient)")
    ready_poll_seconds: float = Field(
        2, gt=0, description="Pause before watching a Deployment again after its watch broke while provisioning")
    helm_pending_grace_seconds: float = Field(
        300, ge=0, description="A helm release pending-install/-upgrade/-rollback for longer than this is taken "
                               "as stuck (helm was killed) and recovered: rolled back to its last deployed "
                               "revision, or uninstalled if none was. Younger, it may be another run at work.")

    # Authelia
    authelia_url: str = Field(
        "https://auth.vibecode.dev", description="Public URL of Authelia (login and password-reset links)")
    authelia_verify_url: str = Field(
        "http://authelia.vibecode-platform.svc.cluster.local:9091/api/verify",
        description="In-cluster URL the ingress asks to authorise each workspace request")
    authelia_backend: Literal["file", "ldap"] = Field(
        "file", description="Where identities live: Authelia's file database in a Secret, or LDAP")
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

    # Mail
    smtp_host: str = Field("127.0.0.1", description="SMTP server for welcome mails and failure notices")
    smtp_port: int = Field(25, description="SMTP port")
    smtp_username: str | None = Field(None, description="SMTP login (none: send without authenticating)")
    smtp_password: SecretStr | None = Field(None, description="SMTP password (secret)")
    smtp_starttls: bool = Field(False, description="Upgrade the SMTP connection with STARTTLS before logging in")
    mail_sender: str = Field("VibeCode <noreply@vibecode.dev>", description="From: address of every mail")
    ops_email: str | None = Field(None, description="Where backup failure notices go (none sent when unset)")
    smtp_ssl: bool = Field(
        False, description="Implicit TLS (SMTPS, usually port 465): TLS from the first byte.")
    smtp_ca_file: Path | None = Field(
        None, description="PEM file of the CA(s) trusted for the SMTP server's certificate; unset means "
                          "the system's trust store.")
    smtp_allow_insecure_auth: bool = Field(
        False, description="INSECURE: allow SMTP AUTH (sending smtp_password) without STARTTLS or SMTPS. "
                           "Off by default; a warning is logged on every such login.")

    # Offboarding
    offboard_retention_days: int = Field(
        30, ge=0,
        description="Days a leaver's workspace volumes are kept (with a verified backup) before deletion")

    # S3 / backups
    s3_endpoint: str = Field("http://127.0.0.1:9000", description="S3-compatible endpoint of the backup bucket")
    s3_bucket: str = Field("vibecode-backups", description="Bucket holding one restic repository per workspace")
    s3_region: str = Field("us-east-1", description="Region of the bucket")
    s3_access_key_id: SecretStr | None = Field(None, description="S3 access key id (secret)")
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret access key (secret)")
    restic_password: SecretStr | None = Field(
        None, description="Password of every workspace's restic repository (secret)")
    restic_image: str = Field("restic/restic:0.14.0", description="Image of the backup and restore Jobs")
    backup_timezone: str = Field(
        "UTC",
        description="Timezone the daily/weekly/monthly keep rules count days in (= prefect.yaml's schedules)")
    backup_concurrency: int = Field(
        4, ge=1, le=64,
        description="Backup Jobs in flight at once in one run (protects nodes, storage and the API server)")
    backup_timeout_seconds: float = Field(
        3600, gt=0, description="A backup Job's deadline; past it the Job is deleted and the workspace Failed")
    keep_last: int = Field(0, ge=0, description="restic --keep-last: extra same-day runs to keep (manual backups)")
    keep_daily: int = Field(7, ge=0, description="restic --keep-daily")
    keep_weekly: int = Field(4, ge=0, description="restic --keep-weekly")
    keep_monthly: int = Field(6, ge=0, description="restic --keep-monthly")
    verify_read_data_percent: int = Field(
        5, ge=0, le=100, description="Share of pack data `restic check` reads after each backup")
    backup_secret: str = Field(
        "vibecode-backup",
        description="Secret in the workspace namespace that backup Jobs read their credentials from")
    backup_poll_seconds: float = Field(1, gt=0, description="Pause before re-listing after a failed Job watch")
    backup_run_as_user: int = Field(
        1000, ge=1, description="uid of backup Jobs (the workspace's uid, so 0600 files are readable)")
    backup_run_as_group: int = Field(1000, ge=1, description="gid of backup Jobs")
    backup_job_ttl_seconds: int = Field(
        7 * 86400, ge=0, description="ttlSecondsAfterFinished of backup Jobs (Kubernetes 1.21+)")
    restic_binary: str = Field(
        "restic", description="restic executable on the worker (repository maintenance runs there)")
    restic_new_password: SecretStr | None = Field(
        None, description="Set only to rotate the restic password: `vibecode rotate-restic-password` adds a key "
                          "for it to every repository, writes it into the backup Secret, then removes the key of "
                          "restic_password. Afterwards set restic_password to it and unset this.")

    # API politeness and metrics
    kube_concurrency: int = Field(
        10, ge=1, le=100,
        description="Server-side limit of concurrent Kubernetes API tasks (tag kube-api), and the client pool size")
    # Health checks and metrics (flows.health; checks in tasks.health.checks, sinks in tasks.health.sinks)
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
    health_components: list[str] = Field(
        default_factory=lambda: ["ingress-nginx/ingress-nginx-controller", "cert-manager/cert-manager",
                                 "cert-manager/cert-manager-webhook", "cert-manager/cert-manager-cainjector",
                                 "vibecode-platform/authelia", "vibecode-platform/authelia-redis",
                                 "vibecode-platform/authelia-postgresql", "vibecode-platform/minio"],
        description="namespace/name of the platform Deployments and StatefulSets to check; those that "
                    "do not exist are not installed here and are skipped")
    health_slow_seconds: float = Field(2.0, gt=0, description="An API server, Authelia or bucket answer "
                                       "slower than this is a warning")
    health_timeout_seconds: float = Field(5.0, gt=0, description="Timeout of each probe and each sink request")

    # HR gateway (`vibecode gateway`): signed HR webhooks and SCIM 2.0
    gateway_webhook_secrets: list[SecretStr] = Field(
        default_factory=list,
        description="Shared HMAC secrets for VibeCode-Signature (JSON list; two during a rotation), "
                    "each at least 32 bytes")
    gateway_scim_token: SecretStr | None = Field(
        None, description="Bearer token identity providers send to /scim/v2 (at least 32 bytes)")
    gateway_host: str = Field("127.0.0.1", description="Address the gateway listens on")
    gateway_port: int = Field(8080, ge=1, le=65535, description="Port the gateway listens on")
    gateway_max_body_bytes: int = Field(65536, ge=1024, le=1 << 20,
                                        description="Largest request body accepted (413 above it)")
    gateway_signature_tolerance_seconds: int = Field(
        300, ge=30, le=3600, description="How far a signature's timestamp may be from now")
    gateway_rate_per_second: float = Field(20, gt=0, description="Requests per second per client (token refill)")
    gateway_rate_burst: int = Field(40, ge=1, description="Requests a client may send at once (bucket size)")
    gateway_trusted_proxies: list[str] = Field(
        default_factory=list,
        description="CIDRs of proxies (the ingress controller) whose X-Forwarded-For names the client")
    gateway_retry_after_seconds: int = Field(10, ge=1, description="Retry-After sent with 503 and 429")
    gateway_prefect_timeout_seconds: float = Field(
        20, gt=0, description="How long one request waits for the Prefect API before answering 503")
    gateway_onboard_deployment: str = Field("onboard-user/onboard-user",
                                            description="Deployment for employee.hired / employee.updated")
    gateway_offboard_deployment: str = Field("offboard-user/offboard-user",
                                             description="Deployment for employee.terminated")
    gateway_scim_max_results: int = Field(100, ge=1, le=1000, description="Largest SCIM list page")

    # Idle reaping (flows.reaper; decisions in tasks.reaper.decide)
    idle_timeout_seconds: int = Field(7200, ge=60, description="A workspace whose last activity (code-server's "
                                      "lastHeartbeat, or the vibecode.dev/last-activity annotation) is older "
                                      "than this is warned, then stopped")
    reap_warning_lead_seconds: int = Field(900, ge=0, description="The owner is emailed this long before a stop; "
                                           "a stop needs a warning at least this old. Must be below the idle "
                                           "timeout")
    reap_max_session_seconds: int = Field(12 * 3600, ge=0, description="A workspace running this long is warned "
                                          "and stopped even if an open tab keeps it alive; 0 disables")
    reap_dormancy_days: int = Field(30, ge=0, description="A workspace stopped by the reaper this long has its "
                                    "release uninstalled (volumes kept) once a verified backup newer than the "
                                    "stop exists; 0 disables")
    reap_volume_dormancy_days: int = Field(90, ge=0, description="After this long stopped its volumes are "
                                           "deleted too (same backup rule); 0 disables; at least the dormancy")
    reap_group_policies: dict[str, ReapGroupPolicy] = Field(default_factory=dict, description="Per-group "
                                                            "overrides (Authelia group -> fields of "
                                                            "ReapGroupPolicy); a member of several gets the "
                                                            "most lenient value of each")
    reap_probe_url: str = Field("http://{service}.{namespace}.svc.cluster.local:80", description="Base URL of "
                                "a workspace's code-server; {username}, {service} and {namespace} are filled "
                                "in and /healthz appended. No query string. The API server's service proxy "
                                "may keep its connection to the pod open, and code-server renews its "
                                "heartbeat while any connection is open: prefer the Service address")
    reap_probe_urls: dict[str, str] = Field(default_factory=dict, description="username -> base URL, overriding "
                                            "reap_probe_url for that workspace")
    reap_probe_concurrency: int = Field(50, ge=1, le=500, description="Probes in flight at once")
    reap_probe_timeout_seconds: float = Field(5, gt=0, le=60, description="Per probe; a timeout counts as "
                                              "unknown, never as idle")

    @field_validator("reap_probe_url")
    @classmethod
    def _probe_url_template(cls, v: str) -> str:
        from tasks.reaper.decide import check_probe_base

        return check_probe_base(v, "reap_probe_url")

    @field_validator("reap_probe_urls")
    @classmethod
    def _probe_urls(cls, v: dict[str, str]) -> dict[str, str]:
        from tasks.reaper.decide import check_probe_base

        return {user: check_probe_base(url, f"reap_probe_urls.{user}") for user, url in v.items()}

    @model_validator(mode="after")
    def _reap_policies_coherent(self) -> "Settings":
        from tasks.reaper.decide import policy_problems

        problem = policy_problems(self)
        if problem:
            raise ValueError(problem)
        return self

    @field_validator("domain")
    @classmethod
    def _domain_is_dns(cls, v: str) -> str:
        import re

        if not re.fullmatch(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", v):
            raise ValueError(f"{v!r} is not a lowercase DNS domain")
        return v

    @model_validator(mode="after")
    def _hr_never_grants_privileged_groups(self) -> "Settings":
        privileged = set(self.privileged_groups)
        for name, groups in (("default_groups", self.default_groups),
                             ("hr_allowed_groups", self.hr_allowed_groups or []),
                             *((f"department_groups.{d}", g) for d, g in self.department_groups.items())):
            bad = sorted(privileged.intersection(groups))
            if bad:
                raise ValueError(f"{name} names privileged group(s) {bad}: HR input never grants those")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()
