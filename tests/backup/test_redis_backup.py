"""redis.backup against a real Redis: network (redis-cli --rdb) and BGSAVE methods, checked, verified, restored."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from upkeeper.sandbox.redis import RedisServer

from .conftest import AgeKey, terminate_and_wait


def _config(make_config: Any, tmp_path: Path, server: RedisServer, age_key: AgeKey, method: str) -> Path:
    return make_config({
        "targets": {"cache": server.target()},
        "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store"), "fsync": False}},
        "backup": {"encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}},
        "jobs": {"cache-backup": {"task": "redis.backup", "target": "cache", "options": {"method": method}},
                 "cache-verify": {"task": "backup.verify", "target": "cache"}},
    })


def _backed_up(cli: Any, make_config: Any, tmp_path: Path, server: RedisServer, age_key: AgeKey, *,
               keys: int, long_values: bool = False) -> tuple[Path, str]:
    """``keys`` keys in ``server`` (values of ~25 bytes with ``long_values``, else "v"), backed up over the
    network: the config and the backup's id."""
    c = server.client()
    for i in range(keys):
        c.set(f"k:{i}", f"value-{i}" * 3 if long_values else "v")
    cfg = _config(make_config, tmp_path, server, age_key, "network")
    r = cli(["--config", cfg, "run", "cache-backup", "--json"])
    assert r.code == 0, r.output
    return cfg, r.json()[0]["artifacts"][0]["id"]


@pytest.mark.parametrize("method", ["network", "bgsave"])
def test_redis_backup_verify_restore(cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer,
                                     age_key: AgeKey, method: str) -> None:
    c = redis_clean.client()
    for i in range(500):
        c.set(f"session:{i}", f"user-{i}" * 5)
    c.hset("cart:1", mapping={"sku": "A-1", "qty": "2"})
    cfg = _config(make_config, tmp_path, redis_clean, age_key, method)
    r = cli(["--config", cfg, "run", "cache-backup", "--json"])
    assert r.code == 0, r.output
    run = r.json()[0]
    assert run["status"] == "ok", run
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    m = json.loads(mpath.read_text())
    assert m["kind"] == "redis" and m["redis"]["method"] == method and m["redis"]["keys"]["db0"] == 501
    assert m["redis"]["redis_version"].startswith("7")
    r = cli(["--config", cfg, "run", "cache-verify", "--json"])
    assert r.code == 0, r.output
    assert any("redis-check-rdb" in s for s in r.json()[0]["artifacts"][0]["steps"])
    out = tmp_path / "restored.rdb"
    bid = run["artifacts"][0]["id"]
    assert cli(["--config", cfg, "backups", "restore", bid, "--to", out]).code == 0
    check = subprocess.run(["redis-check-rdb", str(out)], capture_output=True, text=True)
    assert "RDB looks OK" in check.stdout
    # the restored RDB really holds the keys: load it into a fresh server
    srv = RedisServer(tmp_path / "r2")
    srv.base.mkdir(parents=True)
    (srv.base / "dump.rdb").write_bytes(out.read_bytes())
    srv.start()
    try:
        assert srv.client().dbsize() == 501 and srv.client().hget("cart:1", "qty") == b"2"
    finally:
        srv.stop()


def test_redis_default_retention_is_a_week_of_dailies() -> None:
    from upkeeper.tasks.backup.redis import RedisBackupOptions

    r = RedisBackupOptions().retention
    assert (r.keep_daily, r.keep_weekly, r.keep_monthly) == (7, 0, 0)


def test_restore_over_an_existing_file_keeps_it_when_the_object_is_corrupt(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey) -> None:
    """--to FILE --force replaces FILE only with a checked RDB: a corrupt object leaves the old file whole."""
    redis_clean.client().set("k", "v")
    cfg = _config(make_config, tmp_path, redis_clean, age_key, "network")
    r = cli(["--config", cfg, "run", "cache-backup", "--json"])
    assert r.code == 0, r.output
    bid = r.json()[0]["artifacts"][0]["id"]
    [obj] = [p for p in (tmp_path / "store").rglob("*.age")]
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0xFF
    obj.write_bytes(bytes(data))
    live = tmp_path / "redis-dir" / "dump.rdb"
    live.parent.mkdir()
    live.write_bytes(b"REDIS0011 the server's current snapshot")
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", live, "--force", "--yes"])
    assert r.code != 0 and "SHA-256" in r.output, r.output
    assert live.read_bytes() == b"REDIS0011 the server's current snapshot"
    assert sorted(p.name for p in live.parent.iterdir()) == ["dump.rdb"]  # no partial file left beside it


def test_a_restore_killed_outright_leaves_no_plaintext_rdb_after_the_next_restore_there(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey) -> None:
    """kill -9 of a Redis restore while redis-check-rdb reads the fetched RDB (a whole plaintext copy of the
    backup, beside --to, in Redis' dir): the next restore there removes it, as a files restore does its killed
    predecessor's staging directory.  (Every killed restore left one there for good: a plaintext copy of the
    data, as large as the RDB, on the disk Redis saves to.)"""
    cfg, bid = _backed_up(cli, make_config, tmp_path, redis_clean, age_key, keys=40)
    d = tmp_path / "redis-dir"
    d.mkdir()
    mark = tmp_path / "mark"
    p = subprocess.Popen([sys.executable, "-c", "from upkeeper.cli.main import main; main()", "--config", str(cfg),
                          "backups", "restore", bid, "--to", str(d / "dump.rdb")],
                         env={**os.environ, "UPKEEPER_FAULT_PAUSE": "restore-rdb-fetched:60",
                              "UPKEEPER_FAULT_MARK": str(mark)},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(600):
            if mark.exists() or p.poll() is not None:
                break
            time.sleep(0.05)
        assert mark.exists(), "the restore never fetched the RDB"
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert list(d.iterdir()) != [] and not (d / "dump.rdb").exists()  # the fetched RDB, not yet in place
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", d / "dump.rdb"])
    assert r.code == 0, r.output
    assert sorted(x.name for x in d.iterdir()) == ["dump.rdb"], r.output
    check = subprocess.run(["redis-check-rdb", str(d / "dump.rdb")], capture_output=True, text=True)
    assert "RDB looks OK" in check.stdout


def _run_direct(cfg: Path, method: str) -> Any:
    """The task in this process (so the test can point it at another RDB file)."""
    from upkeeper.config.loader import load_config
    from upkeeper.core.task import TaskContext
    from upkeeper.tasks.backup.redis import RedisBackup, RedisBackupOptions

    config = load_config(cfg)
    ctx = TaskContext(job="cache-backup", task="redis.backup", target_name="cache",
                      target=config.targets["cache"], config=config)
    return RedisBackup().run(ctx, RedisBackupOptions(method=method))  # type: ignore[arg-type]


@pytest.mark.parametrize("fresh_mtime", [False, True])
def test_bgsave_refuses_an_rdb_file_that_is_not_this_servers_save(
        make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey,
        monkeypatch: pytest.MonkeyPatch, fresh_mtime: bool) -> None:
    """CONFIG GET dir/dbfilename names a file on this host that is another server's (a container's port on
    127.0.0.1) or stale: auto falls back to the network download, bgsave fails; neither stores that file.
    With fresh_mtime the other file even looks just written: its key count (1 against 1000) gives it away."""
    import os
    import time

    from upkeeper.tasks.backup.redis import RedisBackup

    other = RedisServer(tmp_path / "other")
    other.base.mkdir(parents=True)
    other.start()
    try:
        other.client().set("not-mine", "1")
        other.client().save()
    finally:
        other.stop()
    stale = other.base / "dump.rdb"
    when = time.time() + 30 if fresh_mtime else time.time() - 3600
    os.utime(stale, (when, when))
    monkeypatch.setattr(RedisBackup, "_local_rdb", staticmethod(lambda client, target: stale))
    c = redis_clean.client()
    for i in range(1000):
        c.set(f"k:{i}", "v")
    cfg = _config(make_config, tmp_path, redis_clean, age_key, "auto")

    res = _run_direct(cfg, "bgsave")
    assert res.final_status.value == "fail", res
    assert "not this server's fresh BGSAVE" in json.dumps(res.to_dict())
    assert not list((tmp_path / "store").rglob("manifest.json"))

    res = _run_direct(cfg, "auto")
    assert res.final_status.value == "ok", res.to_dict()
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    m = json.loads(mpath.read_text())
    assert m["redis"]["method"] == "network" and m["redis"]["rdb_size"] > stale.stat().st_size


def test_bgsave_waits_out_a_replication_sync_and_saves_again(make_config: Any, tmp_path: Path,
                                                              redis_clean: RedisServer, age_key: AgeKey) -> None:
    """BGSAVE during a diskless replication sync (a save to a socket, which never raises rdb_saves) is
    answered 'already in progress': the task waits for that save to end and issues BGSAVE again, instead of
    waiting the whole bgsave_timeout for a save that will never be counted."""
    import socket
    import threading
    import time

    c = redis_clean.client()
    for i in range(200):
        c.set(f"k:{i}", "v")
    old = {k: c.config_get(k)[k] for k in ("repl-diskless-sync", "repl-diskless-sync-delay", "rdb-key-save-delay")}
    sock = socket.create_connection(("127.0.0.1", redis_clean.port))
    try:
        c.config_set("repl-diskless-sync", "yes")
        c.config_set("repl-diskless-sync-delay", "0")
        c.config_set("rdb-key-save-delay", "10000")  # 200 keys x 10 ms: the sync's child runs ~2 s
        sock.sendall(b"SYNC\r\n")  # a replica's full sync, diskless: the RDB goes to this socket
        deadline = time.monotonic() + 10
        while not c.info("persistence")["rdb_bgsave_in_progress"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        c.config_set("rdb-key-save-delay", "0")  # our own BGSAVE (a new child) is quick
        threading.Timer(2.5, sock.close).start()  # the replica goes away if the sync were still running
        cfg = make_config({
            "targets": {"cache": redis_clean.target()},
            "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store"), "fsync": False}},
            "backup": {"encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}},
            "jobs": {"cache-backup": {"task": "redis.backup", "target": "cache",
                                      "options": {"method": "bgsave", "bgsave_timeout": 8}}},
        })
        from upkeeper.config.loader import load_config
        from upkeeper.core.task import TaskContext
        from upkeeper.tasks.backup.redis import RedisBackup, RedisBackupOptions

        config = load_config(cfg)
        ctx = TaskContext(job="cache-backup", task="redis.backup", target_name="cache",
                          target=config.targets["cache"], config=config)
        t0 = time.monotonic()
        res = RedisBackup().run(ctx, RedisBackupOptions(method="bgsave", bgsave_timeout=8))
        assert res.final_status.value == "ok", res.to_dict()
        assert time.monotonic() - t0 < 7
        [mpath] = list((tmp_path / "store").rglob("manifest.json"))
        assert json.loads(mpath.read_text())["redis"]["method"] == "bgsave"
    finally:
        sock.close()
        for k, v in old.items():
            c.config_set(k, v)


