"""``upkeeper backups copy``: backups copied to another storage — local, S3 (SeaweedFS) and SFTP (sshd), all
real — checked against the manifest while they stream, the manifest last, never a partial backup listed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services import sftp_storage_config
from upkeeper.backup.manifest import LEASE, LEASE_TTL, delete_set
from upkeeper.config.loader import load_config
from upkeeper.storage import Storage, open_storage
from upkeeper.storage.base import put_bytes

from .conftest import AgeKey, names


@dataclass
class Dest:
    kind: str
    config: dict[str, Any]  # the storages: entry
    residue: Callable[[], list[str]]  # everything physically there: hidden temp files and pending uploads too


def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture(params=["local", "s3", "sftp"])
def dest(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Dest]:
    """The storage copied to: each of the contract suite's real backends, fresh and empty."""
    kind = request.param
    if kind == "local":
        root = tmp_path / "dest"
        root.mkdir()
        yield Dest(kind, {"kind": "local", "path": str(root), "fsync": False}, lambda: _files_under(root))
    elif kind == "s3":
        server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        client = server.client()

        def residue() -> list[str]:
            objs = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
            ups = [f"upload:{u['Key']}" for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
            return sorted(objs + ups)

        yield Dest(kind, server.storage_config(bucket, prefix="backups"), residue)
    else:
        cfg = sftp_storage_config(request.getfixturevalue("sftp_server"))
        root = Path(cfg.path)
        yield Dest(kind, cfg.model_dump(mode="json", exclude_none=True), lambda: _files_under(root))


def _site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "app").mkdir(parents=True, exist_ok=True)
    (root / "app" / "main.py").write_bytes(os.urandom(300_000))  # incompressible: real bytes to stream
    (root / "index.html").write_text("<h1>hello</h1>\n" * 100)
    (root / ".env").write_text("SECRET_KEY=s3cr3t\n")
    return root


def _config(make_config: Any, tmp_path: Path, age_key: AgeKey | None, dest: Dest | None, *, locals_: int = 1,
            backup: dict[str, Any] | None = None) -> Path:
    storages: dict[str, Any] = {f"local{i + 1}": {"kind": "local", "path": str(tmp_path / f"store{i + 1}"),
                                                  "fsync": False} for i in range(locals_)}
    if dest is not None:
        storages["offsite"] = dest.config
    b: dict[str, Any] = {"storages": [f"local{i + 1}" for i in range(locals_)]}
    if age_key is not None:
        b["encryption"] = {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}
    b.update(backup or {})
    return Path(make_config({
        "targets": {"web": {"kind": "app", "root": str(_site(tmp_path))}},
        "storages": storages, "backup": b,
        "jobs": {"app-backup": {"task": "files.backup", "target": "web",
                                "options": {"secret_paths": [".env"] if age_key else []}}},
    }))


def _backup(cli: Any, cfg: Path) -> str:
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    return str(r.json()[0]["artifacts"][0]["id"])


def _storage(cfg: Path, name: str) -> Storage:
    return open_storage(name, load_config(cfg).storages[name])


def _tree(storage: Storage) -> dict[str, str]:
    out = {}
    for o in storage.list():
        with storage.open_read(o.key) as fh:
            out[o.key] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _row(cli: Any, cfg: Path, bid: str) -> dict[str, Any]:
    r = cli(["--config", cfg, "backups", "show", bid, "--json"])
    assert r.code == 0, r.output
    row: dict[str, Any] = r.json()
    return row


