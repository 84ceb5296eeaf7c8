"""SFTP-specific behaviour against a real OpenSSH server: host keys, key auth, dropped connections."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
from datetime import timedelta
from pathlib import Path

import psutil
import pytest

from services import sftp_storage_config
from upkeeper.errors import StorageError
from upkeeper.sandbox._util import chown_to
from upkeeper.sandbox.sshd import SshServer
from upkeeper.storage import open_storage
from upkeeper.storage.base import clean_partials, get_bytes, put_bytes
from upkeeper.storage.sftp import TMP_SUFFIX, SftpStorage


def openssh_fingerprint(pub: Path) -> str:
    """The fingerprint as OpenSSH itself prints it (``ssh-keygen -lf``)."""
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], check=True, capture_output=True, text=True).stdout
    return out.split()[1]


def drop_connections(server: SshServer) -> int:
    """Kill the server side of every open SSH connection (the listener keeps running)."""
    assert server.proc is not None
    root = psutil.Process(server.proc.pid)
    listeners = [p for p in [root, *root.children()] if p.name() == "sshd"]  # runuser → sshd -D
    assert len(listeners) == 1, [p.cmdline() for p in listeners]
    sessions = [c for lst in listeners for c in lst.children(recursive=True)]
    for p in sessions:
        with contextlib.suppress(psutil.NoSuchProcess):  # a child may go with its killed parent first
            p.kill()
    psutil.wait_procs(sessions, timeout=5)
    return len(sessions)


def test_open_storage_dispatches_to_sftp(sftp_server: SshServer) -> None:
    storage = open_storage("offsite", sftp_storage_config(sftp_server))
    assert isinstance(storage, SftpStorage) and storage.kind == "sftp"
    assert f"127.0.0.1:{sftp_server.port}" in storage.describe()


def test_unknown_host_key_is_refused_with_its_fingerprint_and_the_hint_works(sftp_server: SshServer,
                                                                            tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    storage = open_storage("s", sftp_storage_config(sftp_server, known_hosts=str(known_hosts)))
    with pytest.raises(StorageError) as exc:
        put_bytes(storage, "k", b"x")
    err = exc.value
    assert err.permanent
    assert f"[127.0.0.1]:{sftp_server.port}" in str(err)
    assert openssh_fingerprint(sftp_server.base / "host_ed25519.pub") in str(err)
    assert "ssh-ed25519" in str(err) and str(known_hosts) in str(err)
    hint = err.hint or ""
    assert f"ssh-keyscan -p {sftp_server.port} 127.0.0.1 >> {known_hosts}" in hint

    # follow the hint literally: ssh-keyscan -p PORT HOST >> known_hosts
    scan = subprocess.run(["ssh-keyscan", "-p", str(sftp_server.port), "127.0.0.1"], check=True,
                          capture_output=True, text=True)
    with known_hosts.open("a") as fh:
        fh.write(scan.stdout)
    put_bytes(storage, "k", b"now trusted")
    assert get_bytes(storage, "k") == b"now trusted"
    storage.close()


def test_missing_known_hosts_file_is_named(sftp_server: SshServer, tmp_path: Path) -> None:
    storage = open_storage("s", sftp_storage_config(sftp_server, known_hosts=str(tmp_path / "nope")))
    with pytest.raises(StorageError, match="does not exist") as exc:
        storage.stat("k")
    assert exc.value.permanent and str(tmp_path / "nope") in str(exc.value)


def test_changed_host_key_is_refused(sftp_server: SshServer, tmp_path: Path) -> None:
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known_hosts = tmp_path / "known_hosts"
    kind, blob = Path(str(other) + ".pub").read_text().split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{sftp_server.port} {kind} {blob}\n")
    storage = open_storage("s", sftp_storage_config(sftp_server, known_hosts=str(known_hosts)))
    with pytest.raises(StorageError, match="does NOT match") as exc:
        storage.stat("k")
    assert exc.value.permanent
    assert openssh_fingerprint(sftp_server.base / "host_ed25519.pub") in str(exc.value)


def test_host_key_check_off_accepts_with_a_warning(sftp_server: SshServer, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    storage = open_storage("s", sftp_storage_config(sftp_server, known_hosts=str(empty), host_key_check=False))
    with caplog.at_level(logging.WARNING):
        put_bytes(storage, "k", b"x")
    assert "accepting the unverified host key" in caplog.text
    storage.close()


def test_unauthorized_key_is_a_permanent_auth_error(sftp_server: SshServer, tmp_path: Path) -> None:
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    storage = open_storage("s", sftp_storage_config(sftp_server, key_file=str(key)))
    with pytest.raises(StorageError, match="authentication .* failed") as exc:
        storage.stat("k")
    assert exc.value.permanent and "authorized_keys" in (exc.value.hint or "")


def test_encrypted_key_with_passphrase_file(sftp_server: SshServer, tmp_path: Path) -> None:
    key = tmp_path / "locked"
    passphrase = "correct horse battery staple"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(key)], check=True)
    with (sftp_server.base / "authorized_keys").open("a") as fh:
        fh.write(Path(str(key) + ".pub").read_text())
    pass_file = tmp_path / "passphrase"
    pass_file.write_text(passphrase + "\n")

    storage = open_storage("s", sftp_storage_config(sftp_server, key_file=str(key),
                                                     key_passphrase_file=str(pass_file)))
    put_bytes(storage, "k", b"x")
    assert get_bytes(storage, "k") == b"x"
    storage.close()

    without = open_storage("s", sftp_storage_config(sftp_server, key_file=str(key)))
    with pytest.raises(StorageError, match="is encrypted") as exc:
        without.stat("k")
    assert exc.value.permanent and "key_passphrase_file" in (exc.value.hint or "")

    wrong = tmp_path / "wrong"
    wrong.write_text("not it")
    mistyped = open_storage("s", sftp_storage_config(sftp_server, key_file=str(key),
                                                      key_passphrase_file=str(wrong)))
    with pytest.raises(StorageError, match="wrong passphrase") as exc:
        mistyped.stat("k")
    assert "not it" not in f"{exc.value} {exc.value.hint}"


def test_missing_key_file(sftp_server: SshServer, tmp_path: Path) -> None:
    storage = open_storage("s", sftp_storage_config(sftp_server, key_file=str(tmp_path / "absent")))
    with pytest.raises(StorageError, match="does not exist") as exc:
        storage.stat("k")
    assert exc.value.permanent


def test_connection_refused_is_transient(sftp_server: SshServer) -> None:
    from upkeeper.sandbox._util import free_port

    port = free_port()
    storage = open_storage("s", sftp_storage_config(sftp_server, port=port, timeout=3))
    with pytest.raises(StorageError) as exc:
        storage.stat("k")
    assert not exc.value.permanent and f"127.0.0.1:{port}" in str(exc.value)


def test_reconnects_after_a_dropped_connection(sftp_server: SshServer) -> None:
    storage = open_storage("s", sftp_storage_config(sftp_server))
    put_bytes(storage, "before", b"1")
    assert drop_connections(sftp_server) >= 1
    assert storage.stat("before") is not None  # the next operation reconnects by itself
    put_bytes(storage, "after", b"2")
    assert sorted(o.key for o in storage.list()) == ["after", "before"]
    storage.close()


def test_writer_broken_by_a_dropped_connection_fails_and_abort_cleans_up(sftp_server: SshServer) -> None:
    config = sftp_storage_config(sftp_server)
    storage = open_storage("s", config)
    w = storage.open_write("set/dump")
    w.write(b"x" * 100_000)
    assert any(p.name.endswith(TMP_SUFFIX) for p in Path(config.path).rglob("*"))
    drop_connections(sftp_server)
    with pytest.raises(StorageError) as exc:
        w.write(b"y" * 1_000_000)
        w.commit()
    assert not exc.value.permanent
    w.abort()  # again: harmless
    assert [p for p in Path(config.path).rglob("*") if p.is_file()] == []  # removed over a new connection
    assert storage.stat("set/dump") is None
    storage.close()


def test_leftover_partial_files_are_never_listed(sftp_server: SshServer) -> None:
    config = sftp_storage_config(sftp_server)
    storage = open_storage("s", config)
    put_bytes(storage, "set/manifest.json", b"{}")
    (Path(config.path) / "set" / f".dump.deadbeef{TMP_SUFFIX}").write_bytes(b"crashed run")
    assert [o.key for o in storage.list()] == ["set/manifest.json"]
    storage.close()


def test_too_many_sessions_is_clear_and_spares_the_others(services_dir: Path) -> None:
    """sshd's MaxSessions refuses another channel: a clear error, and the writers already open still commit."""
    server = SshServer(services_dir / "sshd-max2", extra_config="MaxSessions 2").start()
    try:
        storage = open_storage("s", sftp_storage_config(server))
        storage.stat("x")  # the shared channel: session 1
        w1 = storage.open_write("one")  # session 2
        w1.write(b"1")
        with pytest.raises(StorageError, match="refused another SFTP session") as exc:
            storage.open_write("two")
        assert not exc.value.permanent and "MaxSessions" in (exc.value.hint or "")
        w1.write(b"1")
        w1.commit()
        assert get_bytes(storage, "one") == b"11"
        storage.close()
    finally:
        server.stop()


