"""files.backup: tar with excludes and symlinks never followed, a manifest with sizes and hashes, secrets in an
always-encrypted archive, verify by reading the archive as a stream, restore with --to."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from services import sftp_storage_config

from .conftest import AgeKey, make_attributes, read_attributes, rewrite_manifest, run_app_files_backup


@pytest.fixture
def app_tree(tmp_path: Path) -> Path:
    root = tmp_path / "srv" / "app"
    (root / "public" / "img").mkdir(parents=True)
    (root / "node_modules" / "left-pad").mkdir(parents=True)
    (root / "app.js").write_text("console.log('hi')\n")
    (root / "public" / "img" / "logo.png").write_bytes(bytes(range(256)) * 40)
    (root / "node_modules" / "left-pad" / "index.js").write_text("module.exports = 1\n")
    (root / "server.log").write_text("noise\n")
    (root / ".env").write_text("DATABASE_URL=postgres://app:s3cr3t@db/app\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    (root / "escape").symlink_to(outside)  # a link out of the tree: stored as a link, never followed
    (root / "current.js").symlink_to(root / "app.js")
    return root


def _config(make_config: Any, tmp_path: Path, root: Path, age_key: AgeKey, options: dict[str, Any],
            encrypt: bool | str = True) -> Path:
    backup: dict[str, Any] = {}
    if encrypt == "none":
        backup["encryption"] = "none"
    elif encrypt:
        backup["encryption"] = {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}
    return make_config({
        "targets": {"web": {"kind": "app", "root": str(root)}},
        "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store"), "fsync": False}},
        "backup": backup,
        "jobs": {"app-backup": {"task": "files.backup", "target": "web", "options": options},
                 "app-verify": {"task": "backup.verify", "target": "web"}},
    })


def test_files_backup_manifest_secrets_verify_restore(cli: Any, make_config: Any, tmp_path: Path, app_tree: Path,
                                                     age_key: AgeKey) -> None:
    cfg = _config(make_config, tmp_path, app_tree, age_key,
                  {"exclude": ["node_modules", "*.log"], "secret_paths": [".env"]})
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    run = r.json()[0]
    assert run["status"] == "ok", run
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    assert mpath.parent.parent.name == "files" and mpath.parent.parent.parent.name == "web"
    m = json.loads(mpath.read_text())
    archives = m["files"]["archives"]
    main = {f["path"]: f for f in archives["files.tar.zst.age"]["files"]}
    rel = str(app_tree).lstrip("/")
    assert f"{rel}/app.js" in main and f"{rel}/public/img/logo.png" in main
    logo = main[f"{rel}/public/img/logo.png"]
    assert logo["size"] == 256 * 40
    assert logo["sha256"] == hashlib.sha256((app_tree / "public/img/logo.png").read_bytes()).hexdigest()
    assert not any("node_modules" in p or p.endswith(".log") or p.endswith(".env") for p in main)
    assert main[f"{rel}/escape"]["type"] == "symlink"
    assert not any("private.key" in p for p in main)
    secrets = archives["secrets.tar.zst.age"]["files"]
    assert [f["path"] for f in secrets] == [f"{rel}/.env"] and "sha256" not in secrets[0]
    # the main archive decrypts and decompresses with the standard tools and is a plain tar
    enc = mpath.parent / "files.tar.zst.age"
    dec = subprocess.run(["age", "-d", "-i", str(age_key.identity), str(enc)], check=True, capture_output=True)
    raw = subprocess.run(["zstd", "-d", "-c"], input=dec.stdout, check=True, capture_output=True).stdout
    (tmp_path / "x.tar").write_bytes(raw)
    with tarfile.open(tmp_path / "x.tar") as tf:
        names = tf.getnames()
    assert f"{rel}/app.js" in names and not any("private.key" in n for n in names)
    assert b"s3cr3t" not in raw and b"s3cr3t" not in (mpath.parent / "secrets.tar.zst.age").read_bytes()

    r = cli(["--config", cfg, "run", "app-verify", "--json"])
    assert r.code == 0, r.output
    vrun = r.json()[0]
    assert vrun["status"] == "ok", vrun
    assert any("read from the archives (not extracted) and compared" in step for step in vrun["artifacts"][0]["steps"])
    bid = run["artifacts"][0]["id"]
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "verified"

    dest = tmp_path / "restored"
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest])
    assert r.code == 0, r.output
    assert (dest / rel / "app.js").read_text() == "console.log('hi')\n"
    assert (dest / rel / ".env").read_text().startswith("DATABASE_URL")
    assert (dest / rel / "escape").is_symlink()


@pytest.mark.parametrize("linked", ["root", "parent"])
def test_secrets_stay_out_of_the_main_archive_when_reached_through_a_symlink(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey, linked: str) -> None:
    """The app root is a symlink (root: /srv/app → releases/42) or has one above it (paths through current/):
    the main walk and the secret walk reach .env by different names, and it must still stay out of files.tar."""
    release = tmp_path / "srv" / "releases" / "42"
    (release / "config").mkdir(parents=True)
    (release / "app.js").write_text("console.log('hi')\n")
    (release / "config" / "app.json").write_text("{}\n")
    (release / ".env").write_text("SECRET_KEY=s3cr3t-value\n")
    (release / "config" / "credentials.yml").write_text("token: s3cr3t-token\n")
    link = tmp_path / "srv" / "app"
    link.symlink_to(release)
    options: dict[str, Any] = {"secret_paths": [".env", "config/credentials.yml"]}
    if linked == "parent":  # the target's root is the real directory; the paths go through a symlinked parent
        (tmp_path / "srv" / "current").symlink_to(release)
        options = {"paths": [str(release)], "secret_paths": [str(tmp_path / "srv" / "current" / ".env"),
                                                               str(link / "config" / "credentials.yml")]}
    cfg = _config(make_config, tmp_path, release if linked == "parent" else link, age_key, options)
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    archives = json.loads(mpath.read_text())["files"]["archives"]
    main = [f["path"] for f in archives["files.tar.zst.age"]["files"]]
    assert any(p.endswith("/app.js") for p in main)
    assert not any(p.endswith((".env", "credentials.yml")) for p in main), main
    assert sorted(f["path"].rsplit("/", 1)[-1] for f in archives["secrets.tar.zst.age"]["files"]) == [
        ".env", "credentials.yml"]
    dec = subprocess.run(["age", "-d", "-i", str(age_key.identity), str(mpath.parent / "files.tar.zst.age")],
                         check=True, capture_output=True)
    raw = subprocess.run(["zstd", "-d", "-c"], input=dec.stdout, check=True, capture_output=True).stdout
    assert b"s3cr3t" not in raw


def _verify_with_manifest_entry_edited(cli: Any, make_config: Any, tmp_path: Path, app_tree: Path, age_key: AgeKey,
                                       name: str, key: str, value: str) -> Any:
    """Back the tree up, rewrite the manifest entry of the file ending in ``name`` (``key`` = ``value``) as if the
    backup had been written so (the catalog records that manifest), and run the verify job."""
    cfg = _config(make_config, tmp_path, app_tree, age_key, {})
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    m = json.loads(mpath.read_text())
    files = m["files"]["archives"]["files.tar.zst.age"]["files"]
    next(f for f in files if f["path"].endswith(name))[key] = value
    rewrite_manifest(cli, cfg, mpath, m)
    return cli(["--config", cfg, "run", "app-verify", "--json"])


def test_changed_file_after_backup_fails_verify(cli: Any, make_config: Any, tmp_path: Path, app_tree: Path,
                                                age_key: AgeKey) -> None:
    """Verify compares the archive's files with the manifest's hashes: a manifest whose file hash disagrees with
    the archive (written so, and recorded so in the catalog) is caught."""
    r = _verify_with_manifest_entry_edited(cli, make_config, tmp_path, app_tree, age_key, "app.js", "sha256", "0" * 64)
    assert r.code == 1
    assert "app.js does not match its SHA-256" in r.json()[0]["summary"]


@pytest.mark.parametrize("encryption", ["unset", "none"])
def test_secrets_without_encryption_are_refused(cli: Any, make_config: Any, tmp_path: Path, app_tree: Path,
                                                age_key: AgeKey, encryption: str) -> None:
    """secret_paths are never stored unencrypted, also not with 'encryption: none': the config is refused when
    it loads ('config check' names the option), not by a run failing every night."""
    cfg = _config(make_config, tmp_path, app_tree, age_key, {"secret_paths": [".env"]},
                  encrypt="none" if encryption == "none" else False)
    r = cli(["--config", cfg, "config", "check"])
    assert r.code == 2, r.output
    flat = " ".join(r.output.split())
    assert "app-backup -> options -> secret_paths" in flat and "always stored encrypted" in flat, r.output
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 2 and "secret_paths" in r.output
    assert not list((tmp_path / "store").rglob("*.tar*"))


def test_preset_set_has_its_own_name(cli: Any, make_config: Any, tmp_path: Path, app_tree: Path,
                                     age_key: AgeKey, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".pm2").mkdir(parents=True)
    (home / ".pm2" / "dump.pm2").write_text('[{"name": "app"}]')
    monkeypatch.setenv("HOME", str(home))
    cfg = _config(make_config, tmp_path, app_tree, age_key, {"preset": "pm2"})
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    assert mpath.parent.parent.name == "pm2"
    m = json.loads(mpath.read_text())
    paths = [f["path"] for f in m["files"]["archives"]["files.tar.zst.age"]["files"]]
    assert paths == [str(home / ".pm2" / "dump.pm2").lstrip("/")]


def test_restore_refuses_a_set_whose_manifest_changed(cli: Any, make_config: Any, tmp_path: Path, app_tree: Path,
                                                      age_key: AgeKey) -> None:
    """The manifest vouches for every object's hash: restore, like verify, refuses one edited since the backup."""
    cfg = _config(make_config, tmp_path, app_tree, age_key, {"exclude": ["node_modules"]})
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    bid = r.json()[0]["artifacts"][0]["id"]
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    original = mpath.read_bytes()
    mpath.write_bytes(original + b" ")
    dest = tmp_path / "restored"
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest])
    assert r.code == 1 and "manifest.json" in r.output and "changed since the backup" in r.output, r.output
    assert not dest.exists()
    mpath.write_bytes(original)
    assert cli(["--config", cfg, "backups", "restore", bid, "--to", dest]).code == 0
    assert (dest / str(app_tree).lstrip("/") / "app.js").exists()


def _two_jobs(make_config: Any, tmp_path: Path, root: Path, a: dict[str, Any], b: dict[str, Any]) -> Path:
    return make_config({
        "targets": {"web": {"kind": "app", "root": str(root)}},
        "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store"), "fsync": False}},
        "backup": {"encryption": "none"},
        "jobs": {"code-backup": {"task": "files.backup", "target": "web", "options": a},
                 "uploads-backup": {"task": "files.backup", "target": "web", "options": b}},
    })


def test_two_files_jobs_sharing_a_set_name_are_refused(cli: Any, make_config: Any, tmp_path: Path,
                                                       app_tree: Path) -> None:
    """Two jobs on one target with different paths and no distinct 'set' write one series ('files'): each
    run's retention would delete the other job's backups.  'config check' refuses it, naming both jobs."""
    cfg = _two_jobs(make_config, tmp_path, app_tree, {"paths": ["app.js"]}, {"paths": ["public"]})
    r = cli(["--config", cfg, "config", "check"])
    assert r.code == 2, r.output
    assert "jobs -> uploads-backup -> options -> set" in r.err
    assert "code-backup" in r.err and "distinct 'set'" in r.err
    # a preset's set name counts too
    cfg = _two_jobs(make_config, tmp_path, app_tree, {"preset": "nginx"}, {"paths": ["public"], "set": "nginx"})
    assert cli(["--config", cfg, "config", "check"]).code == 2
    # distinct sets, or the same options on two schedules, are fine
    cfg = _two_jobs(make_config, tmp_path, app_tree, {"paths": ["app.js"]}, {"paths": ["public"], "set": "up"})
    assert cli(["--config", cfg, "config", "check"]).code == 0
    cfg = _two_jobs(make_config, tmp_path, app_tree, {"paths": ["public"]}, {"paths": ["public"]})
    assert cli(["--config", cfg, "config", "check"]).code == 0


def test_files_backup_run_refuses_a_shared_set(make_config: Any, tmp_path: Path, app_tree: Path) -> None:
    """The run-time guard, for a config that did not go through the load-time check."""
    from upkeeper.config.loader import load_config
    from upkeeper.config.models import AppTarget
    from upkeeper.core.task import TaskContext
    from upkeeper.errors import TaskError
    from upkeeper.tasks.backup.files import FilesBackup, FilesBackupOptions

    cfg = _two_jobs(make_config, tmp_path, app_tree, {"paths": ["app.js"]}, {"paths": ["public"]})
    config = load_config(cfg)
    ctx = TaskContext(job="code-backup", task="files.backup", target_name="web",
                      target=AppTarget(kind="app", root=str(app_tree)), config=config)
    with pytest.raises(TaskError, match="uploads-backup"):
        FilesBackup().run(ctx, FilesBackupOptions(paths=["app.js"]))
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("manifest.json"))


def test_prune_finds_the_retention_of_a_host_files_job(make_config: Any, tmp_path: Path) -> None:
    """A job without a target writes under 'host'; 'backups prune' must map that series to the job's own
    retention, not fall back to backup.retention."""
    from upkeeper.cli.backups import policy_for
    from upkeeper.config.loader import load_config
    from upkeeper.core.jobs import build_setup

    cfg = make_config({
        "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store"), "fsync": False}},
        "backup": {"encryption": "none"},
        "jobs": {"etc-backup": {"task": "files.backup", "options": {"paths": [str(tmp_path)],
                                                                     "retention": {"keep_last": 3}}}},
    })
    setup = build_setup(load_config(cfg))
    policy, source = policy_for(setup, "host", "files", "files")
    assert source == "job etc-backup" and policy.keep_last == 3


def test_verify_checks_symlink_targets(cli: Any, make_config: Any, tmp_path: Path, app_tree: Path,
                                       age_key: AgeKey) -> None:
    """Verify reads each symlink's target from the archive and compares it with the manifest's."""
    r = _verify_with_manifest_entry_edited(cli, make_config, tmp_path, app_tree, age_key, "current.js", "target",
                                           "/etc/passwd")
    assert r.code == 1, r.output
    assert "current.js points to" in r.json()[0]["summary"]


def test_verify_writes_no_plaintext_to_disk(cli: Any, make_config: Any, tmp_path: Path, app_tree: Path,
                                            age_key: AgeKey) -> None:
    """Verify streams the archive and hashes its members as they pass: no decrypted archive.tar, no extracted
    tree (which doubled the plaintext on disk, expanded sparse files, and stayed behind when a read-only
    directory could not be removed).  Shown with a file-size limit well below the archive's size."""
    import os
    import resource

    (app_tree / "big.bin").write_bytes(os.urandom(3 << 20))
    cfg = _config(make_config, tmp_path, app_tree, age_key, {})
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, old[1]))  # the verify worker inherits it
    try:
        r = cli(["--config", cfg, "run", "app-verify", "--json"])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
    assert r.code == 0, r.output
    assert r.json()[0]["status"] == "ok", r.output


