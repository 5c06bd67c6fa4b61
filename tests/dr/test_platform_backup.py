"""The platform backup's password and its dumps, on the real S3 server, PostgreSQL and Prefect."""

from __future__ import annotations

import uuid

import pytest

from tasks.core.errors import PermanentError
from tasks.core.settings import get_settings
from tasks.dr import plan

pytestmark = pytest.mark.usefixtures("prefect_server")


def _repo():
    from tasks.dr.steps import open_platform_repo

    return open_platform_repo()[0]


def test_the_first_backup_generates_the_password_outside_the_cluster_and_says_so_once(
        backup_settings, monkeypatch):
    from prefect.blocks.system import Secret

    from tasks.dr.steps import ensure_platform_repository

    block = f"platform-pw-{uuid.uuid4().hex[:8]}"
    monkeypatch.delenv("VIBECODE_RECOVERY__PASSWORD", raising=False)
    monkeypatch.setenv("VIBECODE_RECOVERY__PASSWORD_BLOCK", block)
    get_settings.cache_clear()

    notice = ensure_platform_repository()
    password = Secret.load(block).get()
    assert notice and block in notice and "outside" in notice and password not in notice
    assert ensure_platform_repository() is None  # told once
    assert Secret.load(block).get() == password  # never replaced
    assert _repo().restic.exists()
    # the repository opens only with that password
    assert _repo().restic.with_password(password + "x").current_key() is None


def test_a_failed_pg_dump_leaves_no_truncated_dump_in_the_repository(backup_settings, postgres, kube, monkeypatch):
    from tasks.dr.steps import backup_item, ensure_platform_repository

    monkeypatch.setenv("VIBECODE_RECOVERY__PASSWORD", uuid.uuid4().hex)
    monkeypatch.setenv("VIBECODE_RECOVERY__AUTHELIA_DB_URL",
                       f"postgresql://prefect:{postgres.password}@127.0.0.1:{postgres.port}/no_such_database")
    get_settings.cache_clear()
    ensure_platform_repository()
    with pytest.raises(PermanentError, match="pg_dump failed") as err:
        backup_item.fn("authelia-db", "run1")
    assert postgres.password not in str(err.value)
    assert [s for s in _repo().restic.snapshots() if plan.item_tag("authelia-db") in s.tags] == []


def test_a_dump_is_streamed_and_restored_exactly_and_a_rerun_of_the_run_saves_nothing_twice(
        backup_settings, postgres, kube, monkeypatch):
    from tasks.cluster.localnode import prefectserver as localpg
    from tasks.dr.steps import backup_item, ensure_platform_repository, restore_database
    from tests.fixtures.recovery import db_url, psql

    src, dst = f"src_{uuid.uuid4().hex[:6]}", f"dst_{uuid.uuid4().hex[:6]}"
    for db in (src, dst):
        psql(postgres, "postgres", f"CREATE DATABASE {db}")
    psql(postgres, src, "CREATE TABLE t (id int PRIMARY KEY, v bytea); "
                        "INSERT INTO t SELECT g, decode(md5(g::text), 'hex') FROM generate_series(1, 5000) g")
    monkeypatch.setenv("VIBECODE_RECOVERY__PASSWORD", uuid.uuid4().hex)
    monkeypatch.setenv("VIBECODE_RECOVERY__AUTHELIA_DB_URL", db_url(postgres, src))
    get_settings.cache_clear()
    ensure_platform_repository()
    first = backup_item.fn("authelia-db", "run1")
    again = backup_item.fn("authelia-db", "run1")
    assert first.snapshot and again.snapshot == first.snapshot and again.detail == "saved earlier in this run"
    monkeypatch.setenv("VIBECODE_RECOVERY__AUTHELIA_DB_URL", db_url(postgres, dst))
    get_settings.cache_clear()
    source = plan.repository(None, backup_settings.backup.s3_endpoint, backup_settings.backup.s3_bucket)
    for _ in range(2):  # a rerun replaces, never duplicates
        assert restore_database.fn(source, first.snapshot, "authelia-db").outcome == "restored"
    query = "SELECT count(*), md5(string_agg(v::text, ',' ORDER BY id)) FROM t"
    assert psql(postgres, dst, query) == psql(postgres, src, query)
    assert localpg.PG_BIN.exists()
