"""files.backup: tar with excludes and symlinks never followed, a manifest with sizes and hashes, secrets in an
always-encrypted archive, verify by reading the archive as a stream, restore with --to."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from .conftest import AgeKey, rewrite_manifest


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
            encrypt: bool = True) -> Path:
    backup: dict[str, Any] = {}
    if encrypt:
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


def test_changed_file_after_backup_fails_verify(cli: Any, make_config: Any, tmp_path: Path, app_tree: Path,
                                                age_key: AgeKey) -> None:
    """Verify compares the archive's files with the manifest's hashes: a manifest whose file hash disagrees with
    the archive (written so, and recorded so in the catalog) is caught."""
    cfg = _config(make_config, tmp_path, app_tree, age_key, {})
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    m = json.loads(mpath.read_text())
    files = m["files"]["archives"]["files.tar.zst.age"]["files"]
    target = next(f for f in files if f["path"].endswith("app.js"))
    target["sha256"] = "0" * 64
    rewrite_manifest(cli, cfg, mpath, m)
    r = cli(["--config", cfg, "run", "app-verify", "--json"])
    assert r.code == 1
    assert "app.js does not match its SHA-256" in r.json()[0]["summary"]


def test_secrets_without_encryption_are_refused(cli: Any, make_config: Any, tmp_path: Path, app_tree: Path,
                                                age_key: AgeKey) -> None:
    cfg = _config(make_config, tmp_path, app_tree, age_key, {"secret_paths": [".env"]}, encrypt=False)
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 1
    assert "secret_paths must be encrypted" in r.json()[0]["summary"]
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
    cfg = _config(make_config, tmp_path, app_tree, age_key, {})
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    [mpath] = list((tmp_path / "store").rglob("manifest.json"))
    m = json.loads(mpath.read_text())
    files = m["files"]["archives"]["files.tar.zst.age"]["files"]
    link = next(f for f in files if f["path"].endswith("current.js"))
    link["target"] = "/etc/passwd"
    rewrite_manifest(cli, cfg, mpath, m)
    r = cli(["--config", cfg, "run", "app-verify", "--json"])
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
