"""``upkeeper backups rekey``: backups re-encrypted to the configured key with real age keys, on local storage and
S3 (SeaweedFS); a rekey killed at any point leaves a complete backup, and running it again finishes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from upkeeper.storage import Storage

from .conftest import AgeKey
from .test_copy import _backup, _row, _site, _storage, _wait_for


def _new_key(tmp_path: Path, name: str) -> AgeKey:
    key = tmp_path / f"{name}.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    pub = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True).stdout.strip()
    return AgeKey(key, pub)


def _keys(key: AgeKey) -> dict[str, Any]:
    return {"recipients": [key.recipient], "identity_file": str(key.identity)}


def _config(make_config: Any, tmp_path: Path, encryption: dict[str, Any] | str, s3: dict[str, Any] | None = None,
            retention: dict[str, Any] | None = None, *, secrets: bool = True) -> Path:
    storages: dict[str, Any] = {n: {"kind": "local", "path": str(tmp_path / n), "fsync": False}
                                for n in ("local1", "local2")}
    if s3 is not None:
        storages["offsite"] = s3
    return Path(make_config({
        "targets": {"web": {"kind": "app", "root": str(_site(tmp_path))}},
        "storages": storages, "backup": {"storages": sorted(storages), "encryption": encryption,
                                         **({"retention": retention} if retention else {})},
        "jobs": {"app-backup": {"task": "files.backup", "target": "web", "options": {"secret_paths": [".env"] if encryption != "none" and secrets else []}}},
    }))


def _sets(storage: Storage) -> dict[str, bool]:
    """Set id -> complete, on one storage."""
    out: dict[str, bool] = {}
    for o in storage.list():
        parts = o.key.split("/")
        out[parts[2]] = out.get(parts[2], False) or parts[-1] == "manifest.json"
    return out


def _all_sets(cfg: Path, names: list[str]) -> dict[str, dict[str, bool]]:
    out = {}
    for n in names:
        s = _storage(cfg, n)
        try:
            out[n] = _sets(s)
        finally:
            s.close()
    return out


def _manifest(cfg: Path, storage: str, bid: str) -> tuple[dict[str, Any], str]:
    s = _storage(cfg, storage)
    try:
        with s.open_read(f"web/files/{bid}/manifest.json") as fh:
            data = fh.read()
    finally:
        s.close()
    return json.loads(data), hashlib.sha256(data).hexdigest()


def _opens_with(cfg: Path, storage: str, bid: str, key: AgeKey) -> bool:
    """Does ``age -d -i key`` open the backup's first object (the age CLI, not upkeeper)?"""
    m, _ = _manifest(cfg, storage, bid)
    s = _storage(cfg, storage)
    try:
        with s.open_read(f"web/files/{bid}/{m['objects'][0]['name']}") as fh:
            data = fh.read()
    finally:
        s.close()
    return subprocess.run(["age", "-d", "-i", str(key.identity)], input=data, capture_output=True).returncode == 0


