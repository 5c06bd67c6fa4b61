"""The platform's stores as real pods on the one-node cluster, from the images built here
(tasks/cluster/localnode/images.py): SeaweedFS, PostgreSQL 15 and Redis, each under Pod
Security "restricted" with a read-only root filesystem, each serving for real to a client
on this machine through its ClusterIP Service (kube-proxy's rules), with credentials from
Secrets.

The node's API server (1.20) has no Pod Security admission, so the specs are checked with
tests/fixtures/pss.py, and what the runtime applied is read from the kernel (/proc of each
container's process): uid, no capabilities, no-new-privileges, a seccomp filter, a
read-only root mount.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from pathlib import Path

import pytest

from tasks.cluster.localnode import node as node_harness
from tests.fixtures import seaweedfs
from tests.fixtures.node import wait_for
from tests.fixtures.pss import restricted_violations

pytestmark = [pytest.mark.node]


def _restricted_pod(ns: str, name: str, image: str, uid: int, *, port: int, args: list[str] | None = None,
                    env: list[dict] | None = None, mounts: list[dict], volumes: list[dict],
                    probe: dict | None = None) -> dict:
    container = {
        "name": name, "image": image, "imagePullPolicy": "Never",
        "ports": [{"containerPort": port, "name": "serve"}],
        "env": env or [], "volumeMounts": mounts,
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "readinessProbe": probe or {"tcpSocket": {"port": port}, "periodSeconds": 1},
        "resources": {"limits": {"memory": "512Mi"}},
    }
    if args is not None:
        container["args"] = args
    spec = {"automountServiceAccountToken": False, "enableServiceLinks": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container], "volumes": volumes}
    assert restricted_violations(spec) == []
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": spec}


def _service(kube, ns: str, name: str, port: int) -> str:
    kube.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                 "spec": {"selector": {"app": name}, "ports": [{"port": port, "targetPort": port}]}})
    return kube.get("Service", ns, name)["spec"]["clusterIP"]


def _secret(kube, ns: str, name: str, data: dict[str, str]) -> None:
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
                 "stringData": data})


def _ready_pod(kube, ns: str, name: str, timeout: float = 180, logs=lambda: "") -> dict:
    def ready():
        pod = kube.get("Pod", ns, name) or {}
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        if statuses and "terminated" in (statuses[0].get("state") or {}):
            raise AssertionError(f"{name} exited: {statuses[0]['state']}\n{logs()}")
        return pod if statuses and statuses[0].get("ready") else None
    return wait_for(f"pod {name} ready", ready, timeout=timeout)


def _claim(kube, ns: str, name: str) -> None:
    kube.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": ns},
                 "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": node_harness.STORAGE_CLASS,
                          "resources": {"requests": {"storage": "1Gi"}}}})


def _logs(node, kubectl_bin, ns: str, pod: str) -> str:
    return subprocess.run([str(kubectl_bin), "--kubeconfig", str(node.kubeconfig), "-n", ns, "logs", pod],
                          capture_output=True, text=True, timeout=60, check=False).stdout


def _assert_restricted_at_runtime(node, pod: dict, uid: int) -> None:
    """The container's first process as the kernel sees it, found through containerd."""
    (cs,) = pod["status"]["containerStatuses"]
    cid = cs["containerID"].removeprefix("containerd://")
    tasks = subprocess.run([*node.ctr, "-n", "k8s.io", "tasks", "ls"], capture_output=True, text=True,
                           check=True).stdout
    (pid,) = [line.split()[1] for line in tasks.splitlines() if line.startswith(cid)]
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":\t" in line)
    assert status["Uid"].split() == [str(uid)] * 4 and status["Gid"].split()[0] == str(uid)
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1" and status["Seccomp"].strip() == "2"
    (root,) = [line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
               if line.split()[4] == "/"]
    assert "ro" in root[5].split(","), f"root filesystem mounted {root[5]}"


