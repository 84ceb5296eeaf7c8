"""docs/restore-without-upkeeper.md, followed literally: each section's ``sh`` blocks, run as written by bash
with a PATH holding only age, zstd, sha256sum, mkdir, basename, tar, redis-check-rdb and the PostgreSQL
client tools, restore a backup that upkeeper took — custom and directory-format dumps, files, Redis."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from upkeeper.sandbox.postgres import PostgresCluster, pg_bin_dir
from upkeeper.sandbox.redis import RedisServer
from upkeeper.sandbox.seed import seed

from .conftest import SMALL, AgeKey, make_attributes, read_attributes, run_app_files_backup

DOC = Path(__file__).resolve().parents[2] / "docs" / "restore-without-upkeeper.md"
# every section with commands, and the test below that follows it
SECTIONS = {
    "custom": "## 2. Restore a PostgreSQL database",
    "directory": "### Directory-format backups",
    "files": "## 3. Restore files",
    "redis": "## 4. Restore Redis",
}
TOOLS = ("age", "zstd", "sha256sum", "mkdir", "basename", "tar", "redis-check-rdb")
PG_TOOLS = ("pg_restore", "psql", "createdb")
HEADING = re.compile(r"^#{1,6} ", re.M)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def section_script(title_prefix: str) -> str:
    """The ``sh`` blocks under one heading, up to the next heading of any level, joined in order."""
    text = DOC.read_text()
    start = text.index(f"\n{title_prefix}") + 1
    nxt = HEADING.search(text, start + 1)
    end = nxt.start() if nxt else len(text)
    return "".join(m.group(2) for m in FENCE.finditer(text, start, end) if m.group(1) == "sh")


def tools_dir(base: Path) -> Path:
    """A directory of links to the only programs the page may use."""
    d = base / "tools"
    d.mkdir()
    for t in TOOLS:
        found = shutil.which(t)
        assert found, f"{t} is not installed"
        (d / t).symlink_to(found)
    for t in PG_TOOLS:
        (d / t).symlink_to(pg_bin_dir() / t)
    return d


def follow(section: str, env: dict[str, str], tmp_path: Path, *, user: str | None = None) -> str:
    """Run one section's commands as written (as ``user``, when given); every command must succeed.  Returns
    their stdout."""
    script = section_script(SECTIONS[section])
    assert script.strip(), f"no sh block under {SECTIONS[section]!r}"
    full_env = {"PATH": str(tools_dir(tmp_path)), "HOME": str(tmp_path), "LC_ALL": "C.UTF-8", **env}
    res = subprocess.run(["/bin/bash", "-e", "-u", "-o", "pipefail", "-c", script], cwd=tmp_path, env=full_env,
                         capture_output=True, timeout=300, user=user)
    out, err = res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace")
    assert res.returncode == 0, f"{SECTIONS[section]}: exited {res.returncode}\n{script}\nstderr: {err}"
    return out


def fetch_set(store: Path, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A copy of the one set on ``store``, as one would fetch it from S3/SFTP, and its manifest."""
    [mpath] = list(store.rglob("manifest.json"))
    work = tmp_path / "restore-here"
    shutil.copytree(mpath.parent, work)
    return work, json.loads(mpath.read_text())


def assert_hashes_match(out: str, manifest: dict[str, Any]) -> None:
    """The page has us hash every object of the set; each hash is the manifest's."""
    hashed = {name: digest for digest, name in re.findall(r"^([0-9a-f]{64})\s+\*?(\S+)$", out, re.M)}
    assert hashed == {o["name"]: o["sha256"] for o in manifest["objects"]}


def test_every_command_block_is_followed_by_a_test() -> None:
    """No section can slip out of the test: every ``sh`` block sits under a heading in SECTIONS, and the only
    other fence is the layout listing of section 1."""
    text = DOC.read_text()
    others = []
    for m in FENCE.finditer(text):
        if m.group(1) != "sh":
            others.append(m.group(2))
            continue
        heading = re.findall(r"^#{1,6} .*$", text[:m.start()], re.M)[-1]
        assert any(heading.startswith(t) for t in SECTIONS.values()), heading
    assert len(others) == 1 and "written last" in others[0]
    for title in SECTIONS.values():
        assert section_script(title).strip(), title