def _backup_verify_restore(cli: Any, cfg: Path, tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    run = r.json()[0]
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    files = json.loads(mpath.read_text())["files"]["archives"]["files.tar.zst.age"]["files"]
    v = cli(["--config", cfg, "run", "app-verify", "--json"])
    assert v.code == 0 and v.json()[0]["status"] == "ok", v.output
    dest = tmp_path / "restored"
    r = cli(["--config", cfg, "backups", "restore", run["artifacts"][0]["id"], "--to", dest])
    assert r.code == 0, r.output
    return run, {f["path"]: f for f in files}, dest


def _decrypted_tar(tmp_path: Path, age_key: AgeKey, name: str = "files.tar.zst.age") -> bytes:
    [obj] = list((tmp_path / "store").rglob(name))
    dec = subprocess.run(["age", "-d", "-i", str(age_key.identity), str(obj)], check=True, capture_output=True)
    return subprocess.run(["zstd", "-d", "-c"], input=dec.stdout, check=True, capture_output=True).stdout


def test_hard_links_are_archived_once_and_restored_as_links(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """cp -al / rsync --link-dest releases, pnpm stores: a file with 3 names in the tree is archived once (the
    archive is not 3 times its size), its later names as hard-link members to the first (as GNU tar writes
    them); the manifest lists every name with the size and hash, the later ones with 'link'; verify passes, and
    both upkeeper's restore and a plain 'tar -x' make one file with 3 names again.  A fourth name outside the
    tree and a fifth excluded one are not in the archive."""
    root = tmp_path / "srv" / "app"
    for n in ("1", "2", "3"):
        (root / "releases" / n).mkdir(parents=True)
    data = os.urandom(256 << 10)  # incompressible: the stored size shows how often it is archived
    first = root / "releases" / "1" / "lib.js"
    first.write_bytes(data)
    for other in (root / "releases" / "2" / "lib.js", root / "releases" / "3" / "lib.js", tmp_path / "outside.js",
                  root / "releases" / "lib.js.bak"):
        os.link(first, other)
    (root / "app.js").write_text("console.log('hi')\n")
    cfg = _config(make_config, tmp_path, root, age_key, {"exclude": ["*.bak"]})
    _, files, dest = _backup_verify_restore(cli, cfg, tmp_path)
    [obj] = list((tmp_path / "store").rglob("files.tar.zst.age"))
    assert obj.stat().st_size < 1.5 * len(data), obj.stat().st_size
    rel = str(root).lstrip("/")
    names = [f"{rel}/releases/{n}/lib.js" for n in ("1", "2", "3")]
    for name in names:
        f = files[name]
        assert f["type"] == "file" and f["size"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest(), f
        assert f.get("link") == (None if name == names[0] else names[0]), f
    assert f"{rel}/releases/lib.js.bak" not in files
    with tarfile.open(fileobj=io.BytesIO(_decrypted_tar(tmp_path, age_key))) as tf:
        kinds = {m.name: (m.type, m.linkname, m.size) for m in tf.getmembers() if m.name in names}
    assert kinds == {names[0]: (tarfile.REGTYPE, "", len(data)), names[1]: (tarfile.LNKTYPE, names[0], 0),
                     names[2]: (tarfile.LNKTYPE, names[0], 0)}
    plain = tmp_path / "tar-x"
    plain.mkdir()
    subprocess.run(["tar", "-x", "-C", str(plain)], input=_decrypted_tar(tmp_path, age_key), check=True)
    for top in (dest, plain):
        st = [os.stat(top / name) for name in names]
        assert {(s.st_ino, s.st_nlink) for s in st} == {(st[0].st_ino, 3)}, top
        assert (top / names[2]).read_bytes() == data
        assert (top / rel / "app.js").read_text() == "console.log('hi')\n"


def test_a_hard_linked_file_changed_after_its_first_name_was_archived_is_archived_again(tmp_path: Path) -> None:
    """A later name of a file written (or linked again) after its first name was archived holds other data than
    that member: it is archived with its own data, not as a link to stale content."""
    from upkeeper.backup.files import iter_walk

    (tmp_path / "a").write_bytes(b"old\n")
    os.link(tmp_path / "a", tmp_path / "b")
    os.link(tmp_path / "a", tmp_path / "c")

    def entries() -> Any:
        for e in iter_walk([tmp_path], []):
            yield e
            if e.name == "a":
                (tmp_path / "a").write_bytes(b"new!\n")

    listed, members = _tar_of(entries())
    by = {f["path"].rsplit("/", 1)[-1]: f for f in listed}
    assert members[by["a"]["path"]] == b"old\n" and members[by["b"]["path"]] == b"new!\n", members
    assert "link" not in by["a"] and "link" not in by["b"] and by["c"]["link"] == by["b"]["path"], by
    assert by["c"]["sha256"] == hashlib.sha256(b"new!\n").hexdigest()


def _tar_of(entries: Any, **kw: Any) -> tuple[list[dict[str, Any]], dict[str, bytes | None]]:
    """write_tar into memory: the manifest's file list and the archive's members (data of regular files)."""
    from upkeeper.backup.files import write_tar

    buf = io.BytesIO()
    listed = write_tar(entries, buf.write, **kw)
    members: dict[str, bytes | None] = {}
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        for m in tf.getmembers():
            fh = tf.extractfile(m) if m.isreg() else None
            members[m.name] = fh.read() if fh else None
    return listed, members


@pytest.mark.parametrize("how", ["file-symlink", "parent-symlink", "other-file", "fifo"])
def test_a_file_replaced_after_the_walk_is_never_read(tmp_path: Path, how: str) -> None:
    """A file swapped, between walk and read, for a symlink (or its directory for a symlinked one) or a FIFO is
    left out and named as changed: nothing outside the tree is archived, a FIFO does not block.  Another file
    renamed over it in its directory (an atomic save) is archived, with its own size and hash, and named (it
    was left out: the file missing from the backup altogether)."""
    import threading

    from upkeeper.backup.files import walk

    root = tmp_path / "srv" / "app"
    (root / "conf").mkdir(parents=True)
    (root / "app.js").write_text("ok\n")
    victim = root / "conf" / "app.json"
    victim.write_text("{}\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "app.json").write_text("TOP-SECRET-OUTSIDE\n")
    w = walk([root], [])
    if how == "file-symlink":
        victim.unlink()
        victim.symlink_to(outside / "app.json")
    elif how == "parent-symlink":
        (root / "conf").rename(root / "conf.old")
        (root / "conf").symlink_to(outside)
    elif how == "other-file":
        victim.rename(root / "conf" / "app.json.old")  # kept, so the new file cannot reuse its inode number
        (root / "conf" / "app.json.tmp").write_text("NEW-VERSION\n")
        (root / "conf" / "app.json.tmp").rename(victim)  # not the file the walk listed, but the tree's now
    else:
        victim.unlink()
        os.mkfifo(victim)
    changed: list[tuple[str, str]] = []
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(_tar_of(w.entries, changed=changed)), daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():  # unblock the reader so the test process can end
        os.close(os.open(victim, os.O_WRONLY | os.O_NONBLOCK))
        t.join(10)
        pytest.fail("write_tar blocked on a FIFO")
    [(listed, members)] = got
    rel = str(victim).lstrip("/")
    assert members[str(root / "app.js").lstrip("/")] == b"ok\n"
    if how == "other-file":  # renamed over it in its directory (an atomic save): the tree's file, archived
        [entry] = [f for f in listed if f["path"] == rel]
        assert members[rel] == b"NEW-VERSION\n" and entry["size"] == len(b"NEW-VERSION\n")
        assert entry["sha256"] == hashlib.sha256(b"NEW-VERSION\n").hexdigest()
        assert changed == [(str(victim), "replaced (renamed over) during the backup; the new file archived")]
        return
    assert not any(f["path"] == rel for f in listed), listed
    assert not any(v and b"TOP-SECRET" in v for v in members.values())
    assert [p for p, _ in changed] == [str(victim)] and "not archived" in changed[0][1]


@pytest.mark.parametrize("kind", ["symlink", "dir"])
def test_a_link_or_directory_replaced_by_a_file_after_the_walk_gives_a_sound_archive(tmp_path: Path,
                                                                                    kind: str) -> None:
    """The entry is archived as the walk found it: never a header with a size and no data (a corrupt tar)."""
    from upkeeper.backup.files import walk

    root = tmp_path / "app"
    root.mkdir()
    p = root / "thing"
    if kind == "symlink":
        p.symlink_to("app.js")
    else:
        p.mkdir()
    (root / "z.js").write_text("after\n")
    w = walk([root], [])
    if kind == "symlink":
        p.unlink()
    else:
        p.rmdir()
    p.write_bytes(b"x" * 5000)
    listed, members = _tar_of(w.entries)  # reads every member's data: a truncated archive fails here
    rel = str(p).lstrip("/")
    assert [f["type"] for f in listed if f["path"] == rel] == [kind]
    assert members[rel] is None and members[str(root / "z.js").lstrip("/")] == b"after\n"
    if kind == "symlink":
        assert next(f for f in listed if f["path"] == rel)["target"] == "app.js"


def test_a_file_replaced_by_a_directory_after_the_walk_is_named_as_such(tmp_path: Path) -> None:
    """(The warning said 'replaced by a special file'.)"""
    from upkeeper.backup.files import walk

    root = tmp_path / "app"
    root.mkdir()
    p = root / "thing"
    p.write_text("x\n")
    w = walk([root], [])
    p.unlink()
    (p / "new").mkdir(parents=True)
    changed: list[tuple[str, str]] = []
    listed, _ = _tar_of(w.entries, changed=changed)
    assert changed == [(str(p), "replaced by a directory during the backup; not archived")]
    assert [f["path"] for f in listed] == [str(root).lstrip("/")]


def test_an_unreadable_directory_fails_the_backup_naming_it(tmp_path: Path) -> None:
    """Not backed up as empty, in silence: the walk fails naming the directory (as an unreadable file does).
    Run without the capabilities that let root read anything."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv is not installed")
    root = tmp_path / "app"
    (root / "private").mkdir(parents=True)
    (root / "private" / "data.db").write_text("precious\n")
    (root / "app.js").write_text("ok\n")
    (root / "private").chmod(0o000)
    try:
        code = ("import sys; from pathlib import Path; from upkeeper.backup.files import walk\n"
                "from upkeeper.errors import BackupError\n"
                "try:\n    w = walk([Path(sys.argv[1])], [])\nexcept BackupError as e:\n"
                "    print('ERROR', e.message)\nelse:\n    print('OK', [e.arcname for e in w.entries])\n")
        caps = "-dac_override,-dac_read_search"
        r = subprocess.run([setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}", sys.executable, "-c", code,
                            str(root)], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    finally:
        (root / "private").chmod(0o755)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ERROR cannot list ") and str(root / "private") in r.stdout, r.stdout


def test_a_path_too_long_fails_the_walk_naming_it(tmp_path: Path) -> None:
    from upkeeper.backup.files import walk
    from upkeeper.errors import BackupError

    root = tmp_path / "app"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(20):  # 20 x 250 characters: beyond PATH_MAX (4096)
            os.mkdir("d" * 250, dir_fd=fd)
            nfd = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
    finally:
        os.close(fd)
    with pytest.raises(BackupError) as ei:
        walk([root], [])
    assert str(root / ("d" * 250)) in ei.value.message and "too long" in ei.value.message.lower()
    assert "exclude" in (ei.value.hint or "")


def test_a_file_name_that_is_not_utf8_is_backed_up_verified_and_restored(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """A Latin-1 name (b'caf\\xe9.txt') does not fail every backup: the manifest keeps it losslessly, verify
    compares it, restore gives the same bytes back."""
    root = tmp_path / "srv" / "app"
    root.mkdir(parents=True)
    (root / "app.js").write_text("ok\n")
    odd = os.fsencode(root) + b"/caf\xe9.txt"
    with open(odd, "wb") as fh:
        fh.write(b"latin-1 name\n")
    cfg = _config(make_config, tmp_path, root, age_key, {})
    _, files, dest = _backup_verify_restore(cli, cfg, tmp_path)
    name = os.fsdecode(odd).lstrip("/")
    assert files[name]["sha256"] == hashlib.sha256(b"latin-1 name\n").hexdigest()
    assert Path(os.fsdecode(os.fsencode(dest) + b"/" + odd.lstrip(b"/"))).read_bytes() == b"latin-1 name\n"


def test_a_file_rewritten_while_being_read_is_named_as_changed(tmp_path: Path) -> None:
    """Torn content is archived as read (its hash is of what is in the archive), with a warning, as GNU tar's
    'file changed as we read it'."""
    from upkeeper.backup.files import walk, write_tar

    root = tmp_path / "app"
    root.mkdir()
    db = root / "db.sqlite"
    db.write_bytes(b"A" * (4 << 20))
    w = walk([root], [])
    fired: list[int] = []

    def sink(b: bytes) -> None:
        if not fired:  # the application rewrites the file in place half-way through
            fired.append(1)
            db.write_bytes(b"B" * (4 << 20))

    changed: list[tuple[str, str]] = []
    listed = write_tar(w.entries, sink, changed=changed)
    assert fired and [p for p, _ in changed] == [str(db)] and "changed while being read" in changed[0][1]
    assert [f["path"] for f in listed if f["type"] == "file"] == [str(db).lstrip("/")]


@pytest.mark.parametrize("when", ["before-listing", "after-listing"])
def test_a_directory_swapped_for_a_symlink_during_the_walk_is_not_walked_into(tmp_path: Path, when: str) -> None:
    """The walk is not led out of the tree: a directory replaced by a symlink after its parent was listed and
    before it is (or after it is, before its entries are stat'ed) is not followed; nothing outside is archived,
    and the change is named."""
    from upkeeper.backup.files import walk

    root = tmp_path / "app"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.txt").write_text("x\n")
    (root / "b").mkdir()
    (root / "b" / "app.json").write_text("{}\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "app.json").write_text("TOP-SECRET-OUTSIDE\n")
    trigger = "/a/x.txt" if when == "before-listing" else "/b/app.json"

    def hook(real: str) -> bool:  # called for each entry as the walk reaches it: a/ is walked before b/
        if real.endswith(trigger):
            (root / "b").rename(root / "b.old")
            (root / "b").symlink_to(outside)
        return False

    w = walk([root], [], skip=hook)
    changed: list[tuple[str, str]] = []
    listed, members = _tar_of(w.entries, changed=changed)
    assert not any(v and b"TOP-SECRET" in v for v in members.values())
    assert not any(f["path"].endswith("b/app.json") for f in listed), listed
    expect = str(root / "b") if when == "before-listing" else str(root / "b" / "app.json")
    assert [p for p, _ in w.changed + changed] == [expect]


def test_a_file_or_directory_removed_during_the_backup_is_named(tmp_path: Path) -> None:
    """A file removed between the walk and its read, and a directory removed between its parent's listing and
    its own, are named as changed (the run warns, as GNU tar's "File removed before we read it"); the manifest
    lists only what the archive holds."""
    from upkeeper.backup.files import Walk, iter_walk

    root = tmp_path / "app"
    (root / "gone-dir").mkdir(parents=True)
    (root / "gone-dir" / "x.txt").write_text("x\n")
    (root / "late.txt").write_text("soon gone\n")  # read after kept.txt
    (root / "kept.txt").write_text("kept\n")

    def hook(real: str) -> bool:  # called as the walk reaches each entry, after its directory was listed
        if real.endswith("/gone-dir"):
            shutil.rmtree(root / "gone-dir")
        if real.endswith("/kept.txt"):
            (root / "late.txt").unlink()
        return False

    out = Walk()
    changed: list[tuple[str, str]] = []
    listed, members = _tar_of(iter_walk([root], [], hook, out), changed=changed)
    assert sorted(f["path"] for f in listed) == sorted(str(p).lstrip("/") for p in (root, root / "gone-dir",
                                                                                     root / "kept.txt"))
    assert set(members) == {f["path"] for f in listed}
    assert sorted(out.changed + changed) == [
        (str(root / "gone-dir"), "removed during the backup; its contents not archived"),
        (str(root / "late.txt"), "removed during the backup; not archived")]


def test_files_changed_during_the_archive_become_warnings_of_the_run(tmp_path: Path) -> None:
    """What write_tar names as changed reaches the run as backup.file_changed warnings (the run is 'warn')."""
    from upkeeper.backup.files import walk
    from upkeeper.core.task import Result, Severity
    from upkeeper.tasks.backup.files import FilesBackup

    root = tmp_path / "app"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    w = walk([root], [])
    (root / "a.txt").unlink()
    (root / "a.txt").symlink_to("/etc/passwd")

    class Upload:
        def write(self, b: bytes) -> None:
            pass

        def finish(self) -> str:
            return "rec"

        def abort(self) -> None:
            raise AssertionError("aborted")

    class Writer:
        def upload(self, *a: Any, **kw: Any) -> Upload:
            return Upload()

        def add(self, rec: Any) -> None:
            pass

    class Ctx:
        def progress(self, *a: Any) -> None:
            pass

    findings: list[Any] = []
    listed = FilesBackup._archive(Ctx(), Writer(), "files.tar", "files", w.entries, True,  # type: ignore[arg-type]
                                  findings)
    assert [f["type"] for f in listed] == ["dir"]
    [f] = findings
    assert (f.check, f.severity, f.subject) == ("backup.file_changed", Severity.WARNING, str(root / "a.txt"))
    assert Result(findings=findings).final_status == "warn"


def test_a_file_that_shrinks_while_being_read_is_padded_and_named(tmp_path: Path) -> None:
    """logrotate's copytruncate empties a log half-way through its read: the backup goes on (not a failure of
    the whole set), the member is what was read padded with zeros to the header's size (as GNU tar), the
    manifest line says how many bytes are padding, its hash is of the member, and a warning names the file."""
    from upkeeper.backup.files import walk, write_tar

    root = tmp_path / "app"
    root.mkdir()
    log = root / "app.log"
    log.write_bytes(b"L" * (4 << 20))
    (root / "z.txt").write_text("after the log\n")
    w = walk([root], [])
    fired: list[int] = []
    buf = io.BytesIO()

    def sink(b: bytes) -> None:
        buf.write(b)
        if not fired:  # logrotate truncates the log after the first MiB is archived
            fired.append(1)
            os.truncate(log, 0)

    changed: list[tuple[str, str]] = []
    listed = write_tar(w.entries, sink, changed=changed)
    assert fired
    [(path, what)] = changed
    assert path == str(log) and "shrank by" in what and "padded with zeros" in what, what
    item = next(f for f in listed if f["path"].endswith("app.log"))
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        fh = tf.extractfile(tf.getmember(item["path"]))
        assert fh is not None
        data = fh.read()
        z = tf.extractfile(tf.getmember(str(root / "z.txt").lstrip("/")))
        assert z is not None and z.read() == b"after the log\n"
    read = len(data) - item["padded"]
    assert len(data) == item["size"] == 4 << 20 and 0 < read < len(data)
    assert data[:read] == b"L" * read and data[read:] == bytes(item["padded"])
    assert item["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_large_file_emptied_while_being_read_is_padded_a_buffer_at_a_time(tmp_path: Path) -> None:
    """A log of some GiB that logrotate's copytruncate empties half-way through its read is padded with zeros
    to its size at the start without making those zeros in memory at once (a 256 MiB file here, sparse: the
    padding allocated whole took over 256 MiB, twice)."""
    import tracemalloc

    from upkeeper.backup.files import walk, write_tar

    root = tmp_path / "app"
    root.mkdir()
    log = root / "app.log"
    with open(log, "wb") as fh:
        fh.write(b"L" * (1 << 20))
        fh.truncate(256 << 20)
    w = walk([root], [])
    sha = hashlib.sha256()
    fired: list[int] = []

    def sink(b: bytes) -> None:
        sha.update(b)
        if not fired:  # logrotate empties the log once the first MiB is archived
            fired.append(1)
            os.truncate(log, 0)

    changed: list[tuple[str, str]] = []
    tracemalloc.start()
    try:
        listed = write_tar(w.entries, sink, changed=changed)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fired and peak < 32 << 20, peak
    [item] = [f for f in listed if f["path"].endswith("app.log")]
    assert item["size"] == 256 << 20 and 0 < item["padded"] < item["size"], item
    [(path, what)] = changed
    assert path == str(log) and "padded with zeros" in what, what


def _tamper_archive(cli: Any, cfg: Path, tmp_path: Path, age_key: AgeKey, name: str, edit: Any) -> None:
    """Rewrite the stored tar object ``name`` through ``edit(members)`` (a list of ``(TarInfo, data)``), encrypted
    and with its manifest record updated, as if the backup had been written so (the catalog records it)."""
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    obj = mpath.parent / name
    dec = subprocess.run(["age", "-d", "-i", str(age_key.identity), str(obj)], check=True, capture_output=True)
    raw = subprocess.run(["zstd", "-d", "-c"], input=dec.stdout, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = [(m, tf.extractfile(m).read() if m.isreg() else None) for m in tf.getmembers()]  # type: ignore[union-attr]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for m, data in edit(members):
            tf.addfile(m, io.BytesIO(data) if data is not None else None)
    z = subprocess.run(["zstd", "-q", "-c"], input=out.getvalue(), check=True, capture_output=True).stdout
    enc = subprocess.run(["age", "-r", age_key.recipient], input=z, check=True, capture_output=True).stdout
    obj.write_bytes(enc)
    m = json.loads(mpath.read_text())
    rec = next(o for o in m["objects"] if o["name"] == name)
    rec.update(size=len(enc), sha256=hashlib.sha256(enc).hexdigest(), raw_size=len(out.getvalue()))
    rewrite_manifest(cli, cfg, mpath, m)


def _member(name: str, data: bytes | None = None, *, link: str | None = None, kind: bytes = tarfile.REGTYPE
            ) -> tuple[tarfile.TarInfo, bytes | None]:
    ti = tarfile.TarInfo(name)
    ti.mode = 0o644
    if link is not None:
        ti.type, ti.linkname = tarfile.SYMTYPE, link
    else:
        ti.type = kind
        ti.size = len(data or b"")
    return ti, data


@pytest.mark.parametrize("at", ["end", "middle"])
@pytest.mark.parametrize("extra", ["file", "symlink", "dir", "second-copy", "hard-link"])
def test_verify_fails_on_an_archive_member_the_manifest_does_not_list(
        cli: Any, make_config: Any, tmp_path: Path, app_tree: Path, age_key: AgeKey, extra: str, at: str) -> None:
    """A restore extracts the whole archive: a member the manifest does not vouch for (an added file, link or
    directory, a second copy of a listed name, a hard link) fails verify, naming it — at the end of the
    archive, or amid the members verify matches with the manifest's entries in order."""
    cfg = _config(make_config, tmp_path, app_tree, age_key, {"exclude": ["node_modules"]})
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    rel = str(app_tree).lstrip("/")
    added = {"file": _member(f"{rel}/planted.js", b"evil()\n"),
             "symlink": _member(f"{rel}/planted", link="/etc"),
             "dir": _member(f"{rel}/planted.d", kind=tarfile.DIRTYPE),
             "second-copy": _member(f"{rel}/app.js", b"evil()\n"),
             "hard-link": _member(f"{rel}/planted.js", kind=tarfile.LNKTYPE)}[extra]
    if extra == "hard-link":
        added[0].linkname = f"{rel}/app.js"
    _tamper_archive(cli, cfg, tmp_path, age_key, "files.tar.zst.age",
                    lambda ms: [*ms, added] if at == "end" else [*ms[:len(ms) // 2], added, *ms[len(ms) // 2:]])
    r = cli(["--config", cfg, "run", "app-verify", "--json"])
    assert r.code == 1, r.output
    summary = r.json()[0]["summary"]
    want = "app.js more than once" if extra == "second-copy" else "which the manifest does not list"
    assert "files.tar.zst.age" in summary and added[0].name in summary and want in summary, summary


@pytest.mark.parametrize("listed_as", ["written", "read"])
@pytest.mark.parametrize("damage", [None, "target-data", "link-elsewhere", "target-gone", "stored-as-file"])
def test_verify_compares_a_hard_link_with_the_member_it_links_to(tmp_path: Path, damage: str | None,
                                                                 listed_as: str) -> None:
    """A hard-link member restores the data of the member it links to: verify's comparison (as the backup
    wrote the file list, and as read back from manifest.json) fails when that member's data is not what the
    manifest lists for the link's name, when the link points at another member, when there is no such member
    before it, or when the name is not a link at all."""
    from upkeeper.backup.files import ReadFileList, iter_walk, write_tar
    from upkeeper.backup.pipeline import ObjectRecord
    from upkeeper.backup.verify import _Comparison
    from upkeeper.errors import BackupError

    (tmp_path / "a.png").write_bytes(b"png data\n" * 50)
    (tmp_path / "b.png").hardlink_to(tmp_path / "a.png")
    (tmp_path / "c.js").write_text("c()\n")
    buf = io.BytesIO()
    written = write_tar(iter_walk([tmp_path], []), buf.write)
    listed: Any = written if listed_as == "written" else ReadFileList(
        [ReadFileList.entry(json.loads(line)) for line in written.lines()])
    rel = str(tmp_path).lstrip("/")
    target, link = f"{rel}/a.png", f"{rel}/b.png"
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isreg() else None  # type: ignore[union-attr]
            if m.name == link:
                assert m.islnk() and m.linkname == target, (m.name, m.type, m.linkname)
                if damage == "link-elsewhere":
                    m.linkname = f"{rel}/c.js"
                elif damage == "stored-as-file":
                    m.type, m.linkname, data = tarfile.REGTYPE, "", b"png data\n" * 50
                    m.size = len(data)
            elif m.name == target:
                if damage == "target-gone":
                    continue
                if damage == "target-data":
                    assert data is not None
                    data = data.replace(b"png", b"gif")
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    cmp = _Comparison(ObjectRecord("files.tar.zst.age", 0, "", 0), listed)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r|") as tf:
        while (ti := tf.next()) is not None:
            cmp.member(tf, ti)
    if damage is None:
        assert cmp.result() == 3
        return
    with pytest.raises(BackupError) as exc:
        cmp.result()
    want = {"target-data": f"{target} does not match its SHA-256",
            "link-elsewhere": f"hard link {link} links to '{rel}/c.js', manifest says '{target}'",
            "target-gone": f"hard link {link}: {target}, which it links to, is not a file earlier in the archive",
            "stored-as-file": f"{link} is a file in the archive, the manifest says hard link"}
    assert want[damage] in str(exc.value), exc.value


def test_verify_fails_on_a_listed_directory_missing_from_the_archive(
        cli: Any, make_config: Any, tmp_path: Path, app_tree: Path, age_key: AgeKey) -> None:
    """An empty directory the manifest lists (an uploads dir the app needs) but the archive lacks fails verify."""
    (app_tree / "uploads").mkdir()
    cfg = _config(make_config, tmp_path, app_tree, age_key, {"exclude": ["node_modules"]})
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    gone = str(app_tree / "uploads").lstrip("/")
    _tamper_archive(cli, cfg, tmp_path, age_key, "files.tar.zst.age", lambda ms: [m for m in ms if m[0].name != gone])
    r = cli(["--config", cfg, "run", "app-verify", "--json"])
    assert r.code == 1, r.output
    summary = r.json()[0]["summary"]
    assert f"directory {gone} missing from the archive" in summary, summary


@pytest.mark.parametrize("trick", ["dotdot", "absolute", "symlink-then-file", "symlink-then-dir", "link-to-dotdot",
                                   "unlisted", "twice", "hard-link-out"])
def test_restore_never_writes_outside_the_directory(cli: Any, make_config: Any, tmp_path: Path, app_tree: Path,
                                                    age_key: AgeKey, trick: str) -> None:
    """A set planted on the storage (anyone who may write there can encrypt to the public recipient, and
    'backups sync' records what it finds) must not make 'backups restore --to DIR' write outside DIR: names
    with '..', absolute names, a symlink extracted first and then written through, a member the manifest
    does not list.  The restore fails naming the member, and nothing lands outside DIR."""
    cfg = _config(make_config, tmp_path, app_tree, age_key, {"exclude": ["node_modules"]})
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    bid = r.json()[0]["artifacts"][0]["id"]
    victim = tmp_path / "victim"
    victim.mkdir()
    rel = str(app_tree).lstrip("/")
    planted = {
        "dotdot": [_member("../../../../../../../../../../.." + str(victim / "pwned"), b"pwned\n")],
        "absolute": [_member(str(victim / "pwned"), b"pwned\n")],
        "symlink-then-file": [_member(f"{rel}/lnk", link=str(victim)), _member(f"{rel}/lnk/pwned", b"pwned\n")],
        "symlink-then-dir": [_member(f"{rel}/lnk", link=str(victim)),
                             _member(f"{rel}/lnk/sub", kind=tarfile.DIRTYPE)],
        "link-to-dotdot": [_member(f"{rel}/lnk", link="../../../../../../../../../../.." + str(victim)),
                           _member(f"{rel}/lnk/pwned", b"pwned\n")],
        "unlisted": [_member(f"{rel}/pwned.js", b"pwned\n")],
        "twice": [_member(f"{rel}/app.js", b"pwned\n")],  # a second copy of a listed file
        "hard-link-out": [_member(f"{rel}/pwned", kind=tarfile.LNKTYPE)],
    }[trick]
    if trick == "hard-link-out":  # another name of a file outside: a link made to it would expose or alter it
        (victim / "target").write_text("victim\n")
        planted[0][0].linkname = "../../../../../../../../../../.." + str(victim / "target")
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    m = json.loads(mpath.read_text())
    files = m["files"]["archives"]["files.tar.zst.age"]["files"]
    if trick not in ("unlisted", "twice"):  # the planter writes a manifest that lists what they add
        for ti, data in planted:
            files.append({"path": ti.name, "type": "symlink" if ti.issym() else "dir" if ti.isdir() else "file",
                          "mode": 0o644, **({"target": ti.linkname} if ti.issym() else {}),
                          **({"link": ti.linkname, "size": 7} if ti.islnk() else {}),
                          **({"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} if data else {})})
    mpath.write_text(json.dumps(m))
    _tamper_archive(cli, cfg, tmp_path, age_key, "files.tar.zst.age", lambda ms: [*ms, *planted])
    dest = tmp_path / "restored"
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest])
    assert r.code == 1, r.output
    assert "Traceback" not in r.output and "files.tar.zst.age" in r.output, r.output
    assert list(victim.iterdir()) == ([victim / "target"] if trick == "hard-link-out" else []), r.output
    assert trick != "hard-link-out" or os.stat(victim / "target").st_nlink == 1
    assert not list(tmp_path.glob("**/pwned*")) or all(dest in p.parents for p in tmp_path.glob("**/pwned*"))
    if trick == "twice":
        assert "the archive holds it twice" in " ".join(r.output.split()) and not dest.exists(), r.output


def test_restore_keeps_modes_mtimes_and_symlinks(cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey
                                                 ) -> None:
    """What was backed up comes back as it was: a group-writable upload directory stays group-writable (the app's
    workers write there), a private key stays 0600, mtimes of files, directories (also one holding a secret) and
    symlinks are kept, symlinks (relative and absolute) point where they pointed, empty directories exist."""
    root = tmp_path / "srv" / "app"
    (root / "storage" / "uploads").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "storage" / "uploads" / "a.jpg").write_bytes(b"\xff\xd8jpeg")
    (root / "key.pem").write_text("KEY\n")
    (root / "bin.sh").write_text("#!/bin/sh\n")
    (root / "current").symlink_to("storage")
    (root / "abs").symlink_to("/etc/hostname")
    os.chmod(root / "key.pem", 0o600)
    os.chmod(root / "bin.sh", 0o750)
    os.chmod(root / "storage" / "uploads", 0o2775)
    os.chmod(root / "storage", 0o775)
    os.utime(root / "key.pem", (1_600_000_000, 1_600_000_000))
    os.utime(root / "storage" / "uploads", (1_500_000_000, 1_500_000_000))
    (root / "config").mkdir()
    (root / "config" / ".env").write_text("SECRET=1\n")
    os.utime(root / "config", (1_400_000_000, 1_400_000_000))
    os.utime(root / "current", (1_300_000_000, 1_300_000_000), follow_symlinks=False)
    owners = {"key.pem": (1234, 5678), "bin.sh": (65534, 65534), "current": (42, 43)}  # (ids without a name, too)
    if os.geteuid() == 0:
        for name, (uid, gid) in owners.items():
            os.lchown(root / name, uid, gid)
    cfg = _config(make_config, tmp_path, root, age_key, {"secret_paths": ["config/.env"]})
    _, _, dest = _backup_verify_restore(cli, cfg, tmp_path)
    got = dest / str(root).lstrip("/")
    setgid = 0o2000 if os.geteuid() == 0 else 0
    assert stat_mode(got / "storage") == 0o775 and stat_mode(got / "storage" / "uploads") == 0o775 | setgid
    assert stat_mode(got / "key.pem") == 0o600 and stat_mode(got / "bin.sh") == 0o750
    assert (got / "key.pem").stat().st_mtime == 1_600_000_000
    assert (got / "storage" / "uploads").stat().st_mtime == 1_500_000_000
    # the secrets archive's .env does not move the mtime of its directory; a link's own mtime comes back
    assert (got / "config" / ".env").read_text() == "SECRET=1\n"
    assert (got / "config").stat().st_mtime == 1_400_000_000
    assert (got / "current").lstat().st_mtime == 1_300_000_000
    if os.geteuid() == 0:  # owners and groups, by name where the name exists here, else by id; links' own
        assert {n: ((st := (got / n).lstat()).st_uid, st.st_gid) for n in owners} == owners
    assert os.readlink(got / "current") == "storage" and os.readlink(got / "abs") == "/etc/hostname"
    assert (got / "empty").is_dir() and (got / "storage" / "uploads" / "a.jpg").read_bytes() == b"\xff\xd8jpeg"


def stat_mode(p: Path) -> int:
    return p.stat().st_mode & 0o7777


def test_restore_with_force_never_writes_through_links_in_the_directory(
        cli: Any, make_config: Any, tmp_path: Path, app_tree: Path, age_key: AgeKey) -> None:
    """--force into a directory that holds symlinks where the backup has a directory or a file (a previous
    restore's 'current' link, or something planted): the links are replaced or refused, never written
    through, so nothing outside the directory changes."""
    cfg = _config(make_config, tmp_path, app_tree, age_key, {"exclude": ["node_modules"]})
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    bid = r.json()[0]["artifacts"][0]["id"]
    rel = str(app_tree).lstrip("/")
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "app.js").write_text("precious\n")
    dest = tmp_path / "restored"
    (dest / rel).mkdir(parents=True)
    (dest / rel / "app.js").symlink_to(outside / "app.js")  # a file's name is a link out
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest])  # not empty: only with --force
    assert r.code == 2 and "exists and is not empty" in r.output and "--force" in r.output, r.output
    assert sorted(p.name for p in (dest / rel).iterdir()) == ["app.js"]
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest, "--force"])
    assert r.code == 0, r.output
    assert (outside / "app.js").read_text() == "precious\n"
    assert not (dest / rel / "app.js").is_symlink() and (dest / rel / "app.js").read_text() == "console.log('hi')\n"

    shutil.rmtree(dest)
    (dest / rel).mkdir(parents=True)
    (dest / rel / "public").symlink_to(outside)  # a directory's name is a link out
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest, "--force"])
    assert sorted(p.name for p in outside.iterdir()) == ["app.js"], r.output
    assert r.code == 0, r.output
    assert (dest / rel / "public").is_dir() and not (dest / rel / "public").is_symlink()
    assert (dest / rel / "public" / "img" / "logo.png").stat().st_size == 256 * 40

    (dest / rel / "app.js").unlink()
    (dest / rel / "app.js" / "keep").mkdir(parents=True)  # a directory where the backup has a file: refused,
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest, "--force"])  # for the directory, not
    assert r.code == 1 and "app.js is a directory" in r.output, r.output  # the backup
    assert "move it out of the way" in r.output and "restore an older one" not in r.output, r.output
    assert (dest / rel / "app.js" / "keep").is_dir()