# --- the server's own refusals (SFTP status replies on a healthy connection) ----------------------------------


def test_path_the_ssh_user_may_not_write_is_a_permanent_permission_error(sftp_server: SshServer,
                                                                          tmp_path: Path) -> None:
    if pwd.getpwnam(sftp_server.user).pw_uid in (0, os.geteuid()):
        pytest.skip("the SSH user is root or owns our directories: none refuses it")
    locked = Path(tempfile.mkdtemp(prefix="upk-sftp-locked-", dir="/tmp"))  # ours, 0755: readable, not writable
    locked.chmod(0o755)
    try:
        storage = open_storage("s", sftp_storage_config(sftp_server, path=str(locked)))
        with pytest.raises(StorageError) as exc:
            put_bytes(storage, "set/dump", b"x" * 1000)
        assert exc.value.permanent
        assert exc.value.message == (f"cannot create the directory {sftp_server.user}@127.0.0.1:{locked}/set: "
                                     "permission denied")
        assert "may write to the storage path" in (exc.value.hint or "")
        assert list(locked.rglob("*")) == []
        storage.close()
    finally:
        shutil.rmtree(locked, ignore_errors=True)


def test_server_disk_full_fails_the_write_and_leaves_nothing(sftp_server: SshServer, small_fs: Path) -> None:
    """OpenSSH answers ENOSPC with SSH_FX_FAILURE: a clear, retryable error; the partial file is removed."""
    chown_to(small_fs, sftp_server.user)
    storage = open_storage("s", sftp_storage_config(sftp_server, path=str(small_fs / "backups")))
    put_bytes(storage, "small", b"fits")
    w = storage.open_write("set/dump")
    with pytest.raises(StorageError) as exc:
        for _ in range(8):  # 4 MiB into a 2 MiB file system
            w.write(os.urandom(512 * 1024))
        w.commit()
    w.abort()
    assert not exc.value.permanent
    assert "the server reported a failure (disk full or quota exceeded?)" in exc.value.message
    assert "free space" in (exc.value.hint or "")
    # no partial file, and no empty set/ made for it
    assert sorted(str(p.relative_to(small_fs)) for p in small_fs.rglob("*")) == ["backups", "backups/small"]
    assert [o.key for o in storage.list()] == ["small"]
    assert get_bytes(storage, "small") == b"fits"
    storage.close()


