"""Copying complete backup sets from one storage to another (``upkeeper backups copy``).

Objects are streamed, as stored (still encrypted and compressed), from a storage that holds the set to the
destination, their size and SHA-256 checked against the manifest on the way: an object that does not match
is never committed there.  ``manifest.json`` — the commit marker — is copied last, byte for byte (its
SHA-256 is the one the catalog recorded), so a copy that fails or is killed leaves an incomplete set on the
destination, which nothing lists or restores and retention cleans as any other leftover.  A failed copy
removes what it wrote; a copy killed outright leaves its objects, which the next copy checks and reuses.  While
it writes, the copy holds the set's lease on the destination (:mod:`upkeeper.backup.lease`), as a backup run does:
a prune there never takes the set for a leftover — not even one that listed it long before it deleted.

Hashing as the bytes stream through is what proves the copy (and costs no extra read).  A set already complete
on the destination is not read back in full every time (``backups copy --all`` run again would download every
backup there): on a remote destination its manifest.json is read (the one recorded?) and its objects' sizes
listed; a local destination, which costs no transfer, has every object hashed as before, and so does any
destination with ``check_present``.  Proving the stored bytes of a copy is ``backups verify``'s job.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from upkeeper.backup.lease import PRUNE_WAIT, Lease, LeaseHeld, rekeyed_as, take_reader, writer_info
from upkeeper.backup.manifest import (
    LEASE,
    LEASE_REFRESH,
    MANIFEST,
    Manifest,
    is_lease_name,
    on_storage,
    read_manifest,
    set_prefix,
)
from upkeeper.backup.pipeline import CHUNK, ChecksumMismatch, ObjectRecord, check_digest, fault_pause
from upkeeper.errors import BackupError, StorageError, UpkeeperError
from upkeeper.fmt import human_bytes
from upkeeper.shield import shielded
from upkeeper.storage import Storage

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
PROGRESS_EVERY = 16 * CHUNK  # bytes between progress messages

COPIED = "copied"
PRESENT = "already there"
REPAIRED = "repaired"
WOULD_COPY = "would copy"
WOULD_REPAIR = "would repair"
FAILED = "failed"

#: copying an unencrypted backup to a remote storage needs what a backup there needs: 'encryption: none'
UNENCRYPTED_COPY_HINT = ("Try: copy it to a local storage, or write 'encryption: none' under 'backup' to accept "
                         "unencrypted backups on remote storages (as a backup job needs to write there)")


@dataclass
class CopyReport:
    """What happened to one backup."""

    id: str
    target: str
    database: str
    destination: str
    action: str = FAILED
    source: str | None = None
    objects: int = 0  # objects written to the destination
    reused: int = 0  # objects already there (a killed copy's, or an intact copy's), checked and kept
    bytes: int = 0  # bytes written to the destination
    error: str | None = None
    hint: str | None = None
    object: str | None = None  # the object the error is about
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.action != FAILED

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "target": self.target, "database": self.database, "destination": self.destination,
                "action": self.action, "ok": self.ok, "source": self.source, "objects": self.objects,
                "reused": self.reused, "bytes": self.bytes, "error": self.error, "hint": self.hint,
                "object": self.object, "notes": self.notes}


class DestinationFailed(StorageError):
    """Writing to the destination failed: another source would not help."""


class CopyFailed(BackupError):
    """The set could not be copied; ``object_name`` names the object when one is to blame."""

    def __init__(self, message: str, hint: str | None = None, object_name: str | None = None) -> None:
        super().__init__(message, hint)
        self.object_name = object_name


def copy_set(sources: Sequence[Storage], dest: Storage, target: str, database: str, backup_id: str, *,
             recorded_sha256: str | None, allow_unencrypted_remote: bool, dry_run: bool = False,
             progress: Progress | None = None, check_present: bool = False, lease_on: Storage | None = None,
             lease_refresh: timedelta = LEASE_REFRESH, reader_on: Mapping[str, Storage] | None = None) -> CopyReport:
    """Copy one complete set to ``dest`` from the first of ``sources`` that has it (per object, the next one
    when a source's copy is unreadable or does not match the manifest).  Never raises for a problem of this
    set (the report says ``failed``, naming the object); Ctrl-C and SIGTERM remove what was written.
    ``check_present``: read back every object of a set already complete on a remote ``dest`` (see above).
    ``lease_on``: ``dest`` opened again, for the lease's refresh thread (default: ``dest`` itself); ``reader_on``:
    the sources opened again, by name, for the refresh of the reader's marker the copy holds beside the set on them
    (:func:`~upkeeper.backup.lease.take_reader`: no prune or rekey deletes the set under the copy)."""
    report = CopyReport(backup_id, target, database, dest.name)
    try:
        _copy(report, sources, dest, set_prefix(target, database, backup_id), recorded_sha256,
              allow_unencrypted_remote, dry_run, progress or (lambda _msg: None),
              check_present or dest.kind == "local", lease_on or dest, lease_refresh, reader_on)
    except UpkeeperError as exc:
        report.action = FAILED
        report.error = exc.message
        report.hint = exc.hint
        report.object = getattr(exc, "object_name", None)
    return report


def _copy(report: CopyReport, sources: Sequence[Storage], dest: Storage, prefix: str, recorded: str | None,
          allow_unencrypted: bool, dry_run: bool, progress: Progress, read_back: bool, lease_on: Storage,
          lease_refresh: timedelta, reader_on: Mapping[str, Storage] | None) -> None:
    if recorded and not read_back and _listed_complete(report, dest, prefix, recorded):
        return  # no source read at all
    # a reader's marker beside the set on its sources while it is copied (not for a dry run, which writes
    # nothing): a prune (retention) keeps the set, a rekey waits before deleting it — the copy failed midway, its
    # set gone from the source, and had to be run again
    reading = None if dry_run else take_reader(sources, report.target, report.database, report.id, "backups copy",
                                               reader_on, lease_refresh)
    try:
        _copy_read(report, sources, dest, prefix, recorded, allow_unencrypted, dry_run, progress, read_back,
                   lease_on, lease_refresh)
    finally:
        if reading is not None:
            reading.release()


def _copy_read(report: CopyReport, sources: Sequence[Storage], dest: Storage, prefix: str, recorded: str | None,
               allow_unencrypted: bool, dry_run: bool, progress: Progress, read_back: bool, lease_on: Storage,
               lease_refresh: timedelta) -> None:
    fault_pause("copy-reading")  # (the tests: a prune or rekey of the source set as the copy starts reading it)
    source, manifest = _source_manifest(sources, prefix, recorded, report.id)
    report.source = source.name
    expected = manifest.sha256
    assert expected is not None
    plain = [o.name for o in manifest.objects if o.encryption == "none"]
    if plain and dest.kind != "local" and not allow_unencrypted:
        raise CopyFailed(f"refusing to copy unencrypted backup {report.id} to remote storage {dest.name} "
                         f"({dest.kind}): object {plain[0]} is not encrypted", UNENCRYPTED_COPY_HINT, plain[0])
    ordered = [source, *(s for s in sources if s is not source)]
    lease_for = _LeaseFor(report, source, lease_on, prefix, lease_refresh, progress)
    if dest.stat(prefix + MANIFEST) is not None:
        _complete_there(report, ordered, dest, prefix, manifest, expected, dry_run, progress, read_back, lease_for)
        return
    if dry_run:
        report.action = WOULD_COPY
        report.bytes = manifest.size
        return
    # before anything is written or reused: a killed copy's objects, as old as they are, are this copy's now.
    # Taken in one step (of two hosts sharing the storage but not the history database, whose locks keep two
    # copies of one backup apart, one gets it; the other fails naming it)
    lease = lease_for.take()
    try:
        completed = dest.stat(prefix + MANIFEST) is not None  # by another writer, before we took the lease
    except BaseException:
        lease.release()
        raise
    if completed:
        lease.release()
        _complete_there(report, ordered, dest, prefix, manifest, expected, dry_run, progress, read_back, lease_for)
        return
    try:
        for rec in manifest.objects:
            if _intact(dest, prefix + rec.name, rec):  # left by a copy that was killed: checked, kept
                report.reused += 1
                continue
            report.bytes += _copy_object(ordered, dest, prefix + rec.name, rec, report, progress)
            report.objects += 1
        fault_pause("before-manifest")
        _check_all_there(dest, prefix, manifest)
        lease.check()
        _copy_manifest(source, dest, prefix + MANIFEST, expected)
    except BaseException:
        with shielded():  # a stop arriving meanwhile waits for it (upkeeper.shield)
            lease.stop()  # (no refresh may write it again as the set is removed)
            if lease.lost is None:  # (a set another writer took over is its own)
                _remove_partial(dest, prefix, report.id)
            lease.release()  # last: no other writer may start on the set while it is removed
        raise
    lease.release()  # after the manifest: the set is never without one or the other
    report.action = COPIED


@dataclass
class _LeaseFor:
    """How this copy takes the set's lease on the destination (to write it, or to repair it)."""

    report: CopyReport
    source: Storage
    lease_on: Storage
    prefix: str
    refresh: timedelta
    progress: Progress

    def take(self) -> Lease:
        try:  # a prune holding it while it deletes the set is waited for (PRUNE_WAIT), any other writer not
            return Lease.take([self.lease_on], self.prefix,
                              writer_info(self.report.id, datetime.now(UTC), command="backups copy",
                                          source=self.source.name), self.refresh, patience=PRUNE_WAIT,
                              waiting=self.progress)
        except LeaseHeld as held:
            new = rekeyed_as(self.lease_on, self.prefix + LEASE)
            if new is not None:  # copying it again once 'done' would bring back the set a rekey retired
                raise CopyFailed(f"backup {self.report.id} on {self.report.destination} is being deleted by "
                                 f"{held.holder}; it was left alone",
                                 f"Try: copy the re-encrypted backup instead: 'upkeeper backups copy {new} --to "
                                 f"{self.report.destination}'", LEASE) from None
            raise CopyFailed(f"backup {self.report.id} is being written to {self.report.destination} by {held.holder}; "
                             "it was left alone", "Try: copy it again once that is done (a lease its writer "
                             "stopped refreshing is stale after 30 minutes)", LEASE) from None


def _source_manifest(sources: Sequence[Storage], prefix: str, recorded: str | None,
                     backup_id: str) -> tuple[Storage, Manifest]:
    """The set's manifest from the first source that has it as the catalog recorded it."""
    problems: list[str] = []
    for s in sources:
        try:
            if s.stat(prefix + MANIFEST) is None:
                problems.append(f"{s.name}: no {MANIFEST}")
                continue
            m = read_manifest(s, prefix, file_lists=False)
        except UpkeeperError as exc:
            problems.append(on_storage(s.name, exc.message))
            continue
        if recorded and m.sha256 != recorded:
            problems.append(f"{s.name}: {MANIFEST} is not the one recorded when the backup was written (SHA-256 "
                            f"{(m.sha256 or '')[:16]}…, recorded {recorded[:16]}…)")
            continue
        return s, m
    raise CopyFailed(f"no storage holds a readable copy of backup {backup_id} ({'; '.join(problems) or 'no source'})",
                     "Try: 'upkeeper backups sync' to see where it is now, or --from a storage that has it",
                     MANIFEST)


def _listed_complete(report: CopyReport, dest: Storage, prefix: str, recorded: str) -> bool:
    """Is the set complete on ``dest`` with the recorded manifest.json and every object it lists at its size
    (listed, not read)?  Then the report says so.  Anything else (no set there, another manifest, an object
    missing or of another size, a storage error) is left to the full path, which says what and repairs."""
    try:
        if dest.stat(prefix + MANIFEST) is None:
            return False
        there = read_manifest(dest, prefix, file_lists=False)
        if there.sha256 != recorded:
            return False
        listed = {o.key: o.size for o in dest.list(prefix)}
    except UpkeeperError:
        return False
    if any(listed.get(prefix + rec.name) != rec.size for rec in there.objects):
        return False
    report.action = PRESENT
    report.reused = len(there.objects)
    report.notes.append(f"{MANIFEST} as recorded, {len(there.objects)} object(s) listed at their size (not read "
                        "back: --check-present reads them)")
    return True


def _complete_there(report: CopyReport, sources: Sequence[Storage], dest: Storage, prefix: str,
                    manifest: Manifest, expected: str, dry_run: bool, progress: Progress, read_back: bool,
                    lease_for: _LeaseFor) -> None:
    """The set is complete on ``dest`` already: the same manifest?  Every object intact (``read_back``: its
    SHA-256 read through, else its listed size)?  Damaged objects are copied again (each replaced in one
    step), under the set's lease, as a copy writes (another host repairing or writing it at the same time fails
    naming this one)."""
    there = _sha256(dest, prefix + MANIFEST)
    if there != expected:
        raise CopyFailed(f"{dest.name} already holds a backup {report.id} whose {MANIFEST} differs from the one "
                         f"recorded (SHA-256 {there[:16]}…, expected {expected[:16]}…); it was left as it is",
                         f"Try: 'upkeeper backups verify {report.id} --storage {dest.name}', and delete that set "
                         f"from {dest.name} by hand if it is not the backup you want there", MANIFEST)
    if read_back:
        damaged = [rec for rec in manifest.objects if not _intact(dest, prefix + rec.name, rec)]
    else:
        listed = {o.key: o.size for o in dest.list(prefix)}
        damaged = [rec for rec in manifest.objects if listed.get(prefix + rec.name) != rec.size]
    report.reused = len(manifest.objects) - len(damaged)
    if not damaged:
        report.action = PRESENT
        return
    report.notes.append("damaged or missing on the destination: " + ", ".join(r.name for r in damaged))
    if dry_run:
        report.action = WOULD_REPAIR
        report.bytes = sum(r.size for r in damaged)
        return
    lease = lease_for.take()
    try:
        # deleted since it was looked at (a prune's retention, whose lease this copy may have waited for): repairing
        # it now would leave the objects written as a leftover, and the catalog naming this storage
        if dest.stat(prefix + MANIFEST) is None:
            raise CopyFailed(f"backup {report.id} was deleted from {dest.name} (by a prune?) before the copy could "
                             "repair it there; nothing was written", f"Try: 'upkeeper backups copy {report.id} --to "
                             f"{dest.name}' again if it should be there (retention may delete it again)", MANIFEST)
        for rec in damaged:
            report.bytes += _copy_object(sources, dest, prefix + rec.name, rec, report, progress)
            report.objects += 1
    finally:
        lease.release()
    report.action = REPAIRED


def _copy_object(sources: Sequence[Storage], dest: Storage, key: str, rec: ObjectRecord, report: CopyReport,
                 progress: Progress) -> int:
    """Stream one object from the first source whose copy matches the manifest."""
    problems: list[str] = []
    for s in sources:
        try:
            n = _stream(s, dest, key, rec, progress)
        except DestinationFailed as exc:
            raise CopyFailed(f"object {rec.name}: {exc.message}", exc.hint, rec.name) from None
        except UpkeeperError as exc:  # this source's copy is unreadable or damaged: try the next one
            problems.append(on_storage(s.name, exc.message))
            continue
        if s.name != report.source:
            report.notes.append(f"{rec.name} read from {s.name}")
        return n
    if _gone_from(sources, key.removesuffix(rec.name)):
        # (a rekey or prune of another host that did not see this copy's reader's marker): not a damaged object
        raise CopyFailed(f"backup {report.id} was deleted from {', '.join(s.name for s in sources)} while it was "
                         f"copied (by a prune, or a rekey re-encrypting it, of another host?); nothing of it was "
                         f"left on {dest.name}", "Try: 'upkeeper backups sync' to see where it is now (a rekey's "
                         "re-encryption has an id of its own), then copy that", rec.name)
    raise CopyFailed(f"object {rec.name} of backup {report.id} could not be copied from any storage "
                     f"({'; '.join(problems)}); nothing of it was left on {dest.name}",
                     f"Try: 'upkeeper backups verify {report.id} --storage NAME' on each storage", rec.name)


def _gone_from(sources: Sequence[Storage], prefix: str) -> bool:
    """Is the set's manifest gone from every source now (False when one cannot be asked)?"""
    try:
        return all(s.stat(prefix + MANIFEST) is None for s in sources)
    except UpkeeperError:
        return False


def _stream(source: Storage, dest: Storage, key: str, rec: ObjectRecord, progress: Progress) -> int:
    """``key`` from ``source`` to ``dest``, committed there only when its size and SHA-256 match ``rec``."""
    try:
        w = dest.open_write(key)
    except StorageError as exc:
        raise DestinationFailed(f"storage {dest.name}: {exc.message}", exc.hint, permanent=exc.permanent) from None
    try:
        sha = hashlib.sha256()
        size = 0
        with source.open_read(key) as fh:
            while chunk := fh.read(CHUNK):
                sha.update(chunk)
                size += len(chunk)
                if size > rec.size:  # no need to read the rest of a wrong object
                    raise ChecksumMismatch(rec.name, f"more than the manifest's {rec.size} bytes", source.name)
                try:
                    w.write(chunk)
                except StorageError as exc:
                    raise DestinationFailed(f"storage {dest.name}: {exc.message}", exc.hint,
                                            permanent=exc.permanent) from None
                if size == len(chunk):
                    fault_pause("during-upload")
                if size // PROGRESS_EVERY != (size - len(chunk)) // PROGRESS_EVERY:
                    progress(f"{rec.name} from {source.name}: {human_bytes(size)} of {human_bytes(rec.size)}")
        check_digest(rec, sha.hexdigest(), size, source.name)
        try:
            w.commit()
        except StorageError as exc:
            raise DestinationFailed(f"storage {dest.name}: {exc.message}", exc.hint, permanent=exc.permanent) from None
    except OSError as exc:  # a source's file object failing below the storage layer
        with contextlib.suppress(Exception):
            w.abort()
        raise StorageError(f"storage {source.name}: cannot read {key}: {exc}") from None
    except BaseException:
        with contextlib.suppress(Exception):
            w.abort()
        raise
    return size


def _copy_manifest(source: Storage, dest: Storage, key: str, expected: str) -> None:
    """manifest.json, byte for byte, committed only when its SHA-256 is ``expected``."""
    w = dest.open_write(key)
    try:
        sha = hashlib.sha256()
        with source.open_read(key) as fh:
            while chunk := fh.read(CHUNK):
                sha.update(chunk)
                w.write(chunk)
        if sha.hexdigest() != expected:
            raise CopyFailed(f"{MANIFEST} on {source.name} changed while it was copied", None, MANIFEST)
        w.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            w.abort()
        raise


def _check_all_there(dest: Storage, prefix: str, manifest: Manifest) -> None:
    """Every object on the destination at its size, just before the manifest makes the set complete (a
    ``backups prune`` elsewhere could have taken a long copy's first objects for a leftover)."""
    for rec in manifest.objects:
        info = dest.stat(prefix + rec.name)
        if info is None or info.size != rec.size:
            raise CopyFailed(f"object {rec.name} vanished from {dest.name} before the copy of backup "
                             f"{manifest.id} was complete (was a prune cleaning leftovers?)",
                             "Try: copy it again", rec.name)


def _intact(storage: Storage, key: str, rec: ObjectRecord) -> bool:
    """Is ``key`` on ``storage`` the object ``rec`` describes (size, then SHA-256 read through)?"""
    info = storage.stat(key)
    if info is None or info.size != rec.size:
        return False
    try:
        return _sha256(storage, key) == rec.sha256
    except StorageError:
        return False


def _sha256(storage: Storage, key: str) -> str:
    sha = hashlib.sha256()
    with storage.open_read(key) as fh:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


@shielded()  # a stop arriving meanwhile waits for it (upkeeper.shield)
def _remove_partial(dest: Storage, prefix: str, backup_id: str) -> None:
    """What a failed or stopped copy wrote (and what a killed one left) — never a set that has its manifest."""
    try:
        if dest.stat(prefix + MANIFEST) is None:
            for obj in list(dest.list(prefix)):
                if not is_lease_name(obj.key.removeprefix(prefix)):  # (the lease goes last, released)
                    dest.delete(obj.key)
    except Exception as exc:  # an incomplete set is never listed; 'backups prune' cleans it later
        log.warning("could not remove the partial copy of backup %s from %s: %s", backup_id, dest.name, exc)