def test_a_shrunk_file_restores_as_read(cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """A real run during which logrotate (copytruncate) empties a log: the run warns naming it instead of
    failing, its set verifies (the manifest describes the padded member), and 'backups restore' cuts the
    padding off: the restored log is the bytes that were read, with the mtime it had."""
    import time

    root = tmp_path / "srv" / "app"
    root.mkdir(parents=True)
    log = root / "app.log"
    data = os.urandom(96 << 20)  # incompressible and larger than what the pipeline buffers before the pause
    log.write_bytes(data)
    os.utime(log, (1_600_000_000, 1_600_000_000))
    cfg = _config(make_config, tmp_path, root, age_key, {})
    mark = tmp_path / "at-fault-point"
    env = {**os.environ, "UPKEEPER_FAULT_PAUSE": "during-upload:3", "UPKEEPER_FAULT_MARK": str(mark),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "run", "app-backup", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mark.exists(), "the backup never reached its upload"
        os.truncate(log, 0)  # while the archive is being written and the upload is paused
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err.decode()
    run = json.loads(out)[0]
    assert run["status"] == "warn", run
    [f] = [f for f in run["findings"] if f["check"] == "backup.file_changed"]
    assert f["subject"] == str(log) and "shrank by" in f["message"], f
    bid = run["artifacts"][0]["id"]
    v = cli(["--config", cfg, "run", "app-verify", "--json"])
    assert v.code == 0 and v.json()[0]["status"] == "ok", v.output
    dest = tmp_path / "restored"
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest])
    assert r.code == 0, r.output
    got = dest / str(log).lstrip("/")
    restored = got.read_bytes()
    assert 0 < len(restored) < len(data) and restored == data[:len(restored)]
    assert got.stat().st_mtime == 1_600_000_000


