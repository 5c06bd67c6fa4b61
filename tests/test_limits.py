from prefect.client.orchestration import get_client

from tasks.limits import desired_limits, ensure_concurrency_limits
from tasks.settings import Settings


def test_limits_follow_settings():
    s = Settings(kube_concurrency=8, backup_concurrency=3)
    assert desired_limits(s) == {"kube-api": 8, "helm": 4, "restic": 3, "vibecode-users-db": 4}


def test_limits_are_created_on_the_real_server_and_rerun_updates(prefect_server):
    ensure_concurrency_limits(Settings(kube_concurrency=6, backup_concurrency=2))
    ensure_concurrency_limits(Settings(kube_concurrency=12, backup_concurrency=2))  # rerun: update, not fail
    with get_client(sync_client=True) as client:
        assert client.read_concurrency_limit_by_tag("kube-api").concurrency_limit == 12
        assert client.read_concurrency_limit_by_tag("restic").concurrency_limit == 2
        client.delete_concurrency_limit_by_tag("kube-api")
        client.delete_concurrency_limit_by_tag("helm")
        client.delete_concurrency_limit_by_tag("restic")
        client.delete_concurrency_limit_by_tag("vibecode-users-db")