def test_a_directory_the_ssh_user_cannot_read_fails_the_listing(sftp_server: SshServer) -> None:
    """A listing without that directory would let 'backups sync' drop the catalog rows of every set in it."""
    if pwd.getpwnam(sftp_server.user).pw_uid == 0:
        pytest.skip("the SSH user is root: it reads every directory")
    config = sftp_storage_config(sftp_server)
    storage = open_storage("s", config)
    put_bytes(storage, "db/app/1/manifest.json", b"{}")
    put_bytes(storage, "db/other/2/manifest.json", b"{}")
    locked = Path(config.path) / "db" / "other"  # the server runs on this machine: lock it on its disk
    locked.chmod(0)
    try:
        with pytest.raises(StorageError) as exc:
            list(storage.list())
        assert exc.value.message == f"cannot list {sftp_server.user}@127.0.0.1:{locked}: permission denied"
        assert exc.value.permanent
    finally:
        locked.chmod(0o755)
        storage.close()


def test_the_storage_directory_is_never_created(sftp_server: SshServer) -> None:
    """A missing directory on the server is a volume not mounted there or a wrong path: every operation fails
    naming the storage and the path, with the command that creates it; nothing is created (a prefix either)."""
    config = sftp_storage_config(sftp_server, path=str(sftp_server.home / f"vol-{os.urandom(4).hex()}" / "web1"),
                                 create=False)
    root = Path(config.path)
    storage = open_storage("nas", config)
    describe = storage.describe()
    ops = {"write": lambda: put_bytes(storage, "db/app/1/dump", b"x"), "stat": lambda: storage.stat("db/app/1/dump"),
           "read": lambda: storage.open_read("db/app/1/dump"), "list": lambda: list(storage.list()),
           "clean": lambda: clean_partials(storage, timedelta(0))}
    for op, run in ops.items():
        with pytest.raises(StorageError) as exc:
            run()
        assert exc.value.permanent, op
        assert exc.value.message.startswith(f"{describe}: the storage directory does not exist"), (op, exc.value)
        assert (f"ssh -p {sftp_server.port} {sftp_server.user}@127.0.0.1 mkdir -p -m 700 {root}"
                in (exc.value.hint or "")), (op, exc.value.hint)
        assert "'nas'" in (exc.value.hint or "")
        assert not root.exists() and not root.parent.exists(), op

    # follow the hint (the server's admin makes it for the SSH user): now it works, sets below it are created
    sftp_storage_config(sftp_server, path=str(root))
    put_bytes(storage, "db/app/1/dump", b"x")
    assert get_bytes(storage, "db/app/1/dump") == b"x"

    # the volume goes away under a running storage (its directories are remembered): still refused, nothing made
    root.rename(root.with_name("web1.away"))
    for key in ("db/app/1/dump", "db/app/2/dump", "other"):
        with pytest.raises(StorageError, match="the storage directory does not exist") as exc:
            put_bytes(storage, key, b"y")
        assert exc.value.permanent
        assert not root.exists()
    storage.close()