def test_exclude_patterns_match_as_documented(cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """A name matches anywhere; a path with '/' from the root ('/cache' only the root's cache, not
    storage/cache); an absolute path that path, also when the app root is a symlink (/srv/app →
    releases/42) and the pattern names it through the link or through the release."""
    release = tmp_path / "srv" / "releases" / "42"
    for d in ("cache", "storage/cache", "storage/logs", "public"):
        (release / d).mkdir(parents=True)
        (release / d / "f.txt").write_text(d + "\n")
    (release / "public" / "debug.log").write_text("log\n")
    app = tmp_path / "srv" / "app"
    app.symlink_to(release)
    cfg = _config(make_config, tmp_path, app, age_key,
                  {"exclude": ["/cache", "*.log", str(app / "storage" / "cache") + "/", str(release / "storage/logs")]})
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    rel = str(release).lstrip("/")
    kept = sorted(f["path"].removeprefix(rel + "/") for f in
                  json.loads(mpath.read_text())["files"]["archives"]["files.tar.zst.age"]["files"]
                  if f["type"] == "file")
    assert kept == ["public/f.txt"], kept


def test_exclude_patterns_starting_with_dot_slash_match_from_the_root() -> None:
    """'./storage/cache' (tar's way of naming what is under '.') is a path with '/', from each root, as the
    docs say; './cache' the root's cache only: both matched nothing, every such directory was archived."""
    from upkeeper.backup.files import excluded

    for pattern, rel, want in (("./storage/cache", "storage/cache", True), ("./storage/cache", "storage/cache/f", True),
                               ("./cache", "cache", True), ("./cache/", "cache", True), ("./cache", "a/cache", False),
                               (".//cache", "cache", True), ("./*.tmp", "x.tmp", True),
                               ("./", "cache", False), ("cache", "a/cache", True)):
        assert excluded(rel, [pattern]) is want, (pattern, rel)


def test_the_catalog_keeps_file_counts_not_file_lists(cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey
                                                      ) -> None:
    """A set of many files: its manifest.json lists every file (verify and restore read it there), but the
    catalog row (loaded by every 'backups list') keeps only how many were listed, before and after a
    'backups sync' — 200,000 files made 54 MB per row and 'backups list' of 20 backups took 22 s and 2.9 GB."""
    root = tmp_path / "srv" / "app"
    for i in range(20):
        (root / "uploads" / f"{i:02d}").mkdir(parents=True)
        for j in range(100):
            (root / "uploads" / f"{i:02d}" / f"img_{j:04d}.jpg").write_bytes(b"x")
    cfg = _config(make_config, tmp_path, root, age_key, {})
    run, files, dest = _backup_verify_restore(cli, cfg, tmp_path)
    assert len([f for f in files.values() if f["type"] == "file"]) == 2000
    assert (dest / str(root).lstrip("/") / "uploads" / "19" / "img_0099.jpg").read_bytes() == b"x"
    bid = run["artifacts"][0]["id"]
    for _ in ("written", "synced"):
        row = cli(["--config", cfg, "backups", "show", bid, "--json"]).json()
        archive = row["manifest"]["files"]["archives"]["files.tar.zst.age"]
        assert "files" not in archive and archive["files_listed"] == 2022, archive  # 2000 files, 22 directories
        assert len(json.dumps(row)) < 5000
        assert cli(["--config", cfg, "backups", "sync", "--json"]).code == 0


def test_a_sparse_file_restores_sparse(cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """A 256 MiB file with a few bytes of data (a VM image, /var/log/lastlog with large UIDs) is archived with its
    zeros; the restore writes them as holes, so it takes about the disk space the original took, not 256 MiB."""
    root = tmp_path / "srv" / "app"
    root.mkdir(parents=True)
    sparse = root / "lastlog"
    with open(sparse, "wb") as fh:
        fh.write(b"head")
        fh.seek(128 << 20)
        fh.write(b"middle")
        fh.truncate(256 << 20)
    if sparse.stat().st_blocks * 512 > 1 << 20:
        pytest.skip("this file system does not keep holes")
    # data at odd offsets and across buffer boundaries, a hole at the end; a file all hole
    odd = _make_sparse(root / "odd.img", (3 << 20) + 3, [(1_000_003, b"x" * 5), ((2 << 20) - 100, os.urandom(300))])
    _make_sparse(root / "hole.img", (2 << 20) + 1, [])
    cfg = _config(make_config, tmp_path, root, age_key, {})
    _, files, dest = _backup_verify_restore(cli, cfg, tmp_path)
    for name, want in (("odd.img", odd), ("hole.img", bytes((2 << 20) + 1))):
        path = str(root / name).lstrip("/")
        assert (dest / path).read_bytes() == want and files[path]["sha256"] == hashlib.sha256(want).hexdigest()
    got = dest / str(sparse).lstrip("/")
    st = got.stat()
    assert st.st_size == 256 << 20 and st.st_blocks * 512 < 1 << 20, st
    with open(got, "rb") as fh:
        assert fh.read(4) == b"head"
        fh.seek(128 << 20)
        assert fh.read(6) == b"middle"
    assert files[str(sparse).lstrip("/")]["sha256"] == hashlib.sha256(sparse.read_bytes()).hexdigest()


def _rchar() -> int:
    """Bytes this process has read through read calls (Linux's /proc/self/io)."""
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("rchar:"))


def _make_sparse(path: Path, size: int, data: list[tuple[int, bytes]]) -> bytes:
    """A file of ``size`` bytes with ``data`` written at its offsets and holes elsewhere; returns its bytes."""
    want = bytearray(size)
    with open(path, "wb") as fh:
        for off, b in data:
            fh.seek(off)
            fh.write(b)
            want[off:off + len(b)] = b
        fh.truncate(size)
    return bytes(want)


def test_the_holes_of_sparse_files_are_not_read_and_archive_as_zeros(tmp_path: Path) -> None:
    """A sparse file's holes are found with SEEK_DATA/SEEK_HOLE and archived as zeros without being read (a
    1 GiB file with a few bytes of data took 3-4 s to back up, reading and copying its zeros): the member's
    bytes and the manifest's hash are those of the whole file, as before — data at odd offsets and across
    buffer boundaries, a file that is all hole, a hole at the end, short holes between data."""
    from upkeeper.backup.files import walk, write_tar

    root = tmp_path / "app"
    root.mkdir()
    rnd = random.Random(7)
    mib = 1 << 20
    files = {
        "odd": _make_sparse(root / "odd", 40 * mib + 3, [(1_000_003, b"x" * 5), (2 * mib - 100, rnd.randbytes(300)),
                                                         (5 * mib + 17, rnd.randbytes(int(2.5 * mib))),
                                                         (30 * mib + 1, b"tail-data")]),
        "hole": _make_sparse(root / "hole", 24 * mib + 1, []),
        "end": _make_sparse(root / "end", 3 * mib + 511, [(3 * mib + 510, b"!")]),
        "short-holes": _make_sparse(root / "short-holes", 2 * mib + 7,
                                    [(i, rnd.randbytes(4096)) for i in range(0, 2 * mib, 64 << 10)]),
    }
    if os.stat(root / "hole").st_blocks:
        pytest.skip("this file system does not keep holes")
    buf = io.BytesIO()
    before = _rchar()
    listed = write_tar(walk([root], []).entries, buf.write)
    read = _rchar() - before
    total = sum(len(b) for b in files.values())
    assert read < 12 * mib < total, (read, total)  # the data (and short holes read through), not the holes
    hashes = {Path(f["path"]).name: f["sha256"] for f in listed if f["type"] == "file"}
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        for name, want in files.items():
            fh = tf.extractfile(str(root / name).lstrip("/"))
            assert fh is not None
            got = fh.read()
            assert got == want, name
            assert hashes[name] == hashlib.sha256(want).hexdigest(), name


def _all_but(keep: Path) -> list[str]:
    """Exclude patterns that leave, of a backup of '/', only ``keep`` and the directories above it: at each
    level every name but the one on the way (shorter, longer, or differing at some character)."""
    def glob(s: str) -> str:
        return "".join(f"[{c}]" if c in "[]*?" else c for c in s)

    out: list[str] = []
    for above, name in zip(list(keep.parents)[::-1], keep.parts[1:], strict=True):
        at = str(above).rstrip("/") + "/"
        assert "]" not in name and "!" not in name, name
        out += [f"{at}{glob(name[:i])}[!{name[i]}]*" for i in range(len(name))]
        out += [f"{at}{glob(name[:i])}" for i in range(1, len(name))] + [f"{at}{glob(name)}[!/]*"]
    return out


def test_a_backup_of_the_root_directory_verifies_and_restores(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """paths: ['/'] (a whole host, with excludes): '/' itself is the member './', as GNU tar names it (it was
    '/', whose name is empty once its '/' is cut: every restore refused it as an absolute name, so the backup
    verified but could not be restored); restored, it is the directory restored into."""
    keep = tmp_path / "keep"
    (keep / "etc").mkdir(parents=True)
    (keep / "etc" / "app.conf").write_text("listen 80;\n")
    cfg = make_config({
        "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store"), "fsync": False}},
        "backup": {"encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}},
        "jobs": {"app-backup": {"task": "files.backup", "options": {"paths": ["/"], "exclude": _all_but(keep)}}}})
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    backup_id = r.json()[0]["artifacts"][0]["id"]
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    files = {f["path"]: f for f in json.loads(mpath.read_text())["files"]["archives"]["files.tar.zst.age"]["files"]}
    assert cli(["--config", cfg, "backups", "verify", backup_id]).code == 0
    dest = tmp_path / "restored"
    r = cli(["--config", cfg, "backups", "restore", backup_id, "--to", dest])
    assert r.code == 0, r.output
    assert files[""]["type"] == "dir" and str(keep / "etc" / "app.conf").lstrip("/") in files, files
    assert len(files) == len(keep.parts) + 2, files  # "/", the directories down to keep, etc, app.conf
    assert (dest / str(keep).lstrip("/") / "etc" / "app.conf").read_text() == "listen 80;\n"
    assert sorted(p.name for p in dest.iterdir()) == [keep.parts[1]]
    with tarfile.open(fileobj=io.BytesIO(_decrypted_tar(tmp_path, age_key))) as tf:
        members = [m.name for m in tf]
    assert members[:2] == [".", keep.parts[1]], members


