"""Fixtures for the backup tests: an age key pair, a seeded database, a config with local storages."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from upkeeper.sandbox.postgres import PostgresCluster
from upkeeper.sandbox.seed import seed

SMALL = {"users": 120, "listings": 80, "bookings": 300, "messages": 400, "reviews": 100, "notifications": 300,
         "audit_log": 400}


def wrapped_pg_dump(tmp_path: Path, pg: PostgresCluster, body: str) -> Path:
    """A bin_dir whose pg_dump runs the real one (--version passes through) and then misbehaves as ``body`` says:
    fault injection around the real tool, for failures a healthy server will not produce on demand."""
    d = tmp_path / "faultbin"
    d.mkdir()
    w = d / "pg_dump"
    w.write_text(f'#!/bin/sh\ncase "$1" in --version) exec "{pg.bin}/pg_dump" "$@";; esac\n{body}\n')
    w.chmod(0o755)
    return d


def standby_backup_config(primary: PostgresCluster, replica: PostgresCluster, name: str, backup_config: Any,
                          make_config: Any) -> Path:
    """Database ``name`` made and seeded on the primary, waited for on the replica (its WAL replayed), and a
    copy of ``backup_config(name)``'s config whose target ``db`` is the replica."""
    import time

    import yaml

    primary.create_database(name)
    with primary.connect(name) as conn:
        seed(conn, SMALL)
        lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    with replica.connect() as conn:
        for _ in range(100):
            if conn.execute("SELECT pg_last_wal_replay_lsn() >= %s", (lsn,)).fetchone()[0]:
                break
            time.sleep(0.1)
    cfg = backup_config(name)
    data = yaml.safe_load(cfg.read_text())
    data["targets"]["db"] = replica.target(name)
    path: Path = make_config(data, "standby.yaml")
    return path


@dataclass
class AgeKey:
    identity: Path
    recipient: str


@pytest.fixture(scope="session")
def age_key(tmp_path_factory: pytest.TempPathFactory) -> AgeKey:
    d = tmp_path_factory.mktemp("age")
    key = d / "key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    pub = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True).stdout.strip()
    return AgeKey(key, pub)


@pytest.fixture
def s3_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys upkeeper opens for reading on any S3 storage from now on, in order (the real reads still
    happen, against the real server)."""
    from upkeeper.storage.s3 import S3Storage

    reads: list[str] = []
    real_open_read = S3Storage.open_read

    def counted(self: S3Storage, key: str) -> Any:
        reads.append(key)
        return real_open_read(self, key)

    monkeypatch.setattr(S3Storage, "open_read", counted)
    return reads


def names(keys: list[str]) -> list[str]:
    """The object names (last path part) of storage keys."""
    return [k.rsplit("/", 1)[-1] for k in keys]


@pytest.fixture
def app_db(pg: PostgresCluster, pg_db: str) -> tuple[str, dict[str, int]]:
    """A database with the app schema and a few hundred rows per table."""
    with pg.connect(pg_db) as conn:
        counts = seed(conn, SMALL)
    return pg_db, counts


@pytest.fixture
def backup_config(make_config: Any, pg: PostgresCluster, tmp_path: Path, age_key: AgeKey) -> Callable[..., Path]:
    """Write a config: target 'db', local storages, a db-backup and a verify job."""

    def make(db: str, *, storages: int | dict[str, Any] = 1, encrypt: bool = True, options: dict[str, Any] | None
             = None, backup: dict[str, Any] | None = None, verify: dict[str, Any] | None = None,
             extra_jobs: dict[str, Any] | None = None, target_extra: dict[str, Any] | None = None) -> Path:
        if isinstance(storages, int):
            st = {f"local{i + 1}": {"kind": "local", "path": str(tmp_path / f"store{i + 1}"), "fsync": False}
                  for i in range(storages)}
        else:
            st = storages
        b: dict[str, Any] = {}
        if encrypt:
            b["encryption"] = {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}
        b.update(backup or {})
        jobs: dict[str, Any] = {
            "db-backup": {"task": "postgres.backup", "target": "db",
                          "options": {"databases": [db], "globals": False, **(options or {})}},
            "backup-verify": {"task": "backup.verify", "target": "db", "options": verify or {}},
        }
        jobs.update(extra_jobs or {})
        return make_config({"targets": {"db": {**pg.target(db), **(target_extra or {})}}, "storages": st, "backup": b, "jobs": jobs})

    return make


def rewrite_manifest(cli: Any, cfg: Path, mpath: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` as the set's manifest.json *as if the backup had been written so*: the catalog forgets
    the set and ``backups sync`` records it anew, with the new manifest's SHA-256.  (An edit alone is caught
    by verify as a changed manifest.json.)"""
    from upkeeper.backup.catalog import Catalog
    from upkeeper.core.history import History

    mpath.write_text(json.dumps(manifest))
    h = History(f"sqlite:///{cfg.parent / 'history.db'}")
    try:
        Catalog(h).remove(str(manifest["id"]))
    finally:
        h.close()
    r = cli(["--config", cfg, "backups", "sync", "--json"])
    assert r.code == 0 and r.json()["added"] == 1, r.output


def run_app_files_backup(cli: Any, make_config: Any, age_key: AgeKey, tmp_path: Path, root: Path, *,
                         secrets: list[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """Back up the app at ``root`` (target 'web', ``secrets``, by default '.env', as secret paths) to
    tmp_path/store1: the config and the run."""
    cfg: Path = make_config({
        "targets": {"web": {"kind": "app", "root": str(root)}},
        "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store1"), "fsync": False}},
        "backup": {"encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}},
        "jobs": {"app-backup": {"task": "files.backup", "target": "web",
                                "options": {"secret_paths": secrets or [".env"]}}},
    })
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0, r.output
    run: dict[str, Any] = r.json()[0]
    return cfg, run