def test_the_node_s3_server_listens_only_on_the_node_address_and_loopback(node_s3):
    """tests/fixtures/node.py's SeaweedFS, which the restic pods write to: every port on the
    node address. SeaweedFS also opens the master, filer and S3 ports on localhost when
    bound to another address (hard-coded in its util.NewIpAndLocalListeners, no flag):
    loopback, the same ports, nothing on a wildcard address."""
    expected = {port for name, port in node_s3.ports.items() if name != "webdav"}

    def on_node_ip():
        socks = seaweedfs.listening(node_s3.proc.pid)
        return socks if {p for _, a, p in socks if a == node_harness.NODE_IP} >= expected else None

    socks = wait_for("every weed port on the node address", on_node_ip, timeout=15, interval=0.2)
    assert {p for _, a, p in socks if a == node_harness.NODE_IP} == expected, socks
    assert {a for _, a, _ in socks} <= {node_harness.NODE_IP, "127.0.0.1"}, socks
    assert {p for _, a, p in socks if a == "127.0.0.1"} <= expected, socks


def test_seaweedfs_image_serves_s3_from_a_restricted_pod(node_cluster, node_kube, node_namespace):
    import boto3
    from botocore.exceptions import ClientError

    kube, ns = node_kube, node_namespace
    key, secret = "vc" + secrets.token_hex(9), secrets.token_urlsafe(30)
    _secret(kube, ns, "s3-identity", {"s3.json": json.dumps(seaweedfs.s3_identity(key, secret))})
    args = ["-logtostderr", *seaweedfs.mini_args("$(POD_IP)", Path("/data"), Path("/etc/seaweedfs/s3.json"),
                                                 seaweedfs.POD_PORTS, bind="0.0.0.0", sockets=Path("/tmp"))]
    kube.create(_restricted_pod(
        ns, "seaweedfs", node_cluster.images["seaweedfs"], 1000, port=8333, args=args,
        env=[{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        mounts=[{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"},
                {"name": "identity", "mountPath": "/etc/seaweedfs", "readOnly": True}],
        volumes=[{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}},
                 {"name": "identity", "secret": {"secretName": "s3-identity"}}],
        probe={"httpGet": {"path": "/healthz", "port": 8333}, "periodSeconds": 1}))
    ip = _service(kube, ns, "seaweedfs", 8333)
    pod = _ready_pod(kube, ns, "seaweedfs")
    _assert_restricted_at_runtime(node_cluster, pod, 1000)

    s3 = boto3.client("s3", endpoint_url=f"http://{ip}:8333", region_name="us-east-1",
                      aws_access_key_id=key, aws_secret_access_key=secret)
    body = secrets.token_bytes(200_000)
    wait_for("CreateBucket through the Service", lambda: _try(lambda: s3.create_bucket(Bucket="backups")), 60)
    s3.put_object(Bucket="backups", Key="alice/config", Body=body)
    assert s3.get_object(Bucket="backups", Key="alice/config")["Body"].read() == body
    stranger = boto3.client("s3", endpoint_url=f"http://{ip}:8333", region_name="us-east-1",
                            aws_access_key_id="AKIASTRANGER0000", aws_secret_access_key="x" * 30)
    with pytest.raises(ClientError):
        stranger.get_object(Bucket="backups", Key="alice/config")


def _try(fn):
    try:
        fn()
        return True
    except Exception:  # noqa: BLE001 - not answering yet: the caller retries
        return False


def _pg_pod(node, ns: str) -> dict:
    return _restricted_pod(
        ns, "postgres", node.images["postgres"], 999, port=5432,
        env=[{"name": "POSTGRES_PASSWORD_FILE", "value": "/etc/postgres/password"},
             {"name": "POSTGRES_DB", "value": "authelia"}],
        mounts=[{"name": "data", "mountPath": "/var/lib/postgresql/data"},
                {"name": "run", "mountPath": "/var/run/postgresql"}, {"name": "tmp", "mountPath": "/tmp"},
                {"name": "password", "mountPath": "/etc/postgres", "readOnly": True}],
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "pg-data"}},
                 {"name": "run", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}},
                 {"name": "password", "secret": {"secretName": "pg", "defaultMode": 0o440}}],
        probe={"exec": {"command": ["pg_isready", "-h", "127.0.0.1", "-U", "postgres", "-d", "authelia"]},
               "periodSeconds": 1})