@pytest.mark.parametrize("how", ["renamed", "acl"])
def test_auto_downloads_over_the_network_when_bgsave_is_refused(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey, how: str) -> None:
    """A local server whose BGSAVE is disabled (rename-command BGSAVE "") or not granted to the ACL user (a
    backup user with only +sync +psync +replconf +info +config|get): method auto takes the network download
    instead of failing; method bgsave fails naming the refused command and what to grant."""
    srv = RedisServer(tmp_path / "srv", extra_args=["--rename-command", "BGSAVE", ""] if how == "renamed" else [])
    srv.base.mkdir(parents=True)
    srv.start()
    try:
        c = srv.client()
        for i in range(50):
            c.set(f"k:{i}", "v")
        target = srv.target()
        if how == "acl":
            c.acl_setuser("backup", enabled=True, passwords=["+bkpw"], keys=["*"],
                          commands=["+info", "+config|get", "+sync", "+psync", "+replconf", "+ping"])
            target.update(username="backup", password="bkpw")
        cfg = make_config({
            "targets": {"cache": target},
            "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store"), "fsync": False}},
            "backup": {"encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}},
            "jobs": {"auto": {"task": "redis.backup", "target": "cache", "options": {"method": "auto"}},
                     "bgsave": {"task": "redis.backup", "target": "cache", "options": {"method": "bgsave"}}},
        })
        r = cli(["--config", cfg, "run", "bgsave", "--json"])
        run = r.json()[0]
        assert run["status"] == "fail", run
        [f] = run["findings"]
        assert "refuses" in f["message"] and "BGSAVE" in f["message"].upper(), f
        assert "method: network" in f["remediation"], f
        r = cli(["--config", cfg, "run", "auto", "--json"])
        run = r.json()[0]
        assert run["status"] == "ok", run
        [mpath] = list((tmp_path / "store").rglob("manifest.json"))
        m = json.loads(mpath.read_text())
        assert m["redis"]["method"] == "network" and m["redis"]["keys"]["db0"] == 50
    finally:
        srv.stop()


def _rewrite_rdb(cli: Any, cfg: Path, store: Path, age_key: AgeKey, edit: Any, **details: Any) -> None:
    """Replace the stored RDB of the one backup in ``store`` by ``edit(rdb)``, as if it had been written so
    (object and manifest agree; ``details`` go into the manifest's redis section)."""
    import hashlib

    from .conftest import rewrite_manifest

    [obj] = list(store.rglob("dump.rdb.zst.age"))
    def run(argv: list[str], data: bytes | None = None) -> bytes:
        return subprocess.run(argv, input=data, check=True, capture_output=True).stdout

    raw = edit(run(["zstd", "-dc"], run(["age", "-d", "-i", str(age_key.identity), str(obj)])))
    enc = run(["age", "-r", age_key.recipient], run(["zstd", "-qc"], raw))
    obj.write_bytes(enc)
    mpath = obj.parent / "manifest.json"
    m = json.loads(mpath.read_text())
    [rec] = m["objects"]
    rec.update(size=len(enc), sha256=hashlib.sha256(enc).hexdigest(), raw_size=len(raw))
    m["redis"].update(details)
    rewrite_manifest(cli, cfg, mpath, m)


def test_verify_of_an_rdb_newer_than_redis_check_rdb_is_not_checked_rather_than_failed(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey) -> None:
    """A backup of a newer Redis (RDB format 11, from Redis 7.2) verified on a host whose redis-check-rdb is
    older: that is this host's setup, named with both versions — the backup is not marked verify-failed."""
    redis_clean.client().set("k", "v")
    cfg = _config(make_config, tmp_path, redis_clean, age_key, "network")
    r = cli(["--config", cfg, "run", "cache-backup", "--json"])
    assert r.code == 0, r.output
    bid = r.json()[0]["artifacts"][0]["id"]
    _rewrite_rdb(cli, cfg, tmp_path / "store", age_key, lambda rdb: b"REDIS0011" + rdb[9:], redis_version="7.2.4")
    r = cli(["--config", cfg, "run", "cache-verify", "--json"])
    run = r.json()[0]
    assert run["status"] != "ok", run
    [f] = run["findings"]
    assert f["check"] == "backup.verify_not_run", f
    assert "cannot read RDB format version 11" in f["message"] and "Redis 7.2.4" in f["message"], f
    assert "redis-check-rdb 7." in f["message"], f
    [row] = cli(["--config", cfg, "backups", "list", "--json"]).json()
    assert row["id"] == bid and row["status"] == "complete", row