def _acl(*entries: tuple[int, int, int]) -> bytes:
    """A POSIX ACL in the kernel's binary form, as setfacl sets it: (tag, permissions, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


_NO_ID = 0xFFFFFFFF
#: user::rwx user:33:r-x group::r-x mask::r-x other::r-x (setfacl -d -m u:33:rx on an uploads directory)
UPLOADS_ACL = _acl((1, 7, _NO_ID), (2, 5, 33), (4, 5, _NO_ID), (0x10, 5, _NO_ID), (0x20, 5, _NO_ID))
#: user::rw- user:33:rw- group::r-- mask::rw- other::r--
FILE_ACL = _acl((1, 6, _NO_ID), (2, 6, 33), (4, 4, _NO_ID), (0x10, 6, _NO_ID), (0x20, 4, _NO_ID))
#: cap_net_bind_service=ep, as setcap sets it (VFS_CAP_REVISION_2)
NET_BIND_CAP = bytes.fromhex("01000002" "00040000" + "00" * 12)


def make_attributes(root: Path) -> dict[str, dict[str, bytes]]:
    """An app tree at ``root`` whose files and directories have the extended attributes files.backup archives:
    an uploads directory with a default and an access ACL, a file with user attributes (a binary value, an
    empty one, a name with '=' and '%'), a binary with a file capability (as root only) and an ACL, and a plain
    file.  Returns each entry's attributes by its path relative to ``root`` ("" for it); skips the test where
    the file system has no ACLs or user attributes."""
    (root / "uploads").mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "uploads" / "a.jpg").write_bytes(b"\xff\xd8jpeg")
    (root / "tagged.txt").write_text("tagged\n")
    (root / "plain.txt").write_text("plain\n")
    (root / "bin" / "serve").write_bytes(b"#!/bin/sh\nexit 0\n")
    (root / "bin" / "serve").chmod(0o755)
    want: dict[str, dict[str, bytes]] = {
        "uploads": {"system.posix_acl_default": UPLOADS_ACL, "system.posix_acl_access": UPLOADS_ACL},
        "tagged.txt": {"user.origin": b"import\x00\xff", "user.empty": b"", "user.k=v%25": b"x"},
        "bin/serve": {"system.posix_acl_access": _acl((1, 7, _NO_ID), (2, 5, 33), (4, 5, _NO_ID),
                                                      (0x10, 5, _NO_ID), (0x20, 5, _NO_ID))},
    }
    if os.geteuid() == 0:
        want["bin/serve"]["security.capability"] = NET_BIND_CAP
    try:
        for rel, attrs in want.items():
            for name, value in attrs.items():
                os.setxattr(root / rel, name, value)
    except OSError as exc:
        pytest.skip(f"no ACLs or user attributes here: {exc}")
    return want


def read_attributes(root: Path, names: Any = ("user.", "security.capability", "system.posix_acl_")
                    ) -> dict[str, dict[str, bytes]]:
    """The attributes (those starting with one of ``names``) of every file and directory under ``root`` that
    has some, by relative path, as :func:`make_attributes` returns them."""
    out: dict[str, dict[str, bytes]] = {}
    for p in [root, *sorted(root.rglob("*"))]:
        if p.is_symlink():
            continue
        attrs = {n: os.getxattr(p, n) for n in os.listxattr(p) if n.startswith(tuple(names))}
        if attrs:
            out["" if p == root else str(p.relative_to(root))] = attrs
    return out


def stop_cgroup(p: subprocess.Popen[bytes], timeout: float = 30,
                lag: float = 0.0) -> tuple[float, bytes, bytes, list[Any]]:
    """SIGTERM to ``p`` and to every process under it at once, as ``systemctl stop`` sends it to every process of
    the unit's cgroup (KillMode=control-group) and ``kill -TERM -PGID`` to a group: the workers, in sessions of
    their own, and pg_dump, age… get it directly.  The deepest first (pg_dump may die before its worker hears of
    the stop); with ``lag``, pg_dump that many seconds before the others (a loaded machine: the worker has seen
    pg_dump die and reported a failure before its own signal came).  Returns (seconds until ``p`` exited, its
    stdout, its stderr, the processes signalled); its whole process group is SIGKILLed if it is still running when
    this returns or fails."""
    import psutil

    try:
        procs = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]
        t0 = time.monotonic()
        if lag:
            for q in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    if q.name() == "pg_dump":
                        q.send_signal(signal.SIGTERM)
            time.sleep(lag)
        for q in reversed(procs):
            with contextlib.suppress(psutil.NoSuchProcess):
                q.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=timeout)
        return time.monotonic() - t0, out, err, procs
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def terminate_and_wait(p: subprocess.Popen[bytes], timeout: float = 30,
                       sig: signal.Signals = signal.SIGTERM) -> tuple[float, bytes]:
    """SIGTERM (or ``sig``) to ``p`` alone (as ``kill PID``, ``timeout`` and systemd do); returns (seconds until it
    exited, its stderr).  Its whole process group is SIGKILLed if it is still running when this returns or fails."""
    took, _out, err = terminate_and_read(p, timeout, sig)
    return took, err


def terminate_and_read(p: subprocess.Popen[bytes], timeout: float = 30,
                       sig: signal.Signals = signal.SIGTERM) -> tuple[float, bytes, bytes]:
    """:func:`terminate_and_wait`, returning (seconds, stdout, stderr)."""
    try:
        t0 = time.monotonic()
        p.send_signal(sig)
        out, err = p.communicate(timeout=timeout)
        return time.monotonic() - t0, out, err
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
