from prefect.client.orchestration import get_client

from tasks.cluster.limits import desired_limits, ensure_concurrency_limits
from tasks.core.settings import Settings


def test_limits_follow_settings():
    s = Settings(kube_concurrency=8, backup_concurrency=3)
    assert desired_limits(s) == {"kube-api": 8, "helm": 4, "restic": 3, "vibecode-users-db": 4}


def test_limits_are_created_on_the_real_server_and_rerun_updates(prefect_server):
    try:
        ensure_concurrency_limits(Settings(kube_concurrency=6, backup_concurrency=2))
        ensure_concurrency_limits(Settings(kube_concurrency=12, backup_concurrency=2))  # rerun: update, not fail
        with get_client(sync_client=True) as client:
            assert client.read_concurrency_limit_by_tag("kube-api").concurrency_limit == 12
            assert client.read_concurrency_limit_by_tag("restic").concurrency_limit == 2
    finally:
        ensure_concurrency_limits(Settings())  # the session's limits, as bootstrap sets them


def test_the_test_server_runs_under_the_limits_bootstrap_creates(prefect_server, prefect_limits):
    assert prefect_limits == desired_limits(Settings())
    with get_client(sync_client=True) as client:
        on_server = {tag: client.read_concurrency_limit_by_tag(tag).concurrency_limit for tag in prefect_limits}
    assert on_server == prefect_limits
