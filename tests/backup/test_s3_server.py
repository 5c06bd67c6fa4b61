"""The tests' S3 server (SeaweedFS ``weed mini``, tests/fixtures/seaweedfs.py): it listens on
loopback only, refuses anyone without the run's credentials, and behaves as S3 does where
the backup code depends on it (restic and boto3 against a real bucket)."""

from __future__ import annotations

import hashlib
import os
import time
import uuid

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.fixtures import seaweedfs


def _wait_listening(server, expected: set[int], timeout: float = 15) -> list[tuple[str, str, int]]:
    """The admin server binds last, a moment after S3 answers: wait for the full set."""
    deadline = time.monotonic() + timeout
    while True:
        socks = seaweedfs.listening(server.proc.pid)
        if {port for _, _, port in socks} >= expected or time.monotonic() > deadline:
            return socks
        time.sleep(0.2)


def test_every_listener_of_the_s3_server_is_on_loopback_and_chosen_by_us(s3_server):
    expected = {port for name, port in s3_server.ports.items() if name != "webdav"}  # WebDAV is off
    socks = _wait_listening(s3_server, expected)
    assert socks, "ss shows no socket for the weed process"
    assert {port for _, _, port in socks} == expected, f"unexpected listeners: {socks}"
    assert {addr for _, addr, _ in socks} == {"127.0.0.1"}, f"not loopback-only: {socks}"
    assert not [s for s in socks if s[1] in ("0.0.0.0", "::", "*")]


def test_the_s3_server_refuses_other_credentials_and_anonymous_requests(s3_server):
    bucket = f"auth-{uuid.uuid4().hex[:10]}"
    s3_server.client().create_bucket(Bucket=bucket)
    try:
        import boto3

        stranger = boto3.client("s3", endpoint_url=s3_server.url, region_name="us-east-1",
                                aws_access_key_id="AKIA" + uuid.uuid4().hex[:16].upper(),
                                aws_secret_access_key=uuid.uuid4().hex)
        with pytest.raises(ClientError) as refused:
            stranger.list_objects_v2(Bucket=bucket)
        assert refused.value.response["Error"]["Code"] == "InvalidAccessKeyId"
        wrong_secret = boto3.client("s3", endpoint_url=s3_server.url, region_name="us-east-1",
                                    aws_access_key_id=s3_server.access_key, aws_secret_access_key="not-it")
        with pytest.raises(ClientError) as refused:
            wrong_secret.put_object(Bucket=bucket, Key="k", Body=b"x")
        assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
        assert httpx.get(f"{s3_server.url}/{bucket}", timeout=5).status_code == 403
        assert httpx.put(f"{s3_server.url}/{bucket}/k", content=b"x", timeout=5).status_code == 403
        assert "KeyCount" in s3_server.client().list_objects_v2(Bucket=bucket)
        assert s3_server.client().list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    finally:
        s3_server.delete_bucket(bucket)


def test_the_s3_server_keeps_the_s3_semantics_the_backup_code_relies_on(s3_server):
    """No bucket made by a write, no non-empty bucket deleted, ETag = MD5 of a single PUT,
    listings (with the delimiter restic's repository layout and repository_usernames use)
    that show a write at once, overwrites read back at once."""
    s3 = s3_server.client()
    bucket = f"sem-{uuid.uuid4().hex[:10]}"
    with pytest.raises(ClientError) as missing:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert missing.value.response["Error"]["Code"] == "NoSuchBucket"
    with pytest.raises(ClientError) as missing:
        s3.head_bucket(Bucket=bucket)
    assert missing.value.response["Error"]["Code"] in ("404", "NoSuchBucket")

    s3.create_bucket(Bucket=bucket)
    try:
        body = os.urandom(300_000)
        put = s3.put_object(Bucket=bucket, Key="alice/data/00/pack", Body=body)
        assert put["ETag"].strip('"') == hashlib.md5(body).hexdigest()
        s3.put_object(Bucket=bucket, Key="bob/config", Body=b"c")
        top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
        assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["alice/", "bob/"]
        assert s3.get_object(Bucket=bucket, Key="alice/data/00/pack")["Body"].read() == body
        s3.put_object(Bucket=bucket, Key="bob/config", Body=b"changed")
        assert s3.get_object(Bucket=bucket, Key="bob/config")["Body"].read() == b"changed"
        with pytest.raises(ClientError) as not_empty:
            s3.delete_bucket(Bucket=bucket)
        assert not_empty.value.response["Error"]["Code"] == "BucketNotEmpty"
        s3.delete_object(Bucket=bucket, Key="bob/config")
        assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["alice/data/00/pack"]
    finally:
        s3_server.delete_bucket(bucket)
    with pytest.raises(ClientError):
        s3.head_bucket(Bucket=bucket)


def test_the_s3_server_process_leaves_nothing_behind(tmp_path):
    """A server of its own (not the session's): stopped, its process, data folder and
    gRPC sockets are gone."""
    server = seaweedfs.start(workdir=tmp_path)
    workdir, pid = server.workdir, server.proc.pid
    server.client().create_bucket(Bucket="leftover")
    server.client().put_object(Bucket="leftover", Key="k", Body=b"x")
    assert any(workdir.iterdir())
    server.stop()
    assert server.proc.poll() is not None
    assert not workdir.exists()
    assert not seaweedfs.listening(pid)
    assert not [p for p in os.listdir("/tmp") if p.startswith("seaweedfs-")
                and p.endswith(tuple(f"-{server.ports[n + '_grpc']}.sock" for n in ("master", "volume", "filer", "s3")))]
