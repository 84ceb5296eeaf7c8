"""The streaming pipeline: raw bytes → zstd → age → SHA-256 → one or more storages.

No plaintext touches the disk: the caller pushes raw bytes into an
:class:`ObjectUpload` (a dump's stdout, a tar stream, an RDB file); zstd
compresses them in this process (its own worker threads, outside the GIL), age
encrypts in its own process, and a drain thread hashes the ciphertext and
writes it to every storage.  An object is visible under its final key only
after ``finish()``; any failure aborts every storage writer.

The reverse, :func:`read_object`, streams an object from storage through the
SHA-256 check, age and zstd into a file object.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import zstandard

from upkeeper.backup.crypto import AgeProcess, Encryption
from upkeeper.errors import (
    KILLED_FROM_OUTSIDE,
    BackupError,
    SetupError,
    StorageError,
    ToolKilled,
    UpkeeperError,
)
from upkeeper.shield import shielded
from upkeeper.storage.base import Storage, Writer

CHUNK = 1 << 20


@dataclass
class ObjectRecord:
    """One stored object, as the manifest lists it."""

    name: str
    size: int
    sha256: str
    raw_size: int
    compression: str = "zstd"
    encryption: str = "none"
    role: str = "data"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "role": self.role, "size": self.size, "sha256": self.sha256,
                             "raw_size": self.raw_size, "compression": self.compression,
                             "encryption": self.encryption}
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ObjectRecord:
        known = {"name", "role", "size", "sha256", "raw_size", "compression", "encryption"}
        return cls(name=str(d["name"]), size=int(d["size"]), sha256=str(d["sha256"]),
                   raw_size=int(d.get("raw_size", 0)), compression=str(d.get("compression", "zstd")),
                   encryption=str(d.get("encryption", "none")), role=str(d.get("role", "data")),
                   extra={k: v for k, v in d.items() if k not in known})


def fault_pause(point: str) -> None:
    """Fault injection for the crash tests: ``UPKEEPER_FAULT_PAUSE=point:seconds`` sleeps at ``point``
    (``during-upload``, ``upload-abort``, ``before-manifest``, ``before-scratch-drop``…);
    ``UPKEEPER_FAULT_MARK=file`` is appended to on arrival."""
    spec = os.environ.get("UPKEEPER_FAULT_PAUSE", "")
    for item in spec.split(","):
        name, _, secs = item.partition(":")
        if name == point:
            mark = os.environ.get("UPKEEPER_FAULT_MARK")
            if mark:  # tell the test we are there
                with open(mark, "a") as fh:
                    fh.write(point + "\n")
            time.sleep(float(secs or 5))


class FanOut:
    """Writes the same bytes to several storages, hashing them once."""

    def __init__(self, storages: Sequence[Storage], key: str) -> None:
        self.key = key
        self.sha = hashlib.sha256()
        self.size = 0
        self.writers: list[tuple[Storage, Writer]] = []
        try:
            for s in storages:
                try:
                    # shielded: a stop arriving while the writer makes its temporary file (or multipart upload) is
                    # raised once the writer is in the list, so that abort() removes it too (raised in between, it
                    # left a .upkeeper-partial file behind)
                    with shielded():
                        self.writers.append((s, s.open_write(key)))
                except StorageError as exc:
                    raise StorageError(f"storage {s.name}: {exc.message}", exc.hint,
                                       permanent=exc.permanent) from None
        except BaseException:
            self.abort()
            raise

    def write(self, data: bytes) -> int:
        first = self.size == 0
        self.sha.update(data)
        self.size += len(data)
        for storage, w in self.writers:
            try:
                w.write(data)
            except StorageError as exc:
                raise StorageError(f"storage {storage.name}: {exc.message}", exc.hint,
                                   permanent=exc.permanent) from None
            except OSError as exc:
                raise StorageError(f"storage {storage.name}: cannot write {self.key}: {exc}") from None
        if first and data:
            fault_pause("during-upload")
        return len(data)

    def commit(self) -> None:
        for storage, w in self.writers:
            try:
                w.commit()
            except StorageError as exc:
                raise StorageError(f"storage {storage.name}: {exc.message}", exc.hint,
                                   permanent=exc.permanent) from None

    @shielded()  # a stop arriving meanwhile waits for it (upkeeper.shield)
    def abort(self) -> None:
        for _s, w in self.writers:
            with contextlib.suppress(Exception):
                w.abort()


class ObjectUpload:
    """Push raw bytes in with :meth:`write`; :meth:`finish` returns the stored object's record."""

    def __init__(self, storages: Sequence[Storage], key: str, name: str, *, level: int = 3, threads: int = 0,
                 encryption: Encryption | None = None, role: str = "data") -> None:
        self.name = name
        self.role = role
        self.encryption = encryption
        self.raw_size = 0
        self._drain_error: BaseException | None = None
        self.age: AgeProcess | None = None  # (set before the sink: abort() reads them)
        self._drain: threading.Thread | None = None
        self.sink = FanOut(storages, key)
        target: Any = self.sink
        try:
            if encryption is not None:
                self.age = AgeProcess(encryption.argv(), encryption.passphrase, confirm=True)
                self._drain = threading.Thread(target=self._drain_age, daemon=True, name="age-drain")
                self._drain.start()
                target = self.age.stdin
            cctx = zstandard.ZstdCompressor(level=level, threads=threads if threads > 0 else -1)
            self.zw = cctx.stream_writer(target, write_size=CHUNK, closefd=False)
        except BaseException:
            self.abort()
            raise

    def _drain_age(self) -> None:
        assert self.age is not None
        read = self.age.stdout.read
        try:
            while True:
                chunk = read(CHUNK)
                if not chunk:
                    return
                self.sink.write(chunk)
        except BaseException as exc:
            self._drain_error = exc
            assert self.age is not None
            self.age.kill()  # unblocks the writer side with a broken pipe

    def _raise_drain_error(self) -> None:
        if self._drain_error is not None:
            raise self._drain_error

    def write(self, data: bytes | memoryview) -> int:
        n = len(data)
        try:
            self.zw.write(data)
        except (BrokenPipeError, ValueError, OSError) as exc:
            self._raise_drain_error()
            if self.age is not None and self.age.popen.poll() is not None:
                self.age.wait()  # raises with age's stderr
            if isinstance(exc, OSError):
                raise BackupError(f"writing {self.name}: {exc}") from None
            raise
        self._raise_drain_error()
        self.raw_size += n
        return n

    def finish(self) -> ObjectRecord:
        try:
            try:
                self.zw.flush(zstandard.FLUSH_FRAME)
                self.zw.close()  # type: ignore[no-untyped-call]
                if self.age is not None:
                    self.age.stdin.close()
                    assert self._drain is not None
                    self._drain.join()
                    self._raise_drain_error()
                    self.age.wait()
            except BrokenPipeError:  # age went away (killed; or the drain, failing to store, killed it)
                self._raise_drain_error()
                if self.age is not None:
                    self.age.wait()
                raise BackupError(f"writing {self.name}: the encryption process went away") from None
            self.sink.commit()
        except BaseException:  # whatever failed, the partial object goes from every storage (the other storages'
            self.abort()       # temporary files, an S3 multipart upload): a failed set leaves nothing behind
            raise
        finally:
            if self.age is not None:
                self.age.close()
        return ObjectRecord(name=self.name, size=self.sink.size, sha256=self.sink.sha.hexdigest(),
                            raw_size=self.raw_size, encryption=self.encryption.label if self.encryption else "none",
                            role=self.role)

    @shielded()  # a stop arriving meanwhile waits for it (upkeeper.shield)
    def abort(self) -> None:
        fault_pause("upload-abort")  # (the tests: a cleanup that outlasts the kill grace)
        if self.age is not None:
            self.age.close()
        if self._drain is not None:
            self._drain.join(timeout=10)
        self.sink.abort()