@pytest.fixture
def app_database(pg: PostgresCluster) -> Iterator[dict[str, int]]:
    """Database "app" (the name the page uses), seeded; dropped afterwards."""
    with pg.connect() as conn:
        conn.execute('DROP DATABASE IF EXISTS "app" WITH (FORCE)')
        conn.execute('CREATE DATABASE "app"')
    try:
        with pg.connect("app") as conn:
            yield seed(conn, SMALL)
    finally:
        with pg.connect() as conn:
            conn.execute('DROP DATABASE IF EXISTS "app" WITH (FORCE)')


def _pg_env(pg: PostgresCluster, work: Path, age_key: AgeKey) -> dict[str, str]:
    return {"BACKUP": str(work), "KEY": str(age_key.identity), "PGHOST": pg.host, "PGPORT": str(pg.port),
            "PGUSER": "postgres"}


@pytest.mark.parametrize("fmt", ["custom", "directory"])
def test_postgres_sections_followed_literally(cli: Any, pg: PostgresCluster, backup_config: Any, age_key: AgeKey,
                                              tmp_path: Path, app_database: dict[str, int], fmt: str) -> None:
    counts = app_database
    options: dict[str, Any] = {"globals": True} if fmt == "custom" else {"format": "directory", "jobs": 2}
    cfg = backup_config("app", options=options)
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    work, manifest = fetch_set(tmp_path / "store1", tmp_path)
    with pg.connect() as conn:  # the database is gone (that is why we restore)
        conn.execute('DROP DATABASE "app" WITH (FORCE)')
    out = follow(fmt, _pg_env(pg, work, age_key), tmp_path)
    assert_hashes_match(out, manifest)
    if fmt == "custom":
        assert (work / "globals.sql").read_text().count("CREATE ROLE") >= 1
    else:
        restored = sorted(p.name for p in (work / "app.dir.restored").iterdir())
        assert "toc.dat" in restored and len(restored) == len(manifest["objects"])
    for table, n in counts.items():
        assert pg.execute(f"SELECT count(*) FROM public.{table}", "app")[0][0] == n
        assert manifest["postgres"]["row_counts"][f"public.{table}"] == n


def test_files_section_followed_literally(cli: Any, make_config: Any, age_key: AgeKey, tmp_path: Path) -> None:
    root = tmp_path / "srv" / "app"
    (root / "public" / "img").mkdir(parents=True)
    (root / "app.js").write_text("console.log('hi')\n")
    (root / "public" / "img" / "logo.png").write_bytes(bytes(range(256)) * 40)
    (root / ".env").write_text("DATABASE_URL=postgres://app:s3cr3t@db/app\n")
    (root / "current.js").symlink_to(root / "app.js")
    (root / "public" / "img" / "logo-2x.png").hardlink_to(root / "public" / "img" / "logo.png")
    attributes = make_attributes(root)  # ACLs, a file capability, user attributes: GNU tar reads them back
    run_app_files_backup(cli, make_config, age_key, tmp_path, root)
    work, manifest = fetch_set(tmp_path / "store1", tmp_path)
    dest = tmp_path / "restored"
    out = follow("files", {"BACKUP": str(work), "KEY": str(age_key.identity), "DEST": str(dest)}, tmp_path)
    assert_hashes_match(out, manifest)
    rel = str(root).lstrip("/")
    assert read_attributes(dest / rel) == attributes
    # the ACLs' text form too, which `tar --acls` alone reads (SCHILY.acl.access / .default)
    acls_only = tmp_path / "acls-only"
    acls_only.mkdir()
    subprocess.run(["/bin/bash", "-e", "-o", "pipefail", "-c", 'age --decrypt -i "$1" "$2" | zstd -d | tar -x --acls '
                    '-C "$3"', "-", str(age_key.identity), str(work / "files.tar.zst.age"), str(acls_only)], check=True,
                   timeout=60)
    assert read_attributes(acls_only / rel, ("system.posix_acl_",)) == {
        p: acl for p, a in attributes.items() if (acl := {n: v for n, v in a.items() if n.startswith("system.")})}
    assert (dest / rel / "app.js").read_text() == "console.log('hi')\n"
    assert (dest / rel / ".env").read_text() == "DATABASE_URL=postgres://app:s3cr3t@db/app\n"
    assert (dest / rel / "current.js").is_symlink()
    assert str((dest / rel / "current.js").readlink()) == str(root / "app.js")
    # a hard link is archived as one (not a second copy of the data): tar makes the link again
    assert os.stat(dest / rel / "public" / "img" / "logo-2x.png").st_ino == os.stat(
        dest / rel / "public" / "img" / "logo.png").st_ino
    checked = 0
    for archive in manifest["files"]["archives"].values():
        for f in archive["files"]:
            if f.get("type", "file") != "file":
                continue
            data = (dest / f["path"]).read_bytes()
            assert len(data) == f["size"]
            assert f.get("sha256", hashlib.sha256(data).hexdigest()) == hashlib.sha256(data).hexdigest()
            checked += 1
    assert checked == 8  # app.js, logo.png, logo-2x.png, .env and make_attributes' 4 files