def test_paths_through_a_symlinked_directory_restore_beside_the_link(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """/srv is backed up with its 'app → releases/42' link, and the secret is configured through the link
    (/srv/app/.env): the archives name each file by its real path, so no member lies below a symlink member
    and the restore (which refuses to write through links) gives back the link and the release with its .env."""
    srv = tmp_path / "srv"
    release = srv / "releases" / "42"
    (release / "config").mkdir(parents=True)
    (release / "app.js").write_text("console.log('hi')\n")
    (release / ".env").write_text("SECRET_KEY=s3cr3t-value\n")
    (srv / "app").symlink_to("releases/42")
    cfg = _config(make_config, tmp_path, srv, age_key,
                  {"paths": [str(srv), str(srv / "app" / "config")], "secret_paths": [str(srv / "app" / ".env")]})
    _, files, dest = _backup_verify_restore(cli, cfg, tmp_path)
    got = dest / str(srv).lstrip("/")
    assert os.readlink(got / "app") == "releases/42"
    assert (got / "releases" / "42" / ".env").read_text() == "SECRET_KEY=s3cr3t-value\n"
    assert (got / "app" / "app.js").read_text() == "console.log('hi')\n"
    assert not any(".env" in p for p in files)


def test_another_name_of_a_secret_file_goes_into_the_secrets_archive(
        cli: Any, make_config: Any, tmp_path: Path, app_tree: Path, age_key: AgeKey) -> None:
    """A hard link of .env elsewhere in the tree (a deploy script's 'ln .env shared/.env.previous') holds the
    secret too: it is archived in the secrets archive (sizes only), not in the main one whose manifest lists
    plaintext SHA-256s, and both names restore with the content."""
    (app_tree / "shared").mkdir()
    os.link(app_tree / ".env", app_tree / "shared" / ".env.previous")
    cfg = _config(make_config, tmp_path, app_tree, age_key, {"exclude": ["node_modules"], "secret_paths": [".env"]})
    _, main, dest = _backup_verify_restore(cli, cfg, tmp_path)
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    text = mpath.read_text()
    assert hashlib.sha256((app_tree / ".env").read_bytes()).hexdigest() not in text
    rel = str(app_tree).lstrip("/")
    assert f"{rel}/shared/.env.previous" not in main and f"{rel}/shared" in main
    secrets = json.loads(text)["files"]["archives"]["secrets.tar.zst.age"]["files"]
    assert [(f["path"], f.get("link")) for f in secrets] == [(f"{rel}/.env", None),
                                                             (f"{rel}/shared/.env.previous", f"{rel}/.env")]
    assert (dest / rel / "shared" / ".env.previous").read_text().startswith("DATABASE_URL")
    assert os.stat(dest / rel / "shared" / ".env.previous").st_ino == os.stat(dest / rel / ".env").st_ino


def test_a_missing_app_root_is_named_not_called_excluded(cli: Any, make_config: Any, tmp_path: Path,
                                                          age_key: AgeKey) -> None:
    """The app target's root (the default path) does not exist: the run says so, not 'every path was excluded'."""
    cfg = _config(make_config, tmp_path, tmp_path / "srv" / "gone", age_key, {})
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 1, r.output
    run = r.json()[0]
    assert f"{tmp_path / 'srv' / 'gone'}, does not exist" in run["summary"], run["summary"]


def test_a_configured_path_that_is_a_link_to_nothing_is_named_never_silently_left_out(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """A deploy left 'storage' a link to a directory that is gone: the run fails naming it and its target (as
    for a missing path), where it reported ok with nothing of it archived; a secret linked to nothing is
    noted, as a missing one is; a configured path gone by the time the walk reaches it is a warning."""
    from upkeeper.backup.files import walk
    from upkeeper.core.task import Finding
    from upkeeper.errors import TaskError
    from upkeeper.tasks.backup.files import FilesBackup

    root = tmp_path / "srv" / "app"
    root.mkdir(parents=True)
    (root / "app.js").write_text("ok\n")
    (root / "storage").symlink_to("../shared/storage")
    (root / ".env").symlink_to("../shared/.env")
    (root / "loop").symlink_to("loop")
    gone = tmp_path / "srv" / "shared" / "storage"
    cfg = _config(make_config, tmp_path, root, age_key, {"paths": ["app.js", "storage"]})
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 1, r.output
    assert f"storage is a symlink to {gone}, which does not exist" in r.json()[0]["summary"], r.output
    with pytest.raises(TaskError, match="loop is a symlink that never resolves"):
        FilesBackup._resolve(["loop"], root, True, [], "paths")
    notes: list[Finding] = []
    assert FilesBackup._resolve([".env", "app.js"], root, False, notes, "secret_paths") == [root / "app.js"]
    [note] = notes
    assert note.check == "backup.path_missing" and note.subject == str(root / ".env"), note
    assert "which does not exist" in note.message, note
    w = walk([root / "storage"], [])
    assert w.entries == [] and w.changed == [(f"{root / 'storage'} ({gone})",
                                              "not found when the backup reached it; not archived")], w.changed


def test_a_backup_without_a_single_file_warns(cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """Paths that hold only directories once excludes apply (an exclude that takes everything, an emptied
    uploads dir) give a set, but the run warns (backup.empty) as an empty dump would be suspicious."""
    root = tmp_path / "srv" / "app"
    (root / "uploads").mkdir(parents=True)
    (root / "uploads" / "a.log").write_text("x\n")
    cfg = _config(make_config, tmp_path, root, age_key, {"exclude": ["*.log"]})
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    run = r.json()[0]
    assert run["status"] == "warn", run
    [f] = [f for f in run["findings"] if f["check"] == "backup.empty"]
    assert "no file archived" in f["message"] and str(root) in f["message"], f


def test_a_local_storage_inside_the_tree_is_left_out_of_its_own_backups(cli: Any, make_config: Any,
                                                                        tmp_path: Path) -> None:
    """Root /srv, storage /srv/backups: as tar leaves out the archive it writes, each backup does not hold the
    ones before it (nor its own partial upload), and says so; a path in the storage's part for this target is
    refused, as is a path that is only a FIFO (named as such, not called excluded)."""
    root = tmp_path / "srv"
    (root / "app").mkdir(parents=True)
    (root / "app" / "data.bin").write_bytes(b"x" * 1000)
    store = root / "backups"
    os.mkfifo(root / "app" / "fifo")

    def config(options: dict[str, Any]) -> Path:
        return Path(make_config({"targets": {"web": {"kind": "app", "root": str(root)}},
                                 "storages": {"local1": {"kind": "local", "path": str(store), "fsync": False}},
                                 "backup": {"encryption": "none"},
                                 "jobs": {"app-backup": {"task": "files.backup", "target": "web",
                                                         "options": options}}}))
    store.mkdir()
    r = cli(["--config", config({}), "run", "app-backup", "--json"])  # (it would hold its own partial upload)
    assert r.code == 0, r.output
    run = r.json()[0]
    assert any(f["check"] == "backup.file_skipped" and f["subject"] == str(store) and "'local1'" in f["message"]
               for f in run["findings"]), run["findings"]
    [mpath] = store.rglob("manifest.json")
    [archive] = json.loads(mpath.read_text())["files"]["archives"].values()
    paths = [f["path"] for f in archive["files"]]
    assert f"{str(root).lstrip('/')}/app/data.bin" in paths
    assert not any("backups" in p for p in paths), paths

    r = cli(["--config", config({"paths": [str(store / "web" / "files")]}), "run", "app-backup", "--json"])
    assert r.code == 1, r.output
    assert "is in the directory of storage 'local1'" in r.json()[0]["summary"], r.output
    r = cli(["--config", config({"paths": ["app/fifo"]}), "run", "app-backup", "--json"])
    assert r.code == 1, r.output
    summary = r.json()[0]["summary"]
    assert "no configured path is a regular file, directory or symlink" in summary and "excluded" not in summary


def test_acls_capabilities_and_user_attributes_are_archived_verified_and_restored(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey, monkeypatch: pytest.MonkeyPatch) -> None:
    """A default ACL on an uploads directory, cap_net_bind_service on a binary, user attributes on a file come
    back with a restore (they were lost before: an info finding said so); the manifest records each
    attribute's SHA-256, which verify compares.  An attribute no archive keeps (trusted.*) is still noted.
    Restored as a user other than root, only the user attributes are set, and the restore says what it left
    out.  (GNU tar reading them back: tests/backup/test_restore_doc.py.)"""
    root = tmp_path / "srv" / "app"
    want = make_attributes(root)
    if os.geteuid() == 0:
        os.setxattr(root / "plain.txt", "trusted.note", b"kept by no archive")
    cfg = _config(make_config, tmp_path, root, age_key, {})
    run, files, dest = _backup_verify_restore(cli, cfg, tmp_path)
    rel = str(root).lstrip("/")
    recorded = {p[len(rel) + 1:]: f["xattrs"] for p, f in files.items() if "xattrs" in f}
    assert recorded == {p: {n: hashlib.sha256(v).hexdigest() for n, v in a.items()} for p, a in want.items()}
    noted = [f for f in run["findings"] if f["check"] == "backup.attrs_not_archived"]
    if os.geteuid() == 0:
        [f] = noted
        assert f["value"] == 1 and "plain.txt: trusted.note" in f["message"] and "user.*" in f["message"], f
    else:
        assert noted == []
    assert read_attributes(dest / rel) == want

    # verify compares them with the manifest (a manifest whose record of an attribute differs)
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    m = json.loads(mpath.read_text())
    listed = m["files"]["archives"]["files.tar.zst.age"]["files"]
    [entry] = [f for f in listed if f["path"] == f"{rel}/tagged.txt"]
    entry["xattrs"]["user.origin"] = hashlib.sha256(b"import").hexdigest()
    rewrite_manifest(cli, cfg, mpath, m)
    v = cli(["--config", cfg, "run", "app-verify", "--json"])
    assert v.code == 1 and "tagged.txt: its extended attribute user.origin does not match" in v.output, v.output

    # restored by another user: user.* only (os.geteuid as a user's: the restore leaves out what only root sets)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    r = cli(["--config", cfg, "backups", "restore", run["artifacts"][0]["id"], "--to", tmp_path / "mine", "--json"])
    assert r.code == 0, r.output
    out = r.json()
    [skipped] = out["xattrs_skipped"]
    assert skipped["attributes"] == sorted({n for a in want.values() for n in a if not n.startswith("user.")})
    assert skipped["entries"] == 2 and "restore as root" in out["warning"], out
    assert read_attributes(tmp_path / "mine" / rel) == {"tagged.txt": want["tagged.txt"]}


def test_user_attributes_restore_on_read_only_files_as_another_user(request: pytest.FixtureRequest) -> None:
    """Not as root, a user attribute cannot be set on a read-only file (0444) or directory (0555), even one's own:
    the restore makes it writable for the moment it takes; ACLs and capabilities are skipped, and said so."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to run as nobody) and setpriv")
    base = Path(tempfile.mkdtemp(prefix="upkeeper-xattrs-"))  # a place nobody reaches (tmp_path is root's)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    (base / "ro-dir").mkdir()
    (base / "ro-file").write_text("x\n")
    for p in (base, base / "ro-dir", base / "ro-file"):
        shutil.chown(p, "nobody")
    script = f"""
import json, os
from upkeeper.backup.restore import SkippedXattrs, set_xattrs
skipped = SkippedXattrs()
os.chmod({str(base / "ro-file")!r}, 0o444)
os.chmod({str(base / "ro-dir")!r}, 0o555)
for p in ("ro-file", "ro-dir"):
    set_xattrs(os.path.join({str(base)!r}, p), {{"user.origin": b"v", "security.capability": b"c"}}, p, skipped)
print(json.dumps(skipped.to_dict()))
"""
    res = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c",
                          script], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              sys.path)}, timeout=60)
    assert res.returncode == 0, res.stderr
    [skipped] = json.loads(res.stdout)
    assert skipped["attributes"] == ["security.capability"] and skipped["entries"] == 2, skipped
    for name, mode in (("ro-file", 0o444), ("ro-dir", 0o555)):
        assert os.getxattr(base / name, "user.origin") == b"v" and stat_mode(base / name) == mode
        assert "security.capability" not in os.listxattr(base / name)


def _many_uploads(make_config: Any, tmp_path: Path, n: int, *, nested: bool) -> Path:
    """An uploads tree of ``n`` tiny files, 500 a directory (``nested``: in 10 subdirectories of 50 each), and an
    unencrypted files.backup job 'app-backup' of it."""
    root = tmp_path / "srv" / "uploads"
    per_dir = 50 if nested else 500
    for i in range(n):
        d = root / f"{i // 500:03d}" / f"{i // 50 % 10}" if nested else root / f"{i // 500:03d}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        (d / f"upload-{i:06d}.jpg").write_bytes(b"%06d" % i)
    return Path(make_config({"targets": {"web": {"kind": "app", "root": str(root)}},
                             "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store"),
                                                     "fsync": False}},
                             "backup": {"encryption": "none"},
                             "jobs": {"app-backup": {"task": "files.backup", "target": "web"}}}))


def test_the_memory_of_a_backup_does_not_grow_by_kilobytes_a_file(make_config: Any, tmp_path: Path) -> None:
    """A backup of a tree of many small files (an uploads directory, node_modules) streams the walk into the
    archive and keeps each file's manifest line as compact text: it took about 3 KB a file (every entry with
    its stat, every manifest line as a dict, the manifest JSON three times), 600 MB for 200,000 files."""
    import tracemalloc

    from upkeeper.config.loader import load_config
    from upkeeper.core.task import TaskContext
    from upkeeper.tasks.backup.files import FilesBackup, FilesBackupOptions

    n = 6000
    cfg = _many_uploads(make_config, tmp_path, n, nested=True)
    config = load_config(cfg)
    ctx = TaskContext(job="app-backup", task="files.backup", target_name="web", target=config.targets["web"],
                      config=config)
    tracemalloc.start()
    try:
        result = FilesBackup().run(ctx, FilesBackupOptions())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.final_status == "ok", result.summary
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    assert json.loads(mpath.read_text())["files"]["files"] == n
    assert peak < (4 << 20) + 400 * n, f"{peak / n:.0f} bytes a file"  # fixed: 1 MiB buffers; then a line a file


def test_verify_of_a_set_of_many_files_does_not_keep_a_table_of_its_members(cli: Any, make_config: Any,
                                                                           tmp_path: Path) -> None:
    """Verify compares each member with its manifest entry as it passes, in the archive's order: it kept every
    member's tar header (tarfile's stream mode keeps them all), a table of every file's size and hash and one
    of every name's kind besides the manifest's own list (about 2 KB a file); then the manifest's bytes while
    their text was parsed, every entry as a dict, and a table of the entries by name."""
    import tracemalloc

    n = 6000
    cfg = _many_uploads(make_config, tmp_path, n, nested=False)
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    bid = r.json()[0]["artifacts"][0]["id"]
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    manifest_bytes = mpath.stat().st_size
    tracemalloc.start()
    try:
        r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.code == 0 and r.json()[0]["ok"], r.output
    assert f"{n} file(s) read from the archives" in " ".join(r.json()[0]["steps"])
    # the manifest read and parsed (a dict an entry): 7.7 MB here; with the tables it was 12.5 MB
    # the manifest's text and its entries as tuples: 6.5 MB here (2.4 times its size, beside 3 MiB); with the
    # bytes kept, a dict an entry and a table by name it was 7.8 MB (3.2 times)
    assert peak < 2.8 * manifest_bytes + (3 << 20), (peak, manifest_bytes, f"{peak / n:.0f} bytes a file")


def _tar_members_raw(data: bytes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return [(m, tf.extractfile(m).read() if m.isreg() else None) for m in tf.getmembers()]  # type: ignore[union-attr]


def test_the_archive_is_plain_ustar_with_whole_second_mtimes_and_pax_only_where_needed(tmp_path: Path) -> None:
    """As GNU tar's default: no pax extended header (1 KiB more a member, which doubled the archive of small
    files and halved the speed) for what ustar holds; names beyond it (longer than ustar's prefix/name split,
    not ASCII) still get one.  GNU tar lists and extracts it without a warning, with the same content."""
    from upkeeper.backup.files import walk, write_tar

    root = tmp_path / "app"
    deep = root / ("d" * 60) / ("e" * 60)  # a name over 100 bytes: split into ustar's prefix and name
    deep.mkdir(parents=True)
    (deep / "file.txt").write_bytes(b"deep\n")
    (root / "café.txt").write_bytes(b"accent\n")  # not ASCII: a pax header
    (root / ("x" * 120)).write_bytes(b"long leaf\n")  # a last component over 100 bytes: a pax header
    (root / "link").symlink_to("café.txt")
    (root / "big.bin").write_bytes(os.urandom(3000))
    os.utime(root / "big.bin", ns=(1_700_000_000_900_000_000, 1_700_000_000_900_000_000))
    buf = io.BytesIO()
    listed = write_tar(walk([root], []).entries, buf.write)
    data = buf.getvalue()
    assert len(data) % tarfile.RECORDSIZE == 0
    members = {m.name.rstrip("/"): (m, d) for m, d in _tar_members_raw(data)}
    rel = str(root).lstrip("/")
    assert members[f"{rel}/big.bin"][0].mtime == 1_700_000_000  # whole seconds, as GNU tar's default
    assert members[f"{rel}/big.bin"][1] == (root / "big.bin").read_bytes()
    assert members[str(deep / "file.txt").lstrip("/")][1] == b"deep\n"
    assert members[f"{rel}/café.txt"][1] == b"accent\n" and members[f"{rel}/{'x' * 120}"][1] == b"long leaf\n"
    assert members[f"{rel}/link"][0].linkname == "café.txt"
    assert {f["path"] for f in listed} == set(members)
    # a pax header for each name ustar cannot hold (café.txt, x…x, the link to café.txt), none for the others
    assert data.count(b"ustar\x0000") == len(members) + 3
    # GNU tar reads it as it is, without a warning
    t = subprocess.run(["tar", "-tvf", "-"], input=data, capture_output=True)
    assert t.returncode == 0 and not t.stderr, t.stderr
    out = tmp_path / "out"
    out.mkdir()
    x = subprocess.run(["tar", "-xf", "-", "-C", str(out)], input=data, capture_output=True)
    assert x.returncode == 0 and not x.stderr, x.stderr
    for f in listed:
        if f["type"] == "file":
            assert hashlib.sha256((out / f["path"]).read_bytes()).hexdigest() == f["sha256"]
    assert (out / rel / "big.bin").stat().st_mtime == 1_700_000_000


def test_a_backup_written_by_the_earlier_tar_writer_still_verifies_and_restores(cli: Any, make_config: Any,
                                                                                tmp_path: Path) -> None:
    """tests/backup/fixtures/files-v1: a set written by files.backup before it wrote ustar headers (pax headers
    with sub-second mtimes on every member, a name over 100 bytes, a non-ASCII name, a symlink, an empty file),
    unencrypted.  Verify and restore read it as before; the sub-second mtime it holds comes back."""
    shutil.copytree(Path(__file__).parent / "fixtures" / "files-v1", tmp_path / "store")
    cfg = make_config({"targets": {"web": {"kind": "app", "root": str(tmp_path / "app")}},
                       "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store"), "fsync": False}},
                       "backup": {"encryption": "none"},
                       "jobs": {"app-verify": {"task": "backup.verify", "target": "web"}}})
    bid = "20261204T192449Z-3e4540"
    assert cli(["--config", cfg, "backups", "sync"]).code == 0  # found on the storage, into the catalog
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 0, r.output
    rep = r.json()[0]
    assert rep["ok"] and any("4 file(s) read from the archives" in s for s in rep["steps"]), rep
    dest = tmp_path / "restored"
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest])
    assert r.code == 0, r.output
    app = dest / "tmp" / "upkeeper-v1-fixture" / "app"
    assert (app / "app.js").read_text() == "console.log('v1')\n"
    assert abs((app / "app.js").stat().st_mtime - 1700000000.123457) < 1e-5
    assert (app / "café.txt").read_text() == "accent\n" and os.readlink(app / "current.js") == "app.js"
    long = app / "public" / ("long-directory-name-" * 4) / ("a-file-with-a-long-name-" * 3 + ".txt")
    assert long.read_text() == "long name\n" and (app / "public" / "empty.bin").read_bytes() == b""


def _everything(root: Path) -> list[str]:
    """Every file and directory under ``root`` (empty directories too)."""
    return sorted(str(p.relative_to(root)) + ("/" if p.is_dir() else "") for p in root.rglob("*"))


def test_a_failed_backup_leaves_nothing_on_local_or_sftp_storage(cli: Any, make_config: Any, tmp_path: Path,
                                                                 sftp_server: Any) -> None:
    """A file the job cannot read fails the backup after its objects were opened on every storage: each is left
    exactly as before — no empty ``web/files/<id>/`` (nor ``web/files/``, ``web/`` it made), on a local disk or an
    SFTP server, and an earlier backup beside it untouched.  Run without the capabilities that let root read
    anything."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv is not installed")
    root = tmp_path / "site"
    (root / "app").mkdir(parents=True)
    (root / "app" / "main.py").write_text("print('hi')\n")
    (root / "app" / "z-private.key").write_text("secret\n")
    (root / "app" / "z-private.key").chmod(0o000)  # root reads it; the job below cannot
    vault = sftp_storage_config(sftp_server)
    stores = [tmp_path / "store1", tmp_path / "store2", Path(vault.path)]  # the SFTP server's disk is this machine's

    def config(storages: list[str]) -> Path:
        return Path(make_config({
            "targets": {"web": {"kind": "app", "root": str(root)}},
            "storages": {**{f"local{i + 1}": {"kind": "local", "path": str(s), "fsync": False}
                            for i, s in enumerate(stores[:2])},
                         "vault": vault.model_dump(mode="json", exclude_none=True)},
            "backup": {"storages": storages, "encryption": "none"},
            "jobs": {"app-backup": {"task": "files.backup", "target": "web"}},
        }))

    r = cli(["--config", config(["local1"]), "run", "app-backup", "--json"])  # an earlier backup, on local1
    assert r.code == 0, r.output
    before = _everything(stores[0])
    assert len(before) == 5, before  # web/, web/files/, the set, its manifest and archive
    cfg = config(["local1", "local2", "vault"])
    caps = "-dac_override,-dac_read_search"
    p = subprocess.run([setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}", sys.executable, "-m", "upkeeper",
                        "--config", str(cfg), "run", "app-backup", "--json"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert p.returncode == 1, p.stdout + p.stderr
    run = json.loads(p.stdout)[0]
    assert run["status"] == "fail" and "z-private.key" in run["summary"], run
    assert _everything(stores[0]) == before
    assert _everything(stores[1]) == []
    assert _everything(stores[2]) == []  # the SFTP server's


def test_tar_headers_have_the_right_checksum_at_every_name_length(tmp_path: Path) -> None:
    """Headers are made from cached fields with a checksum summed in parts: each one, for names up to the longest
    ustar can split (with the largest ASCII bytes), links up to 100 bytes, sizes and times up to 11 octal digits,
    reads back (tarfile checks the checksum) with its fields; what does not fit ustar gets a pax header."""
    import random

    from upkeeper.backup.files import _header

    f = tmp_path / "f"
    f.write_bytes(b"x")
    st = f.stat()
    rnd = random.Random(7)
    cases: list[tuple[str, bytes, str]] = [("~" * 100, tarfile.REGTYPE, ""), ("~" * 155 + "/" + "~" * 100,
                                           tarfile.REGTYPE, ""), ("a/" + "~" * 99, tarfile.SYMTYPE, "~" * 100),
                                           ("d" * 154, tarfile.DIRTYPE, "")]
    for _ in range(300):
        parts = ["".join(rnd.choice("abc~_.-") for _ in range(rnd.randint(1, 60))) for _ in range(rnd.randint(1, 6))]
        kind = rnd.choice([tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE])
        cases.append(("/".join(parts) + ("é" if rnd.random() < 0.1 else ""),  # (not ASCII: pax)
                      kind, "~" * rnd.randint(1, 120) if kind == tarfile.SYMTYPE else ""))
    ustar = 0
    for name, kind, link in cases:
        size = rnd.randint(0, 5000) if kind == tarfile.REGTYPE else 0
        buf = _header(name, st, kind, size, link)
        with tarfile.open(fileobj=io.BytesIO(buf + bytes(size + -size % 512 + 1024)), mode="r:") as tf:
            [m] = tf.getmembers()  # a bad checksum fails here
        assert (m.name, m.type, m.size, m.linkname, m.mtime) == (name, kind, size, link, int(st.st_mtime)), name
        assert m.mode == st.st_mode & 0o7777 and (m.uid, m.gid) == (st.st_uid, st.st_gid)
        if len(buf) == 512:
            ustar += 1
            if kind == tarfile.REGTYPE:  # the largest sizes ustar holds (its header alone)
                for big in (rnd.randint(1 << 30, 1 << 33), 0o77777777776):
                    m = tarfile.TarInfo.frombuf(_header(name, st, kind, big), "utf-8", "surrogateescape")
                    assert (m.name, m.size) == (name, big)
    assert ustar > 100  # most of them plain ustar headers


_SQLITE_WRITER = """
import os, sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA wal_autocheckpoint=20")
c.execute("PRAGMA synchronous=OFF")
n = c.execute("SELECT max(id) FROM t").fetchone()[0]
open(sys.argv[2] + ".tmp", "w").close(); os.replace(sys.argv[2] + ".tmp", sys.argv[2])
while not os.path.exists(sys.argv[3]):
    n += 1
    c.execute("INSERT INTO t(id, v, k) VALUES (?, randomblob(200), hex(randomblob(8)))", (n,))
    time.sleep(0.0005)  # (a busy app, leaving the backup some of the machine's 2 cores)
"""


def test_a_live_sqlite_database_is_archived_as_a_consistent_snapshot(cli: Any, make_config: Any, tmp_path: Path,
                                                                    age_key: AgeKey) -> None:
    """A database in WAL mode written all through the backup (copied byte by byte it restored torn: 'database
    disk image is malformed') is archived as a copy made with SQLite's backup API, without its -wal and -shm:
    the restored file passes integrity_check and holds every row committed before the backup; verify checks
    it against the copy's hash.  A WAL database no process has open is copied without a -wal or -shm being
    left beside it."""
    import sqlite3

    root = tmp_path / "srv" / "app"
    (root / "db").mkdir(parents=True)
    live, idle = root / "db" / "production.sqlite3", root / "db" / "idle.db"
    for db in (live, idle):
        c = sqlite3.connect(db)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB, k TEXT)")
        c.execute("CREATE INDEX tk ON t(k)")
        c.executemany("INSERT INTO t(id, v, k) VALUES (?, randomblob(200), hex(randomblob(8)))",
                      ((i,) for i in range(1, 5001)))
        c.commit()
        c.close()
    assert sorted(p.name for p in idle.parent.iterdir()) == ["idle.db", "production.sqlite3"]
    try:  # the copy archived carries the database file's own attributes
        os.setxattr(live, "user.app", b"db")
    except OSError:
        pytest.skip("this file system has no user attributes")
    ready, stop = tmp_path / "ready", tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", _SQLITE_WRITER, str(live), str(ready), str(stop)])
    try:
        while not ready.exists():
            assert writer.poll() is None, "the writer died"
        c = sqlite3.connect(live)
        committed = c.execute("SELECT count(*) FROM t").fetchone()[0]  # before the backup: all must be in it
        c.close()
        cfg = _config(make_config, tmp_path, root, age_key, {}, encrypt="none")
        r = cli(["--config", cfg, "run", "app-backup", "--json"])
    finally:
        stop.touch()
        writer.wait(10)
    assert writer.returncode == 0
    assert r.code == 0, r.output
    run = r.json()[0]
    assert run["status"] == "ok", run["findings"]
    snaps = {f["subject"]: f["message"] for f in run["findings"] if f["check"] == "backup.sqlite_snapshot"}
    assert "online backup API" in snaps[str(live)] and "production.sqlite3-wal" in snaps[str(live)], snaps
    assert "not in use" in snaps[str(idle)], snaps
    assert sorted(p.name for p in idle.parent.iterdir() if p.name.startswith("idle")) == ["idle.db"]
    [mpath] = (tmp_path / "store").rglob("manifest.json")
    listed = {f["path"].rsplit("/", 1)[1]: f for f in
              json.loads(mpath.read_text())["files"]["archives"]["files.tar.zst"]["files"]}
    assert listed["production.sqlite3"]["snapshot"] == "sqlite" and listed["idle.db"]["snapshot"] == "sqlite"
    assert not any(n.endswith(("-wal", "-shm")) for n in listed), sorted(listed)
    r = cli(["--config", cfg, "run", "app-verify", "--json"])
    assert r.code == 0 and r.json()[0]["status"] == "ok", r.output

    dest = tmp_path / "restored"
    r = cli(["--config", cfg, "backups", "restore", run["artifacts"][0]["id"], "--to", dest])
    assert r.code == 0, r.output
    rel = str(root / "db").lstrip("/")
    assert sorted(p.name for p in (dest / rel).iterdir()) == ["idle.db", "production.sqlite3"]
    for name, least in (("production.sqlite3", committed), ("idle.db", 5000)):
        c = sqlite3.connect(f"file:{dest / rel / name}?mode=ro", uri=True)
        assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        n, top = c.execute("SELECT count(*), max(id) FROM t").fetchone()
        c.close()
        assert n == top and n >= least, (name, n, top, least)  # no row lost, none missing in between
    assert os.getxattr(dest / rel / "production.sqlite3", "user.app") == b"db"