def _everything(root: Path) -> list[str]:
    """Every file and directory under ``root`` on the server's disk (directories with a trailing ``/``)."""
    return sorted(str(p.relative_to(root)) + ("/" if p.is_dir() else "") for p in root.rglob("*"))


def test_an_aborted_write_removes_only_the_directories_it_made_while_empty(sftp_server: SshServer) -> None:
    """A failed backup leaves no empty ``<target>/<database>/<id>/`` on the server; a directory another writer uses
    (or made) stays, and that writer commits; the storage does not remember a removed directory as existing."""
    config = sftp_storage_config(sftp_server)
    root = Path(config.path)
    storage = open_storage("s", config)
    assert isinstance(storage, SftpStorage)
    put_bytes(storage, "db/app/old/manifest.json", b"{}")  # an earlier backup: db/app/ is not this run's
    first = storage.open_write("db/app/new/a.zst")  # makes db/app/new/
    second = storage.open_write("db/app/new/b.zst")  # in the same directory, made by the first
    first.write(b"x")
    first.abort()
    assert (root / "db" / "app" / "new").is_dir()  # the second writer's partial file is in it
    second.write(b"y")
    second.commit()
    assert [o.key for o in storage.list()] == ["db/app/new/b.zst", "db/app/old/manifest.json"]
    third = storage.open_write("db/app/newer/dir/c.zst")
    third.write(b"z")
    third.abort()
    assert _everything(root) == ["db/", "db/app/", "db/app/new/", "db/app/new/b.zst", "db/app/old/",
                                 "db/app/old/manifest.json"]
    assert not {f"{root}/db/app/newer", f"{root}/db/app/newer/dir"} & storage._dirs  # forgotten, not "known"

    # another client removes directories this one remembers (a prune deleting the last object of a set): the next
    # write makes them again, and its abort removes them again
    other = open_storage("other", config)
    other.delete("db/app/new/b.zst")
    other.delete("db/app/old/manifest.json")
    assert _everything(root) == []
    w = storage.open_write("db/app/new/d.zst")
    w.write(b"d")
    assert (root / "db" / "app" / "new").is_dir()
    w.abort()
    assert _everything(root) == []
    put_bytes(storage, "db/app/new/e.zst", b"e")
    assert [o.key for o in other.list()] == ["db/app/new/e.zst"]
    other.close()
    storage.close()