def test_files_section_restores_directory_modes_and_mtimes_also_as_another_user(cli: Any, make_config: Any,
                                                                             age_key: AgeKey, tmp_path: Path) -> None:
    """GNU tar sets a directory's mode and mtime once it extracts a member outside it: the archive must hold
    each directory's entries right after it (as tar writes), or a member extracted later moves its mtime, and
    one below a read-only directory cannot be written when the page is followed as a user other than root (it
    failed with 'Cannot open: Permission denied').  The secrets archive, extracted after the main one, must not
    move the mtime of the directory that holds .env either."""
    root = tmp_path / "srv" / "app"
    for d in ("a-readonly", "b", "config"):
        (root / d).mkdir(parents=True)
    (root / "a-readonly" / "f.txt").write_text("in a read-only directory\n")
    (root / "b" / "g.txt").write_text("g\n")
    (root / "config" / "app.yaml").write_text("port: 80\n")
    (root / "config" / ".env").write_text("DATABASE_URL=postgres://app:s3cr3t@db/app\n")
    for d, when in (("a-readonly", 1_000_000_000), ("b", 1_100_000_000), ("config", 1_200_000_000)):
        os.utime(root / d, (when, when))
    (root / "a-readonly").chmod(0o555)
    run_app_files_backup(cli, make_config, age_key, tmp_path, root, secrets=["config/.env"])
    [newest] = list((tmp_path / "store1").rglob("manifest.json"))
    # a place another user can reach (pytest's tmp_path is private to root)
    base = Path(tempfile.mkdtemp(prefix="upkeeper-doc-"))
    try:
        base.chmod(0o755)
        work = base / "restore-here"
        shutil.copytree(newest.parent, work)
        key = base / "key.txt"
        shutil.copy(age_key.identity, key)
        dest = base / "restored"
        user = None
        if os.geteuid() == 0:
            user = "nobody"
            for p in (work, key, *work.iterdir()):
                p.chmod(0o755 if p.is_dir() else 0o644)
            shutil.chown(base, user)
        out = follow("files", {"BACKUP": str(work), "KEY": str(key), "DEST": str(dest)}, base, user=user)
        assert_hashes_match(out, json.loads(newest.read_text()))
        rel = dest / str(root).lstrip("/")
        assert (rel / "a-readonly" / "f.txt").read_text() == "in a read-only directory\n"
        assert (rel / "config" / ".env").read_text().startswith("DATABASE_URL=")
        assert stat.S_IMODE(os.stat(rel / "a-readonly").st_mode) == 0o555
        got = {d: int(os.stat(rel / d).st_mtime) for d in ("a-readonly", "b", "config")}
        assert got == {"a-readonly": 1_000_000_000, "b": 1_100_000_000, "config": 1_200_000_000}
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(base)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_redis_section_followed_literally(cli: Any, make_config: Any, age_key: AgeKey, tmp_path: Path,
                                         redis_clean: RedisServer) -> None:
    c = redis_clean.client()
    for i in range(500):
        c.set(f"session:{i}", f"user-{i}" * 5)
    c.hset("cart:1", mapping={"sku": "A-1", "qty": "2"})
    cfg = make_config({
        "targets": {"cache": redis_clean.target()},
        "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store1"), "fsync": False}},
        "backup": {"encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}},
        "jobs": {"cache-backup": {"task": "redis.backup", "target": "cache"}},
    })
    r = cli(["--config", cfg, "run", "cache-backup", "--json"])
    assert r.code == 0, r.output
    work, manifest = fetch_set(tmp_path / "store1", tmp_path)
    out = follow("redis", {"BACKUP": str(work), "KEY": str(age_key.identity)}, tmp_path)
    assert_hashes_match(out, manifest)
    assert "RDB looks OK" in out
    # what the page says next: the server's dir, under its dbfilename, and start it — the keys are there
    srv = RedisServer(tmp_path / "r2")
    srv.base.mkdir(parents=True)
    shutil.copyfile(work / "dump.rdb", srv.base / "dump.rdb")
    srv.start()
    try:
        assert srv.client().dbsize() == 501 and srv.client().hget("cart:1", "qty") == b"2"
    finally:
        srv.stop()