def test_rekey_to_a_new_key_on_every_storage_then_the_old_key_opens_nothing(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    cfg = _config(make_config, tmp_path, _keys(age_key))
    old = _backup(cli, cfg)
    backed_up = (tmp_path / "site" / "app" / "main.py").read_bytes()  # (_config writes the site anew)
    row = _row(cli, cfg, old)
    assert row["storages"] == ["local1", "local2"]
    new_key = _new_key(tmp_path, "new")
    cfg = _config(make_config, tmp_path, _keys(new_key))  # the admin rotated: new recipients and identity
    r = cli(["--config", cfg, "backups", "rekey", "--all", "--identity", str(age_key.identity), "--dry-run",
             "--json"])
    assert r.code == 0 and [x["action"] for x in r.json()] == ["would rekey"], r.output
    assert _all_sets(cfg, ["local1", "local2"]) == {"local1": {old: True}, "local2": {old: True}}
    r = cli(["--config", cfg, "backups", "rekey", "--all", "--identity", str(age_key.identity), "--json"])
    assert r.code == 0, r.output
    (rep,) = r.json()
    assert rep["action"] == "rekeyed" and rep["storages"] == ["local1", "local2"] and rep["objects"] == 2
    new = rep["new_id"]
    assert new != old and new[:16] == old[:16]  # the same time
    # only the new set is left, on both storages; the catalog has it alone, with the stored manifest's SHA-256
    assert _all_sets(cfg, ["local1", "local2"]) == {"local1": {new: True}, "local2": {new: True}}
    rows = cli(["--config", cfg, "backups", "list", "--json"]).json()
    assert [(x["id"], x["storages"], x["status"]) for x in rows] == [(new, ["local1", "local2"], "complete")]
    m, sha = _manifest(cfg, "local1", new)
    assert rows[0]["manifest_sha256"] == sha == _manifest(cfg, "local2", new)[1]
    assert m["rekeyed_from"] == old and m["encryption"]["recipients"] == [new_key.recipient]
    assert m["started_at"] == row["started_at"] and m["raw_size"] == row["raw_size"]
    assert all(o["encryption"] == "age-x25519" for o in m["objects"])
    assert _opens_with(cfg, "local1", new, new_key) and not _opens_with(cfg, "local1", new, age_key)
    r = cli(["--config", cfg, "backups", "verify", new, "--json"])  # with the new key only
    assert r.code == 0, r.output
    r = cli(["--config", cfg, "backups", "sync", "--json"])
    assert r.code == 0 and (r.json()["added"], r.json()["removed"]) == (0, 0), r.output
    r = cli(["--config", cfg, "backups", "rekey", "--all", "--json"])
    assert r.code == 0 and r.json()[0]["action"] == "already current", r.output
    r = cli(["--config", cfg, "backups", "restore", new, "--to", str(tmp_path / "restored")])
    assert r.code == 0, r.output
    site = tmp_path / "site"
    assert (tmp_path / "restored" / site.relative_to("/") / ".env").read_text() == "SECRET_KEY=s3cr3t\n"
    assert (tmp_path / "restored" / site.relative_to("/") / "app" / "main.py").read_bytes() == backed_up


def test_a_passphrase_backup_rekeyed_to_recipients(cli: Any, make_config: Any, tmp_path: Path) -> None:
    pw = tmp_path / "old.pass"
    pw.write_text("correct horse battery staple\n")
    cfg = _config(make_config, tmp_path, {"passphrase_file": str(pw)})
    old = _backup(cli, cfg)
    key = _new_key(tmp_path, "new")
    cfg = _config(make_config, tmp_path, _keys(key))
    r = cli(["--config", cfg, "backups", "rekey", old, "--json"])  # the old passphrase not given: refused
    assert r.code == 1 and "passphrase" in r.json()[0]["error"], r.output
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not it\n")
    r = cli(["--config", cfg, "backups", "rekey", old, "--passphrase-file", str(wrong), "--json"])
    assert r.code == 1 and "decryption failed" in r.json()[0]["error"], r.output
    assert _all_sets(cfg, ["local1", "local2"]) == {"local1": {old: True}, "local2": {old: True}}  # untouched
    r = cli(["--config", cfg, "backups", "rekey", old, "--passphrase-file", str(pw), "--json"])
    assert r.code == 0 and r.json()[0]["action"] == "rekeyed", r.output
    new = r.json()[0]["new_id"]
    m, _ = _manifest(cfg, "local2", new)
    assert m["encryption"]["method"] == "age-x25519" and {o["encryption"] for o in m["objects"]} == {"age-x25519"}
    assert _opens_with(cfg, "local2", new, key)
    r = cli(["--config", cfg, "backups", "verify", new])
    assert r.code == 0, r.output


def _killed_rekey(cfg: Path, tmp_path: Path, point: str, identity: Path, sig: signal.Signals = signal.SIGKILL
                  ) -> None:
    mark = tmp_path / "at-fault-point"
    mark.unlink(missing_ok=True)
    env = {**os.environ, "UPKEEPER_FAULT_PAUSE": f"{point}:60", "UPKEEPER_FAULT_MARK": str(mark),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "backups", "rekey", "--all",
                          "--identity", str(identity)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         start_new_session=True)
    try:
        _wait_for(mark.exists, f"the rekey to reach {point}")
        os.killpg(p.pid, sig)
        p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()


@pytest.mark.parametrize("where", ["local", "s3"])
@pytest.mark.parametrize("point", ["during-upload", "before-manifest", "before-delete"])
def test_a_rekey_killed_anywhere_leaves_a_complete_backup_and_running_it_again_finishes(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey, request: pytest.FixtureRequest, where: str,
        point: str) -> None:
    s3 = None
    if where == "s3":
        server = request.getfixturevalue("s3_server")
        s3 = server.storage_config(request.getfixturevalue("s3_bucket"), prefix="backups")
    cfg = _config(make_config, tmp_path, _keys(age_key), s3)
    names = ["local1", "local2"] + (["offsite"] if s3 else [])
    old = _backup(cli, cfg)
    new_key = _new_key(tmp_path, "new")
    # rotated as docs/backups.md says: the new recipient, and both keys where verify runs
    cfg = _config(make_config, tmp_path, {"recipients": [new_key.recipient],
                                          "identity_file": [str(new_key.identity), str(age_key.identity)]}, s3)
    _killed_rekey(cfg, tmp_path, point, age_key.identity)
    sets = _all_sets(cfg, names)
    # on every storage, the old backup complete or (killed after the new manifest) the new one: never neither
    for n in names:
        assert sets[n].get(old) or any(v for k, v in sets[n].items() if k != old), (n, sets)
    listed = cli(["--config", cfg, "backups", "list", "--json"]).json()
    for x in listed:  # whatever the catalog lists is complete and verifies (the old key kept as a second identity)
        r = cli(["--config", cfg, "backups", "verify", x["id"], "--no-restore"])
        assert r.code == 0, r.output
    if point == "before-delete":  # both complete, of one time: a policy keeping one keeps the re-encryption,
        # and the old one stays (never the old one alone, which the finishing rekey would delete)
        one = _config(make_config, tmp_path, {"recipients": [new_key.recipient], "identity_file": [
            str(new_key.identity), str(age_key.identity)]}, s3, {"keep_last": 1, "keep_daily": 0, "keep_weekly": 0,
                                                                 "keep_monthly": 0})
        r = cli(["--config", one, "backups", "prune", "--json"])
        assert r.code == 0, r.output
        (series,) = r.json()
        kept = {b["id"]: b["keep"] for b in series["backups"]}
        assert len(kept) == 2 and all(kept.values()), r.output
    r = cli(["--config", cfg, "backups", "rekey", "--all", "--identity", str(age_key.identity), "--json"])
    assert r.code == 0, r.output
    reps = {x["id"]: x for x in r.json()}
    assert reps[old]["action"] == ("finished" if point == "before-delete" else "rekeyed"), reps
    new = reps[old]["new_id"]
    if point == "before-delete":  # the catalog had the new one too
        assert reps[new]["action"] == "already current"
    assert _all_sets(cfg, names) == {n: {new: True} for n in names}
    rows = cli(["--config", cfg, "backups", "list", "--json"]).json()
    assert [(x["id"], x["storages"]) for x in rows] == [(new, names)]
    for n in names:
        r = cli(["--config", cfg, "backups", "verify", new, "--storage", n, "--no-restore"])
        assert r.code == 0, r.output


def test_a_stopped_rekey_removes_its_partial_set(cli: Any, make_config: Any, tmp_path: Path,
                                                 age_key: AgeKey) -> None:
    cfg = _config(make_config, tmp_path, _keys(age_key))
    old = _backup(cli, cfg)
    cfg = _config(make_config, tmp_path, _keys(_new_key(tmp_path, "new")))
    _killed_rekey(cfg, tmp_path, "during-upload", age_key.identity, signal.SIGTERM)
    assert _all_sets(cfg, ["local1", "local2"]) == {"local1": {old: True}, "local2": {old: True}}
    assert [x["id"] for x in cli(["--config", cfg, "backups", "list", "--json"]).json()] == [old]


def test_an_unencrypted_backup_is_encrypted_and_rekey_never_decrypts(cli: Any, make_config: Any,
                                                                      tmp_path: Path) -> None:
    cfg = _config(make_config, tmp_path, "none")
    old = _backup(cli, cfg)
    r = cli(["--config", cfg, "backups", "rekey", "--all"])
    assert r.code == 2 and "never stores them decrypted" in r.output, r.output
    key = _new_key(tmp_path, "new")
    cfg = _config(make_config, tmp_path, _keys(key))
    r = cli(["--config", cfg, "backups", "rekey", old, "--json"])
    assert r.code == 0 and r.json()[0]["action"] == "rekeyed", r.output
    new = r.json()[0]["new_id"]
    assert _opens_with(cfg, "local1", new, key)
    r = cli(["--config", cfg, "backups", "verify", new])
    assert r.code == 0, r.output


def test_a_rekeyed_postgres_backup_restores_with_the_new_key_and_its_row_counts(
        cli: Any, app_db: tuple[str, dict[str, int]], backup_config: Any, make_config: Any, tmp_path: Path,
        age_key: AgeKey) -> None:
    import yaml

    db, _counts = app_db
    cfg = backup_config(db, storages=2)
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    old = str(r.json()[0]["artifacts"][0]["id"])
    key = _new_key(tmp_path, "new")
    data = yaml.safe_load(cfg.read_text())
    data["backup"]["encryption"] = _keys(key)  # the new key only: the old one is gone from this host
    cfg = make_config(data, "rotated.yaml")
    r = cli(["--config", cfg, "backups", "rekey", old, "--identity", str(age_key.identity), "--json"])
    assert r.code == 0 and r.json()[0]["action"] == "rekeyed", r.output
    new = r.json()[0]["new_id"]
    r = cli(["--config", cfg, "backups", "verify", new, "--json"])  # a real restore, row counts compared
    assert r.code == 0 and r.json()[0]["ok"], r.output
    assert [x["id"] for x in cli(["--config", cfg, "backups", "list", "--json"]).json()] == [new]


def test_a_leaked_passphrase_rotated_to_a_new_one(cli: Any, make_config: Any, tmp_path: Path) -> None:
    old_pw, new_pw = "leaked horse battery staple", "fresh otter kettle 42"
    old_file, new_file = tmp_path / "old.pass", tmp_path / "new.pass"
    old_file.write_text(old_pw + "\n")
    new_file.write_text(new_pw + "\n")
    # one object per set (no secrets archive): each age scrypt costs ~0.6 s
    cfg = _config(make_config, tmp_path, {"passphrase_file": str(old_file)}, secrets=False)
    old = _backup(cli, cfg)
    backed_up = (tmp_path / "site" / "app" / "main.py").read_bytes()
    cfg = _config(make_config, tmp_path, {"passphrase_file": str(new_file)}, secrets=False)  # the rotated config
    r = cli(["--config", cfg, "backups", "rekey", "--all", "--passphrase-file", str(old_file), "--json"])
    assert r.code == 0, r.output
    (rep,) = r.json()
    assert rep["action"] == "rekeyed" and rep["storages"] == ["local1", "local2"] and rep["objects"] == 1, rep
    new = rep["new_id"]
    assert _all_sets(cfg, ["local1", "local2"]) == {"local1": {new: True}, "local2": {new: True}}
    rows = cli(["--config", cfg, "backups", "list", "--json"]).json()
    assert [(x["id"], x["storages"]) for x in rows] == [(new, ["local1", "local2"])]
    m, sha = _manifest(cfg, "local1", new)
    assert rows[0]["manifest_sha256"] == sha and m["rekeyed_from"] == old
    assert m["encryption"]["method"] == "age-scrypt" and {o["encryption"] for o in m["objects"]} == {"age-scrypt"}
    # run again (as after a partly failed rotation): the new passphrase opens it, so it is current, not "failed"
    r = cli(["--config", cfg, "backups", "rekey", "--all", "--passphrase-file", str(old_file), "--json"])
    assert r.code == 0 and [x["action"] for x in r.json()] == ["already current"], r.output
    # the new passphrase alone restores it (a real restore, files compared); the old one opens no object of it
    r = cli(["--config", cfg, "backups", "restore", new, "--to", str(tmp_path / "restored")])
    assert r.code == 0, r.output
    site = tmp_path / "site"
    assert (tmp_path / "restored" / site.relative_to("/") / "app" / "main.py").read_bytes() == backed_up
    s = _storage(cfg, "local1")
    try:
        with s.open_read(f"web/files/{new}/{m['objects'][0]['name']}") as fh:
            assert not _age_passphrase_opens(fh.read(), old_pw)
    finally:
        s.close()
    # neither passphrase in the history (the audit record) nor in what rekey printed
    assert old_pw.encode() not in (tmp_path / "history.db").read_bytes() and new_pw.encode() not in (
        tmp_path / "history.db").read_bytes()


def _age_passphrase_opens(data: bytes, passphrase: str) -> bool:
    """Does the age CLI decrypt ``data`` whole with ``passphrase`` (typed on a terminal, as age wants)?"""
    from upkeeper.backup.crypto import AgeProcess
    from upkeeper.errors import ProcessError

    p = AgeProcess(["age", "--decrypt"], passphrase, stdout=subprocess.DEVNULL)
    try:
        p.stdin.write(data)
        p.stdin.close()
        p.wait()
        return True
    except (ProcessError, BrokenPipeError):
        return False
    finally:
        p.close()


def test_rekey_on_sftp_storage_leaves_only_the_new_set(cli: Any, make_config: Any, tmp_path: Path,
                                                         age_key: AgeKey, sftp_server: Any) -> None:
    from services import sftp_storage_config

    sftp = sftp_storage_config(sftp_server)
    cfg = _config(make_config, tmp_path, _keys(age_key), sftp.model_dump(mode="json", exclude_none=True))
    names = ["local1", "local2", "offsite"]
    old = _backup(cli, cfg)
    new_key = _new_key(tmp_path, "new")
    cfg = _config(make_config, tmp_path, _keys(new_key), sftp.model_dump(mode="json", exclude_none=True))
    r = cli(["--config", cfg, "backups", "rekey", "--all", "--identity", str(age_key.identity), "--json"])
    assert r.code == 0, r.output
    (rep,) = r.json()
    assert rep["action"] == "rekeyed" and rep["storages"] == names, rep
    new = rep["new_id"]
    assert _all_sets(cfg, names) == {n: {new: True} for n in names}
    # on the SFTP server itself: the new set's files alone (no temp file, no empty directory of the old set)
    root = Path(sftp.path)
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert left == ["web", "web/files", f"web/files/{new}", *sorted(
        f"web/files/{new}/{f}" for f in ("files.tar.zst.age", "manifest.json", "secrets.tar.zst.age"))], left
    rows = cli(["--config", cfg, "backups", "list", "--json"]).json()
    assert [(x["id"], x["storages"]) for x in rows] == [(new, names)]
    m, sha = _manifest(cfg, "offsite", new)
    assert rows[0]["manifest_sha256"] == sha and m["rekeyed_from"] == old
    assert _opens_with(cfg, "offsite", new, new_key) and not _opens_with(cfg, "offsite", new, age_key)
    r = cli(["--config", cfg, "backups", "verify", new, "--storage", "offsite", "--no-restore", "--json"])
    assert r.code == 0, r.output
    r = cli(["--config", cfg, "backups", "sync", "--json"])
    assert r.code == 0 and (r.json()["added"], r.json()["removed"]) == (0, 0), r.output