def test_a_writer_failing_to_open_removes_the_directories_it_made(sftp_server: SshServer) -> None:
    """The directories are made, then the server refuses the partial file itself: nothing stays behind."""
    config = sftp_storage_config(sftp_server)
    root = Path(config.path)
    storage = open_storage("s", config)
    put_bytes(storage, "db/keep", b"k")
    name = "x" * 255  # the longest file name: the partial file's (".x…x.<random>.upkeeper-partial") is too long,
    with pytest.raises(StorageError):  # so the open fails after db/app/ and db/app/1/ were made
        put_bytes(storage, f"db/app/1/{name}", b"x")
    assert _everything(root) == ["db/", "db/keep"]
    storage.close()


def test_objects_and_directories_on_the_server_are_the_ssh_users_only(sftp_server: SshServer) -> None:
    """The server made each object 0666 less its session's umask and each directory 0777 less it: 0644 and 0755
    under sshd's usual 022, every backup readable by every user of the backup server.  Now 0600 and 0700 (the
    partial file too, before a byte is written), whatever the server's umask."""
    config = sftp_storage_config(sftp_server)
    storage = open_storage("s", config)
    try:
        w = storage.open_write("db/app/1/app.dump")
        w.write(b"COPY users ...")
        partial = next(Path(config.path).rglob(f"*{TMP_SUFFIX}"))
        assert partial.stat().st_mode & 0o777 == 0o600
        w.commit()
        put_bytes(storage, "db/app/1/manifest.json", b"{}")
        assert storage.create_exclusive("db/app/lock", b"me")
    finally:
        storage.close()
    base = Path(config.path)
    made = {str(p.relative_to(base)): p.stat().st_mode & 0o777 for p in base.rglob("*")}
    assert made == {"db": 0o700, "db/app": 0o700, "db/app/1": 0o700, "db/app/1/app.dump": 0o600,
                    "db/app/1/manifest.json": 0o600, "db/app/lock": 0o600}, made


def test_exclusive_create_refused_by_an_object_gone_right_after_is_tried_again(
        sftp_server: SshServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """SFTP's rename says only "failure" when a file is in the way; the writer then looks, and found nothing when
    the file in the way (another host's takeover claim) was deleted between the two requests — it raised "the
    server reported a failure (disk full…)" and a copy racing another failed with that (CI saw it once).  Now the
    rename is tried again: nothing is there, so this create is the one that wins."""
    import paramiko

    storage = open_storage("s", sftp_storage_config(sftp_server))
    real_rename = paramiko.SFTPClient.rename
    refused: list[str] = []

    def rename_racing_a_delete(self: paramiko.SFTPClient, oldpath: str, newpath: str) -> None:
        try:
            real_rename(self, oldpath, newpath)
        except OSError:
            refused.append(newpath)
            self.remove(newpath)  # the other host deletes its claim right after our rename met it
            raise

    try:
        put_bytes(storage, "set/.writing.abc.takeover", b"the other host's claim")
        monkeypatch.setattr(paramiko.SFTPClient, "rename", rename_racing_a_delete)
        assert storage.create_exclusive("set/.writing.abc.takeover", b"ours") is True
        monkeypatch.undo()
        assert len(refused) == 1
        assert get_bytes(storage, "set/.writing.abc.takeover") == b"ours"
        assert storage.create_exclusive("set/.writing.abc.takeover", b"third") is False  # still exclusive
    finally:
        storage.close()