def test_a_damaged_rdb_is_named_by_its_error_not_by_redis_check_rdbs_counters(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey) -> None:
    """An RDB that redis-check-rdb rejects (here: cut short, as stored by an older upkeeper) fails verification
    with redis-check-rdb's error ("Unexpected EOF ..."), not its closing counters ("[info] 0 expires")."""
    cfg, _ = _backed_up(cli, make_config, tmp_path, redis_clean, age_key, keys=300, long_values=True)
    _rewrite_rdb(cli, cfg, tmp_path / "store", age_key, lambda rdb: rdb[: len(rdb) // 2])
    run = cli(["--config", cfg, "run", "cache-verify", "--json"]).json()[0]
    [f] = run["findings"]
    assert f["check"] == "backup.verify_failed", f
    assert "Unexpected EOF" in f["message"] and "[info]" not in f["message"], f
    [row] = cli(["--config", cfg, "backups", "list", "--json"]).json()
    assert row["status"] == "verify-failed", row


def test_a_redis_check_rdb_killed_from_outside_is_no_verdict_on_the_rdb(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-check-rdb killed while it reads the RDB (the OOM killer on a big dataset; here a wrapper of the real
    tool, SIGKILLed as it starts) says nothing of the file: verify was 'FAILED: redis-check-rdb rejects the
    RDB: no output' and marked a good backup verify-failed, and a backup run said the same of its snapshot.  The
    verification is not checked (the backup keeps its status), and both name the kill."""
    cfg, bid = _backed_up(cli, make_config, tmp_path, redis_clean, age_key, keys=20)
    real = shutil.which("redis-check-rdb")
    assert real
    bin_dir = tmp_path / "faultbin"
    bin_dir.mkdir()
    (bin_dir / "redis-check-rdb").write_text(f'#!/bin/sh\ncase "$1" in --version) exec "{real}" "$@";; esac\n'
                                              'kill -9 $$\n')
    (bin_dir / "redis-check-rdb").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    run = cli(["--config", cfg, "run", "cache-verify", "--json"]).json()[0]
    [f] = run["findings"]
    assert f["check"] == "backup.verify_not_run", f
    assert "redis-check-rdb was killed by SIGKILL" in f["message"] and "rejects" not in f["message"], f
    [row] = cli(["--config", cfg, "backups", "list", "--json"]).json()
    assert row["id"] == bid and row["status"] == "complete", row
    r = cli(["--config", cfg, "run", "cache-backup", "--json"])
    assert r.code == 1, r.output
    summary = r.json()[0]["summary"]
    assert "redis-check-rdb was killed by SIGKILL while it read the snapshot" in summary, summary
    assert len(cli(["--config", cfg, "backups", "list", "--json"]).json()) == 1  # nothing stored


def test_check_rdb_names_both_versions_when_the_rdb_is_newer_than_redis_check_rdb(
        tmp_path: Path, redis_clean: RedisServer) -> None:
    """What redis.backup runs on each snapshot: a format this redis-check-rdb cannot read is a SetupError naming
    the server's Redis and this host's redis-check-rdb, not a damaged snapshot."""
    from upkeeper.backup.rdb import check_rdb
    from upkeeper.errors import SetupError

    c = redis_clean.client()
    c.set("k", "v")
    c.save()
    rdb = (Path(c.config_get("dir")["dir"]) / "dump.rdb").read_bytes()
    newer = tmp_path / "newer.rdb"
    newer.write_bytes(b"REDIS0012" + rdb[9:])
    with pytest.raises(SetupError) as exc:
        check_rdb(str(newer), "the snapshot", "7.4.1")
    assert "redis-check-rdb 7." in exc.value.message and "RDB format version 12" in exc.value.message
    assert "Redis 7.4.1" in exc.value.message and "Redis tools" in (exc.value.hint or "")


def test_restore_replaces_a_file_only_with_a_checked_rdb(cli: Any, make_config: Any, tmp_path: Path,
                                                         redis_clean: RedisServer, age_key: AgeKey) -> None:
    """A stored RDB that redis-check-rdb rejects (its object intact: checksums agree) never replaces the file at
    --to, even with --force: the error names redis-check-rdb's finding, and nothing is left beside the file."""
    cfg, bid = _backed_up(cli, make_config, tmp_path, redis_clean, age_key, keys=300, long_values=True)
    _rewrite_rdb(cli, cfg, tmp_path / "store", age_key, lambda rdb: rdb[: len(rdb) // 2])
    live = tmp_path / "redis-dir" / "dump.rdb"
    live.parent.mkdir()
    live.write_bytes(b"REDIS0010 the server's current snapshot")
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", live, "--force", "--yes"])
    assert r.code != 0 and "redis-check-rdb rejects" in r.output and "Unexpected EOF" in r.output, r.output
    assert live.read_bytes() == b"REDIS0010 the server's current snapshot"
    assert sorted(p.name for p in live.parent.iterdir()) == ["dump.rdb"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run Redis as the redis user")
def test_restore_over_redis_dump_keeps_its_owner_so_redis_as_its_user_loads_it(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey) -> None:
    """`backups restore ID --to /var/lib/redis/dump.rdb --force` as root: the restored file keeps the replaced
    file's owner and mode, so a Redis running as `redis` loads it (a root-owned 0600 file stops it from
    starting: "Fatal error loading the DB: Permission denied"); the output says how to load it."""
    import pwd
    import shutil
    import tempfile

    import redis

    from upkeeper.sandbox._util import free_port, wait_for_port

    try:
        user = pwd.getpwnam("redis")
    except KeyError:
        pytest.skip("no redis user")
    cfg, bid = _backed_up(cli, make_config, tmp_path, redis_clean, age_key, keys=40)
    d = Path(tempfile.mkdtemp(prefix="upkeeper-test-redis-dir-", dir="/tmp"))  # tmp_path is root-only
    try:
        os.chmod(d, 0o750)
        os.chown(d, user.pw_uid, user.pw_gid)
        live = d / "dump.rdb"
        live.write_bytes(b"")
        os.chown(live, user.pw_uid, user.pw_gid)
        os.chmod(live, 0o640)
        r = cli(["--config", cfg, "backups", "restore", bid, "--to", live, "--force", "--yes"])
        assert r.code == 0, r.output
        assert "stop Redis" in r.output and "dir/dbfilename" in r.output, r.output
        st = live.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (user.pw_uid, user.pw_gid, 0o640)
        port = free_port()
        subprocess.run(["runuser", "-u", "redis", "--", shutil.which("redis-server") or "redis-server",
                        "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                        "--daemonize", "yes", "--dir", str(d), "--logfile", str(d / "redis.log"),
                        "--pidfile", str(d / "redis.pid")], check=True, capture_output=True)
        try:
            wait_for_port(port, timeout=5)
            assert redis.Redis(port=port).dbsize() == 40
        except Exception:
            raise AssertionError((d / "redis.log").read_text()[-400:]) from None
        finally:
            subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_network_download_refused_by_the_acl_says_which_permissions_to_grant(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey) -> None:
    """An ACL user that may read everything but not SYNC: the failure is redis-cli's NOPERM error (not its
    "sending REPLCONF" chatter, not cut mid-word) and the remediation names the ACL rules to add."""
    c = redis_clean.client()
    c.set("k", "v")
    c.acl_setuser("reader", enabled=True, passwords=["+rdpw"], keys=["*"], commands=["+@read", "+info"])
    try:
        target = {**redis_clean.target(), "username": "reader", "password": "rdpw"}
        cfg = make_config({
            "targets": {"cache": target},
            "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store"), "fsync": False}},
            "backup": {"encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}},
            "jobs": {"cache-backup": {"task": "redis.backup", "target": "cache", "options": {"method": "network"}}},
        })
        run = cli(["--config", cfg, "run", "cache-backup", "--json"]).json()[0]
        assert run["status"] == "fail", run
        [f] = run["findings"]
        assert f["message"].startswith("downloading the RDB (redis-cli --rdb) exited with code 1: "), f
        assert "NOPERM" in f["message"] and "sending" not in f["message"], f
        assert "ACL SETUSER reader +sync" in f["remediation"], f
        assert "rdpw" not in json.dumps(run)
        assert not list((tmp_path / "store").rglob("manifest.json"))
    finally:
        c.acl_deluser("reader")


def test_network_download_from_a_server_that_freezes_fails_instead_of_hanging(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """redis-cli --rdb has no read timeout: a server that stops mid-transfer (here SIGSTOP; a host that drops
    off the network alike) would block the run for ever.  After stall_timeout seconds without data, without
    INFO answers, the download fails naming the stall, and nothing is stored."""
    import threading
    import time

    srv = RedisServer(tmp_path / "srv")
    srv.base.mkdir(parents=True)
    srv.start()
    c = srv.client()
    pid = int(c.info("server")["process_id"])
    done = threading.Event()
    try:
        with c.pipeline(transaction=False) as pipe:
            for i in range(2000):
                pipe.set(f"k:{i}", "v" * 100)
            pipe.execute()
        c.config_set("rdb-key-save-delay", "2000")  # 2000 keys x 2 ms: the snapshot streams for ~4 s

        def freeze() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not c.info("replication").get("connected_slaves"):
                time.sleep(0.05)
            time.sleep(0.5)
            os.kill(pid, signal.SIGSTOP)
            done.wait(25)  # a download that hangs waits this out, then finishes
            os.kill(pid, signal.SIGCONT)

        cfg = make_config({
            "targets": {"cache": srv.target()},
            "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store"), "fsync": False}},
            "backup": {"encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}},
            "jobs": {"cache-backup": {"task": "redis.backup", "target": "cache",
                                      "options": {"method": "network", "stall_timeout": 3}}},
        })
        freezer = threading.Thread(target=freeze, daemon=True)
        freezer.start()
        t0 = time.monotonic()
        run = cli(["--config", cfg, "run", "cache-backup", "--json"]).json()[0]
        took = time.monotonic() - t0
        assert run["status"] == "fail", (took, run["summary"])
        [f] = run["findings"]
        assert "stalled" in f["message"] and "nothing received for 3s" in f["message"], f
        assert took < 20, took
        assert not list((tmp_path / "store").rglob("manifest.json"))
        done.set()
        freezer.join()  # the server runs again
    finally:
        done.set()
        os.kill(pid, signal.SIGCONT)
        srv.stop()


def _keeping_redis_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """redis-cli first on PATH as a wrapper of the real one that, once it has exited, copies the file it was
    given last (--rdb FILE) to the returned path: what redis-cli itself wrote, to compare the backup with."""
    real = shutil.which("redis-cli")
    assert real
    bindir, kept = tmp_path / "bin", tmp_path / "redis-cli-wrote.rdb"
    bindir.mkdir()
    wrapper = bindir / "redis-cli"
    wrapper.write_text(f'#!/bin/sh\n"{real}" "$@"\nrc=$?\nfor a; do last=$a; done\n'
                       f'[ -f "$last" ] && cp -- "$last" "{kept}"\nexit $rc\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return kept


class _Via:
    """A server's target, reached through a relay on ``port``."""

    def __init__(self, server: RedisServer, port: int) -> None:
        self.server, self.port = server, port

    def target(self) -> dict[str, Any]:
        return {**self.server.target(), "port": self.port}


class _TailProxy:
    """A TCP relay to a real Redis that passes every connection through, but for the one that carries the RDB
    (its client sent SYNC): the last ``tail`` bytes of the RDB transfer (the end of a diskless sync's 40-byte
    EOF mark, or of a length-prefixed bulk) are sent ``delay`` seconds after the rest (a slow network: redis-cli
    has written the rest into its file meanwhile), or, with ``cut``, never: the connection is closed there."""

    def __init__(self, port: int, *, tail: int = 20, delay: float = 1.0, cut: bool = False) -> None:
        import socket
        import threading

        self.upstream, self.tail, self.delay, self.cut = port, tail, delay, cut
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.transfers: list[str] = []  # how each RDB transfer began ("$EOF:<mark>" or "$<length>")
        self.held: list[bytes] = []  # the tail bytes held back
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self.conns += [client, server]
            sync = threading.Event()
            threading.Thread(target=self._up, args=(client, server, sync), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, sync), daemon=True).start()

    @staticmethod
    def _up(client: Any, server: Any, sync: Any) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if b"SYNC" in data.upper():
                    sync.set()
                server.sendall(data)
        with contextlib.suppress(OSError):
            server.shutdown(1)

    def _down(self, server: Any, client: Any, sync: Any) -> None:
        pending, body, received, end, mark = b"", False, 0, -1, b""
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if not sync.is_set():
                    client.sendall(data)
                    continue
                if body:
                    received += len(data)
                pending += data
                while not body and pending:  # before the transfer: replies, a diskless sync's keepalive newlines
                    if pending.startswith(b"\n"):
                        client.sendall(b"\n")
                        pending = pending[1:]
                        continue
                    if b"\r\n" not in pending:
                        break
                    line, pending = pending.split(b"\r\n", 1)
                    client.sendall(line + b"\r\n")
                    if line.startswith(b"$"):
                        self.transfers.append(line.decode("ascii", "replace"))
                        body, received = True, len(pending)
                        mark, end = (line[5:], -1) if line.startswith(b"$EOF:") else (b"", int(line[1:]))
                        break
                if not body:
                    continue
                done = pending.endswith(mark) if mark else received >= end
                keep = self.tail if done else self.tail + 40  # (40: never sends a mark's start as if it ended)
                if len(pending) > keep:
                    client.sendall(pending[:-keep])
                    pending = pending[-keep:]
                if done:
                    self.held.append(pending)
                    if self.cut:
                        break
                    time.sleep(self.delay)
                    client.sendall(pending)
                    pending, body = b"", False
                    sync.clear()
        for sock in (client, server):  # (shutdown: a close alone sends no FIN while _up still reads)
            with contextlib.suppress(OSError):
                sock.shutdown(2)
            sock.close()

    def close(self) -> None:
        self.listener.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.shutdown(2)
            c.close()


@pytest.mark.parametrize(("diskless", "held_back"), [("yes", 40), ("no", 40), ("yes", 0)])
def test_network_rdb_is_stored_as_it_arrives_and_byte_for_byte(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey,
        monkeypatch: pytest.MonkeyPatch, diskless: str, held_back: int) -> None:
    """The download is compressed and encrypted while it still arrives, yet what is stored is the RDB exactly:
    a diskless sync's 40-byte EOF mark (repl-diskless-sync yes), which redis-cli writes into its file and cuts
    off only at the end, is never stored, nor is anything lost of a length-prefixed bulk (no): the restored
    file is byte for byte the one redis-cli wrote, and a fresh redis-server loads it with every key.  Were less
    held back than redis-cli cuts off (held_back 0), the backup fails rather than store the mark's bytes."""
    from upkeeper.tasks.backup import redis as rb

    kept = _keeping_redis_cli(tmp_path, monkeypatch)
    monkeypatch.setattr(rb, "RDB_EOF_MARK_SIZE", held_back)

    c = redis_clean.client()
    with c.pipeline(transaction=False) as pipe:
        for i in range(400):
            pipe.set(f"k:{i}", os.urandom(150).hex())  # 120 kB of RDB that LZF does not shrink
        pipe.execute()
    fed_while_downloading: list[int] = []
    pump = rb._Follower.pump

    def spy(self: Any, upto: int, budget: int | None = None) -> int:
        n = pump(self, upto, budget)
        if budget is not None and n:
            fed_while_downloading.append(n)
        return n

    monkeypatch.setattr(rb._Follower, "pump", spy)
    old = c.config_get("repl-diskless-sync")["repl-diskless-sync"]
    c.config_set("repl-diskless-sync", diskless)
    c.config_set("rdb-key-save-delay", "3000")  # 400 keys x 3 ms: the snapshot streams for ~1.2 s
    # the transfer's last 20 bytes come 1 s after the rest: redis-cli's file meanwhile ends in a partial EOF
    # mark (diskless), which it cuts off only once the mark is whole
    proxy = _TailProxy(redis_clean.port, tail=20, delay=1.0)
    try:
        cfg = _config(make_config, tmp_path, _Via(redis_clean, proxy.port), age_key, "network")  # type: ignore[arg-type]
        result = _run_direct(cfg, "network")
    finally:
        proxy.close()
        c.config_set("rdb-key-save-delay", "0")
        c.config_set("repl-diskless-sync", old)
    [how] = proxy.transfers
    assert how.startswith("$EOF:" if diskless == "yes" else "$") and len(proxy.held) == 1, proxy.transfers
    if held_back < 40:
        assert result.final_status == "fail", (result.summary, result.findings)
        assert "were already stored" in result.findings[0].message, result.findings
        assert not list((tmp_path / "store").rglob("manifest.json"))
        return
    assert result.final_status == "ok", (result.summary, result.findings)
    if diskless == "yes":  # streamed as it is made (a disk-based sync sends the finished file at once)
        assert fed_while_downloading, "nothing was stored before the download ended"
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    details = json.loads(mpath.read_text())["redis"]
    out = tmp_path / "restored.rdb"
    assert cli(["--config", cfg, "backups", "sync"]).code == 0  # run here, not through the CLI: no catalog yet
    r = cli(["--config", cfg, "backups", "restore", mpath.parent.name, "--to", out])
    assert r.code == 0, r.output
    data = out.read_bytes()
    assert len(data) == details["rdb_size"] and data[-9] == 0xFF, data[-48:]
    assert data == kept.read_bytes(), (len(data), kept.stat().st_size)
    check = subprocess.run(["redis-check-rdb", str(out)], capture_output=True, text=True)
    assert "RDB looks OK" in check.stdout and "400 keys read" in check.stdout, check.stdout
    srv = RedisServer(tmp_path / "loaded")
    srv.base.mkdir(parents=True)
    shutil.copyfile(out, srv.base / "dump.rdb")
    srv.start()
    try:
        assert srv.client().dbsize() == 400
        assert srv.client().get("k:399") == c.get("k:399")
    finally:
        srv.stop()


@pytest.mark.parametrize("diskless", ["yes", "no"])
def test_a_network_rdb_transfer_cut_short_fails_the_backup_and_stores_nothing(
        make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey, diskless: str) -> None:
    """The connection closed 20 bytes before the transfer's end: inside a diskless sync's EOF mark (the RDB
    itself whole, already fed to the upload but for the held-back bytes), or before the end of a length-
    prefixed bulk.  The backup fails saying the server closed the connection; no manifest, no object, no
    plaintext RDB left in the work directory."""
    c = redis_clean.client()
    with c.pipeline(transaction=False) as pipe:
        for i in range(300):
            pipe.set(f"k:{i}", os.urandom(100).hex())
        pipe.execute()
    old = c.config_get("repl-diskless-sync")["repl-diskless-sync"]
    c.config_set("repl-diskless-sync", diskless)
    work = tmp_path / "work"
    work.mkdir()
    proxy = _TailProxy(redis_clean.port, tail=20, cut=True)
    try:
        cfg = make_config({
            "targets": {"cache": _Via(redis_clean, proxy.port).target()},
            "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store"), "fsync": False}},
            "backup": {"encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)},
                       "work_dir": str(work)},
            "jobs": {"cache-backup": {"task": "redis.backup", "target": "cache", "options": {"method": "network"}}},
        })
        result = _run_direct(cfg, "network")
    finally:
        proxy.close()
        c.config_set("repl-diskless-sync", old)
    assert [len(h) for h in proxy.held] == [20], proxy.transfers
    assert proxy.transfers[0].startswith("$EOF:" if diskless == "yes" else "$"), proxy.transfers
    assert result.final_status == "fail", (result.summary, result.findings)
    [f] = result.findings
    assert "downloading the RDB (redis-cli --rdb)" in f.message and "closed the connection" in f.message, f.message
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert not list(work.iterdir())


