"""A backup taken from a replica: stored all the same when the replica has lost its primary, but the run warns
(backup.stale_source) and the manifest, ``backups show`` and verify say where the data came from and how stale
it may be.  Real servers: a Redis replica and a PostgreSQL standby of primaries of their own, which the tests
stop."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from upkeeper.sandbox.postgres import PostgresCluster
from upkeeper.sandbox.redis import RedisServer

from .conftest import AgeKey, standby_backup_config


@pytest.fixture(scope="module")
def redis_pair(services_dir: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    primary = RedisServer(services_dir / "stale-redis-primary").start()
    replica = RedisServer(services_dir / "stale-redis-replica", replica_of=primary).start()
    yield primary, replica
    replica.stop()
    primary.stop()


@pytest.fixture(scope="module")
def pg_pair(services_dir: Path) -> Iterator[tuple[PostgresCluster, PostgresCluster]]:
    primary = PostgresCluster(services_dir / "stale-pg-primary").start()
    standby = primary.create_replica(services_dir / "stale-pg-standby")
    yield primary, standby
    standby.stop()
    primary.stop()


def _redis_config(make_config: Any, tmp_path: Path, server: RedisServer, age_key: AgeKey) -> Path:
    (tmp_path / "store").mkdir(exist_ok=True)
    path: Path = make_config({
        "targets": {"cache": server.target()},
        "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store"), "fsync": False}},
        "backup": {"encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}},
        "jobs": {"cache-backup": {"task": "redis.backup", "target": "cache", "options": {"method": "auto"}}},
    })
    return path


def _stale(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in run["findings"] if f["check"] == "backup.stale_source"]



def _write_and_wait_for_receipt(primary: Any, standby: Any, table: str, db: str) -> None:
    """A new table on the primary, and the standby has received its WAL (replayed or not)."""
    primary.execute(f"CREATE TABLE {table} (x int)", dbname=db)
    lsn = primary.execute("SELECT pg_current_wal_lsn()")[0][0]
    deadline = time.monotonic() + 10
    while not standby.execute("SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn", params=(lsn,))[0][0]:
        assert time.monotonic() < deadline, "the standby did not receive the WAL"
        time.sleep(0.05)

def test_redis_acl_user_without_info_backs_up_and_says_what_to_grant(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey,
        redis_pair: tuple[RedisServer, RedisServer]) -> None:
    """An ACL user that may download the RDB but not run INFO (or only some of its sections): the backup is
    stored, its role is recorded as unknown (not "a primary"), and the run warns backup.source_unchecked with the
    ACL rule to add.  (Runs before the test that stops this pair's primary.)"""
    primary, replica = redis_pair
    primary.client().set("k", "v")
    replica.wait_linked()
    admin = replica.client()
    deadline = time.monotonic() + 10
    while admin.get("k") is None:  # linked is not yet replicated: the RDB would hold 0 keys (seen once)
        assert time.monotonic() < deadline, "the replica never received k"
        time.sleep(0.02)
    sync = ["+sync", "+psync", "+replconf", "+ping"]
    try:
        for user, extra in (("noinfo", []), ("somesections", ["+info|server", "+info|keyspace"])):
            admin.acl_setuser(user, enabled=True, passwords=["+pw"], keys=["*"], commands=sync + extra)
            cfg = _redis_config(make_config, tmp_path, replica, age_key)
            data = yaml.safe_load(cfg.read_text())
            data["targets"]["cache"].update(username=user, password="pw")
            data["jobs"]["cache-backup"]["options"]["method"] = "network"
            cfg = make_config(data, f"{user}.yaml")
            r = cli(["--config", cfg, "run", "cache-backup", "--json"])
            assert r.code == 0, r.output
            run = r.json()[0]
            assert run["status"] == "warn" and not _stale(run), run
            [f] = [f for f in run["findings"] if f["check"] == "backup.source_unchecked"]
            assert f"ACL SETUSER {user} +info" in f["remediation"], f
            assert "INFO replication" in f["message"] and "could not check" in f["message"], f
            bid = run["artifacts"][0]["id"]
            [mpath] = [p for p in (tmp_path / "store").rglob("manifest.json") if bid in str(p)]
            m = json.loads(mpath.read_text())
            src = m["redis"]["source"]
            assert src["role"] == "unknown" and f"ACL SETUSER {user} +info" in src["grant"], src
            assert "link" not in src and "primary" not in src, src
            if user == "noinfo":
                assert m["redis"]["keys"] is None and m["redis"]["redis_version"] is None, m["redis"]
            else:  # the sections it may read are recorded
                assert m["redis"]["keys"] == {"db0": 1}, m["redis"]
                assert m["redis"]["redis_version"], m["redis"]
            assert m["redis"]["rdb_keys"] == 1, m["redis"]
    finally:
        admin.acl_deluser("noinfo", "somesections")


def test_redis_backup_of_a_replica_that_lost_its_primary_warns_and_records_it(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey,
        redis_pair: tuple[RedisServer, RedisServer]) -> None:
    """Linked, the replica's backup is ok and its manifest says 'replica of P, link up'; with the primary stopped,
    BGSAVE on the replica still stores its (stale) data, the run is a warning naming the replica, its primary and
    how long the link has been down, and the manifest, 'backups show' and verify record it."""
    primary, replica = redis_pair
    primary.client().set("k", "v")
    replica.wait_linked()
    cfg = _redis_config(make_config, tmp_path, replica, age_key)
    r = cli(["--config", cfg, "run", "cache-backup", "--json"])
    assert r.code == 0, r.output
    run = r.json()[0]
    assert run["status"] == "ok" and not _stale(run), run
    up = cli(["--config", cfg, "backups", "show", run["artifacts"][0]["id"], "--json"]).json()
    assert up["manifest"]["redis"]["source"]["link"] == "up", up["manifest"]["redis"]
    assert up["manifest"]["redis"]["source"]["primary"] == f"127.0.0.1:{primary.port}"

    primary.stop()  # for the rest of the module (this pair's only test): the fixture's teardown copes
    deadline = time.monotonic() + 10
    while replica.client().info("replication")["master_link_status"] == "up":
        assert time.monotonic() < deadline, "the replica did not notice its primary stopped"
        time.sleep(0.05)
    r = cli(["--config", cfg, "run", "cache-backup", "--json"])
    assert r.code == 0, r.output  # stored: stale data beats none when the primary is gone
    run = r.json()[0]
    assert run["status"] == "warn", run
    [f] = _stale(run)
    assert f"127.0.0.1:{primary.port}" in f["message"] and str(replica.port) in f["subject"], f
    assert "NOT connected" in f["message"] and "lost its primary" in f["message"], f
    assert f["data"]["link"] == "down" and f["data"]["link_down_seconds"] >= 0, f
    bid = run["artifacts"][0]["id"]
    m = cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["manifest"]["redis"]
    assert m["source"]["role"] == "replica" and m["source"]["link"] == "down", m
    shown = cli(["--config", cfg, "backups", "show", bid]).output
    assert f"replica of 127.0.0.1:{primary.port}, NOT connected" in " ".join(shown.split()), shown
    v = cli(["--config", cfg, "backups", "verify", bid, "--no-restore", "--json"])
    assert v.code == 0, v.output
    assert any("NOT connected" in s and "STALE" in s for s in v.json()[0]["steps"]), v.output


def _pg_backup(cli: Any, cfg: Path) -> dict[str, Any]:
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    run: dict[str, Any] = r.json()[0]
    return run


def _manifest_source(tmp_path: Path, run: dict[str, Any]) -> dict[str, Any]:
    bid = run["artifacts"][0]["id"]
    [mpath] = [p for p in (tmp_path / "store1").rglob("manifest.json") if bid in str(p)]
    src: dict[str, Any] = json.loads(mpath.read_text())["postgres"]["source"]
    return src


def test_postgres_standby_lag_is_judged_by_unreplayed_wal_not_by_the_last_commits_age(
        cli: Any, make_config: Any, tmp_path: Path, backup_config: Any, pg_pair: tuple[PostgresCluster,
                                                                                      PostgresCluster]) -> None:
    """max_replica_lag 0: a standby streaming from an idle primary has replayed all it received (its last commit
    ages, yet it holds all there is) — no warning; with replay paused while the primary writes, WAL received is
    not replayed — a warning with the lag, and the backup is stored."""
    primary, standby = pg_pair
    cfg = standby_backup_config(primary, standby, "lagdb", backup_config, make_config)
    data = yaml.safe_load(cfg.read_text())
    data["jobs"]["db-backup"]["options"]["max_replica_lag"] = "0s"
    cfg = make_config(data, "lag.yaml")
    run = _pg_backup(cli, cfg)
    assert run["status"] == "ok" and not _stale(run), run
    src = _manifest_source(tmp_path, run)
    assert src["role"] == "replica" and src["link"] == "up" and src["link_status"] == "streaming", src
    assert src["lag_seconds"] == 0 and src["primary"] == f"127.0.0.1:{primary.port}", src

    standby.execute("SELECT pg_wal_replay_pause()")
    try:
        _write_and_wait_for_receipt(primary, standby, "lag_marker", "lagdb")
        run = _pg_backup(cli, cfg)
    finally:
        standby.execute("SELECT pg_wal_replay_resume()")
    assert run["status"] == "warn", run
    [f] = _stale(run)
    assert "behind" in f["message"] and "max_replica_lag" in f["message"], f
    assert f["data"]["lag_bytes"] > 0 and f["value"] > 0, f


def test_postgres_backup_of_a_standby_whose_primary_is_down_warns_and_records_it(
        cli: Any, make_config: Any, tmp_path: Path, backup_config: Any, pg_pair: tuple[PostgresCluster,
                                                                                      PostgresCluster]) -> None:
    """The primary stopped: the standby has replayed all it received (receive = replay, the usual lag query says
    0) but has no WAL receiver.  The backup is stored, the run is a warning naming the standby and its primary,
    and the manifest records the link down."""
    primary, standby = pg_pair
    cfg = standby_backup_config(primary, standby, "downdb", backup_config, make_config)
    primary.stop()
    try:
        deadline = time.monotonic() + 10
        while standby.execute("SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'")[0][0]:
            assert time.monotonic() < deadline, "the standby's WAL receiver did not stop"
            time.sleep(0.05)
        run = _pg_backup(cli, cfg)
    finally:
        primary.start()
    assert run["status"] == "warn", run
    [f] = _stale(run)
    assert f"127.0.0.1:{primary.port}" in f["message"] and str(standby.port) in f["subject"], f
    assert "NOT connected" in f["message"] and "lost its primary" in f["message"], f
    src = _manifest_source(tmp_path, run)
    assert src["role"] == "replica" and src["link"] == "down" and "lag_seconds" not in src, src
    assert src["last_replay_seconds"] >= 0, src


def test_postgres_role_without_pg_read_all_stats_does_not_claim_the_link_and_says_what_to_grant(
        cli: Any, make_config: Any, tmp_path: Path, backup_config: Any, pg_pair: tuple[PostgresCluster,
                                                                                      PostgresCluster]) -> None:
    """A backup role with pg_read_all_data only sees the standby's WAL receiver's pid, not its status: the backup
    is stored, the manifest records the link as unknown (not "up"), and the run warns backup.source_unchecked
    with the GRANT to run."""
    primary, standby = pg_pair
    primary.execute("CREATE ROLE plain_backup LOGIN IN ROLE pg_read_all_data")
    try:
        cfg = standby_backup_config(primary, standby, "plaindb", backup_config, make_config)
        data = yaml.safe_load(cfg.read_text())
        data["targets"]["db"]["user"] = "plain_backup"
        cfg = make_config(data, "plain.yaml")
        run = _pg_backup(cli, cfg)
        assert run["status"] == "warn" and not _stale(run), run
        [f] = [f for f in run["findings"] if f["check"] == "backup.source_unchecked"]
        assert "GRANT pg_read_all_stats TO plain_backup" in f["remediation"], f
        assert "pg_read_all_stats" in f["message"] and "could not check" in f["message"], f
        src = _manifest_source(tmp_path, run)
        assert src["role"] == "replica" and src["link"] == "unknown", src
        assert "link_status" not in src and "pg_read_all_stats" in src["unchecked"], src
        assert src["lag_seconds"] == 0, src  # the lag is still judged, by the WAL positions
    finally:
        primary.execute("DROP ROLE plain_backup")


def test_postgres_paused_standby_that_replayed_no_commit_yet_is_judged_as_lagging(
        cli: Any, make_config: Any, services_dir: Path, backup_config: Any, pg_pair: tuple[PostgresCluster,
                                                                                      PostgresCluster]) -> None:
    """A standby that has replayed no commit since it started (pg_last_xact_replay_timestamp() NULL), its replay
    paused while the primary writes: its lag is at least its uptime — a warning once that exceeds
    max_replica_lag, not silence."""
    primary, _ = pg_pair
    cfg = standby_backup_config(primary, _, "pausedb", backup_config, make_config)
    fresh = primary.create_replica(services_dir / "stale-pg-fresh-standby")
    try:
        assert fresh.execute("SELECT pg_last_xact_replay_timestamp()")[0][0] is None
        fresh.execute("SELECT pg_wal_replay_pause()")
        _write_and_wait_for_receipt(primary, fresh, "paused_marker", "pausedb")
        time.sleep(1.1)
        data = yaml.safe_load(cfg.read_text())
        data["targets"]["db"] = fresh.target("pausedb")
        data["jobs"]["db-backup"]["options"]["max_replica_lag"] = "1s"
        run = _pg_backup(cli, make_config(data, "paused.yaml"))
        assert fresh.execute("SELECT pg_last_xact_replay_timestamp()")[0][0] is None  # still none replayed
    finally:
        fresh.stop()
    assert run["status"] == "warn", run
    [f] = _stale(run)
    assert "behind" in f["message"] and f["value"] > 1 and f["data"]["lag_bytes"] > 0, f
