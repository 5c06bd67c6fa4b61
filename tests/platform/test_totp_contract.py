"""The TOTP import Job and the platform chart agree: the Job runs Authelia's CLI on the chart's
secret-free configuration, so it must get the storage secrets as the Deployment does (the same
*_FILE variables, files of the same Secret keys), and the chart's NetworkPolicy must select it."""

from __future__ import annotations

import pytest
import yaml

from tasks.core.settings import Settings
from tasks.people import totp
from tests.fixtures.pss import restricted_violations
from tests.fixtures.render import PLATFORM_CHART, helm_runner, render


@pytest.fixture(scope="module")
def chart(helm_bin, tmp_path_factory):
    return render(helm_runner(helm_bin, tmp_path_factory.mktemp("helm-home")), PLATFORM_CHART)


def _files(container, pod):
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    out = {}
    for v in pod["volumes"]:
        for item in (v.get("secret") or {}).get("items") or []:
            if v["name"] in mounts:
                out[f"{mounts[v['name']]}/{item['path']}"] = (v["secret"]["secretName"], item["key"])
    return out


def test_the_job_reads_the_storage_secrets_like_the_authelia_deployment(chart):
    s = Settings()
    job = totp.provision_job("alice", s.identity, s.platform_namespace)
    pod = job["spec"]["template"]["spec"]
    [c] = pod["containers"]
    dep = next(d for d in chart if d["kind"] == "Deployment" and d["metadata"]["name"] == "authelia")
    dpod = dep["spec"]["template"]["spec"]
    [dc] = dpod["containers"]
    job_env = {e["name"]: _files(c, pod)[e["value"]] for e in c["env"]}
    dep_env = {e["name"]: _files(dc, dpod)[e["value"]] for e in dc["env"]}
    assert job_env == {k: dep_env[k] for k in ("AUTHELIA_STORAGE_ENCRYPTION_KEY_FILE",
                                               "AUTHELIA_STORAGE_POSTGRES_PASSWORD_FILE")}
    assert all("valueFrom" not in e for e in c["env"])  # file paths, never values
    # The same configuration Secret, at the path the CLI is given.
    config = next(v for v in pod["volumes"] if v["name"] == "config")["secret"]["secretName"]
    assert config == next(v for v in dpod["volumes"] if v["name"] == "config")["secret"]["secretName"]
    assert restricted_violations(pod) == []
    assert pod["securityContext"]["fsGroup"] == totp.RUN_AS  # 0440 files readable by its group


def test_the_charts_totp_policy_selects_the_job(chart):
    s = Settings()
    job = totp.provision_job("alice", s.identity, s.platform_namespace)
    labels = job["spec"]["template"]["metadata"]["labels"]
    pol = next(d for d in chart if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "totp-provision")
    assert pol["metadata"]["namespace"] == job["metadata"]["namespace"]
    assert pol["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    store = next(d for d in chart if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "authelia-postgresql")
    assert any(p.get("podSelector", {}).get("matchLabels", {}).items() <= labels.items() and "namespaceSelector" not in p
               for p in store["spec"]["ingress"][0]["from"] if "podSelector" in p)
    assert yaml.safe_dump(job)  # serialisable as a manifest