def test_postgres_image_initialises_its_volume_once_and_serves_sql_from_a_restricted_pod(
        node_cluster, node_kube, node_namespace, kubectl_bin):
    import asyncpg

    kube, ns = node_kube, node_namespace
    password = secrets.token_urlsafe(24)
    _secret(kube, ns, "pg", {"password": password})
    _claim(kube, ns, "pg-data")
    kube.create(_pg_pod(node_cluster, ns))
    ip = _service(kube, ns, "postgres", 5432)
    logs = lambda: _logs(node_cluster, kubectl_bin, ns, "postgres")
    pod = _ready_pod(kube, ns, "postgres", logs=logs)
    _assert_restricted_at_runtime(node_cluster, pod, 999)
    assert "postgres: initialised /var/lib/postgresql/data/pgdata" in logs()

    async def session(sql: str, *, password: str = password):
        conn = await asyncpg.connect(host=ip, port=5432, user="postgres", password=password, database="authelia",
                                     timeout=10)
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()

    # Ready in the pod is not yet routed through the ClusterIP (endpoints, then kube-proxy's rules)
    wait_for("SELECT 1 through the Service", lambda: _try(lambda: asyncio.run(session("SELECT 1"))), 60)
    assert [tuple(r) for r in asyncio.run(session("SELECT 1"))] == [(1,)]
    asyncio.run(session("CREATE TABLE kept (v text)"))
    asyncio.run(session("INSERT INTO kept VALUES ('across restarts')"))
    with pytest.raises(asyncpg.InvalidPasswordError):
        asyncio.run(session("SELECT 1", password="not-the-password"))

    # A new pod on the same volume finds the cluster: no second initdb, the row is there.
    kube.delete("Pod", ns, "postgres")
    wait_for("old postgres pod gone", lambda: kube.get("Pod", ns, "postgres") is None, timeout=120)
    kube.create(_pg_pod(node_cluster, ns))
    _ready_pod(kube, ns, "postgres", logs=logs)
    assert "initialised" not in logs()
    wait_for("the new pod through the Service", lambda: _try(lambda: asyncio.run(session("SELECT 1"))), 60)
    assert [tuple(r) for r in asyncio.run(session("SELECT v FROM kept"))] == [("across restarts",)]


def test_redis_image_serves_with_a_password_from_a_restricted_pod(node_cluster, node_kube, node_namespace):
    import redis

    kube, ns = node_kube, node_namespace
    password = secrets.token_urlsafe(24)
    _secret(kube, ns, "redis-conf", {"redis.conf": f"requirepass {password}\nbind * -::*\nport 6379\ndir /data\n"})
    kube.create(_restricted_pod(
        ns, "redis", node_cluster.images["redis"], 999, port=6379, args=["/etc/redis/redis.conf"],
        mounts=[{"name": "data", "mountPath": "/data"},
                {"name": "conf", "mountPath": "/etc/redis", "readOnly": True}],
        volumes=[{"name": "data", "emptyDir": {}}, {"name": "conf", "secret": {"secretName": "redis-conf"}}]))
    ip = _service(kube, ns, "redis", 6379)
    pod = _ready_pod(kube, ns, "redis")
    _assert_restricted_at_runtime(node_cluster, pod, 999)

    client = redis.Redis(host=ip, port=6379, password=password, socket_timeout=5)
    wait_for("PING through the Service", lambda: _try(client.ping), timeout=60)
    assert client.ping() is True
    client.set("session:alice", "2fa")
    assert client.get("session:alice") == b"2fa"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=ip, port=6379, socket_timeout=5).get("session:alice")
