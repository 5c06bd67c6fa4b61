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

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIBECODE_", env_nested_delimiter="__", extra="ignore")

    # Cluster
    kubeconfig: Path | None = None
    kube_context: str | None = None
    kind_cluster_name: str = "vibecode"
    namespace: str = "vibecode-workspaces"
    platform_namespace: str = "vibecode-platform"
    domain: str = "vibecode.dev"
    helm_binary: Path | None = None
    workspace_chart: Path = Path(__file__).resolve().parent.parent / "charts" / "vibecode-workspace"
    workspace_image: str = "codercom/code-server:4.101.2"
    storage_class: str | None = None
    workspace_size: str = "10Gi"
    extensions_size: str = "2Gi"
    ready_timeout_seconds: float = Field(300, gt=0)
    ready_poll_seconds: float = Field(2, gt=0)

    # Authelia
    authelia_url: str = "https://auth.vibecode.dev"
    authelia_verify_url: str = "http://authelia.vibecode-platform.svc.cluster.local:9091/api/verify"
    authelia_backend: Literal["file", "ldap"] = "file"
    authelia_users_secret: str = "authelia-users"
    authelia_deployment: str = "authelia"
    department_groups: dict[str, list[str]] = Field(default_factory=dict)
    default_groups: list[str] = Field(default_factory=lambda: ["users"])
    ldap_url: str = "ldap://127.0.0.1:389"
    ldap_base_dn: str = "dc=vibecode,dc=dev"
    ldap_bind_dn: str = "cn=admin,dc=vibecode,dc=dev"
    ldap_password: SecretStr | None = None
    totp_preprovision: bool = False
    totp_issuer: str = "VibeCode"
    totp_handoff_hours: float = Field(72, gt=0)  # the hand-off Secret's life; purge deletes it after
    totp_job_timeout_seconds: float = Field(300, gt=0)  # the Job's activeDeadlineSeconds and our wait
    totp_poll_seconds: float = Field(1, gt=0)  # pause before re-listing after a broken Job watch
    authelia_image: str = "authelia/authelia:4.39.4"
    authelia_config_secret: str = "authelia-config"  # holds configuration.yml, mounted at /config

    # Mail
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    mail_sender: str = "VibeCode <noreply@vibecode.dev>"
    ops_email: str | None = None  # where backup failure notices go (none sent when unset)

    # Offboarding
    offboard_retention_days: int = Field(30, ge=0)

    # S3 / backups
    s3_endpoint: str = "http://127.0.0.1:9000"
    s3_bucket: str = "vibecode-backups"
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    restic_password: SecretStr | None = None
    restic_image: str = "restic/restic:0.14.0"
    backup_timezone: str = "UTC"
    backup_concurrency: int = Field(4, ge=1, le=64)
    backup_timeout_seconds: float = Field(3600, gt=0)
    keep_last: int = Field(0, ge=0)  # restic --keep-last: extra same-day runs (manual backups)
    keep_daily: int = Field(7, ge=0)
    keep_weekly: int = Field(4, ge=0)
    keep_monthly: int = Field(6, ge=0)
    verify_read_data_percent: int = Field(5, ge=0, le=100)
    backup_secret: str = "vibecode-backup"  # in the workspace namespace: Jobs can only read their own
    backup_poll_seconds: float = Field(1, gt=0)  # pause before re-listing after a failed Job watch
    backup_run_as_user: int = Field(1000, ge=1)  # the workspace's uid, so 0600 files are readable
    backup_run_as_group: int = Field(1000, ge=1)
    backup_job_ttl_seconds: int = Field(7 * 86400, ge=0)
    restic_binary: str = "restic"

    # API politeness and metrics
    kube_concurrency: int = Field(10, ge=1, le=100)
    idle_timeout_seconds: int = Field(3600, ge=60)
    datadog_api_key: SecretStr | None = None
    datadog_site: str = "datadoghq.com"
    pushgateway_url: str | None = None

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