def test_copy_to_each_real_storage_then_again_skips(cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey,
                                                   dest: Dest) -> None:
    cfg = _config(make_config, tmp_path, age_key, dest)
    bid = _backup(cli, cfg)
    assert _row(cli, cfg, bid)["storages"] == ["local1"]
    r = cli(["--config", cfg, "backups", "copy", "--all", "--to", "offsite", "--dry-run", "--json"])
    assert r.code == 0 and [x["action"] for x in r.json()] == ["would copy"], r.output
    assert dest.residue() == []  # a dry run writes nothing
    r = cli(["--config", cfg, "backups", "copy", bid, "--to", "offsite", "--json"])
    assert r.code == 0, r.output
    (rep,) = r.json()
    assert rep["action"] == "copied" and rep["source"] == "local1" and rep["objects"] == 2 and rep["ok"]
    # byte for byte the same set (still encrypted: the secrets archive and the files archive), nothing else there
    src, dst = _storage(cfg, "local1"), _storage(cfg, "offsite")
    try:
        assert _tree(dst) == _tree(src)
        assert rep["bytes"] == sum(o.size for o in dst.list() if not o.key.endswith("manifest.json"))
        assert all(k.endswith((".age", "manifest.json")) for k in _tree(dst))
    finally:
        src.close()
        dst.close()
    assert len(dest.residue()) == 3  # no temp file or pending upload left
    assert _row(cli, cfg, bid)["storages"] == ["local1", "offsite"]
    # the catalog rebuilt from the storages agrees, and the copy restores on its own
    r = cli(["--config", cfg, "backups", "sync", "--json"])
    assert r.code == 0 and r.json()["updated"] == 1, r.output
    assert _row(cli, cfg, bid)["storages"] == ["local1", "offsite"]
    r = cli(["--config", cfg, "backups", "verify", bid, "--storage", "offsite", "--json"])
    assert r.code == 0 and r.json()[0]["ok"], r.output
    # idempotent: the complete copy is checked (its manifest.json; every object's size, and on a local one its
    # SHA-256) and skipped
    before = dest.residue()
    r = cli(["--config", cfg, "backups", "copy", "--target", "web", "--to", "offsite", "--json"])
    assert r.code == 0, r.output
    (rep,) = r.json()
    assert rep["action"] == "already there" and rep["objects"] == 0 and rep["reused"] == 2 and rep["bytes"] == 0
    assert dest.residue() == before


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_damaged_source_object_fails_that_backup_naming_it_and_leaves_nothing_there(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey, s3_server: Any, s3_bucket: str) -> None:
    d = Dest("s3", s3_server.storage_config(s3_bucket, prefix="backups"), lambda: [])
    client = s3_server.client()
    cfg = _config(make_config, tmp_path, age_key, d)
    bid = _backup(cli, cfg)
    (mpath,) = list((tmp_path / "store1").rglob("manifest.json"))
    names = [o["name"] for o in json.loads(mpath.read_text())["objects"]]
    assert len(names) == 2
    _corrupt(mpath.parent / names[-1])  # the last: same size, one bit flipped, only the SHA-256 can tell
    r = cli(["--config", cfg, "backups", "copy", bid, "--to", "offsite", "--json"])
    assert r.code == 1, r.output
    (rep,) = r.json()
    assert rep["action"] == "failed" and rep["object"] == names[-1]
    assert names[-1] in rep["error"] and "SHA-256" in rep["error"]
    # nothing on S3: not the objects that did match, not a pending multipart upload
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert _row(cli, cfg, bid)["storages"] == ["local1"]
    r = cli(["--config", cfg, "backups", "copy", bid, "--to", "offsite"])  # for people: the object, a hint
    assert r.code == 1 and "FAILED" in r.out and names[-1] in r.out and "Try:" in r.err