def test_documented_load_of_a_restored_rdb_into_an_appendonly_server(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey) -> None:
    """What `backups restore` and docs/restore-without-upkeeper.md say about appendonly, done literally: a
    Redis with appendonly yes ignores the restored dump.rdb (no AOF: it starts empty); started with appendonly
    no, then `config set appendonly yes` and a restart with appendonly yes, it serves the restored data."""
    import shutil
    import time

    cfg, bid = _backed_up(cli, make_config, tmp_path, redis_clean, age_key, keys=30)
    d = tmp_path / "srv"
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", d / "dump.rdb"])
    assert r.code == 0 and "appendonly no" in r.output and "never reads dump.rdb" in r.output, r.output

    def server(appendonly: str) -> RedisServer:
        return RedisServer(d, extra_args=["--appendonly", appendonly]).start()

    srv = server("yes")
    try:
        assert srv.client().dbsize() == 0  # the trap the docs warn of
    finally:
        srv.stop()
    shutil.rmtree(d / "appendonlydir")
    srv = server("no")
    try:
        assert srv.client().dbsize() == 30
        srv.client().config_set("appendonly", "yes")
        deadline = time.monotonic() + 20
        while srv.client().info("persistence")["aof_rewrite_in_progress"] or \
                srv.client().info("persistence")["aof_rewrite_scheduled"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        srv.stop()
    srv = server("yes")
    try:
        assert srv.client().dbsize() == 30
    finally:
        srv.stop()


def test_a_missing_redis_check_rdb_fails_before_any_snapshot_is_taken(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without redis-check-rdb no snapshot can be checked: the run fails naming it before it downloads the whole
    dataset from the server (which it did, to fail afterwards)."""
    import shutil

    redis_clean.client().set("k", "v")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("redis-cli", "zstd", "age"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    full_syncs = redis_clean.client().info("stats")["sync_full"]
    cfg = _config(make_config, tmp_path, redis_clean, age_key, "network")
    r = cli(["--config", cfg, "run", "cache-backup", "--json"])
    run = r.json()[0]
    assert r.code == 1 and run["status"] in ("fail", "error"), run
    assert "redis-check-rdb not found" in run["summary"], run
    assert redis_clean.client().info("stats")["sync_full"] == full_syncs, "a snapshot was downloaded first"
    assert not list((tmp_path / "store").rglob("manifest.json"))


def _scratch_servers() -> set[int]:
    """PIDs of scratch redis-servers (a socket in a verify's temp dir) this test process started: its own
    descendants only, never those of a test running in another xdist worker at the same time."""
    import psutil

    found = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            args = " ".join(child.cmdline())
            if "redis-server" in args and "upkeeper-verify-" in args:
                found.add(child.pid)
    return found


@pytest.fixture
def scratch_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Record every scratch redis-server this test's runs start: ``redis-server`` on PATH becomes a script in
    tmp_path that writes its arguments to a file of this test, then execs the real binary.  Returns a function
    giving the recorded command lines of servers started on an RDB (not ``--version``)."""
    import shutil

    real = shutil.which("redis-server")
    if real is None:
        pytest.skip("no redis-server on this host")
    bin_dir = tmp_path / "shim-bin"
    bin_dir.mkdir()
    log = tmp_path / "redis-server-starts.log"
    shim = bin_dir / "redis-server"
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{real}" "$@"\n')
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")

    def starts() -> list[str]:
        lines = log.read_text().splitlines() if log.exists() else []
        return [ln for ln in lines if "--dbfilename" in ln]

    return starts


def test_verify_test_restores_the_rdb_into_a_throw_away_redis_server(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey) -> None:
    """Verify loads the RDB into a redis-server of its own (unix socket, no TCP port) and compares each
    database's keys with the counts the backup recorded of its RDB; keys whose TTL ran out since the snapshot
    are dropped while loading and accounted for, not reported as lost.  Smoke checks run on the restored data,
    and the server is gone afterwards, also when a check fails."""
    import time

    for db, n in ((0, 20), (3, 7), (15, 2)):
        c = redis_clean.client(db=db)
        for i in range(n):
            c.set(f"k:{i}", "v")
    redis_clean.client(db=3).set("soon-gone", "v", px=5000)
    gone_at = time.monotonic() + 5.1
    cfg = _config(make_config, tmp_path, redis_clean, age_key, "network")
    r = cli(["--config", cfg, "run", "cache-backup", "--json"])
    assert r.code == 0, r.output
    bid = r.json()[0]["artifacts"][0]["id"]
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    m = json.loads(mpath.read_text())["redis"]
    assert m["rdb_keys"] == 30 and m["rdb_db_keys"] == {"db0": 20, "db3": 8, "db15": 2}, m
    assert m["rdb_version"] >= 10, m
    time.sleep(max(0.0, gone_at - time.monotonic()))  # the TTL runs out before the verify
    before = _scratch_servers()
    r = cli(["--config", cfg, "backups", "verify", bid, "--json", "--redis-check", "SELECT 15",
             "--redis-check", "EXISTS k:1"])
    assert r.code == 0, r.output
    [rep] = r.json()
    assert rep["test_restored"] is True and rep["keys_loaded"] == 29 and rep["keys_expired"] == 1, rep
    assert any("test-restored into a scratch redis-server" in s for s in rep["steps"]), rep
    assert "2 smoke check(s) passed" in rep["steps"], rep
    assert rep["restore_seconds"] is not None
    r = cli(["--config", cfg, "backups", "verify", bid, "--json", "--redis-check", "EXISTS k:1"])  # db 0: k:1
    assert r.code == 0, r.output
    r = cli(["--config", cfg, "backups", "verify", bid, "--json", "--redis-check", "SELECT 15",
             "--redis-check", "EXISTS k:2"])  # db 15 holds k:0 and k:1 only
    [rep] = r.json()
    assert r.code == 1 and "smoke check 'EXISTS k:2' returned 0" in rep["error"], rep
    assert _scratch_servers() == before


def test_verify_fails_when_the_restored_keys_differ_from_the_backups_record(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey) -> None:
    """A restored database holding fewer keys than the backup recorded of its RDB (none expired) fails the
    verification naming the database."""
    cfg, _ = _backed_up(cli, make_config, tmp_path, redis_clean, age_key, keys=40)
    _rewrite_rdb(cli, cfg, tmp_path / "store", age_key, lambda rdb: rdb, rdb_keys=45, rdb_db_keys={"db0": 45})
    run = cli(["--config", cfg, "run", "cache-verify", "--json"]).json()[0]
    [f] = run["findings"]
    assert f["check"] == "backup.verify_failed", f
    assert "key counts differ" in f["message"] and "db0: 40 of 45" in f["message"], f


def test_verify_with_a_redis_server_older_than_the_backups_source_is_not_checked(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey) -> None:
    """A backup of a newer Redis than this host's redis-server is not test-restored (an older server need not
    load its RDB): 'not checked', naming both versions, with a hint; the backup keeps its status."""
    cfg, bid = _backed_up(cli, make_config, tmp_path, redis_clean, age_key, keys=5)
    _rewrite_rdb(cli, cfg, tmp_path / "store", age_key, lambda rdb: rdb, redis_version="99.1.0")
    run = cli(["--config", cfg, "run", "cache-verify", "--json"]).json()[0]
    [f] = run["findings"]
    assert f["check"] == "backup.verify_not_run", f
    assert "redis-server 7." in f["message"] and "Redis 99.1.0" in f["message"], f
    assert "install redis-server" in f["message"], f
    [row] = cli(["--config", cfg, "backups", "list", "--json"]).json()
    assert row["id"] == bid and row["status"] == "complete", row


def test_verify_without_redis_server_says_the_backup_was_not_test_restored(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    cfg, _ = _backed_up(cli, make_config, tmp_path, redis_clean, age_key, keys=5)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("redis-check-rdb", "redis-cli", "zstd", "age"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    run = cli(["--config", cfg, "run", "cache-verify", "--json"]).json()[0]
    assert run["status"] == "ok", run
    [art] = run["artifacts"]
    assert art["test_restored"] is False, art
    assert any(s.startswith("not test-restored: no redis-server") for s in art["steps"]), art


def test_verify_test_restores_a_server_with_more_than_16_databases(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """A Redis configured with `databases 32` and data in db 20: the scratch server gets enough databases (a
    default one exits: "Data file was created with a Redis server configured to handle more than 16
    databases"), so the backup verifies."""
    srv = RedisServer(tmp_path / "srv", extra_args=["--databases", "32"])
    srv.base.mkdir(parents=True)
    srv.start()
    try:
        srv.client(db=20).set("high", "v")
        srv.client().set("low", "v")
        cfg = _config(make_config, tmp_path, srv, age_key, "network")
        assert cli(["--config", cfg, "run", "cache-backup", "--json"]).code == 0
        run = cli(["--config", cfg, "run", "cache-verify", "--json"]).json()[0]
        assert run["status"] == "ok", run
        [art] = run["artifacts"]
        assert art["test_restored"] is True and art["keys_loaded"] == 2, art
    finally:
        srv.stop()


def test_a_redis_verify_job_with_sql_checks_fails_instead_of_skipping_them(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey) -> None:
    """`checks` (SQL) on the verify job of a Redis target were skipped in silence and the backup marked
    verified: the job now fails naming redis_checks."""
    cfg, _ = _backed_up(cli, make_config, tmp_path, redis_clean, age_key, keys=3)
    import yaml

    data = yaml.safe_load(cfg.read_text())
    data["jobs"]["cache-verify"]["options"] = {"checks": ["select count(*) > 0 from users"]}
    cfg.write_text(yaml.safe_dump(data))
    r = cli(["--config", cfg, "run", "cache-verify", "--json"])
    assert r.code == 2 and "cache-verify -> options -> checks" in r.err and "use redis_checks" in r.err, r.output
    data["jobs"]["cache-verify"]["options"] = {"redis_checks": ["EXISTS k:2"]}
    cfg.write_text(yaml.safe_dump(data))
    run = cli(["--config", cfg, "run", "cache-verify", "--json"]).json()[0]
    assert run["status"] == "ok" and "1 smoke check(s) passed" in run["artifacts"][0]["steps"], run


def test_backups_verify_refuses_smoke_checks_it_would_not_run(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey) -> None:
    """`backups verify ID --check SQL` on a Redis backup said 'ok verified' with the check never run; a
    --redis-check that is no command line ('AUTH "pw', unclosed) marked a good backup verify-failed. Both are
    usage errors now (exit 2, the password masked), and the backup keeps its status."""
    cfg, bid = _backed_up(cli, make_config, tmp_path, redis_clean, age_key, keys=3)
    for argv, said in ((["--check", "select count(*) > 0 from users"], "--check and --amcheck are for PostgreSQL"),
                       (["--amcheck"], "--check and --amcheck are for PostgreSQL backups; the backups to verify "
                        "are redis backups"),
                       (["--redis-check", 'AUTH app "Sm0keSecret'], "'AUTH app ***' is no Redis command line"),
                       (["--redis-check", ""], "--redis-check is empty")):
        r = cli(["--config", cfg, "backups", "verify", bid, *argv])
        assert r.code == 2 and said in " ".join(r.err.split()), (argv, r.output)
        assert "Sm0keSecret" not in r.output, r.output
    [row] = cli(["--config", cfg, "backups", "list", "--json"]).json()
    assert row["status"] == "complete", row
    r = cli(["--config", cfg, "backups", "verify", "--redis-check", "EXISTS k:1"])
    assert r.code == 0 and "1 smoke check(s) passed" in r.out, r.output


def test_smoke_checks_that_carry_a_password_never_show_it(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey) -> None:
    """A smoke check's password (AUTH, HELLO … AUTH, CONFIG SET requirepass, ACL SETUSER >…) is masked in the
    error of a failed check: in --json, in the run's history and in its log."""
    cfg, bid = _backed_up(cli, make_config, tmp_path, redis_clean, age_key, keys=3)
    shown: list[str] = []
    for checks, secret in ((["AUTH appuser Sm0keSecretA"], "Sm0keSecretA"),  # ACL users are not in the RDB
                           (["AUTH Sm0keSecretB"], "Sm0keSecretB"),
                           (["HELLO 3 AUTH appuser Sm0keSecretC"], "Sm0keSecretC"),
                           (["CONFIG SET requirepass Sm0keSecretD oops"], "Sm0keSecretD"),
                           (["ACL SETUSER bob on >Sm0keSecretE badrule"], "Sm0keSecretE")):
        argv = ["--config", cfg, "backups", "verify", bid, "--json"]
        for c in checks:
            argv += ["--redis-check", c]
        r = cli(argv)
        assert r.code == 1 and "smoke check" in r.output, r.output
        assert secret not in r.output, r.output
        shown.append(r.json()[0]["error"])
    assert shown[0].startswith("smoke check 'AUTH appuser ***' failed: "), shown
    assert shown[4].startswith("smoke check 'ACL SETUSER bob on >*** badrule' failed: "), shown
    import sqlite3

    import yaml

    data = yaml.safe_load(cfg.read_text())
    data["jobs"]["cache-verify"]["options"] = {"redis_checks": ["AUTH appuser Sm0keSecretF"]}
    cfg.write_text(yaml.safe_dump(data))
    r = cli(["--config", cfg, "run", "cache-verify", "--json"])
    assert r.code == 1 and "smoke check 'AUTH appuser ***' failed" in r.output, r.output
    con = sqlite3.connect(tmp_path / "history.db")
    try:
        rows = [repr(row) for t in ("runs", "findings") for row in con.execute(f"SELECT * FROM {t}")]
    finally:
        con.close()
    assert rows and not [row for row in rows if "Sm0keSecret" in row], rows


def test_verify_does_not_test_restore_an_rdb_this_host_lacks_the_memory_for(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey,
        scratch_starts: Any) -> None:
    """The scratch redis-server loaded any RDB next to the production Redis, whatever its size: a 20 GB dataset
    drove the host into the OOM killer.  The backup records the server's used_memory; the verify compares it
    (else the RDB's size × 3) plus min_free_memory with MemAvailable: short → not test-restored, saying why,
    the RDB still checked with redis-check-rdb."""
    import psutil

    cfg, bid = _backed_up(cli, make_config, tmp_path, redis_clean, age_key, keys=5)
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    used = json.loads(mpath.read_text())["redis"]["used_memory"]
    assert isinstance(used, int) and used > 0
    huge = psutil.virtual_memory().total * 4
    _rewrite_rdb(cli, cfg, tmp_path / "store", age_key, lambda rdb: rdb, used_memory=huge)
    run = cli(["--config", cfg, "run", "cache-verify", "--json"]).json()[0]
    assert run["status"] == "ok", run
    [art] = run["artifacts"]
    assert art["test_restored"] is False, art
    [step] = [s for s in art["steps"] if s.startswith("not test-restored: needs ~")]
    assert "used_memory at backup time" in step and "available" in step and "redis-check-rdb" in step, step
    assert any(s.startswith("redis-check-rdb: RDB looks OK") for s in art["steps"]), art
    assert scratch_starts() == [], "a scratch redis-server was started"
    # an older backup without used_memory: the RDB's size × 3; min_free_memory is the job's to set
    _rewrite_rdb(cli, cfg, tmp_path / "store", age_key, lambda rdb: rdb, used_memory=None)
    import yaml

    data = yaml.safe_load(cfg.read_text())
    data["jobs"]["cache-verify"]["options"] = {"min_free_memory": huge}
    cfg.write_text(yaml.safe_dump(data))
    run = cli(["--config", cfg, "run", "cache-verify", "--json"]).json()[0]
    [art] = run["artifacts"]
    assert art["ok"] and art["test_restored"] is False, art
    assert any("the RDB's size × 3" in s for s in art["steps"]), art
    assert scratch_starts() == [], "a scratch redis-server was started"
    data["jobs"]["cache-verify"]["options"] = {}
    cfg.write_text(yaml.safe_dump(data))
    [art] = cli(["--config", cfg, "run", "cache-verify", "--json"]).json()[0]["artifacts"]
    assert art["ok"] and art["test_restored"] is True, art
    assert len(scratch_starts()) == 1, scratch_starts()  # the record sees a start when there is one
    assert not _scratch_servers()
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "verified"


def test_verify_does_not_fetch_an_rdb_into_a_work_dir_without_room(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey,
        small_fs: Path) -> None:
    """The RDB is fetched to the work directory before redis-check-rdb: one bigger than its free space filled the
    disk and the verify marked a good backup verify-failed.  Now it is not started: NOT CHECKED, naming the
    sizes and backup.work_dir; the backup keeps its status."""
    import yaml

    c = redis_clean.client()
    c.set("big", os.urandom(3 * 1024 * 1024))  # 3 MiB, incompressible: more than the 2 MiB file system
    cfg, bid = _backed_up(cli, make_config, tmp_path, redis_clean, age_key, keys=1)
    data = yaml.safe_load(cfg.read_text())
    data["backup"]["work_dir"] = str(small_fs)
    cfg.write_text(yaml.safe_dump(data))
    run = cli(["--config", cfg, "run", "cache-verify", "--json"]).json()[0]
    [f] = run["findings"]
    assert f["check"] == "backup.verify_not_run", f
    assert "not enough disk space for the RDB" in f["message"] and "work_dir" in f["message"], f
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "complete"
    assert [p.name for p in small_fs.iterdir()] == []


def test_a_backup_that_fills_the_local_storage_leaves_nothing_there(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey,
        small_fs: Path) -> None:
    """An RDB larger than the 2 MiB volume: the upload fails with ENOSPC, and the storage is left empty (no
    partial object, no empty directory of the set)."""
    c = redis_clean.client()
    for i in range(30):
        c.set(f"blob:{i}", os.urandom(100_000))  # incompressible: ~3 MB stored
    cfg = make_config({
        "targets": {"cache": redis_clean.target()},
        "storages": {"local1": {"kind": "local", "path": str(small_fs), "fsync": False}},
        "backup": {"encryption": {"recipients": [age_key.recipient]}},
        "jobs": {"cache-backup": {"task": "redis.backup", "target": "cache", "options": {"method": "network"}}},
    })
    run = cli(["--config", cfg, "run", "cache-backup", "--json"]).json()[0]
    assert run["status"] in ("fail", "error") and "no space left on device" in run["summary"], run
    assert list(small_fs.rglob("*")) == []


def _backup_config(make_config: Any, tmp_path: Path, target: dict[str, Any], age_key: AgeKey) -> Path:
    """One job per method (auto, network, bgsave) backing up ``target``."""
    cfg: Path = make_config({
        "targets": {"cache": target},
        "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store"), "fsync": False}},
        "backup": {"encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}},
        "jobs": {m: {"task": "redis.backup", "target": "cache", "options": {"method": m}}
                 for m in ("auto", "network", "bgsave")},
    })
    return cfg


def test_bgsave_without_config_get_names_the_refused_command(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey) -> None:
    """An ACL user without CONFIG GET (where the RDB file is): method bgsave said only "needs the server's RDB
    file readable on this host"; it names CONFIG GET and the ACL rule.  A user refused SYNC too: auto's
    network failure says why BGSAVE + copy was not used.  Nothing is stored."""
    c = redis_clean.client()
    c.set("k", "v")
    c.acl_setuser("noconf", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-config", "-sync"])
    try:
        cfg = _backup_config(make_config, tmp_path, {**redis_clean.target(), "username": "noconf", "password": "pw"},
                             age_key)
        run = cli(["--config", cfg, "run", "bgsave", "--json"]).json()[0]
        assert run["status"] != "ok", run
        assert "CONFIG GET" in run["summary"] and "'config|get'" in run["summary"], run
        run = cli(["--config", cfg, "run", "auto", "--json"]).json()[0]
        [f] = run["findings"]
        assert "NOPERM" in f["message"] and "auto downloads because the server refuses CONFIG GET" in f["message"], f
        assert not list((tmp_path / "store").rglob("manifest.json"))
    finally:
        c.acl_deluser("noconf")


def test_a_bgsave_that_cannot_write_its_file_fails_naming_it(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """The server's BGSAVE fails (rdb_last_bgsave_status:err: here its dbfilename is a directory, so the
    rename of the finished temp file fails, as an unwritable dir does): bgsave names the file and the dir to
    fix; the network download with repl-diskless-sync no (the server saves to disk first, then drops the
    connection) says the server closed it, why, and names client-output-buffer-limit replica among the
    causes.  Nothing is stored, nothing is left in the server's dir."""
    srv = RedisServer(tmp_path / "srv", extra_args=["--dbfilename", "blocked.rdb", "--repl-diskless-sync", "no"])
    srv.start()
    try:
        srv.client().set("k", "v")
        (srv.base / "blocked.rdb").mkdir()
        (srv.base / "blocked.rdb" / "x").write_text("")
        cfg = _backup_config(make_config, tmp_path, srv.target(), age_key)
        [f] = cli(["--config", cfg, "run", "bgsave", "--json"]).json()[0]["findings"]
        assert f"could not write its RDB file {srv.base / 'blocked.rdb'}" in f["message"], f
        assert f"write {srv.base} (CONFIG GET dir)" in f["remediation"], f
        [f] = cli(["--config", cfg, "run", "network", "--json"]).json()[0]["findings"]
        assert "the server closed the connection" in f["message"], f
        assert "rdb_last_bgsave_status: err" in f["message"], f
        assert "client-output-buffer-limit replica" in f["remediation"], f
        assert not list((tmp_path / "store").rglob("manifest.json"))
        assert not list(srv.base.glob("temp-*.rdb"))
    finally:
        srv.stop()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("prlimit"),
                    reason="needs root, setpriv and prlimit to run Redis under a process limit")
def test_a_server_that_cannot_fork_fails_the_backup_saying_why(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey) -> None:
    """BGSAVE's fork failing (maxmemory near the host's memory without vm.overcommit_memory: "Can't save in
    background: fork: Cannot allocate memory"; simulated with an unused uid and RLIMIT_NPROC at the server's
    own thread count) is answered by a bare "-ERR": the run said only "BGSAVE failed: ".  It says the server
    could not fork and names vm.overcommit_memory; the network download's "BGSAVE failed, replication can't
    continue" the same."""
    import tempfile

    import redis

    from upkeeper.sandbox._util import free_port, wait_for_port

    threads = len(os.listdir(f"/proc/{redis_clean.client().info('server')['process_id']}/task"))
    uid = 61000 + os.getpid() % 4000  # no process runs as it: the limit counts only this server's threads
    d = Path(tempfile.mkdtemp(prefix="upkeeper-test-nofork-", dir="/tmp"))  # tmp_path is root-only
    os.chown(d, uid, uid)
    port = free_port()
    srv = subprocess.Popen(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "prlimit", f"--nproc={threads}",
         shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(d), "--logfile", str(d / "redis.log"),
         "--repl-diskless-sync-delay", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=5)
        redis.Redis(port=port).set("k", "v")
        cfg = _backup_config(make_config, tmp_path, {"kind": "redis", "host": "127.0.0.1", "port": port}, age_key)
        for job in ("bgsave", "network"):
            run = cli(["--config", cfg, "run", job, "--json"]).json()[0]
            [f] = run["findings"]
            assert "Can't save in background: fork" in (d / "redis.log").read_text()
            assert "fork" in f["message"] + f["remediation"] and "vm.overcommit_memory" in f["remediation"], f
        assert not list((tmp_path / "store").rglob("manifest.json"))
    finally:
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
        shutil.rmtree(d, ignore_errors=True)


def test_a_backup_stopped_by_sigterm_removes_its_plaintext_dump_and_lists_nothing(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey) -> None:
    """SIGTERM (``timeout``, ``kill``, systemd) to ``upkeeper run`` while the downloaded dump.rdb is being
    uploaded: the run stops within seconds, exit 143, its worker and redis-cli/age are gone, the plaintext
    dump.rdb is removed from backup.work_dir, no partial object or set is left or listed, and the run is
    recorded as interrupted.  (SIGTERM used to kill the CLI outright: its orphaned worker was killed with no
    cleanup, leaving the dump in the work dir and the run 'running'.)"""
    import psutil

    c = redis_clean.client()
    for i in range(200):
        c.set(f"session:{i}", f"secret-{i}")
    work, cfg = _network_backup_with_work_dir(make_config, tmp_path, redis_clean, age_key)
    mark = tmp_path / "at-fault-point"
    env = {**os.environ, "UPKEEPER_FAULT_PAUSE": "during-upload:60", "UPKEEPER_FAULT_MARK": str(mark),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "run", "cache-backup", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not mark.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mark.exists(), p.communicate(timeout=5)
        assert [f.name for f in work.rglob("dump.rdb")] == ["dump.rdb"]  # the plaintext is there now
        procs = psutil.Process(p.pid).children(recursive=True)
        assert procs  # the worker (and what it started)
    finally:
        took, err = terminate_and_wait(p)  # the CLI only, as `kill PID` and `timeout` do
    assert p.returncode == 143, err.decode()
    assert took < 10, took
    _gone, alive = psutil.wait_procs(procs, timeout=5)
    assert alive == [], alive
    assert [str(f) for f in work.rglob("*")] == []  # no dump.rdb, no work dir
    assert [str(f) for f in (tmp_path / "store").rglob("*") if f.is_file()] == []  # no partial object
    [row] = cli(["--config", cfg, "history", "--json"]).json()
    assert row["status"] == "interrupted", row
    assert cli(["--config", cfg, "backups", "list", "--json"]).json() == []


def test_a_worker_killed_mid_backup_has_its_plaintext_work_files_removed_by_the_cli(
        cli: Any, make_config: Any, tmp_path: Path, redis_clean: RedisServer, age_key: AgeKey) -> None:
    """``kill -9`` of the worker process (the OOM killer, an admin) while redis-cli downloads the RDB into
    backup.work_dir: no cleanup of its own runs.  The CLI, which sees its worker die, kills what the worker
    started (redis-cli went on writing the plaintext dump.rdb), removes its work directory at once (not at
    some later run's sweep), and records the run failed, saying the worker was killed and its work files
    removed."""
    import psutil

    c = redis_clean.client()
    with c.pipeline(transaction=False) as pipe:
        for i in range(200):
            pipe.set(f"session:{i}", os.urandom(1000).hex())  # (sent in pieces of 16 kB: every 8 keys)
        pipe.execute()
    old = {k: c.config_get(k)[k] for k in ("repl-diskless-sync", "repl-diskless-sync-delay")}
    c.config_set("repl-diskless-sync", "yes")  # streamed as it is made, 200 keys x 20 ms: for some 4 s
    c.config_set("repl-diskless-sync-delay", "0")
    c.config_set("rdb-key-save-delay", "20000")
    work, cfg = _network_backup_with_work_dir(make_config, tmp_path, redis_clean, age_key)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "run", "cache-backup", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while p.poll() is None and time.monotonic() < deadline:
            dumps = [f for f in work.rglob("dump.rdb") if f.stat().st_size > 0]
            if dumps:
                break
            time.sleep(0.05)
        assert dumps, p.communicate(timeout=5)  # the plaintext is there now, still growing
        [worker] = psutil.Process(p.pid).children()
        started = worker.children(recursive=True)
        assert "redis-cli" in [c.name() for c in started], started
        worker.kill()  # SIGKILL to the worker alone
        out, err = p.communicate(timeout=30)
    finally:
        c.config_set("rdb-key-save-delay", "0")
        c.config_set("repl-diskless-sync", old["repl-diskless-sync"])
        c.config_set("repl-diskless-sync-delay", old["repl-diskless-sync-delay"])
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    _gone, alive = psutil.wait_procs(started, timeout=1)
    running = []
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.status() != psutil.STATUS_ZOMBIE:  # (dead, not yet reaped by its new parent)
                running.append(proc)
    assert running == [], running
    assert [str(f) for f in work.rglob("*")] == []  # no dump.rdb, no work dir
    # (the encrypted partial upload stays until a later run removes crashed writers' leftovers: never listed;
    # so does the dead writer's lease, which protects the set from prune no more once stale)
    stored = [f.name for f in (tmp_path / "store").rglob("*") if f.is_file()]
    assert all(n.endswith(".upkeeper-partial") or n == ".writing" for n in stored), stored
    assert p.returncode != 0, err.decode()
    [run] = json.loads(out)
    assert run["status"] == "error", run
    assert "killed by SIGKILL" in run["summary"] and "work files were removed" in run["summary"], run["summary"]
    [row] = cli(["--config", cfg, "history", "--json"]).json()
    assert row["status"] == "error" and "work files were removed" in row["summary"], row
    assert cli(["--config", cfg, "backups", "list", "--json"]).json() == []


def _network_backup_with_work_dir(make_config: Any, tmp_path: Path, redis: RedisServer,
                                  age_key: AgeKey) -> tuple[Path, Any]:
    """A network redis.backup job (cache-backup) to local storage, with its own backup.work_dir (made here)."""
    work = tmp_path / "work"
    work.mkdir()
    cfg = make_config({
        "targets": {"cache": redis.target()},
        "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store"), "fsync": False}},
        "backup": {"work_dir": str(work),
                   "encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}},
        "jobs": {"cache-backup": {"task": "redis.backup", "target": "cache", "options": {"method": "network"}}},
    })
    return work, cfg
