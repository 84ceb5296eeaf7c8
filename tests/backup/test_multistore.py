"""One backup job writing to local, S3 (SeaweedFS) and SFTP (sshd) at once, and the storages disagreeing:
a copy that lost an object, a corrupt copy, a storage that is down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from services import sftp_storage_config
from upkeeper.sandbox.postgres import PostgresCluster
from upkeeper.sandbox.s3 import SeaweedS3
from upkeeper.sandbox.sshd import SshServer

from .conftest import AgeKey, names

KEEP_LAST_1 = {"keep_last": 1, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}


def _config(make_config: Any, pg: PostgresCluster, db: str, tmp_path: Path, s3: SeaweedS3, bucket: str,
            sftp: SshServer, age_key: AgeKey, retention: dict[str, Any] | None = None) -> Path:
    """Storages local1 (a directory), offsite (S3) and vault (SFTP), in that order; one postgres.backup job."""
    options: dict[str, Any] = {"databases": [db], "globals": False}
    if retention:
        options["retention"] = retention
    return make_config({
        "targets": {"db": pg.target(db)},
        "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store1"), "fsync": False},
                     "offsite": s3.storage_config(bucket, prefix="backups"),
                     "vault": sftp_storage_config(sftp).model_dump(mode="json", exclude_none=True)},
        "backup": {"encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}},
        "jobs": {"db-backup": {"task": "postgres.backup", "target": "db", "options": options}},
    })


def _backup(cli: Any, cfg: Path) -> str:
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    bid: str = r.json()[0]["artifacts"][0]["id"]
    return bid


def _vault_set(cfg: Path, db: str, bid: str) -> Path:
    return Path(yaml.safe_load(cfg.read_text())["storages"]["vault"]["path"]) / "db" / db / bid


def test_a_copy_that_lost_an_object_is_no_copy_for_sync_and_prune(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], tmp_path: Path, s3_server: SeaweedS3,
        s3_bucket: str, sftp_server: SshServer, age_key: AgeKey, make_config: Any) -> None:
    db, _ = app_db
    cfg = _config(make_config, pg, db, tmp_path, s3_server, s3_bucket, sftp_server, age_key)
    old = _backup(cli, cfg)
    new = _backup(cli, cfg)
    (_vault_set(cfg, db, new) / f"{db}.dump.zst.age").unlink()  # the SFTP copy of the newest lost its dump
    r = cli(["--config", cfg, "backups", "sync", "--json"])
    assert r.code == 1, r.output
    assert any(e.startswith("vault: ") and f"{db}.dump.zst.age" in e and "missing" in e for e in r.json()["errors"])
    # the catalog says where the backup really is
    assert cli(["--config", cfg, "backups", "show", new, "--json"]).json()["storages"] == ["local1", "offsite"]
    assert cli(["--config", cfg, "backups", "show", old, "--json"]).json()["storages"] == ["local1", "offsite",
                                                                                          "vault"]
    # keep_last 1 deletes the older backup on local1 and offsite, but the older one is the newest complete copy
    # on vault: it stays there
    data = yaml.safe_load(cfg.read_text())
    data["jobs"]["db-backup"]["options"]["retention"] = KEEP_LAST_1
    cfg = make_config(data, "keep-last.yaml")
    r = cli(["--config", cfg, "backups", "prune", "--json"])
    assert r.code == 1, r.output  # the damaged copy is reported
    (series,) = r.json()
    assert series["deleted"] == []
    assert any("newest on vault" in b["reasons"] for b in series["backups"] if b["id"] == old)
    assert (_vault_set(cfg, db, old) / "manifest.json").exists()
    assert any(f"{db}.dump.zst.age" in e for e in series["errors"])


def test_verify_job_fails_on_a_newest_set_that_lost_an_object_everywhere(
        cli: Any, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path) -> None:
    """Such a set is no complete backup, but it is not skipped in silence for an older one: verify names it."""
    db, _ = app_db
    cfg = backup_config(db, verify={"restore": False})
    _backup(cli, cfg)
    new = _backup(cli, cfg)
    next((tmp_path / "store1").rglob(f"{new}/{db}.dump.zst.age")).unlink()
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 1, r.output
    art = next(a for a in r.json()[0]["artifacts"] if a["backup_id"] == new)
    assert not art["ok"] and not art["inconclusive"], art
    assert f"{db}.dump.zst.age" in art["error"], art


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_restore_reads_the_next_storage_when_a_copy_is_corrupt_or_lost_an_object(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], tmp_path: Path, s3_server: SeaweedS3,
        s3_bucket: str, sftp_server: SshServer, age_key: AgeKey, make_config: Any) -> None:
    db, counts = app_db
    cfg = _config(make_config, pg, db, tmp_path, s3_server, s3_bucket, sftp_server, age_key)
    bid = _backup(cli, cfg)
    dump = f"{db}.dump.zst.age"
    _flip_byte(next((tmp_path / "store1").rglob(f"{bid}/{dump}")))  # local1: corrupt
    s3_server.client().delete_object(Bucket=s3_bucket, Key=f"backups/db/{db}/{bid}/{dump}")  # offsite: lost it
    r = cli(["--config", cfg, "backups", "restore", bid, "--database", f"{db}_back", "--json"])
    assert r.code == 0, r.output
    res = r.json()
    assert res["storage"] == "vault", res
    skipped = res["copies_skipped"]
    assert skipped[0].startswith(f"local1: object {dump} is corrupt on storage local1"), skipped
    assert skipped[1].startswith("offsite: ") and dump in skipped[1], skipped
    with pg.connect(f"{db}_back") as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == counts["users"]
    # the copy asked for is the one read: its own error, naming the storage
    r = cli(["--config", cfg, "backups", "restore", bid, "--database", f"{db}_again", "--storage", "local1"])
    assert r.code == 1 and f"object {dump} is corrupt on storage local1" in " ".join(r.output.split()), r.output
    # verify reads one copy (the first) and says which one failed
    r = cli(["--config", cfg, "backups", "verify", bid, "--no-restore", "--json"])
    assert r.code == 1 and "on storage local1" in r.json()[0]["error"], r.output
    r = cli(["--config", cfg, "backups", "verify", bid, "--no-restore", "--storage", "vault", "--json"])
    assert r.code == 0 and r.json()[0]["storage"] == "vault", r.output
    assert "read from storage vault" in cli(["--config", cfg, "backups", "show", bid, "--json"]).json()[
        "verify_summary"]
    # no good copy anywhere: every copy is named
    _flip_byte(_vault_set(cfg, db, bid) / dump)
    r = cli(["--config", cfg, "backups", "restore", bid, "--database", f"{db}_third"])
    flat = " ".join(r.output.split())
    assert r.code == 1 and "no storage has a good copy" in flat, r.output
    assert all(f"{name}: " in flat for name in ("local1", "offsite", "vault")), flat
    with pg.connect() as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE %s",
                            (f"{db}_third%",)).fetchone()[0] == 0


def test_files_restore_reads_the_next_storage_when_an_archive_is_corrupt(
        cli: Any, tmp_path: Path, sftp_server: SshServer, age_key: AgeKey, make_config: Any) -> None:
    root = tmp_path / "app"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("print('hello')\n" * 200)
    cfg = make_config({
        "targets": {"web": {"kind": "app", "root": str(root)}},
        "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store1"), "fsync": False},
                     "vault": sftp_storage_config(sftp_server).model_dump(mode="json", exclude_none=True)},
        "backup": {"encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}},
        "jobs": {"app-backup": {"task": "files.backup", "target": "web"}},
    })
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    bid = r.json()[0]["artifacts"][0]["id"]
    archive = next(p for p in (tmp_path / "store1").rglob(f"{bid}/*") if p.name != "manifest.json")
    _flip_byte(archive)
    dest = tmp_path / "restored"
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest, "--json"])
    assert r.code == 0, r.output
    assert r.json()["storage"] == "vault" and "is corrupt on storage local1" in r.json()["copies_skipped"][0]
    assert (dest / str(root).lstrip("/") / "src" / "app.py").read_text() == "print('hello')\n" * 200
    assert not (dest / ".upkeeper-restore-incomplete").exists()


def test_verify_rotates_the_copy_read_in_full_and_all_copies_reads_every_one(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], tmp_path: Path, s3_server: SeaweedS3,
        s3_bucket: str, sftp_server: SshServer, age_key: AgeKey, make_config: Any, s3_reads: list[str]) -> None:
    """With --rotate-copies a verification reads one copy in full (the one proven least recently, local first),
    hashes the other local copies and checks the remote ones by listing (S3: only manifest.json is downloaded);
    the remote copies are read in full in turn.  By default verify reads every copy: one byte of the S3 copy
    is wrong, and verify fails naming it."""

    db, _ = app_db
    cfg = _config(make_config, pg, db, tmp_path, s3_server, s3_bucket, sftp_server, age_key)
    bid = _backup(cli, cfg)
    dump = f"{db}.dump.zst.age"
    order = []
    for _ in range(3):
        s3_reads.clear()
        r = cli(["--config", cfg, "backups", "verify", bid, "--no-restore", "--rotate-copies", "--json"])
        assert r.code == 0, r.output
        (rep,) = r.json()
        order.append(rep["storage"])
        assert sorted([*rep["copies_checked"], *rep["copies_listed"], rep["storage"]]) == ["local1", "offsite",
                                                                                             "vault"], rep
        assert "local1" not in rep["copies_listed"], rep  # a local copy costs no transfer: always hashed
        # (besides its own reader's marker, read back before it deletes it: a small JSON object)
        read = [n for n in names(s3_reads) if not n.startswith(".reading-")]
        assert (dump in read) == ("offsite" not in rep["copies_listed"]), (read, rep)
        if "offsite" in rep["copies_listed"]:
            assert read == ["manifest.json"], read
    assert order == ["local1", "offsite", "vault"], order
    proven = cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["copies_proven"]
    assert sorted(proven) == ["local1", "offsite", "vault"], proven
    r = cli(["--config", cfg, "backups", "verify", bid, "--no-restore", "--json"])
    assert r.code == 0, r.output
    assert r.json()[0]["storage"] == "local1" and r.json()[0]["copies_checked"] == ["offsite", "vault"], r.output
    c = s3_server.client()
    key = f"backups/db/{db}/{bid}/{dump}"
    body = bytearray(c.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0x01
    c.put_object(Bucket=s3_bucket, Key=key, Body=bytes(body))
    r = cli(["--config", cfg, "backups", "verify", bid, "--no-restore", "--json"])
    assert r.code == 1, r.output
    (rep,) = r.json()
    assert not rep["inconclusive"] and rep["failed_object"] == dump, rep
    assert f"object {dump} is corrupt on storage offsite" in rep["error"], rep
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "verify-failed"
    # --storage judges that copy alone
    r = cli(["--config", cfg, "backups", "verify", bid, "--no-restore", "--storage", "vault", "--json"])
    assert r.code == 0 and r.json()[0]["copies_checked"] == [], r.output
    # a failing copy check still reports the copies proven before it: the S3 copy good again, the SFTP one wrong
    body[len(body) // 2] ^= 0x01
    c.put_object(Bucket=s3_bucket, Key=key, Body=bytes(body))
    vault_dump = _vault_set(cfg, db, bid) / dump
    vault_body = bytearray(vault_dump.read_bytes())
    vault_body[len(vault_body) // 2] ^= 0x01
    vault_dump.write_bytes(bytes(vault_body))
    r = cli(["--config", cfg, "backups", "verify", bid, "--no-restore", "--json"])
    assert r.code == 1, r.output
    (rep,) = r.json()
    assert f"object {dump} is corrupt on storage vault" in rep["error"], rep
    assert (rep["storage"], rep["copies_checked"], rep["copies_listed"], rep["copies_not_checked"]) == (
        "local1", ["offsite"], [], []), rep


def test_verify_job_warns_about_a_copy_it_cannot_reach(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], tmp_path: Path, s3_server: SeaweedS3,
        s3_bucket: str, sftp_server: SshServer, age_key: AgeKey, make_config: Any) -> None:
    db, _ = app_db
    cfg = _config(make_config, pg, db, tmp_path, s3_server, s3_bucket, sftp_server, age_key)
    bid = _backup(cli, cfg)
    data = yaml.safe_load(cfg.read_text())
    data["storages"]["vault"]["port"] = 1  # the SFTP server is out of reach
    data["jobs"]["backup-verify"] = {"task": "backup.verify", "target": "db", "options": {"restore": False}}
    down = make_config(data, "vault-down.yaml")
    r = cli(["--config", down, "run", "backup-verify", "--json"])
    assert r.code == 0, r.output
    run = r.json()[0]
    assert run["status"] == "warn", run
    (art,) = run["artifacts"]
    assert art["ok"] and art["copies_checked"] == ["offsite"] and art["copies_not_checked"][0].startswith("vault: ")
    assert [f["check"] for f in run["findings"]] == ["backup.verify_copy_not_checked"], run["findings"]
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "verified"


def test_prune_with_a_storage_down_keeps_the_catalog_true_and_finishes_when_it_is_back(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], tmp_path: Path, s3_server: SeaweedS3,
        s3_bucket: str, sftp_server: SshServer, age_key: AgeKey, make_config: Any) -> None:
    db, _ = app_db
    cfg = _config(make_config, pg, db, tmp_path, s3_server, s3_bucket, sftp_server, age_key)
    first, newest = _backup(cli, cfg), _backup(cli, cfg)
    data = yaml.safe_load(cfg.read_text())
    data["jobs"]["db-backup"]["options"]["retention"] = KEEP_LAST_1
    up = make_config(data, "keep-last.yaml")
    data["storages"]["vault"]["port"] = 1  # sshd out of reach
    down = make_config(data, "vault-down.yaml")
    r = cli(["--config", down, "backups", "prune", "--json"])
    assert r.code == 1, r.output
    (series,) = r.json()
    assert series["deleted"] == [first], series["backups"]
    assert any(e.startswith("vault: ") for e in series["errors"]), series["errors"]

    def storages(bid: str) -> list[str] | None:
        rows = {x["id"]: x for x in cli(["--config", up, "backups", "list", "--json"]).json()}
        return rows[bid]["storages"] if bid in rows else None

    # deleted where reachable; still on vault, and the catalog says so
    assert storages(first) == ["vault"]
    assert storages(newest) == ["local1", "offsite", "vault"]
    assert (_vault_set(up, db, first) / "manifest.json").exists()
    # a restore of a pruned backup reads the copy that is left
    r = cli(["--config", up, "backups", "restore", first, "--database", f"{db}_first", "--json"])
    assert r.code == 0 and r.json()["storage"] == "vault", r.output
    # sshd reachable again: prune finishes the job there, the catalog follows
    r = cli(["--config", up, "backups", "prune", "--json"])
    assert r.code == 0, r.output
    assert storages(first) is None
    assert not _vault_set(up, db, first).exists()
    assert cli(["--config", up, "backups", "sync", "--json"]).json()["removed"] == 0
