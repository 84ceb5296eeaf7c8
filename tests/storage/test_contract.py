"""One contract every storage backend must pass, against real servers (litestream style).

local: a directory; s3: SeaweedFS; s3-tls: SeaweedFS behind nginx terminating TLS with a
private CA (``ca_file``); sftp: OpenSSH.  Each test gets a fresh, empty storage.
``residue()`` looks behind the interface (every file and directory under the storage's
directory, the bucket's objects and pending multipart uploads) to prove that aborted or failed
writes leave nothing behind — no partial file, no upload, and no empty directory made for them.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from services import local_storage_config, sftp_storage_config
from upkeeper.config.storage import S3StorageConfig, StorageConfig
from upkeeper.errors import StorageError
from upkeeper.storage import open_storage
from upkeeper.storage.base import Storage, clean_partials, get_bytes, partial_activity, put_bytes

MiB = 1024 * 1024
PART = 5 * MiB  # S3's minimum part size: multipart kicks in for anything bigger


@dataclass
class Backend:
    kind: str
    storage: Storage
    residue: Callable[[], list[str]]  # everything physically present: hidden temp files, uploads, directories
    config: dict[str, Any]  # the storage's config as plain data (secrets included), for a child process


def _entries_under(root: Path) -> list[str]:
    """Every file and directory below ``root`` (directories with a trailing ``/``): an empty ``set/1/`` left by a
    failed write is residue too."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) + ("/" if p.is_dir() else "") for p in root.rglob("*"))