def test_a_damaged_copy_is_read_from_another_storage_that_has_it(cli: Any, make_config: Any, tmp_path: Path,
                                                                 age_key: AgeKey, sftp_server: Any) -> None:
    cfg_sftp = sftp_storage_config(sftp_server)
    d = Dest("sftp", cfg_sftp.model_dump(mode="json", exclude_none=True), lambda: _files_under(Path(cfg_sftp.path)))
    cfg = _config(make_config, tmp_path, age_key, d, locals_=2)
    bid = _backup(cli, cfg)
    (obj,) = list((tmp_path / "store1").rglob("files.tar.zst.age"))
    _corrupt(obj)
    r = cli(["--config", cfg, "backups", "copy", bid, "--to", "offsite", "--json"])
    assert r.code == 0, r.output
    (rep,) = r.json()
    assert rep["action"] == "copied" and "files.tar.zst.age read from local2" in rep["notes"]
    r = cli(["--config", cfg, "backups", "verify", bid, "--storage", "offsite", "--no-restore", "--json"])
    assert r.code == 0, r.output
    # --from names the only storage read: its damaged copy is all there is, so the backup fails
    r = cli(["--config", cfg, "backups", "copy", bid, "--to", "offsite", "--from", "local1", "--json"])
    assert r.code == 0 and r.json()[0]["action"] == "already there", r.output  # offsite's copy is intact …
    st = _storage(cfg, "offsite")
    try:
        delete_set(st, "web", "files", bid)
    finally:
        st.close()
    r = cli(["--config", cfg, "backups", "copy", bid, "--to", "offsite", "--from", "local1", "--json"])
    assert r.code == 1 and r.json()[0]["object"] == "files.tar.zst.age", r.output  # … and once it is gone
    assert d.residue() == []


def test_a_damaged_object_on_the_destination_is_repaired(cli: Any, make_config: Any, tmp_path: Path,
                                                         age_key: AgeKey) -> None:
    root = tmp_path / "dest"
    root.mkdir()
    d = Dest("local", {"kind": "local", "path": str(root), "fsync": False}, lambda: _files_under(root))
    cfg = _config(make_config, tmp_path, age_key, d)
    bid = _backup(cli, cfg)
    assert cli(["--config", cfg, "backups", "copy", bid, "--to", "offsite"]).code == 0
    (obj,) = list(root.rglob("files.tar.zst.age"))
    _corrupt(obj)
    r = cli(["--config", cfg, "backups", "copy", bid, "--to", "offsite", "--dry-run", "--json"])
    assert r.code == 0 and r.json()[0]["action"] == "would repair", r.output
    r = cli(["--config", cfg, "backups", "copy", bid, "--to", "offsite", "--json"])
    assert r.code == 0 and r.json()[0]["action"] == "repaired" and r.json()[0]["objects"] == 1, r.output
    assert obj.read_bytes() == next((tmp_path / "store1").rglob("files.tar.zst.age")).read_bytes()
    # a manifest there that is not the recorded one is another backup's business: reported, left alone
    (m,) = list(root.rglob("manifest.json"))
    m.write_text(m.read_text().replace('"tool": "upkeeper"', '"tool": "upkeeper" '))
    r = cli(["--config", cfg, "backups", "copy", bid, "--to", "offsite", "--json"])
    assert r.code == 1 and r.json()[0]["object"] == "manifest.json" and "differs" in r.json()[0]["error"]
    assert '"tool": "upkeeper" ' in m.read_text()


def test_an_unencrypted_backup_goes_to_a_remote_storage_only_with_encryption_none(
        cli: Any, make_config: Any, tmp_path: Path, sftp_server: Any) -> None:
    cfg_sftp = sftp_storage_config(sftp_server)
    d = Dest("sftp", cfg_sftp.model_dump(mode="json", exclude_none=True), lambda: _files_under(Path(cfg_sftp.path)))
    cfg = _config(make_config, tmp_path, None, d, locals_=2)
    bid = _backup(cli, cfg)
    r = cli(["--config", cfg, "backups", "copy", bid, "--to", "offsite", "--json"])
    assert r.code == 1, r.output
    (rep,) = r.json()
    assert rep["action"] == "failed" and "unencrypted" in rep["error"] and "encryption: none" in rep["hint"]
    assert d.residue() == []
    # to a local storage it may go, as a backup may
    r = cli(["--config", cfg, "backups", "copy", bid, "--from", "local1", "--to", "local2", "--json"])
    assert r.code == 0 and r.json()[0]["action"] in ("copied", "already there"), r.output
    # 'encryption: none' written out accepts unencrypted remote copies, as it does for backup jobs
    cfg = _config(make_config, tmp_path, None, d, backup={"encryption": "none"})
    r = cli(["--config", cfg, "backups", "copy", bid, "--to", "offsite", "--json"])
    assert r.code == 0 and r.json()[0]["action"] == "copied", r.output