_STOPPED_WRITER = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA cache_size=10")  # a small cache: the transaction spills into the database file
c.execute(sys.argv[3])
c.execute("UPDATE t SET v = zeroblob(300), k = 'torn'")
open(sys.argv[2], "w").close()
time.sleep(60)
"""


def _sqlite_db(path: Path, rows: int = 3000, wal: bool = False) -> None:
    import sqlite3

    c = sqlite3.connect(path, isolation_level=None)
    if wal:
        c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB, k TEXT)")
    c.execute("CREATE INDEX tk ON t(k)")
    c.execute("BEGIN")
    c.executemany("INSERT INTO t VALUES (?, randomblob(300), hex(randomblob(8)))", ((i,) for i in range(1, rows + 1)))
    c.execute("COMMIT")
    c.close()


def _stopped_writer(db: Path, ready: Path, begin: str = "BEGIN") -> subprocess.Popen[bytes]:
    """A real writer process stopped mid-transaction (its pages spilled into the file, the -journal beside);
    it touches ``ready`` (outside the tree) then."""
    p = subprocess.Popen([sys.executable, "-c", _STOPPED_WRITER, str(db), str(ready), begin])
    while not ready.exists():
        assert p.poll() is None, "the writer died"
    assert Path(f"{db}-journal").exists()
    return p


def _restored_rows(db: Path) -> tuple[list[Any], int, int]:
    import sqlite3

    c = sqlite3.connect(db, isolation_level=None)  # (read-write: a hot journal restored beside it is rolled back)
    try:
        return (c.execute("PRAGMA integrity_check").fetchall(), *c.execute(
            "SELECT count(*), count(*) FILTER (WHERE k = 'torn') FROM t").fetchone())
    finally:
        c.close()


def test_a_hot_journal_is_rolled_back_in_the_snapshot_and_uncheckpointed_wal_frames_kept(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """A writer killed (-9) mid-transaction leaves the file half written and a hot -journal.  When the backup
    cannot write the file (a backup user with read access; here: chattr +i), SQLite will not roll it back in
    place (SQLITE_READONLY_ROLLBACK): the file and journal are copied under SQLite's SHARED lock and rolled
    back in the copy; the archive holds the last commit, no -journal.  A WAL database open in a writer that
    never checkpoints (every commit in its -wal only): the snapshot holds them all, without -wal or -shm."""
    import sqlite3

    root = tmp_path / "app"
    (root / "db").mkdir(parents=True)
    hot, wal = root / "db" / "hot.db", root / "db" / "wal.db"
    _sqlite_db(hot)
    _sqlite_db(wal, rows=0, wal=True)
    w = sqlite3.connect(wal, isolation_level=None)
    w.execute("PRAGMA wal_autocheckpoint=0")
    w.execute("PRAGMA journal_mode=WAL")
    for i in range(1, 301):
        w.execute("INSERT INTO t VALUES (?, randomblob(300), 'k')", (i,))
    writer = _stopped_writer(hot, tmp_path / "ready")
    writer.kill()
    writer.wait()
    c = sqlite3.connect(f"file:{hot}?immutable=1", uri=True)  # (what the file alone holds: torn)
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):
        c.execute("SELECT count(*) FILTER (WHERE k = 'torn') FROM t").fetchone()
    c.close()
    if subprocess.run(["chattr", "+i", hot], capture_output=True).returncode:
        w.close()
        pytest.skip("chattr +i does not work here")
    try:
        # the WAL writer's connection is left open: its commits are in wal.db-wal only
        cfg = _config(make_config, tmp_path, root, age_key, {}, encrypt="none")
        r = cli(["--config", cfg, "run", "app-backup", "--json"])
        assert os.path.getsize(wal) < 300 * 300 < os.path.getsize(f"{wal}-wal")
        assert Path(f"{hot}-journal").exists()  # the source left as it was
    finally:
        subprocess.run(["chattr", "-i", hot], check=True)
        w.close()
    assert r.code == 0, r.output
    run = r.json()[0]
    assert run["status"] == "ok", run["findings"]
    snaps = {f["subject"]: f["message"] for f in run["findings"] if f["check"] == "backup.sqlite_snapshot"}
    assert "hot -journal" in snaps[str(hot)] and "rolled back in the copy" in snaps[str(hot)], snaps
    [mpath] = (tmp_path / "store").rglob("manifest.json")
    listed = {f["path"].rsplit("/", 1)[1] for f in
              json.loads(mpath.read_text())["files"]["archives"]["files.tar.zst"]["files"] if f["type"] == "file"}
    assert listed == {"hot.db", "wal.db"}, listed
    assert json.loads(mpath.read_text())["files"]["sqlite_not_snapshotted"] == []  # both consistent copies
    r = cli(["--config", cfg, "run", "app-verify", "--json"])
    assert r.code == 0 and r.json()[0]["status"] == "ok", r.output
    dest = tmp_path / "restored"
    r = cli(["--config", cfg, "backups", "restore", run["artifacts"][0]["id"], "--to", dest])
    assert r.code == 0, r.output
    got = dest / str(root / "db").lstrip("/")
    assert sorted(p.name for p in got.iterdir()) == ["hot.db", "wal.db"]
    assert _restored_rows(got / "hot.db") == ([("ok",)], 3000, 0)
    assert _restored_rows(got / "wal.db") == ([("ok",)], 300, 0)


def test_a_database_locked_past_the_wait_is_archived_with_its_journal_and_a_warning_naming_the_writer(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """A live writer holding EXCLUSIVE longer than the backup waits (sqlite_lock_wait): no consistent copy
    can be made, so the file is archived as read with its -journal (restored together, SQLite rolls the
    journal back: consistent if the writer did not write while they were read, as here), and the run warns,
    naming the file and the process holding the lock."""
    root = tmp_path / "app"
    root.mkdir()
    db = root / "app.db"
    _sqlite_db(db)
    writer = _stopped_writer(db, tmp_path / "ready", "BEGIN EXCLUSIVE")
    try:
        cfg = _config(make_config, tmp_path, root, age_key, {"sqlite_lock_wait": 0.5}, encrypt="none")
        t0 = time.monotonic()
        r = cli(["--config", cfg, "run", "app-backup", "--json"])
        took = time.monotonic() - t0
    finally:
        writer.kill()
        writer.wait()
    assert r.code == 0, r.output
    run = r.json()[0]
    assert run["status"] == "warn", run["findings"]
    [f] = [f for f in run["findings"] if f["check"] == "backup.sqlite_not_snapshotted"]
    assert f["subject"] == str(db) and f["severity"] == "warning", f
    assert "locked" in f["message"] and f"pid {writer.pid} (python" in f["message"], f["message"]
    assert took < 10, took  # (Python's backup() retried a locked step for as long as the writer held it)
    assert not [f for f in run["findings"] if f["check"] == "backup.sqlite_snapshot"]
    # the manifest says which file is no consistent copy, and why; show, verify and restore say so later
    bid = run["artifacts"][0]["id"]
    [mpath] = (tmp_path / "store").rglob("manifest.json")
    [as_read] = json.loads(mpath.read_text())["files"]["sqlite_not_snapshotted"]
    rel = str(root).lstrip("/")
    assert as_read["path"] == f"{rel}/app.db" and as_read["archive"] == "files.tar.zst", as_read
    assert "locked" in as_read["reason"] and f"pid {writer.pid}" in as_read["reason"], as_read
    shown = cli(["--config", cfg, "backups", "show", bid, "--json"]).json()
    assert shown["manifest"]["files"]["sqlite_not_snapshotted"] == [as_read], shown
    r = cli(["--config", cfg, "backups", "show", bid])
    assert r.code == 0 and "NOT as consistent copies" in r.output and f"{rel}/app.db" in r.output.replace("\n", ""), \
        r.output
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 0, r.output
    [rep] = r.json()
    assert rep["ok"] and rep["sqlite_not_snapshotted"] == [as_read], rep
    assert any(s.startswith("note: 1 SQLite file(s) archived as read") for s in rep["steps"]), rep["steps"]
    dest = tmp_path / "restored"
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest, "--json"])
    assert r.code == 0, r.output
    restored = r.json()
    assert restored["sqlite_not_snapshotted"] == [as_read] and "PRAGMA integrity_check" in restored["note"], restored
    got = dest / rel
    assert sorted(p.name for p in got.iterdir()) == ["app.db", "app.db-journal"]
    assert _restored_rows(got / "app.db") == ([("ok",)], 3000, 0)


def test_a_file_with_sqlites_header_but_no_well_formed_database_is_archived_byte_for_byte(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """Files that start with SQLite's header but are no database SQLite reads whole: random bytes after it
    (SQLite: 'file is not a database'), a database with bytes after its last page (SQLite's copy left them
    out), are archived as read, byte for byte, with a warning saying so (not a hint about permissions); a
    database whose header is damaged is no SQLite file: archived as read, no finding."""
    root = tmp_path / "app"
    root.mkdir()
    _sqlite_db(root / "real.db", rows=20)
    real = (root / "real.db").read_bytes()
    files = {"garbage.sqlite": b"SQLite format 3\0" + random.Random(3).randbytes(6000),
             "trailing.db": real + b"not a page",
             "damaged.db": b"SQLite format 2" + real[15:]}
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "real.db").unlink()
    cfg = _config(make_config, tmp_path, root, age_key, {}, encrypt="none")
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    run = r.json()[0]
    assert run["status"] == "warn", run["findings"]
    warned = {f["subject"]: f["message"] for f in run["findings"] if f["check"] == "backup.sqlite_not_snapshotted"}
    assert sorted(warned) == [str(root / "garbage.sqlite"), str(root / "trailing.db")], warned
    assert "page size 64831 in its header" in warned[str(root / "garbage.sqlite")], warned
    assert "not a whole number of its 4096-byte pages" in warned[str(root / "trailing.db")], warned
    assert all("no well-formed SQLite database" in m and "byte for byte" in m for m in warned.values()), warned
    assert not [f for f in run["findings"] if f["check"] == "backup.sqlite_snapshot"]
    [mpath] = (tmp_path / "store").rglob("manifest.json")
    as_read = {i["path"].rsplit("/", 1)[1]: i["reason"]
               for i in json.loads(mpath.read_text())["files"]["sqlite_not_snapshotted"]}
    assert sorted(as_read) == ["garbage.sqlite", "trailing.db"], as_read
    assert all(why.startswith("no well-formed SQLite database") for why in as_read.values()), as_read
    r = cli(["--config", cfg, "run", "app-verify", "--json"])
    assert r.code == 0 and r.json()[0]["status"] == "ok", r.output
    dest = tmp_path / "restored"
    r = cli(["--config", cfg, "backups", "restore", run["artifacts"][0]["id"], "--to", dest])
    assert r.code == 0, r.output
    assert "2 SQLite file(s) archived as read" in r.output.replace("\n", " "), r.output
    got = dest / str(root).lstrip("/")
    assert {p.name: p.read_bytes() for p in got.iterdir()} == files


def test_config_check_names_a_storage_and_the_history_inside_a_backed_up_tree(cli: Any, make_config: Any,
                                                                            tmp_path: Path) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    cfg = make_config({"history": str(root / "var" / "history.db"),
                       "targets": {"web": {"kind": "app", "root": str(root)}},
                       "storages": {"local1": {"kind": "local", "path": str(root / "backups"), "fsync": False},
                                    "elsewhere": {"kind": "local", "path": str(tmp_path / "store"),
                                                  "fsync": False}},
                       "backup": {"encryption": "none"},
                       "jobs": {"all": {"task": "files.backup", "target": "web"},
                                "raw": {"task": "files.backup", "target": "web",
                                        "options": {"set": "raw", "paths": ["var"], "sqlite_snapshot": False,
                                                    "storages": ["elsewhere"]}}}})
    r = cli(["--config", cfg, "config", "check", "--json"])
    assert r.code == 0, r.output
    notes = {(n["path"][1], n["message"]) for n in r.json()["notes"]}
    assert any(job == "all" and "storage 'local1'" in m and "left out of each backup" in m for job, m in notes)
    assert any(job == "all" and "history database" in m and "consistent copy" in m for job, m in notes)
    assert any(job == "raw" and "history database" in m and "archived as read" in m for job, m in notes)
    assert not any(job == "raw" and "storage" in m for job, m in notes), notes
    r = cli(["--config", cfg, "config", "check"])
    assert r.code == 0 and "storage 'local1'" in r.output, r.output



def test_a_name_the_restore_file_system_will_not_link_gets_a_copy(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file whose name count reaches what the restore's file system allows (EMLINK: 65000 on ext4, ext2 too
    on kernels that mount it with the ext4 driver) gets its further names as copies.  No file system here has a
    limit a fast test reaches (a loop-mounted ext2 took 32005 names, past its own 32000, in a test of 20 s), so
    os.link fails EMLINK by injection, for the third name only: the restore goes on, the third name is a copy
    holding the data, the first two stay one file; any other error of os.link still fails the restore."""
    import errno

    from upkeeper.backup import restore as restore_mod

    root = tmp_path / "app"
    root.mkdir()
    (root / "a").write_bytes(b"shared\n")
    os.link(root / "a", root / "b")
    os.link(root / "a", root / "c")
    cfg = _config(make_config, tmp_path, root, age_key, {})
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    bid = r.json()[0]["artifacts"][0]["id"]
    real_link = os.link

    def link(src: Any, dst: Any, *args: Any, **kw: Any) -> None:
        if str(dst).endswith(f"/{refused}"):
            raise OSError(fault, os.strerror(fault), str(dst))
        real_link(src, dst, *args, **kw)

    monkeypatch.setattr(restore_mod.os, "link", link)
    refused, fault = "c", errno.EMLINK
    dest = tmp_path / "restored"
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest])
    assert r.code == 0, r.output
    d = dest / str(root).lstrip("/")
    a, b, c = (os.stat(d / n) for n in "abc")
    assert a.st_ino == b.st_ino and a.st_nlink == 2 and c.st_ino != a.st_ino and c.st_nlink == 1
    assert (d / "c").read_bytes() == b"shared\n"
    refused, fault = "c", errno.EACCES  # not a limit of the file system: the restore fails, naming it
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", tmp_path / "again"])
    assert r.code != 0 and "Permission denied" in r.output + r.err, r.output