@pytest.fixture(params=["local", "s3", "s3-tls", "sftp"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind = request.param
    if kind == "local":
        root = tmp_path / "store"
        data: dict[str, Any] = {"kind": "local", "path": str(root)}
        storage: Storage = open_storage("contract", local_storage_config(root))

        def residue() -> list[str]:
            return _entries_under(root)
    elif kind in ("s3", "s3-tls"):
        server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        # s3-tls: the same server behind nginx terminating TLS with a private CA (ca_file)
        endpoint = request.getfixturevalue("s3_tls") if kind == "s3-tls" else server
        data = endpoint.storage_config(bucket, part_size=PART, prefix="backups", upload_concurrency=2)
        storage = open_storage("contract", S3StorageConfig.model_validate(data))
        client = server.client()

        def residue() -> list[str]:
            objs = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
            ups = [f"upload:{u['Key']}" for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
            return sorted(objs + ups)
    else:
        server = request.getfixturevalue("sftp_server")
        config = sftp_storage_config(server)
        data = config.model_dump(mode="json", exclude_none=True)
        storage = open_storage("contract", config)
        root = Path(config.path)  # the server runs on this machine: look at its disk directly

        def residue() -> list[str]:
            return _entries_under(root)
    yield Backend(kind, storage, residue, data)
    storage.close()


def pattern(size: int, seed: int = 0) -> Iterator[bytes]:
    """Deterministic pseudo-random bytes in odd-sized chunks (never the whole object in memory)."""
    block = hashlib.sha256(f"seed{seed}".encode()).digest() * 2048  # 64 KiB
    chunk = 65536 + 7
    done = 0
    i = 0
    while done < size:
        n = min(chunk, size - done)
        rot = (i * 31) % len(block)
        piece = (block[rot:] + block[:rot]) * (n // len(block) + 1)
        yield piece[:n]
        done += n
        i += 1


def write_stream(storage: Storage, key: str, size: int, seed: int = 0) -> str:
    h = hashlib.sha256()
    w = storage.open_write(key)
    try:
        for piece in pattern(size, seed):
            w.write(piece)
            h.update(piece)
        w.commit()
    except BaseException:
        w.abort()
        raise
    return h.hexdigest()


def read_hash(storage: Storage, key: str, chunk: int = 1 << 20) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with storage.open_read(key) as fh:
        while data := fh.read(chunk):
            h.update(data)
            n += len(data)
    return h.hexdigest(), n


def keys(storage: Storage, prefix: str = "") -> list[str]:
    return sorted(o.key for o in storage.list(prefix))


def test_round_trip_small(backend: Backend) -> None:
    s = backend.storage
    info = put_bytes(s, "db/2024/manifest.json", b'{"ok": true}')
    assert info.key == "db/2024/manifest.json" and info.size == 12
    assert get_bytes(s, "db/2024/manifest.json") == b'{"ok": true}'
    st = s.stat("db/2024/manifest.json")
    assert st is not None and st.size == 12 and st.modified is not None
    assert [(o.key, o.size) for o in s.list()] == [("db/2024/manifest.json", 12)]
    assert s.kind == backend.kind.removesuffix("-tls") and s.describe()


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1, 2 * PART + 12345])
def test_round_trip_sizes_around_the_part_size(backend: Backend, size: int) -> None:
    s = backend.storage
    digest = write_stream(s, "obj.bin", size, seed=size)
    assert read_hash(s, "obj.bin") == (digest, size)
    st = s.stat("obj.bin")
    assert st is not None and st.size == size
    assert [(o.key, o.size) for o in s.list()] == [("obj.bin", size)]
    assert [r for r in backend.residue() if "upload:" in r or "partial" in r] == []


def test_partial_reads_return_the_right_bytes(backend: Backend) -> None:
    s = backend.storage
    data = b"".join(pattern(PART + 999, seed=3))
    put_bytes(s, "k", data)
    with s.open_read("k") as fh:
        got = [fh.read(10), fh.read(PART), fh.read()]
    assert b"".join(got) == data and len(got[0]) == 10


def test_abort_leaves_nothing(backend: Backend) -> None:
    s = backend.storage
    w = s.open_write("set/1/data.zst.age")
    for piece in pattern(PART + MiB):  # more than a part: an S3 multipart upload is under way
        w.write(piece)
    w.abort()
    assert s.stat("set/1/data.zst.age") is None
    assert keys(s) == []
    with pytest.raises(StorageError):
        s.open_read("set/1/data.zst.age")
    assert backend.residue() == []


def test_uncommitted_writer_is_invisible(backend: Backend) -> None:
    s = backend.storage
    w = s.open_write("set/1/dump")
    for piece in pattern(PART + MiB):
        w.write(piece)
    assert s.stat("set/1/dump") is None
    assert keys(s) == [] and keys(s, "set/") == []
    with pytest.raises(StorageError):
        s.open_read("set/1/dump")
    info = w.commit()
    assert info.size == PART + MiB
    assert keys(s) == ["set/1/dump"]


def test_list_with_prefixes(backend: Backend) -> None:
    s = backend.storage
    for k in ["a/1", "a/2", "ab/3", "b/c/d/4", "top"]:
        put_bytes(s, k, k.encode())
    assert keys(s) == ["a/1", "a/2", "ab/3", "b/c/d/4", "top"]
    assert keys(s, "a/") == ["a/1", "a/2"]
    assert keys(s, "a") == ["a/1", "a/2", "ab/3"]
    assert keys(s, "b/c") == ["b/c/d/4"]
    assert keys(s, "b/c/d/4") == ["b/c/d/4"]
    assert keys(s, "t") == ["top"]
    assert keys(s, "zz") == []
    sizes = {o.key: o.size for o in s.list()}
    assert sizes["b/c/d/4"] == len("b/c/d/4")


def test_a_key_prefix_is_not_an_object(backend: Backend) -> None:
    s = backend.storage
    put_bytes(s, "set/1/dump", b"x")
    assert s.stat("set") is None and s.stat("set/1") is None
    with pytest.raises(StorageError):
        s.open_read("set/1")
    assert s.stat("set/1/dump/deeper") is None


def test_list_of_an_empty_storage(backend: Backend) -> None:
    """A storage whose root exists but holds nothing lists nothing (local, sftp: the directory made for it, written
    to and emptied again; s3: an empty bucket)."""
    s = backend.storage
    put_bytes(s, "probe", b"x")
    s.delete("probe")
    assert keys(s) == []
    assert keys(s, "nothing/") == []


def test_list_of_a_missing_root_is_an_error(backend: Backend) -> None:
    """A root that does not exist (an unmounted volume, a wrong path, a missing bucket) is an error naming it, never
    an empty listing: 'backups sync' would take that for "every backup is gone"."""
    gone = f"not-there-{uuid.uuid4().hex[:8]}"
    if backend.kind.startswith("s3"):
        data, name = {**backend.config, "bucket": gone}, gone
    else:
        data, name = {**backend.config, "path": f"{backend.config['path']}/{gone}"}, f"{backend.config['path']}/{gone}"
    storage = open_storage("gone", TypeAdapter(StorageConfig).validate_python(data))
    try:
        for prefix in ("", "db/"):
            with pytest.raises(StorageError) as exc:
                list(storage.list(prefix))
            assert name in str(exc.value) and "does not exist" in str(exc.value), exc.value
            assert exc.value.permanent
    finally:
        storage.close()


def test_delete(backend: Backend) -> None:
    s = backend.storage
    put_bytes(s, "x/y/z", b"1")
    put_bytes(s, "x/keep", b"2")
    s.delete("x/y/z")
    assert s.stat("x/y/z") is None
    assert keys(s) == ["x/keep"]
    s.delete("x/y/z")  # deleting a missing object is not an error
    s.delete("never/was")
    put_bytes(s, "x/y/z", b"3")  # the emptied directory can be used again
    assert get_bytes(s, "x/y/z") == b"3"


def test_stat_missing_is_none_and_read_missing_is_an_error(backend: Backend) -> None:
    s = backend.storage
    assert s.stat("no/such/key") is None
    with pytest.raises(StorageError) as exc:
        s.open_read("no/such/key")
    assert exc.value.permanent
    assert "no/such/key" in str(exc.value)


@pytest.mark.parametrize("key", ["", "/etc/passwd", "a/../b", "../escape", "a//b", ".", "a/./b", "a/", "..",
                                 "nul\x00byte", "new\nline"])
def test_invalid_keys_are_refused(backend: Backend, key: str) -> None:
    s = backend.storage
    for op in (s.open_write, s.open_read, s.stat, s.delete):
        with pytest.raises(StorageError) as exc:
            op(key)
        assert exc.value.permanent
    assert backend.residue() == []


def test_overwrite_replaces_atomically(backend: Backend) -> None:
    s = backend.storage
    put_bytes(s, "manifest.json", b"old")
    w = s.open_write("manifest.json")
    w.write(b"new and longer")
    assert get_bytes(s, "manifest.json") == b"old"  # readers see the old object until commit
    w.commit()
    assert get_bytes(s, "manifest.json") == b"new and longer"
    assert [(o.key, o.size) for o in s.list()] == [("manifest.json", 14)]


def test_interleaved_writers(backend: Backend) -> None:
    s = backend.storage
    w1, w2 = s.open_write("one"), s.open_write("two")
    for i in range(50):
        w1.write(b"1" * 1000)
        w2.write(b"2" * 777)
        if i == 25:
            assert s.stat("one") is None  # another operation in between must not disturb the writers
    w2.commit()
    w1.commit()
    assert get_bytes(s, "one") == b"1" * 50_000 and get_bytes(s, "two") == b"2" * 38_850


def test_writer_refuses_use_after_commit(backend: Backend) -> None:
    s = backend.storage
    w = s.open_write("k")
    w.write(b"x")
    w.commit()
    with pytest.raises(StorageError):
        w.write(b"more")
    w.abort()  # harmless after commit
    assert get_bytes(s, "k") == b"x"


def test_big_object_streams_in_constant_memory(backend: Backend) -> None:
    """32 MiB through write and read with Python's peak allocation far below the object's size."""
    s = backend.storage
    size = 32 * MiB
    put_bytes(s, "warm-up", b"x")  # connect and load the SDK's service model first: a one-time cost
    get_bytes(s, "warm-up")
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        digest = write_stream(s, "big.bin", size, seed=7)
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        got = read_hash(s, "big.bin")
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == (digest, size)
    # S3 holds the part being filled plus upload_concurrency (2) parts in flight; the others a small buffer.
    # Over HTTPS botocore streams each part aws-chunked with a trailing checksum: ~2 MiB of chunk copies per
    # part in flight (before PartBody it copied each whole part: 29 MiB here).
    limit = {"s3": 4 * PART, "s3-tls": 4 * PART + 4 * MiB}.get(backend.kind, 12 * MiB)
    assert write_peak < limit, f"write peaked at {write_peak / MiB:.1f} MiB"
    assert read_peak < limit, f"read peaked at {read_peak / MiB:.1f} MiB"


def test_keys_with_unusual_characters(backend: Backend) -> None:
    s = backend.storage
    key = "db name/2024-01-01T00:00:00Z/ümlaut+plus=eq.dump"
    put_bytes(s, key, b"x")
    assert get_bytes(s, key) == b"x"
    assert keys(s) == [key]
    assert keys(s, "db name/") == [key]


def test_a_new_storage_object_sees_committed_data(backend: Backend) -> None:
    """Commit is durable: a separate client (a later run) reads it back."""
    s = backend.storage
    put_bytes(s, "set/manifest.json", b"{}")
    cfg = s.config
    other = open_storage("other", cfg)
    try:
        assert get_bytes(other, "set/manifest.json") == b"{}"
    finally:
        other.close()


CHILD_WRITER = """
import json, os, sys
from pydantic import TypeAdapter
from upkeeper.config.storage import StorageConfig
from upkeeper.storage import open_storage
storage = open_storage("child", TypeAdapter(StorageConfig).validate_python(json.loads(sys.argv[1])))
writer = storage.open_write("set/1/dump")
block, written = os.urandom(1 << 20), 0
while True:
    writer.write(block)
    written += len(block)
    if written == 7 << 20:  # more than one S3 part: a multipart upload is under way
        print("ready", flush=True)
"""


def test_writer_killed_with_sigkill_leaves_nothing_visible(backend: Backend) -> None:
    """kill -9 in the middle of a write: nothing is listed, the leftovers are cleanable, the next run works."""
    s = backend.storage
    child = subprocess.Popen([sys.executable, "-c", CHILD_WRITER, json.dumps(backend.config)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip() == "ready", child.stderr.read() if child.stderr else ""
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    assert s.stat("set/1/dump") is None
    assert keys(s) == []
    with pytest.raises(StorageError):
        s.open_read("set/1/dump")
    assert backend.residue() != []  # the crash did leave something behind: a partial file or upload

    assert clean_partials(s, older_than=timedelta(hours=1)) == 0  # too fresh: might be a live writer
    assert clean_partials(s, older_than=timedelta(0)) >= 1
    assert backend.residue() == []
    put_bytes(s, "set/1/dump", b"the next run")
    assert get_bytes(s, "set/1/dump") == b"the next run"


def test_clean_partials_spares_a_live_writer(backend: Backend) -> None:
    s = backend.storage
    w = s.open_write("live")
    for piece in pattern(PART + MiB):
        w.write(piece)
    assert clean_partials(s, older_than=timedelta(minutes=10)) == 0
    w.commit()
    assert s.stat("live") is not None


def test_partial_activity_sees_a_write_in_progress_under_its_prefix_only(backend: Backend) -> None:
    """What prune asks before deleting a set whose listed objects are old: is a write (not listed: a temporary
    file, a multipart upload) still making progress under the set's prefix?"""
    s = backend.storage
    put_bytes(s, "t/db/set1/done", b"finished")
    assert partial_activity(s, "t/db/set1/") is None
    w = s.open_write("t/db/set1/dump")
    try:
        for piece in pattern(PART + MiB):  # past the first part: the S3 multipart upload has begun
            w.write(piece)
        when = partial_activity(s, "t/db/set1/")
        assert when is not None and abs((datetime.now(UTC) - when).total_seconds()) < 120, when
        assert partial_activity(s, "t/db/set2/") is None
    finally:
        w.abort()
    assert partial_activity(s, "t/db/set1/") is None


def test_create_exclusive_writes_only_where_nothing_is(backend: Backend) -> None:
    """The primitive of the sets' leases: created once, refused (and the object left as it is) while one is there,
    created again once it is deleted; a new directory is made for it, and nothing else is left behind."""
    s = backend.storage
    assert s.create_exclusive("set/1/.writing", b"first") is True
    assert s.create_exclusive("set/1/.writing", b"second") is False
    assert get_bytes(s, "set/1/.writing") == b"first"
    put_bytes(s, "set/1/a", b"object")
    assert s.create_exclusive("set/1/a", b"other") is False
    assert get_bytes(s, "set/1/a") == b"object"
    s.delete("set/1/.writing")
    assert s.create_exclusive("set/1/.writing", b"third") is True
    assert get_bytes(s, "set/1/.writing") == b"third"
    assert keys(s) == ["set/1/.writing", "set/1/a"]
    s.delete("set/1/.writing")
    s.delete("set/1/a")
    assert backend.residue() == []


def test_create_exclusive_has_one_winner_among_writers_at_the_same_instant(backend: Backend) -> None:
    """Eight clients (each its own connection, as eight hosts would have) create the same key at the same instant,
    round after round: exactly one of them gets True each time, and the object holds what that one wrote."""
    import threading

    cfg = backend.storage.config  # type: ignore[attr-defined]
    clients = [open_storage(f"host{i}", cfg) for i in range(8)]
    try:
        for c in clients:  # connected before the race: the rounds race the creates, not the logins
            c.stat("warm-up")
        for rnd in range(6):
            key = f"set/{rnd}/.writing"
            won: list[int] = []
            barrier = threading.Barrier(len(clients))

            def go(i: int, key: str = key, won: list[int] = won, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                if clients[i].create_exclusive(key, f"host{i}".encode()):
                    won.append(i)

            threads = [threading.Thread(target=go, args=(i,)) for i in range(len(clients))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(won) == 1, f"round {rnd}: {len(won)} writers got the key"
            assert get_bytes(backend.storage, key) == f"host{won[0]}".encode()
    finally:
        for c in clients:
            c.close()


def test_replace_if_writes_only_over_the_bytes_read(backend: Backend) -> None:
    """The primitive of a lease's refresh: replaced while the object still holds what the caller read; refused (the
    object left as it is) once another write replaced it, or once it is deleted — never created; nothing else is
    left behind."""
    s = backend.storage
    assert s.replace_if("set/1/.writing", b"mine, refreshed", b"mine") is False  # nothing there: not created
    assert s.stat("set/1/.writing") is None
    put_bytes(s, "set/1/.writing", b"mine")
    assert s.replace_if("set/1/.writing", b"mine, refreshed", b"mine") is True
    assert get_bytes(s, "set/1/.writing") == b"mine, refreshed"
    put_bytes(s, "set/1/.writing", b"another writer's, taken over")
    assert s.replace_if("set/1/.writing", b"mine, refreshed again", b"mine, refreshed") is False
    assert get_bytes(s, "set/1/.writing") == b"another writer's, taken over"
    s.delete("set/1/.writing")
    assert s.replace_if("set/1/.writing", b"mine", b"another writer's, taken over") is False
    assert keys(s) == []
    assert backend.residue() == []


@pytest.mark.parametrize("backend", ["s3"], indirect=True)
def test_replace_if_has_one_winner_among_writers_that_read_the_same_version(backend: Backend) -> None:
    """On S3 the condition is the store's (If-Match the ETag read): of eight clients that read the same version
    and replace it at once, exactly one succeeds, round after round — the lease of a writer that was taken over
    meanwhile is never written over.  (Local and SFTP compare, then rename: a window of milliseconds, documented.)"""
    import threading

    cfg = backend.storage.config  # type: ignore[attr-defined]
    clients = [open_storage(f"host{i}", cfg) for i in range(8)]
    try:
        for c in clients:
            c.stat("warm-up")
        for rnd in range(6):
            key = f"set/{rnd}/.writing"
            put_bytes(backend.storage, key, b"version read")
            won: list[int] = []
            barrier = threading.Barrier(len(clients))

            def go(i: int, key: str = key, won: list[int] = won, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                if clients[i].replace_if(key, f"host{i}".encode(), b"version read"):
                    won.append(i)

            threads = [threading.Thread(target=go, args=(i,)) for i in range(len(clients))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(won) == 1, f"round {rnd}: {len(won)} writers replaced the version they read"
            assert get_bytes(backend.storage, key) == f"host{won[0]}".encode()
    finally:
        for c in clients:
            c.close()


def test_delete_if_deletes_only_the_bytes_read(backend: Backend) -> None:
    """The primitive of a lease's release: deleted while the object still holds what the caller read; refused (the
    object left as it is) once another write replaced it, or once it is gone; nothing is left aside."""
    s = backend.storage
    assert s.delete_if("set/1/.writing", b"mine") is False  # nothing there
    put_bytes(s, "set/1/.writing", b"mine")
    put_bytes(s, "set/1/a", b"an object of the set")
    put_bytes(s, "set/1/.writing", b"another writer's, taken over")
    assert s.delete_if("set/1/.writing", b"mine") is False
    assert get_bytes(s, "set/1/.writing") == b"another writer's, taken over"
    assert keys(s) == ["set/1/.writing", "set/1/a"]
    assert s.delete_if("set/1/.writing", b"another writer's, taken over") is True
    assert keys(s) == ["set/1/a"]
    s.delete("set/1/a")
    assert keys(s) == []
    assert backend.residue() == []


def test_delete_if_never_deletes_a_write_landing_at_the_same_instant(backend: Backend) -> None:
    """A release and another host's takeover at the same instant, round after round, each with its own connection:
    whichever comes first, the other host's lease is there at the end (the release deletes only its own bytes —
    S3: If-Match; local, SFTP: renamed aside first, so a write landing meanwhile is never touched)."""
    import threading

    cfg = backend.storage.config  # type: ignore[attr-defined]
    mine, theirs = open_storage("host0", cfg), open_storage("host1", cfg)
    try:
        for c in (mine, theirs):
            c.stat("warm-up")
        for rnd in range(12):
            key = f"set/{rnd}/.writing"
            put_bytes(backend.storage, key, b"mine")
            barrier = threading.Barrier(2)

            def release(key: str = key, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                mine.delete_if(key, b"mine")

            def take_over(key: str = key, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                put_bytes(theirs, key, b"theirs")

            threads = [threading.Thread(target=release), threading.Thread(target=take_over)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert get_bytes(backend.storage, key) == b"theirs", f"round {rnd}"
            backend.storage.delete(key)
        assert backend.residue() == []
    finally:
        mine.close()
        theirs.close()