def _wait_for(cond: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _stopped_copy(cfg: Path, tmp_path: Path, point: str, sig: signal.Signals) -> str:
    """``backups copy --all --to offsite`` in a child process, sent ``sig`` at ``point``; its stderr."""
    mark = tmp_path / "at-fault-point"
    mark.unlink(missing_ok=True)
    env = {**os.environ, "UPKEEPER_FAULT_PAUSE": f"{point}:60", "UPKEEPER_FAULT_MARK": str(mark),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "backups", "copy", "--all",
                          "--to", "offsite"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         start_new_session=True)
    try:
        _wait_for(mark.exists, f"the copy to reach {point}")
        os.killpg(p.pid, sig)
        _out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode != 0
    return err.decode()


@pytest.mark.parametrize(("point", "sig"), [("during-upload", signal.SIGKILL), ("before-manifest", signal.SIGKILL),
                                            ("before-manifest", signal.SIGTERM)])
def test_a_killed_copy_lists_no_partial_backup_there_and_the_next_copy_completes(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey, dest: Dest, point: str,
        sig: signal.Signals) -> None:
    if dest.kind == "local" and point == "during-upload":
        pytest.skip("covered on the remote storages")
    cfg = _config(make_config, tmp_path, age_key, dest)
    bid = _backup(cli, cfg)
    err = _stopped_copy(cfg, tmp_path, point, sig)
    assert not any(k.endswith("manifest.json") for k in dest.residue())
    if sig == signal.SIGTERM:  # stopped, not killed: it removed what it wrote
        assert [k for k in dest.residue() if not k.startswith("upload:")] == [], err
    # nothing lists the partial set on the destination: not the catalog, not a catalog rebuilt from storage
    assert _row(cli, cfg, bid)["storages"] == ["local1"]
    r = cli(["--config", cfg, "backups", "sync", "--json"])
    assert r.code == 0, r.output
    rows = cli(["--config", cfg, "backups", "list", "--json"]).json()
    assert [(x["id"], x["storages"]) for x in rows] == [(bid, ["local1"])]
    # the next copy completes it (reusing, once checked, what the killed one had committed)
    r = cli(["--config", cfg, "backups", "copy", "--all", "--to", "offsite", "--json"])
    assert r.code == 0 and r.json()[0]["action"] == "copied", r.output
    if point == "before-manifest" and sig == signal.SIGKILL:
        assert r.json()[0]["reused"] == 2 and r.json()[0]["objects"] == 0
    assert _row(cli, cfg, bid)["storages"] == ["local1", "offsite"]
    r = cli(["--config", cfg, "backups", "verify", bid, "--storage", "offsite", "--no-restore"])
    assert r.code == 0, r.output


def test_retention_with_the_copy_storage_never_empties_it_nor_deletes_the_newest(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    root = tmp_path / "dest"
    root.mkdir()
    d = Dest("local", {"kind": "local", "path": str(root), "fsync": False}, lambda: _files_under(root))
    cfg = _config(make_config, tmp_path, age_key, d, backup={"retention": {"keep_last": 1, "keep_daily": 0,
                                                                              "keep_weekly": 0, "keep_monthly": 0}})

    def listed() -> list[tuple[str, list[str]]]:
        return [(x["id"], x["storages"]) for x in cli(["--config", cfg, "backups", "list", "--json"]).json()]

    old = _backup(cli, cfg)
    assert cli(["--config", cfg, "backups", "copy", "--all", "--to", "offsite"]).code == 0
    time.sleep(1.1)
    new = _backup(cli, cfg)  # the job prunes its own storage: the old backup leaves local1, stays on offsite
    assert listed() == [(new, ["local1"]), (old, ["offsite"])]
    # prune over every storage: the newest is kept, and so is offsite's newest (its only) backup
    r = cli(["--config", cfg, "backups", "prune", "--json"])
    assert r.code == 0, r.output
    assert listed() == [(new, ["local1"]), (old, ["offsite"])]
    reasons = {b["id"]: b["reasons"] for s in r.json() for b in s["backups"]}
    assert reasons[old] == ["newest on offsite"]
    # copied there too, the newest replaces it as offsite's newest: now the old one goes
    r = cli(["--config", cfg, "backups", "copy", "--all", "--to", "offsite", "--json"])
    assert r.code == 0 and [x["action"] for x in r.json()] == ["copied", "already there"], r.output
    assert cli(["--config", cfg, "backups", "prune"]).code == 0
    assert listed() == [(new, ["local1", "offsite"])]
    assert len(list(root.rglob("manifest.json"))) == 1


def test_usage_errors(cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    root = tmp_path / "dest"
    root.mkdir()
    d = Dest("local", {"kind": "local", "path": str(root), "fsync": False}, lambda: _files_under(root))
    cfg = _config(make_config, tmp_path, age_key, d)
    bid = _backup(cli, cfg)
    r = cli(["--config", cfg, "backups", "copy", "--to", "offsite"])
    assert r.code == 2 and "--all" in r.output
    r = cli(["--config", cfg, "backups", "copy", bid, "--all", "--to", "offsite"])
    assert r.code == 2 and "not both" in r.output
    r = cli(["--config", cfg, "backups", "copy", bid, "--to", "nowhere"])
    assert r.code == 2 and "--to 'nowhere' is not a storage" in r.output and "local1, offsite" in r.output
    r = cli(["--config", cfg, "backups", "copy", bid, "--to", "offsite", "--from", "offsite"])
    assert r.code == 2 and "--from and --to" in r.output
    r = cli(["--config", cfg, "backups", "copy", "--target", "nope", "--to", "offsite"])
    assert r.code == 2 and "nope" in r.output
    assert _files_under(root) == []
    assert json.loads(cli(["--config", cfg, "backups", "list", "--json"]).out)[0]["storages"] == ["local1"]


def test_a_postgres_backup_copied_to_s3_restores_from_there(cli: Any, app_db: tuple[str, dict[str, int]],
                                                            backup_config: Any, tmp_path: Path, s3_server: Any,
                                                            s3_bucket: str) -> None:
    db, counts = app_db
    cfg = backup_config(db, storages={
        "local1": {"kind": "local", "path": str(tmp_path / "store1"), "fsync": False},
        "offsite": s3_server.storage_config(s3_bucket, prefix="backups")}, backup={"storages": ["local1"]},
        options={"globals": True})
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    bid = r.json()[0]["artifacts"][0]["id"]
    assert s3_server.client().list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
    r = cli(["--config", cfg, "backups", "copy", bid, "--to", "offsite"])
    assert r.code == 0 and "copied" in r.out, r.output
    r = cli(["--config", cfg, "backups", "verify", bid, "--storage", "offsite", "--json"])
    assert r.code == 0, r.output
    (rep,) = r.json()
    assert rep["ok"] and rep["tables"] == len(counts)


def test_docs_try_it_example_runs_as_written(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/backups.md, "Copying backups to another storage": the config and the commands, as written; the
    output as shown but for the backup's id and size."""
    import re
    import shlex

    doc = (Path(__file__).resolve().parents[2] / "docs" / "backups.md").read_text()
    section = doc.split("## Copying backups to another storage", 1)[1].split("\n## ", 1)[0]
    section = section.split("Try it on this machine", 1)[1]
    (yaml_block,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    (console,) = re.findall(r"```console\n(.*?)```", section, re.S)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "upkeeper.yaml").write_text(yaml_block)

    def masked(text: str) -> list[str]:
        text = re.sub(r"\d{8}T\d{6}Z-[0-9a-f]{6}", "ID", text)
        return re.sub(r"\d+(\.\d+)? [KMG]?B\b", "SIZE", text).strip().splitlines()

    steps: list[tuple[str, list[str]]] = []
    for line in console.strip().splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    assert [cmd.split()[0] for cmd, _ in steps] == ["mkdir", "mkdir", "upkeeper", "upkeeper", "upkeeper"]
    for cmd, expected in steps:
        argv = shlex.split(cmd)
        if argv[0] == "mkdir":
            subprocess.run(argv, check=True, cwd=tmp_path)
            continue
        r = cli(argv[1:])
        assert r.code == 0, r.output
        if expected:
            assert masked(r.out) == masked("\n".join(expected)), r.out
    rows = cli(["--config", "upkeeper.yaml", "backups", "list", "--json"]).json()
    assert [x["storages"] for x in rows] == [["disk", "usb"]]
    assert len(list((tmp_path / "usb").rglob("manifest.json"))) == 1


def test_copy_all_leaves_out_backups_only_on_storages_this_config_lacks(cli: Any, make_config: Any,
                                                                      tmp_path: Path, age_key: AgeKey) -> None:
    root = tmp_path / "dest"
    root.mkdir()
    d = Dest("local", {"kind": "local", "path": str(root), "fsync": False}, lambda: _files_under(root))
    cfg = _config(make_config, tmp_path, age_key, d)
    bid = _backup(cli, cfg)
    other = make_config({"storages": {"offsite": d.config}}, "other.yaml")  # the same history, not local1
    r = cli(["--config", other, "backups", "copy", "--all", "--to", "offsite", "--json"])
    assert r.code == 0 and r.json() == [], r.output
    assert "1 backup(s) in the catalog are only on storages not in this config (local1)" in r.err
    r = cli(["--config", other, "backups", "copy", bid, "--to", "offsite", "--json"])  # asked for by id: tried
    assert r.code == 1 and "no storage holds a readable copy" in r.json()[0]["error"], r.output
    assert _files_under(root) == []


def test_prune_removes_a_killed_copy_from_the_destination_only(cli: Any, make_config: Any, tmp_path: Path,
                                                               age_key: AgeKey) -> None:
    root = tmp_path / "dest"
    root.mkdir()
    d = Dest("local", {"kind": "local", "path": str(root), "fsync": False}, lambda: _files_under(root))
    cfg = _config(make_config, tmp_path, age_key, d, backup={"incomplete_after": "1s"})
    bid = _backup(cli, cfg)
    _stopped_copy(cfg, tmp_path, "before-manifest", signal.SIGKILL)
    # the objects and the killed copy's lease, no manifest
    [lease] = root.rglob(LEASE)
    assert len(_files_under(root)) == 3 and not list(root.rglob("manifest.json"))
    time.sleep(1.5)
    r = cli(["--config", cfg, "backups", "prune", "--json"])
    assert r.code == 0, r.output
    assert [x["incomplete_kept"] for x in r.json()] == [[bid]]  # its lease is fresh: the copy may be alive
    stale = time.time() - LEASE_TTL.total_seconds() - 60  # the killed copy refreshes it no more
    os.utime(lease, (stale, stale))
    r = cli(["--config", cfg, "backups", "prune", "--json"])
    assert r.code == 0, r.output
    assert [x["incomplete_deleted"] for x in r.json()] == [[bid]]
    assert _files_under(root) == []  # the leftover copy is gone from the destination …
    assert len(list((tmp_path / "store1").rglob("manifest.json"))) == 1  # … the backup stays where it is whole
    assert [(x["id"], x["storages"]) for x in cli(["--config", cfg, "backups", "list", "--json"]).json()] == \
        [(bid, ["local1"])]


def _copy_process(cfg: Path, mark: Path, pause: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "UPKEEPER_FAULT_PAUSE": pause, "UPKEEPER_FAULT_MARK": str(mark),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "backups", "copy", "--all",
                             "--to", "offsite"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)


def test_two_copies_at_once_one_stopped_never_undoes_the_other(cli: Any, make_config: Any, tmp_path: Path,
                                                                age_key: AgeKey) -> None:
    """cron and a person copy the same backup to the same storage at once, and one of them is stopped: its
    cleanup must not remove what the other wrote (the other then either failed, or — worse — wrote its manifest
    over a set emptied under it while the catalog names the storage).  The second waits for the first."""
    root = tmp_path / "dest"
    root.mkdir()
    cfg = _config(make_config, tmp_path, age_key, Dest("local", {"kind": "local", "path": str(root), "fsync": False},
                                                        lambda: _files_under(root)))
    bid = _backup(cli, cfg)
    first_mark, second_mark = tmp_path / "first-at-manifest", tmp_path / "second-at-manifest"
    first = _copy_process(cfg, first_mark, "before-manifest:6")  # every object written, the manifest next
    second: subprocess.Popen[bytes] | None = None
    try:
        _wait_for(first_mark.exists, "the first copy to write its objects")
        second = _copy_process(cfg, second_mark, "before-manifest:60")
        time.sleep(3)  # time to reach its manifest too, had it not waited for the first
        os.killpg(second.pid, signal.SIGTERM)  # stopped: it cleans up what it thinks it wrote
        second.communicate(timeout=60)
        assert second.returncode != 0
        out, err = first.communicate(timeout=60)
        assert first.returncode == 0, (out + err).decode()
        assert not second_mark.exists()  # it waited for the first, and never started copying
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
    assert _files_under(root) == _files_under(tmp_path / "store1")  # the whole set, nothing else
    assert _row(cli, cfg, bid)["storages"] == ["local1", "offsite"]
    r = cli(["--config", cfg, "backups", "verify", bid, "--storage", "offsite", "--no-restore"])
    assert r.code == 0, r.output


def test_copy_again_to_s3_reads_back_only_the_manifest_unless_asked(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey, s3_server: Any, s3_bucket: str,
        s3_reads: list[str]) -> None:
    """'copy --all' run again does not download every backup already on a remote --to: its manifest.json is read
    (the recorded one?) and the objects' sizes listed; nothing is read from the source.  --check-present reads
    every object back (and so finds damage of the same size); an object gone is found from the listing."""
    d = Dest("s3", s3_server.storage_config(s3_bucket, prefix="backups"), lambda: [])
    cfg = _config(make_config, tmp_path, age_key, d)
    bid = _backup(cli, cfg)
    assert cli(["--config", cfg, "backups", "copy", bid, "--to", "offsite"]).code == 0
    s3_reads.clear()  # count from here
    r = cli(["--config", cfg, "backups", "copy", "--all", "--to", "offsite", "--json"])
    assert r.code == 0 and r.json()[0]["action"] == "already there" and r.json()[0]["reused"] == 2, r.output
    assert names(s3_reads) == ["manifest.json"]
    # an object there damaged in place (same size): found only by reading it back, then repaired
    st = _storage(cfg, "offsite")
    try:
        (key,) = [o.key for o in st.list() if o.key.endswith("files.tar.zst.age")]
        with st.open_read(key) as fh:
            data = bytearray(fh.read())
        data[len(data) // 2] ^= 0x01
        put_bytes(st, key, bytes(data))
        s3_reads.clear()
        r = cli(["--config", cfg, "backups", "copy", "--all", "--to", "offsite", "--json"])
        assert r.code == 0 and r.json()[0]["action"] == "already there", r.output
        r = cli(["--config", cfg, "backups", "copy", "--all", "--to", "offsite", "--check-present", "--json"])
        assert r.code == 0 and r.json()[0]["action"] == "repaired" and r.json()[0]["objects"] == 1, r.output
        # the default run read manifest.json; --check-present read it and both objects back (besides the small
        # lease it took to repair one)
        assert ".writing" in names(s3_reads)
        assert sorted(n for n in names(s3_reads) if n != ".writing") == [
            "files.tar.zst.age", "manifest.json", "manifest.json", "secrets.tar.zst.age"]
        # an object gone: the listing says so, the copy repairs it
        st.delete(key)
        r = cli(["--config", cfg, "backups", "copy", "--all", "--to", "offsite", "--json"])
        assert r.code == 0 and r.json()[0]["action"] == "repaired" and r.json()[0]["objects"] == 1, r.output
        with st.open_read(key) as fh:
            assert fh.read() != bytes(data)
    finally:
        st.close()
    r = cli(["--config", cfg, "backups", "verify", bid, "--storage", "offsite", "--no-restore", "--json"])
    assert r.code == 0 and r.json()[0]["ok"], r.output
