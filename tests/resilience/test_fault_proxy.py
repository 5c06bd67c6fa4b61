"""The fault proxy itself (tests/fixtures/faults.py): each kind of fault does what it says,
against the real API server and the real S3 server, and the choice is seeded."""

from __future__ import annotations

import time

import boto3
import botocore.config
import botocore.exceptions
import pytest

from tasks.cluster import kube as kube_adapter
from tasks.core.errors import ServerError, TooManyRequests
from tasks.core.settings import get_settings
from tests.fixtures.faults import FaultPlan, api_proxy, is_watch, s3_proxy


def test_the_choice_is_seeded_per_request_identity():
    plan = FaultPlan.failing(0.2, seed=7)
    reqs = [("GET", f"/api/v1/namespaces/ns/pods/p{i % 13}", i // 13) for i in range(2000)]
    first = [plan.choose(*r) for r in reqs]
    again = [plan.choose(*r) for r in reversed(reqs)][::-1]  # another interleaving, same requests
    assert first == again
    share = sum(k is not None for k in first) / len(first)
    assert 0.16 < share < 0.24 and set(first) == {None, "429", "500", "503", "reset"}
    assert [FaultPlan.failing(0.2, seed=8).choose(*r) for r in reqs] != first


def test_kinds_apply_only_where_they_can():
    plan = FaultPlan({"cut_watch": 0.5, "lost_answer": 0.5})
    assert plan.choose("GET", "/api/v1/pods", 0) is None
    assert {plan.choose("GET", "/api/v1/pods?watch=true", n) for n in range(50)} == {None, "cut_watch"}
    assert {plan.choose("PUT", "/bucket/key", n) for n in range(50)} == {None, "lost_answer"}
    assert is_watch("/apis/batch/v1/namespaces/x/jobs?labelSelector=a&watch=1")
    with pytest.raises(ValueError):
        FaultPlan({"teapot": 0.1})
    with pytest.raises(ValueError):
        FaultPlan({"500": 0.7, "503": 0.7})


def _kube_through(proxy_kubeconfig, monkeypatch):
    monkeypatch.setenv("VIBECODE_KUBECONFIG", str(proxy_kubeconfig))
    get_settings.cache_clear()
    kube_adapter.reset_connections()
    return kube_adapter.connect()


def test_api_server_through_the_proxy_status_faults_and_resets(apiserver, namespace, tmp_path, monkeypatch):
    proxy, kubeconfig = api_proxy(apiserver.kubeconfig, tmp_path)
    try:
        kube = _kube_through(kubeconfig, monkeypatch)
        assert kube.list("ConfigMap", namespace) == []  # passes through untouched
        proxy.plan = FaultPlan({"429": 1.0}, retry_after=2)
        with pytest.raises(TooManyRequests) as exc:
            kube.get("ConfigMap", namespace, "x")
        assert exc.value.retry_after == 2
        proxy.plan = FaultPlan({"503": 1.0})
        with pytest.raises(ServerError):
            kube.get("ConfigMap", namespace, "x")
        proxy.plan = FaultPlan({"reset": 1.0})
        with pytest.raises(ServerError):
            kube.get("ConfigMap", namespace, "x")
        proxy.plan = FaultPlan({"delay": 1.0}, delay_seconds=0.5)
        t0 = time.monotonic()
        kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": namespace}})
        assert time.monotonic() - t0 >= 0.5
        counts = proxy.counts()
        # a read is tried 4 times inside the call (tasks.core.retrying) before the error reaches the task
        assert counts["429"] == 4 and counts["503"] == 4 and counts["reset"] >= 1 and counts["delay"] >= 1
    finally:
        proxy.stop()
        get_settings.cache_clear()
        kube_adapter.reset_connections()


def test_a_watch_stream_is_passed_through_then_cut(apiserver, kube, namespace, tmp_path, monkeypatch):
    proxy, kubeconfig = api_proxy(apiserver.kubeconfig, tmp_path, FaultPlan({"cut_watch": 1.0}, watch_cut_seconds=1))
    try:
        pkube = _kube_through(kubeconfig, monkeypatch)
        seen = []
        t0 = time.monotonic()
        with pytest.raises(ServerError):
            for kind, _obj in pkube.list_watch("ConfigMap", namespace, timeout_seconds=20):
                seen.append(kind)
                if kind == "SYNC":
                    kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": "w", "namespace": namespace}})
        assert seen == ["SYNC", "ADDED"]  # the event arrived while streaming, before the cut
        assert time.monotonic() - t0 < 10 and proxy.counts()["cut_watch"] == 1
    finally:
        proxy.stop()
        get_settings.cache_clear()
        kube_adapter.reset_connections()


def _s3(url, server, **kw):
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=server.access_key,
                        aws_secret_access_key=server.secret_key,
                        config=botocore.config.Config(retries={"total_max_attempts": 1}, **kw))


def test_s3_accepts_a_write_then_times_out_the_answer(s3_server):
    bucket = "faults-proxy-test"
    s3_server.client().create_bucket(Bucket=bucket)
    try:
        with s3_proxy(s3_server.url, FaultPlan({"lost_answer": 1.0}, hold_seconds=5)) as proxy:
            client = _s3(proxy.url, s3_server, read_timeout=1, connect_timeout=2)
            t0 = time.monotonic()
            with pytest.raises((botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectionClosedError)):
                client.put_object(Bucket=bucket, Key="k", Body=b"written")
            assert time.monotonic() - t0 < 4
            assert proxy.counts()["lost_answer"] == 1
        body = s3_server.client().get_object(Bucket=bucket, Key="k")["Body"].read()
        assert body == b"written"  # the write was done although the client never heard so
    finally:
        s3_server.delete_bucket(bucket)


def test_s3_status_faults_and_signed_requests_pass_through(s3_server):
    bucket = "faults-proxy-test2"
    s3_server.client().create_bucket(Bucket=bucket)
    try:
        with s3_proxy(s3_server.url) as proxy:
            client = _s3(proxy.url, s3_server)
            client.put_object(Bucket=bucket, Key="big", Body=b"x" * (3 << 20))  # signature over Host holds
            assert client.get_object(Bucket=bucket, Key="big")["Body"].read() == b"x" * (3 << 20)
            proxy.plan = FaultPlan({"500": 1.0})
            with pytest.raises(botocore.exceptions.ClientError) as exc:
                client.head_object(Bucket=bucket, Key="big")
            assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
            assert proxy.counts() == {"requests": 3, "500": 1}
    finally:
        s3_server.delete_bucket(bucket)
