"""The health flow's probes of things that are not Kubernetes objects: Authelia's health
endpoint and the backup bucket. Each returns what it saw and never raises, so one endpoint
being down becomes a check's status instead of a crashed run."""

from __future__ import annotations

import time

import httpx

from tasks.core.settings import Settings


def probe_http(url: str, timeout: float) -> tuple[int | None, str, float, str]:
    """(HTTP status or None, body (first 4 KiB), seconds, error). A fresh connection each time."""
    started = time.perf_counter()
    try:
        r = httpx.get(url, timeout=timeout, headers={"Connection": "close"}, follow_redirects=False)
    except httpx.HTTPError as exc:
        return None, "", time.perf_counter() - started, f"{type(exc).__name__}: {exc}"
    return r.status_code, r.text[:4096], time.perf_counter() - started, ""


def probe_bucket(settings: Settings) -> tuple[float | None, str]:
    """(seconds, error): one HeadBucket with the backup credentials, as restic will need."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    def secret(v) -> str | None:
        return v.get_secret_value() if v is not None else None

    timeout = settings.health.timeout_seconds
    started = time.perf_counter()
    try:
        s3 = boto3.client("s3", endpoint_url=settings.backup.s3_endpoint, region_name=settings.backup.s3_region,
                          aws_access_key_id=secret(settings.backup.s3_access_key_id),
                          aws_secret_access_key=secret(settings.backup.s3_secret_access_key),
                          config=Config(connect_timeout=timeout, read_timeout=timeout,
                                        retries={"max_attempts": 1}))
        s3.head_bucket(Bucket=settings.backup.s3_bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        why = "does not exist" if code in ("404", "NoSuchBucket") else f"HTTP {code}"
        return None, why
    except (BotoCoreError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return time.perf_counter() - started, ""