def upload_stream(upload: ObjectUpload, src: IO[bytes]) -> ObjectRecord:
    """Copy a readable stream into ``upload`` and finish it."""
    try:
        read = src.read
        while True:
            chunk = read(CHUNK)
            if not chunk:
                break
            upload.write(chunk)
    except BaseException:
        upload.abort()
        raise
    return upload.finish()


def upload_bytes(upload: ObjectUpload, data: bytes) -> ObjectRecord:
    try:
        upload.write(data)
    except BaseException:
        upload.abort()
        raise
    return upload.finish()


# -- reading back -------------------------------------------------------------------------


class KeyRejected(BackupError):
    """age could not open the object's header with the configured key: "no identity matched any of the
    recipients" or "incorrect passphrase".  Raised only once the object's size and SHA-256 matched the
    manifest, so the bytes are those written; whether the key or the header is to blame is the caller's to
    decide (:class:`upkeeper.backup.restore.Fetcher` compares the identity with the manifest's recipients)."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"object {name}: decryption failed: {detail}")
        self.object_name = name


#: what age says when the key (not the data) does not fit: the header's stanzas do not open with it
AGE_KEY_REJECTED = ("no identity matched any of the recipients", "incorrect passphrase")


class ChecksumMismatch(BackupError):
    def __init__(self, name: str, detail: str, storage: str | None = None) -> None:
        where = f" on storage {storage}" if storage else ""
        super().__init__(f"object {name} is corrupt{where}: {detail}",
                         "Try: verify the other storages ('upkeeper backups verify ID --storage NAME'); restore "
                         "from an older backup")
        self.object_name = name


def read_object(
    storage: Storage,
    key: str,
    record: ObjectRecord,
    out: IO[bytes] | Callable[[bytes], Any],
    *,
    decrypt_argv: list[str] | None = None,
    passphrase: str | None = None,
) -> int:
    """Stream one object out of storage: size and SHA-256 checked, decrypted, decompressed into ``out``.

    Returns the number of plaintext bytes written.  Raises :class:`ChecksumMismatch` naming the object when
    the stored bytes differ from the manifest (checked first, whatever else failed), BackupError when age or
    zstd reject them.
    """
    write = out if callable(out) else out.write
    sha = hashlib.sha256()
    size = 0
    written = 0

    class _Sink:
        def write(self, b: bytes) -> int:
            nonlocal written
            written += len(b)
            write(b)
            return len(b)

    decoder: Any = (zstandard.ZstdDecompressor().stream_writer(_Sink(), write_size=CHUNK, closefd=False)  # type: ignore[arg-type]
                    if record.compression == "zstd" else _Sink())
    if record.encryption != "none" and decrypt_argv is None:
        raise SetupError(f"object {record.name} is encrypted ({record.encryption}) and no key is configured",
                          "Try: set backup -> encryption -> identity_file")
    failure: list[BaseException] = []
    read_failed: list[BaseException] = []  # the storage's read, in the thread feeding age
    age: AgeProcess | None = None
    with storage.open_read(key) as fh:
        def chunks() -> Any:
            nonlocal size
            while True:
                chunk = fh.read(CHUNK)
                if not chunk:
                    return
                sha.update(chunk)
                size += len(chunk)
                yield chunk

        try:
            if record.encryption == "none":
                for chunk in chunks():
                    if not failure:
                        try:
                            decoder.write(chunk)
                        except zstandard.ZstdError as exc:
                            failure.append(BackupError(f"object {record.name}: decompression failed: {exc}"))
            else:
                assert decrypt_argv is not None
                age = AgeProcess(decrypt_argv, passphrase)

                def feed() -> None:
                    assert age is not None
                    broken = False
                    try:
                        for chunk in chunks():  # keep hashing to the end even when age gave up
                            if abandoned.is_set():
                                break  # the reader gave up (an error of its own, Ctrl-C): no verdict is wanted
                            if broken:
                                continue
                            try:
                                age.stdin.write(chunk)
                            except (BrokenPipeError, OSError):
                                broken = True
                    except BaseException as exc:  # the storage failed mid-read (a link that stalled, dropped)
                        read_failed.append(exc)
                    finally:  # age sees the end of its input: the reader waiting for its output is never stuck
                        with contextlib.suppress(OSError):
                            age.stdin.close()

                abandoned = threading.Event()
                t = threading.Thread(target=feed, daemon=True, name="age-feed")
                t.start()
                try:
                    while True:
                        chunk = age.stdout.read(CHUNK)
                        if not chunk:
                            break
                        if not failure:
                            try:
                                decoder.write(chunk)
                            except zstandard.ZstdError as exc:
                                failure.append(BackupError(
                                    f"object {record.name}: decompression failed: {exc}"))
                except BaseException:
                    abandoned.set()
                    age.kill()  # the feeder must not block on a pipe nobody reads
                    raise
                finally:
                    t.join()
                try:
                    age.wait()
                except UpkeeperError as exc:
                    rejected = any(m in getattr(exc, "stderr", "") for m in AGE_KEY_REJECTED)
                    killed = -(getattr(exc, "returncode", None) or 0) in KILLED_FROM_OUTSIDE
                    failure.insert(0, ToolKilled(f"object {record.name}: {exc.message} while it decrypted it")
                                   if killed else (KeyRejected if rejected else _decryption_failed)(record.name,
                                                                                                   exc.message))
        finally:
            if age is not None:
                age.close()
    if read_failed:
        raise read_failed[0]  # not all of the object was read: no verdict on its bytes
    check_digest(record, sha.hexdigest(), size, storage.name)
    if failure:
        raise failure[0]
    if isinstance(decoder, zstandard.ZstdDecompressionWriter):
        try:
            decoder.flush()  # type: ignore[no-untyped-call]
            decoder.close()  # type: ignore[no-untyped-call]
        except zstandard.ZstdError as exc:
            raise BackupError(f"object {record.name}: decompression failed: {exc}") from None
    return written


def check_stored(storage: Storage, key: str, record: ObjectRecord) -> None:
    """The stored bytes of one object have the manifest's size and SHA-256 (read, not decrypted: bytes equal
    to those of a copy that decrypted and restored need no second decryption).  Raises
    :class:`ChecksumMismatch` naming the object and the storage."""
    sha = hashlib.sha256()
    size = 0
    with storage.open_read(key) as fh:
        while True:
            chunk = fh.read(CHUNK)
            if not chunk:
                break
            sha.update(chunk)
            size += len(chunk)
    check_digest(record, sha.hexdigest(), size, storage.name)


def _decryption_failed(name: str, detail: str) -> BackupError:
    return BackupError(f"object {name}: decryption failed: {detail}")


def check_digest(record: ObjectRecord, digest: str, size: int, storage: str | None = None) -> None:
    if size != record.size:
        raise ChecksumMismatch(record.name, f"size {size} bytes, manifest says {record.size}", storage)
    if digest != record.sha256:
        raise ChecksumMismatch(record.name, f"SHA-256 {digest[:16]}…, manifest says {record.sha256[:16]}…",
                               storage)
