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
        Path(__file__).resolve().parent.parent / "charts" / "vibecode-workspace",
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
    ready_poll_seconds: float = Field(2, gt=0, description="Pause between availability checks while provisioning")

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

    # Mail
    smtp_host: str = Field("127.0.0.1", description="SMTP server for welcome mails and failure notices")
    smtp_port: int = Field(25, description="SMTP port")
    smtp_username: str | None = Field(None, description="SMTP login (none: send without authenticating)")
    smtp_password: SecretStr | None = Field(None, description="SMTP password (secret)")
    smtp_starttls: bool = Field(False, description="Upgrade the SMTP connection with STARTTLS before logging in")
    mail_sender: str = Field("VibeCode <noreply@vibecode.dev>", description="From: address of every mail")
    ops_email: str | None = Field(None, description="Where backup failure notices go (none sent when unset)")

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

    # API politeness and metrics
    kube_concurrency: int = Field(
        10, ge=1, le=100,
        description="Server-side limit of concurrent Kubernetes API tasks (tag kube-api), and the client pool size")
    datadog_api_key: SecretStr | None = Field(None, description="Datadog API key (secret)")
    datadog_site: str = Field("datadoghq.com", description="Datadog site")
    pushgateway_url: str | None = Field(None, description="Prometheus Pushgateway URL")

    # Idle reaping (flows.reaper; decisions in tasks.reap)
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
        from tasks.reap import check_probe_base

        return check_probe_base(v, "reap_probe_url")

    @field_validator("reap_probe_urls")
    @classmethod
    def _probe_urls(cls, v: dict[str, str]) -> dict[str, str]:
        from tasks.reap import check_probe_base

        return {user: check_probe_base(url, f"reap_probe_urls.{user}") for user, url in v.items()}

    @model_validator(mode="after")
    def _reap_policies_coherent(self) -> "Settings":
        from tasks.reap import policy_problems

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()
