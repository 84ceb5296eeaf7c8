"""A set being verified or restored is not deleted under its reader: ``backups rekey`` waits for the readers of the
original before deleting it, and retention keeps a set being read (a later prune deletes it).  Before, a rekey
made a running verify fail — a good backup marked verify-failed, a false alarm — and a prune made a restore of an
old backup fail midway.  Real age keys, local storage, S3 (SeaweedFS) and SFTP (sshd); the verify or restore runs in a child
process paused by its fault hook while the rekey or prune runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from services import sftp_storage_config

from .conftest import AgeKey
from .test_copy import _backup, _site, _storage, _wait_for
from .test_rekey import _all_sets, _new_key

PAUSE = 4  # seconds the child waits at its fault point: the rekey or prune runs meanwhile


def _config(make_config: Any, tmp_path: Path, key: AgeKey, s3: dict[str, Any] | None, *,
            old_key: AgeKey | None = None, retention: dict[str, Any] | None = None) -> Path:
    storages: dict[str, Any] = {"local1": {"kind": "local", "path": str(tmp_path / "local1"), "fsync": False}}
    if s3 is not None:
        storages["offsite"] = s3
    identities = [str(key.identity)] + ([str(old_key.identity)] if old_key else [])
    return Path(make_config({
        "targets": {"web": {"kind": "app", "root": str(_site(tmp_path))}},
        "storages": storages,
        "backup": {"storages": sorted(storages),
                   "encryption": {"recipients": [key.recipient], "identity_file": identities},
                   **({"retention": retention} if retention else {})},
        "jobs": {"app-backup": {"task": "files.backup", "target": "web"},
                 "app-verify": {"task": "backup.verify", "target": "web",
                                "options": {"scope": "newest", "restore": False}}},
    }))


def _s3(request: pytest.FixtureRequest, where: str) -> dict[str, Any] | None:
    """The remote storage of the ``where`` case (S3 on SeaweedFS, or SFTP on sshd); None for local only."""
    if where == "sftp":
        sftp: dict[str, Any] = sftp_storage_config(request.getfixturevalue("sftp_server")).model_dump(
            mode="json", exclude_none=True)
        return sftp
    if where != "s3":
        return None
    server = request.getfixturevalue("s3_server")
    cfg: dict[str, Any] = server.storage_config(request.getfixturevalue("s3_bucket"), prefix="backups")
    return cfg


def _paused(cfg: Path, tmp_path: Path, point: str, *argv: str, pause: float = PAUSE) -> subprocess.Popen[str]:
    """``upkeeper --config cfg ARGV`` in a child process, once it has reached ``point`` (where it waits ``pause``
    seconds)."""
    mark = tmp_path / "at-fault-point"
    mark.unlink(missing_ok=True)
    env = {**os.environ, "UPKEEPER_FAULT_PAUSE": f"{point}:{pause}", "UPKEEPER_FAULT_MARK": str(mark),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), *argv], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, text=True)
    try:
        _wait_for(mark.exists, f"{argv[0]} {argv[1]} to reach {point}")
    except BaseException:
        p.kill()
        p.communicate()
        raise
    return p


def _readers_left(cfg: Path, names: list[str]) -> list[str]:
    out = []
    for n in names:
        s = _storage(cfg, n)
        try:
            out += [o.key for o in s.list() if "/.reading-" in o.key]
        finally:
            s.close()
    return out


@pytest.mark.parametrize("where", ["local", "s3", "sftp"])
def test_rekey_waits_for_a_verify_job_of_the_original_which_passes_and_raises_no_alarm(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey, request: pytest.FixtureRequest,
        where: str) -> None:
    s3 = _s3(request, where)
    names = ["local1"] + (["offsite"] if s3 else [])
    cfg = _config(make_config, tmp_path, age_key, s3)
    old = _backup(cli, cfg)
    new_key = _new_key(tmp_path, "new")
    cfg = _config(make_config, tmp_path, new_key, s3, old_key=age_key)  # rotated, both keys where verify runs
    verify = _paused(cfg, tmp_path, "verify-located", "run", "app-verify", "--json")
    r = cli(["--config", cfg, "backups", "rekey", "--all", "--identity", str(age_key.identity), "--json"])
    out, err = verify.communicate(timeout=120)
    assert r.code == 0, r.output
    (rep,) = r.json()
    assert rep["action"] == "rekeyed", rep
    # the verify job read the original to its end: verified, no finding (before: the rekey deleted the original
    # under it, the job failed with a CRITICAL backup.verify_failed — a notification — for a good backup)
    assert verify.returncode == 0, out + err
    (res,) = json.loads(out)
    assert res["status"] == "ok" and res["findings"] == [], res
    assert res["artifacts"][0]["backup_id"] == old and res["artifacts"][0]["ok"] is True
    # then the rekey deleted the original: the new set alone is left, and no reader's marker
    assert _all_sets(cfg, names) == {n: {rep["new_id"]: True} for n in names}
    assert _readers_left(cfg, names) == []
    rows = cli(["--config", cfg, "backups", "list", "--json"]).json()
    assert [(x["id"], x["status"]) for x in rows] == [(rep["new_id"], "complete")]


@pytest.mark.parametrize("where", ["local", "s3", "sftp"])
def test_prune_keeps_a_backup_being_restored_and_a_later_prune_deletes_it(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey, request: pytest.FixtureRequest,
        where: str) -> None:
    s3 = _s3(request, where)
    names = ["local1"] + (["offsite"] if s3 else [])
    cfg = _config(make_config, tmp_path, age_key, s3)
    old = _backup(cli, cfg)
    new = _backup(cli, cfg)
    one = _config(make_config, tmp_path, age_key, s3, retention={"keep_last": 1, "keep_daily": 0, "keep_weekly": 0,
                                                                  "keep_monthly": 0})
    restore = _paused(one, tmp_path, "restore-located", "backups", "restore", old, "--to",
                      str(tmp_path / "restored"), "--json")
    r = cli(["--config", one, "backups", "prune", "--json"])
    out, err = restore.communicate(timeout=120)
    assert r.code == 0, r.output
    (series,) = r.json()
    kept = {b["id"]: b for b in series["backups"]}
    assert kept[old]["keep"] is True, r.output
    assert "being read by backups restore" in " ".join(kept[old]["reasons"]), r.output
    # the restore of the old backup finished (before: prune deleted it under the restore, which failed midway)
    assert restore.returncode == 0, out + err
    assert json.loads(out)["backup"] == old
    assert (tmp_path / "restored" / (tmp_path / "site").relative_to("/") / ".env").read_text() == "SECRET_KEY=s3cr3t\n"
    assert _readers_left(one, names) == []
    r = cli(["--config", one, "backups", "prune", "--json"])  # nobody reads it now: retention deletes it
    assert r.code == 0 and r.json()[0]["deleted"] == [old], r.output
    assert _all_sets(one, names) == {n: {new: True} for n in names}


@pytest.mark.parametrize("where", ["local"])  # the same code on every storage (the others: the tests above)
def test_a_restore_that_starts_between_prunes_look_and_its_lease_is_not_read_from_under(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey, request: pytest.FixtureRequest,
        where: str) -> None:
    """Prune looked for readers of the set retention lets go, then took its lease and deleted it: a restore that put
    its reader's marker beside the set between those two steps had its backup deleted under it (it failed midway).
    Prune looks again once it holds the lease, and keeps the set."""
    s3 = _s3(request, where)
    cfg = _config(make_config, tmp_path, age_key, s3)
    old = _backup(cli, cfg)
    new = _backup(cli, cfg)
    one = _config(make_config, tmp_path, age_key, s3, retention={"keep_last": 1, "keep_daily": 0, "keep_weekly": 0,
                                                                  "keep_monthly": 0})
    # the prune has looked (no reader) and waits 3 × PAUSE before it takes the lease; the restore takes its marker
    # meanwhile (it is at its own fault point, after the marker, before the prune goes on), then waits 5 × PAUSE
    prune = _paused(one, tmp_path, "prune-readers-checked", "backups", "prune", "--json", pause=3 * PAUSE)
    restore = _paused(one, tmp_path, "restore-located", "backups", "restore", old, "--to",
                      str(tmp_path / "restored"), "--json", pause=5 * PAUSE)
    assert prune.poll() is None
    pout, perr = prune.communicate(timeout=120)
    out, err = restore.communicate(timeout=120)
    assert prune.returncode == 0, pout + perr
    (series,) = json.loads(pout)
    kept = {b["id"]: b for b in series["backups"]}
    assert kept[old]["keep"] is True and series["deleted"] == [], pout
    assert "being read by backups restore" in " ".join(kept[old]["reasons"]), pout
    assert restore.returncode == 0, out + err
    assert json.loads(out)["backup"] == old
    assert (tmp_path / "restored" / (tmp_path / "site").relative_to("/") / ".env").read_text() == "SECRET_KEY=s3cr3t\n"
    assert new in {b["id"] for b in series["backups"]}


def test_a_verify_whose_set_rekey_deleted_unseen_judges_nothing(cli: Any, make_config: Any, tmp_path: Path,
                                                                 age_key: AgeKey) -> None:
    """The reader's marker could not be written (read-only credentials) or was not seen: the verify that finds the
    original gone, re-encrypted beside it, is no verdict — never verify-failed, never a CRITICAL finding."""
    cfg = _config(make_config, tmp_path, age_key, None)
    old = _backup(cli, cfg)
    new_key = _new_key(tmp_path, "new")
    cfg = _config(make_config, tmp_path, new_key, None, old_key=age_key)
    verify = _paused(cfg, tmp_path, "verify-located", "run", "app-verify", "--json")
    for key in _readers_left(cfg, ["local1"]):  # as if never written
        (tmp_path / "local1" / key).unlink()
    r = cli(["--config", cfg, "backups", "rekey", "--all", "--identity", str(age_key.identity), "--json"])
    out, err = verify.communicate(timeout=120)
    assert r.code == 0 and r.json()[0]["action"] == "rekeyed", r.output
    new = r.json()[0]["new_id"]
    (res,) = json.loads(out)
    assert [(f["check"], f["severity"]) for f in res["findings"]] == [("backup.verify_deleted_meanwhile", "info")], res
    art = res["artifacts"][0]
    assert art["backup_id"] == old and art["ok"] is False and art["inconclusive"] is True, art
    assert f"re-encrypted as {new}" in art["error"] and "nothing judged" in art["error"], art
    rows = cli(["--config", cfg, "backups", "list", "--json"]).json()
    assert [(x["id"], x["status"]) for x in rows] == [(new, "complete")]
    assert verify.returncode == 0, out + err
    r = cli(["--config", cfg, "backups", "verify", new, "--no-restore"])  # the re-encryption verifies
    assert r.code == 0, r.output


def test_a_restore_whose_set_rekey_deleted_unseen_says_what_to_restore_instead(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """The reader's marker not seen: the restore fails midway, as it must — and says the backup was re-encrypted
    under it, naming the id to restore (it said only that an object was missing)."""
    cfg = _config(make_config, tmp_path, age_key, None)
    old = _backup(cli, cfg)
    new_key = _new_key(tmp_path, "new")
    cfg = _config(make_config, tmp_path, new_key, None, old_key=age_key)
    to = tmp_path / "restored"
    restore = _paused(cfg, tmp_path, "restore-located", "backups", "restore", old, "--to", str(to))
    for key in _readers_left(cfg, ["local1"]):  # as if never written
        (tmp_path / "local1" / key).unlink()
    r = cli(["--config", cfg, "backups", "rekey", "--all", "--identity", str(age_key.identity), "--json"])
    assert r.code == 0 and r.json()[0]["action"] == "rekeyed", r.output
    new = r.json()[0]["new_id"]
    out, err = restore.communicate(timeout=120)
    assert restore.returncode == 1, out + err
    text = " ".join(err.split())
    assert f"backup {old} was re-encrypted as {new} ('backups rekey') and deleted while it was restored" in text, err
    assert f"Try: restore {new}" in text and not to.exists(), err
    r = cli(["--config", cfg, "backups", "restore", new, "--to", str(to)])
    assert r.code == 0, r.output


def _copy_config(make_config: Any, tmp_path: Path, key: AgeKey, s3: dict[str, Any] | None,
                 retention: dict[str, Any] | None = None) -> Path:
    """Backups on one storage (local1, or offsite on S3 or SFTP), and a local storage ``dst`` to copy them to."""
    storages: dict[str, Any] = {"dst": {"kind": "local", "path": str(tmp_path / "dst"), "fsync": False}}
    src = "offsite" if s3 is not None else "local1"
    storages[src] = s3 if s3 is not None else {"kind": "local", "path": str(tmp_path / "local1"), "fsync": False}
    return Path(make_config({
        "targets": {"web": {"kind": "app", "root": str(_site(tmp_path))}},
        "storages": storages,
        "backup": {"storages": [src], "encryption": {"recipients": [key.recipient], "identity_file": str(key.identity)},
                   **({"retention": retention} if retention else {})},
        "jobs": {"app-backup": {"task": "files.backup", "target": "web"}},
    }))


@pytest.mark.parametrize("where", ["local", "s3", "sftp"])
def test_prune_keeps_a_backup_being_copied_and_the_copy_completes(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey, request: pytest.FixtureRequest,
        where: str) -> None:
    """``backups copy`` reads its source set as a verify does, and holds a reader's marker beside it: a prune
    (retention) meanwhile keeps the set.  Before, the prune deleted the source under the copy, which failed midway
    (the source's manifest.json gone) and had to be run again."""
    s3 = _s3(request, where)
    src = "offsite" if s3 is not None else "local1"
    cfg = _copy_config(make_config, tmp_path, age_key, s3)
    old = _backup(cli, cfg)
    new = _backup(cli, cfg)
    one = _copy_config(make_config, tmp_path, age_key, s3,
                       retention={"keep_last": 1, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0})
    copy = _paused(one, tmp_path, "copy-reading", "backups", "copy", old, "--to", "dst", "--json")
    markers = _readers_left(one, [src])
    r = cli(["--config", one, "backups", "prune", "--json"])
    out, err = copy.communicate(timeout=120)
    assert r.code == 0, r.output
    kept = {b["id"]: b for b in r.json()[0]["backups"]}
    assert kept[old]["keep"] is True, r.output
    assert "being read by backups copy" in " ".join(kept[old]["reasons"]), r.output
    assert copy.returncode == 0, out + err
    (rep,) = json.loads(out)
    assert rep["action"] == "copied", rep
    assert len(markers) == 1, markers  # its marker, beside the set on the source, while it copied
    assert _all_sets(one, [src, "dst"]) == {src: {old: True, new: True}, "dst": {old: True}}
    assert _readers_left(one, [src, "dst"]) == []


@pytest.mark.parametrize("where", ["local", "s3"])
def test_prune_keeps_a_backup_being_rekeyed_and_the_rekey_completes(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey, request: pytest.FixtureRequest,
        where: str) -> None:
    """``backups rekey`` reads the original set as a copy does, and holds a reader's marker beside it meanwhile: a
    prune (retention) keeps the set, and the rekey completes.  Before, rekey held a lease on its new set only: the
    prune deleted the original under it, and the rekey failed midway saying an object 'could not be read intact
    from any storage' (Try: verify), of a backup that was fine a moment before."""
    s3 = _s3(request, where)
    names = ["local1"] + (["offsite"] if s3 else [])
    cfg = _config(make_config, tmp_path, age_key, s3)
    old = _backup(cli, cfg)
    new = _backup(cli, cfg)
    new_key = _new_key(tmp_path, "new")
    one = _config(make_config, tmp_path, new_key, s3, old_key=age_key,
                  retention={"keep_last": 1, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0})
    # paused as it writes the first chunk of each re-encrypted object: the prune runs during the first
    rekey = _paused(one, tmp_path, "during-upload", "backups", "rekey", old, "--identity", str(age_key.identity),
                    "--json", pause=2 * PAUSE)
    markers = _readers_left(one, names)
    r = cli(["--config", one, "backups", "prune", "--json"])
    out, err = rekey.communicate(timeout=180)
    assert r.code == 0, r.output
    kept = {b["id"]: b for b in r.json()[0]["backups"]}
    assert kept[old]["keep"] is True, r.output
    assert "being read by backups rekey" in " ".join(kept[old]["reasons"]), r.output
    assert rekey.returncode == 0, out + err
    (rep,) = json.loads(out)
    assert rep["action"] == "rekeyed", rep
    assert len(markers) == len(names), markers  # its marker, beside the original on each storage holding it
    assert _all_sets(one, names) == {n: {rep["new_id"]: True, new: True} for n in names}
    assert _readers_left(one, names) == []