def test_backups_verify_smoke_checks_on_a_files_backup_point_nowhere_wrong(
        cli: Any, make_config: Any, tmp_path: Path, app_tree: Path, age_key: AgeKey) -> None:
    """`backups verify --check SQL` (or --redis-check) of a files backup is refused, and the hint no longer sends
    the user to --redis-check (or --check), which a files backup refuses all the same."""
    cfg, _run = run_app_files_backup(cli, make_config, age_key, tmp_path, app_tree)
    for argv, wrong in ((["--check", "select 1"], "--redis-check"), (["--amcheck"], "--redis-check"),
                        (["--redis-check", "PING"], "--check")):
        r = cli(["--config", cfg, "backups", "verify", *argv])
        said = " ".join(r.err.split())
        assert r.code == 2 and "the backups to verify are files backups" in said, r.output
        assert "a files backup has no smoke checks" in said and f"Try: {wrong}" not in said, said


def _awkward_tree(root: Path) -> None:
    """An app tree with the modes a restore by a user other than root trips over: read-only files (one whose
    end is the padding of a file that shrank, one with a user attribute), a 0555 directory holding a symlink
    and a secret (extracted from the other archive), a 0000 one holding a file and a symlink, setuid/setgid
    files (one of another owner), a setgid directory (an upload directory whose new files take its group), and a
    0555 directory above a writable one."""
    (root / "ro-dir").mkdir(parents=True)
    (root / "shared").mkdir()
    (root / "shared" / "up.txt").write_text("upload\n")
    os.chmod(root / "shared", 0o2775)
    (root / "closed").mkdir()
    (root / "deep" / "ro" / "sub").mkdir(parents=True)
    (root / "shrunk.log").write_bytes(b"kept\n" + bytes(8))
    (root / "ro-dir" / "f.txt").write_text("inside\n")
    os.setxattr(root / "ro-dir" / "f.txt", "user.origin", b"web")
    (root / "ro-dir" / ".env").write_text("SECRET=1\n")
    (root / "ro-dir" / "link").symlink_to("f.txt")
    (root / "closed" / "s.txt").write_text("closed\n")
    os.setxattr(root / "closed" / "s.txt", "user.origin", b"closed")
    (root / "closed" / "l").symlink_to("s.txt")
    (root / "deep" / "ro" / "sub" / "x").write_text("x\n")
    for name, mode in (("suid", 0o4755), ("sgid", 0o2755), ("suid-other", 0o6755)):
        (root / name).write_text("#!/bin/sh\n")
        if name == "suid-other":
            os.chown(root / name, 1234, 5678)
        os.chmod(root / name, mode)
    for i, (p, mode) in enumerate(((root / "shrunk.log", 0o444), (root / "ro-dir" / "f.txt", 0o444),
                                   (root / "ro-dir" / "link", None), (root / "closed" / "l", None),
                                   (root / "closed" / "s.txt", 0o600), (root / "ro-dir", 0o555),
                                   (root / "closed", 0o000), (root / "deep" / "ro", 0o555))):
        os.utime(p, (1_500_000_000 + i, 1_500_000_000 + i), follow_symlinks=False)
        if mode is not None:
            os.chmod(p, mode)


def _entries(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root``: (mode, mtime in whole seconds as archived, bytes or link target, user
    attributes); read as root."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            what: Any = (os.readlink(p) if p.is_symlink() else None if p.is_dir() else p.read_bytes())
            attrs = {} if p.is_symlink() else {n: os.getxattr(p, n) for n in os.listxattr(p) if n.startswith("user.")}
            out[str(p.relative_to(root))] = (oct(stat.S_IMODE(st.st_mode)), int(st.st_mtime), what, attrs)
    return out


def _unprivileged(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``argv`` run by this Python as a user other than root, who owns what it makes (a new user namespace, in
    which this process is not root and has no power over files: 'setpriv --reuid=nobody' cannot be used, the
    interpreter may be in a directory only root reaches)."""
    return subprocess.run(["unshare", "--user", sys.executable, *argv], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=120)


def _skip_without_user_namespaces() -> None:
    """Skip where no user namespace can be made (``unshare --user``): the tests restore as a user other than root."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--user", "true"],
                                                         capture_output=True).returncode != 0:
        pytest.skip("cannot make a user namespace here (unshare --user), to restore as a user other than root")


def test_read_only_modes_restore_and_verify_as_a_user_other_than_root(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """Restored as a user other than root (an app user restoring its uploads), and as root without the
    capabilities to chown: the restore failed half-way on a symlink's mtime in a 0000 directory, on cutting the
    padding off a 0444 file, and, into a directory holding an earlier restore's 0555 directory or where a
    0555 directory is new, on moving entries; as root without CAP_CHOWN, every file whose owner could not be set
    lost its mode and mtime in silence; not as root, setgid was taken off directories (and setuid/setgid off
    files) that 'tar -xpf' keeps.  Now every name, byte, mode, mtime, link and user attribute comes back
    (setuid/setgid as 'tar -xpf' keeps them: not where root could not set the owner, nor where the system clears
    setgid, which is said), and unset owners are said."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to make files of another owner, and drop capabilities) and setpriv")
    _skip_without_user_namespaces()
    root = tmp_path / "srv" / "app"
    _awkward_tree(root)
    cfg, run = run_app_files_backup(cli, make_config, age_key, tmp_path, root, secrets=["ro-dir/.env"])
    bid = run["artifacts"][0]["id"]
    [mpath] = list((tmp_path / "store1").rglob("manifest.json"))
    manifest = json.loads(mpath.read_text())
    [entry] = [f for f in manifest["files"]["archives"]["files.tar.zst.age"]["files"]
               if f["path"].endswith("/shrunk.log")]
    entry["padded"] = 8  # as files.backup writes it for a file that shrank by 8 bytes while it was read
    rewrite_manifest(cli, cfg, mpath, manifest)
    want = _entries(root)
    want["shrunk.log"] = (want["shrunk.log"][0], want["shrunk.log"][1], b"kept\n", {})
    rel = str(root).lstrip("/")

    v = _unprivileged(["-m", "upkeeper", "--config", str(cfg), "backups", "verify", bid, "--json"])
    assert v.returncode == 0 and json.loads(v.stdout)[0]["ok"], v.stdout + v.stderr

    dest = tmp_path / "restored"
    r = _unprivileged(["-m", "upkeeper", "--config", str(cfg), "backups", "restore", bid, "--to", str(dest), "--json"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert _entries(dest / rel) == want

    again = tmp_path / "again"  # --force into one that has the app's directory, and a 0555 one of its own in it
    (again / rel / "deep" / "ro").mkdir(parents=True)
    (again / rel / "deep" / "ro").chmod(0o555)
    r = _unprivileged(["-m", "upkeeper", "--config", str(cfg), "backups", "restore", bid, "--to", str(again),
                       "--force", "--json"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert _entries(again / rel) == want

    # into a setgid directory of a group this user is not in: entries take that group, and the system clears
    # the setgid of those archived with it (as it does for 'tar -xpf'): said, not claimed restored
    other = tmp_path / "other-group"
    other.mkdir()
    os.chown(other, 0, 5678)
    other.chmod(0o2777)
    r = _unprivileged(["-m", "upkeeper", "--config", str(cfg), "backups", "restore", bid, "--to",
                       str(other / "to"), "--json"])
    assert r.returncode == 0, r.stdout + r.stderr
    lost = json.loads(r.stdout)
    assert lost["setgid_not_restored"]["entries"] == 3, lost  # sgid, suid-other, shared
    assert "setgid not restored on 3" in lost["warning"] and "chmod g+s" in lost["warning"], lost
    assert not (other / "to" / rel / "shared").stat().st_mode & stat.S_ISGID

    want["suid-other"] = ("0o755", *want["suid-other"][1:])  # root's below: its owner is not set
    capless = tmp_path / "capless"  # root without CAP_CHOWN (nor the others): owners are not set, and said so
    r2 = subprocess.run(["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-m", "upkeeper",
                         "--config", str(cfg), "backups", "restore", bid, "--to", str(capless), "--json"],
                        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r2.returncode == 0, r2.stdout + r2.stderr
    out = json.loads(r2.stdout)
    assert out["owners_not_restored"]["entries"] == 1 and out["owners_not_restored"]["example"] == f"{rel}/suid-other"
    assert "owners and groups not restored" in out["warning"], out
    assert _entries(capless / rel) == want
    assert (capless / rel / "suid-other").stat().st_uid == 0


def _unprivileged_paused(argv: list[str], mark: Path, point: str) -> subprocess.Popen[str]:
    """:func:`_unprivileged`, in a process of its own paused at the fault point ``point`` (the crash tests')."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "UPKEEPER_FAULT_PAUSE": f"{point}:60",
           "UPKEEPER_FAULT_MARK": str(mark)}
    p = subprocess.Popen(["unshare", "--user", sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    deadline = time.monotonic() + 60
    while not mark.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not mark.exists():
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"the restore never paused at {point}: {out} {err}")
    return p


def test_a_forced_restore_as_a_user_other_than_root_is_checked_before_anything_moves(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """--force into a directory with a subdirectory of another user that this user may not write: the entries
    sorted before it were replaced, then the restore stopped half-way.  Every directory that receives or loses
    an entry is checked before the first move: the restore fails naming it, with a hint that fits (another
    user's; a 0000 directory, where the hint said 'writable, free space'), and leaves the directory as it was.
    Stopped (SIGTERM) while moving, it says the directory holds part of the restore, leaves
    .upkeeper-restore-incomplete and no staging directory (its 0000 directory included)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (to make a directory of another owner)")
    _skip_without_user_namespaces()
    root = tmp_path / "srv" / "app"
    for d in ("b", "closed", "z"):
        (root / d).mkdir(parents=True)
    (root / "a.txt").write_text("new a\n")
    (root / "b" / "f").write_text("new f\n")
    (root / "closed" / "c").write_text("closed\n")
    (root / "z" / "g").write_text("new g\n")
    (root / "closed").chmod(0o000)
    cfg, run = run_app_files_backup(cli, make_config, age_key, tmp_path, root)
    bid = run["artifacts"][0]["id"]
    rel = str(root).lstrip("/")
    restore = ["-m", "upkeeper", "--config", str(cfg), "backups", "restore", bid, "--force"]

    dest = tmp_path / "forced"  # z: another user's (nobody), which this one may not write
    (dest / rel / "z").mkdir(parents=True)
    (dest / rel / "a.txt").write_text("old a\n")
    os.chown(dest / rel / "z", 65534, 65534)
    before = _entries(dest)
    r = _unprivileged([*restore, "--to", str(dest)])
    assert r.returncode == 1, r.stdout + r.stderr
    err = " ".join(r.stderr.split())
    assert f"{dest / rel / 'z'} is not writable" in err and f"{dest} was not changed" in err, err
    assert "owned by" in err and "free space" not in err, err
    assert _entries(dest) == before

    zero = tmp_path / "zero"  # an earlier restore's 0000 directory (this user's)
    (zero / rel / "b").mkdir(parents=True)
    (zero / rel / "b").chmod(0o000)
    r = _unprivileged([*restore, "--to", str(zero)])
    assert r.returncode == 1, r.stdout + r.stderr
    err = " ".join(r.stderr.split())
    assert f"{zero / rel / 'b'} is a directory of mode 0000" in err and f"chmod u+rwx {zero / rel / 'b'}" in err, err
    assert "free space" not in err and f"{zero} was not changed" in err, err
    assert [p.name for p in zero.iterdir()] == [rel.split("/")[0]]

    part = tmp_path / "part"  # stopped while moving
    (part / rel).mkdir(parents=True)
    (part / "mine.txt").write_text("mine\n")
    p = _unprivileged_paused([*restore, "--to", str(part)], tmp_path / "mark", "restore-moving")
    p.send_signal(signal.SIGTERM)
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    err = " ".join(err.split())
    assert f"stopped: {part} holds part of the restore" in err, err
    assert (part / ".upkeeper-restore-incomplete").read_text().startswith(f"backup: {bid}\n")
    assert sorted(q.name for q in part.iterdir()) == sorted([".upkeeper-restore-incomplete", "mine.txt",
                                                             rel.split("/")[0]])
    assert not list(tmp_path.rglob(".upkeeper-restore-staging-*"))
    # (that restoring it again completes it: test_a_restore_killed_while_moving_into_a_directory_says_so_and_is_…)


def _paths_backup(cli: Any, make_config: Any, age_key: AgeKey, tmp_path: Path, root: Path, paths: list[str]
                  ) -> tuple[Path, str]:
    """A backup of ``paths`` of the app at ``root`` (its directory itself not archived): the config and its id."""
    cfg: Path = make_config({
        "targets": {"web": {"kind": "app", "root": str(root)}},
        "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store1"), "fsync": False}},
        "backup": {"encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}},
        "jobs": {"app-backup": {"task": "files.backup", "target": "web", "options": {"paths": paths}}},
    })
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    return cfg, str(r.json()[0]["artifacts"][0]["id"])


def test_a_forced_restore_into_a_sticky_directory_replaces_only_what_this_user_may(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """--force into a sticky directory (1777, another user's) holding another user's file the backup replaces:
    the check compared uids, which a user namespace that does not map them shows all alike, so it passed, the
    entries sorted before that file were moved in and the restore failed half-way (EPERM).  Now it is tried: the
    restore fails before anything moves, naming the file; this user's own file there is replaced."""
    if os.geteuid() != 0:
        pytest.skip("needs root (to make a directory and a file of another owner)")
    _skip_without_user_namespaces()
    root = tmp_path / "srv" / "app"
    root.mkdir(parents=True)
    for name in ("a.txt", "f.txt", "z.txt"):
        (root / name).write_text(f"new {name}\n")
    cfg, bid = _paths_backup(cli, make_config, age_key, tmp_path, root, ["a.txt", "f.txt", "z.txt"])
    rel = str(root).lstrip("/")
    dest = tmp_path / "sticky"
    (dest / rel).mkdir(parents=True)
    (dest / rel / "a.txt").write_text("old a\n")  # this user's (root's, outside the namespace)
    (dest / rel / "f.txt").write_text("old f\n")
    os.chown(dest / rel / "f.txt", 65534, 65534)  # another user's
    os.chown(dest / rel, 65534, 65534)
    (dest / rel).chmod(0o1777)
    before = _entries(dest)
    restore = ["-m", "upkeeper", "--config", str(cfg), "backups", "restore", bid, "--force", "--to", str(dest)]
    r = _unprivileged(restore)
    assert r.returncode == 1, r.stdout + r.stderr
    err = " ".join(r.stderr.split())
    assert f"{dest / rel / 'f.txt'} is owned by another user" in err and "in the sticky directory" in err, err
    assert f"{dest} was not changed" in err, err
    assert _entries(dest) == before

    os.chown(dest / rel / "f.txt", 0, 0)  # this user's now: replaced, as a.txt (the directory stays another's)
    r = _unprivileged(restore)
    assert r.returncode == 0, r.stdout + r.stderr
    assert {n: (dest / rel / n).read_text() for n in ("a.txt", "f.txt", "z.txt")} == {
        n: f"new {n}\n" for n in ("a.txt", "f.txt", "z.txt")}


def test_a_forced_restore_into_a_read_only_file_system_says_so(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """--force into a directory on a read-only mount: the error named the staging directory's name it could not
    make ('Read-only file system (…/.upkeeper-restore-staging-…)'); it names the directory restored into.  Made
    read-only while the restore runs (remounted after the entries were staged), the restore left its staging
    directory, with what it restored, and said the directory 'was not changed': it says the staging directory is
    there and to remove it (the next restore does).  (The check made before entries move finds it here.)"""
    if os.geteuid() != 0 or shutil.which("nsenter") is None:
        pytest.skip("needs root (to mount) and nsenter")
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a mount namespace here (unshare --mount)")
    root = tmp_path / "srv" / "app"
    root.mkdir(parents=True)
    (root / "f.txt").write_text("new\n")
    # (a file only: no directory of the backup gets its mode before the entries move, so the read-only file
    # system is found by the check made before they move)
    cfg, bid = _paths_backup(cli, make_config, age_key, tmp_path, root, ["f.txt"])
    dest = tmp_path / "ro"
    dest.mkdir()
    (dest / "old.txt").write_text("old\n")
    restore = [sys.executable, "-m", "upkeeper", "--config", str(cfg), "backups", "restore", bid, "--to", str(dest),
               "--force"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def in_mount_ns(then: str, extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """The restore in a mount namespace of its own, where ``dest`` is a bind mount (``then``: made read-only)."""
        script = f'mount --bind "$1" "$1" {then} && shift && exec "$@"'
        return subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                                 str(dest), *restore], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**env, **(extra or {})})

    p = in_mount_ns('&& mount -o remount,bind,ro "$1"')
    _out, err = p.communicate(timeout=60)
    err = " ".join(err.split())
    assert p.returncode == 1, err
    assert f"{dest} is on a read-only file system" in err and "staging-" not in err, err
    assert f"{dest} was not changed" in err and "remount it read-write" in err, err
    assert sorted(q.name for q in dest.iterdir()) == ["old.txt"]

    mark = tmp_path / "mark"
    p = in_mount_ns("", {"UPKEEPER_FAULT_PAUSE": "restore-staged:1", "UPKEEPER_FAULT_MARK": str(mark)})
    deadline = time.monotonic() + 60
    while not mark.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    subprocess.run(["nsenter", "-t", str(p.pid), "-m", "mount", "-o", "remount,bind,ro", str(dest)], check=True)
    _out, err = p.communicate(timeout=60)
    err = " ".join(err.split())
    assert p.returncode == 1, err
    assert f"{dest} is on a read-only file system" in err and f"{dest} was not changed" in err, err
    [staging] = [q for q in dest.iterdir() if q.name != "old.txt"]  # (read-write outside that namespace)
    assert f"the staging directory {staging} could not be removed" in err, err

    p = subprocess.run(restore, capture_output=True, text=True, env=env, timeout=60)  # removes it, and completes
    assert p.returncode == 0, p.stdout + p.stderr
    assert sorted(q.name for q in dest.iterdir()) == ["old.txt", "tmp"]
    assert (dest / str(root).lstrip("/") / "f.txt").read_text() == "new\n"
