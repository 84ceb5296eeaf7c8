"""Re-encrypting complete backups to the keys configured now (``upkeeper backups rekey``).

After a key is compromised or its holder leaves, every backup made for it must be encrypted again so that
the old key can be destroyed.  Each object streams from storage through its SHA-256 check into
``age --decrypt`` (the old key), whose output goes straight into ``age --encrypt`` (the configured recipients
or passphrase) by an OS pipe — no decompression, no plaintext on disk or in this process — and on to every
storage that holds the backup.

The re-encrypted data is a **new set** with an id of its own (the old id's time, a suffix derived from the
old id and the new recipients, so a second run finds the first run's work), written as a backup is: objects,
then ``manifest.json`` (recording ``rekeyed_from``) as the commit marker, then its catalog row — holding the new
set's lease meanwhile (:mod:`upkeeper.backup.lease`), so that no prune takes it for a leftover, and a reader's
marker beside the old set (:func:`upkeeper.backup.lease.take_reader`), so that no prune's retention deletes the
original while it is read (the rekey failed midway, an object 'could not be read intact'); only then is
the old set deleted (its manifest first) from every storage and its catalog row removed.  A crash at any
point leaves the old set complete, or the new one, or both — never neither — and running ``rekey`` again
finishes the job.  While both exist, retention never deletes the old set in favour of the new one's
duplicate (:func:`upkeeper.backup.prune.prune_series` keeps it, saying why).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from upkeeper.backup.catalog import Catalog
from upkeeper.backup.crypto import AgeProcess, Encryption, identity_public_keys
from upkeeper.backup.lease import PRUNE_WAIT, Lease, LeaseHeld, protects, readers, take_reader, writer_info
from upkeeper.backup.manifest import (
    ID_RE,
    LEASE,
    LEASE_REFRESH,
    MANIFEST,
    Manifest,
    check_objects_stored,
    delete_set,
    read_manifest,
    set_prefix,
    write_manifest,
)
from upkeeper.backup.pipeline import (
    AGE_KEY_REJECTED,
    CHUNK,
    FanOut,
    ObjectRecord,
    check_digest,
    fault_pause,
)
from upkeeper.errors import BackupError, ProcessError, UpkeeperError
from upkeeper.shield import shielded
from upkeeper.storage import Storage

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

REKEYED = "rekeyed"
CURRENT = "already current"
WOULD_REKEY = "would rekey"
FINISHED = "finished"  # a stopped rekey's new set was complete: only the old one's removal was left
FAILED = "failed"
READER_POLL = 2.0  # seconds between two looks at the readers of a set rekey is about to delete


@dataclass(frozen=True)
class OldKey:
    """How the backups to re-encrypt are opened: age identity files, or the passphrase they were made with."""

    identity_files: tuple[str, ...] = ()
    passphrase: str | None = field(default=None, repr=False)

    def argv(self, age: str, method: str) -> tuple[list[str], str | None]:
        """``age --decrypt`` for an object encrypted with ``method``, and the passphrase to type (age refuses
        identities for a passphrase-encrypted file)."""
        if method == "age-scrypt":
            return [age, "--decrypt"], self.passphrase
        argv = [age, "--decrypt"]
        for ident in self.identity_files:
            argv += ["-i", ident]
        return argv, None


@dataclass
class RekeyReport:
    id: str
    target: str
    database: str
    action: str = FAILED
    new_id: str | None = None
    storages: list[str] = field(default_factory=list)
    objects: int = 0
    bytes: int = 0
    error: str | None = None
    hint: str | None = None
    object: str | None = None
    notes: list[str] = field(default_factory=list)
    #: the new set is complete and recorded, the original deleted where it was found (also when the report then
    #: fails: a copy of the original found elsewhere, :func:`_copied_meanwhile`)
    replaced: bool = False

    @property
    def ok(self) -> bool:
        return self.action != FAILED

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "new_id": self.new_id, "target": self.target, "database": self.database,
                "action": self.action, "ok": self.ok, "storages": self.storages, "objects": self.objects,
                "bytes": self.bytes, "error": self.error, "hint": self.hint, "object": self.object,
                "notes": self.notes}


class RekeyFailed(BackupError):
    def __init__(self, message: str, hint: str | None = None, object_name: str | None = None) -> None:
        super().__init__(message, hint)
        self.object_name = object_name


def rekeyed_id(old_id: str, new: Encryption) -> str:
    """The id of ``old_id`` re-encrypted for ``new``: the old id's time (retention and listings order it as the
    original), and a suffix both runs of an interrupted rekey agree on."""
    m = ID_RE.match(old_id)
    stamp = m.group(1) if m else old_id
    salt = 0
    while True:
        basis = "\0".join(["upkeeper-rekey", old_id, new.mode, *sorted(new.recipients), str(salt)])
        candidate = f"{stamp}-{hashlib.sha256(basis.encode()).hexdigest()[:6]}"
        if candidate != old_id:
            return candidate
        salt += 1


def encryption_info(enc: Encryption) -> dict[str, Any]:
    info: dict[str, Any] = {"method": enc.label, "tool": "age"}
    if enc.recipients:
        info["recipients"] = list(enc.recipients)
    return info


def is_current(manifest: Manifest, new: Encryption, storage: Storage | None = None, age: str = "age") -> bool:
    """Is the set encrypted to exactly the configured recipients already?  A passphrase cannot be told from
    the manifest: a passphrase set is current when the configured passphrase opens the header of each of its
    objects on ``storage`` (one scrypt each, no payload read; without ``storage`` it is never current)."""
    if manifest.encryption.get("method") != new.label or any(o.encryption != new.label for o in manifest.objects):
        return False
    if new.mode == "passphrase":
        return storage is not None and new.passphrase is not None and all(
            _passphrase_opens(storage, set_prefix(manifest.target, manifest.database, manifest.id) + o.name,
                              new.passphrase, age) for o in manifest.objects)
    return set(map(str, manifest.encryption.get("recipients") or [])) == set(new.recipients)


AGE_HEADER_MAX = 64 * 1024


def _age_header(fh: IO[bytes]) -> bytes | None:
    """The age header at the start of ``fh``: up to and including its ``--- MAC`` line."""
    buf = b""
    while len(buf) <= AGE_HEADER_MAX:
        start = buf.find(b"\n--- ")
        end = buf.find(b"\n", start + 1) if start >= 0 else -1
        if end >= 0:
            return buf[: end + 1]
        chunk = fh.read(4096)
        if not chunk:
            return None
        buf += chunk
    return None


def _passphrase_opens(storage: Storage, key: str, passphrase: str, age: str) -> bool:
    """Does ``passphrase`` open the age header of object ``key``?  Only the header goes to ``age --decrypt``
    (the passphrase typed on its terminal, never in argv), so it stops at the payload's nonce when the
    passphrase is right, and no plaintext is ever produced.  False whenever it cannot be told."""
    try:
        with storage.open_read(key) as fh:
            header = _age_header(fh)
    except UpkeeperError:
        return False
    if header is None:
        return False
    proc = AgeProcess([age, "--decrypt"], passphrase, stdout=subprocess.DEVNULL)
    try:
        with contextlib.suppress(OSError):
            proc.stdin.write(header)
            proc.stdin.close()
        try:
            proc.wait()
        except ProcessError as exc:
            # past the header (its MAC checked with the file key the passphrase unwrapped), age wants the payload
            return not any(m in exc.stderr for m in AGE_KEY_REJECTED) and "nonce" in exc.stderr
        return False  # a header alone is not a whole file: age succeeding on it is not understood
    finally:
        proc.close()


def rekey_set(storages: Sequence[Storage], target: str, database: str, backup_id: str, *,
              recorded_sha256: str | None, catalog_storages: Sequence[str], old_key: OldKey, new: Encryption,
              age: str, catalog: Catalog | None, dry_run: bool = False,
              progress: Progress | None = None, lease_on: Mapping[str, Storage] | None = None,
              lease_refresh: timedelta = LEASE_REFRESH, reader_on: Mapping[str, Storage] | None = None
              ) -> RekeyReport:
    """Re-encrypt one set on every storage of ``storages`` that holds it.  Never raises for a problem of this set
    (the report says ``failed``, naming the object).  ``lease_on``: the storages opened again, by name, for the
    new set's lease's refresh thread (default: those of ``storages``); ``reader_on``: opened again once more, for
    the refresh of the reader's marker beside the original while it is read (default: ``lease_on``)."""
    report = RekeyReport(backup_id, target, database)
    try:
        _rekey(report, storages, recorded_sha256, catalog_storages, old_key, new, age, catalog, dry_run,
               progress or (lambda _msg: None), lease_on or {}, lease_refresh, reader_on or lease_on or {})
    except UpkeeperError as exc:
        report.action = FAILED
        report.error = exc.message
        report.hint = exc.hint
        report.object = getattr(exc, "object_name", None)
    return report


def _rekey(report: RekeyReport, storages: Sequence[Storage], recorded: str | None, catalog_storages: Sequence[str],
           old_key: OldKey, new: Encryption, age: str, catalog: Catalog | None, dry_run: bool,
           progress: Progress, lease_on: Mapping[str, Storage], lease_refresh: timedelta,
           reader_on: Mapping[str, Storage]) -> None:
    target, database, old_id = report.target, report.database, report.id
    missing = sorted(set(catalog_storages) - {s.name for s in storages})
    if missing:
        raise RekeyFailed(f"backup {old_id} is also on {', '.join(missing)}, which this config does not have: "
                          "re-encrypting it elsewhere would leave a copy for the old key there",
                          "Try: add that storage under 'storages:' (or run rekey with the config that has it)")
    old_prefix = set_prefix(target, database, old_id)
    holders = _holding(storages, old_prefix)
    new_id = rekeyed_id(old_id, new)
    report.new_id = new_id
    new_prefix = set_prefix(target, database, new_id)
    if not holders:  # a stopped rekey deleted the old set everywhere: its catalog row may remain
        done = _holding(storages, new_prefix)
        if not done:
            raise RekeyFailed(f"no storage holds backup {old_id}", "Try: 'upkeeper backups sync'", MANIFEST)
        new_manifest = _read_rekeyed(done[0], new_prefix, old_id)
        report.storages = [s.name for s in done]
        if not dry_run:
            _finish(report, done, [], new_manifest, catalog, progress, lease_on, lease_refresh)
        report.action = FINISHED if not dry_run else WOULD_REKEY
        return
    manifest = _old_manifest(holders, old_prefix, recorded, old_id)
    report.storages = [s.name for s in holders]
    if is_current(manifest, new, holders[0], age):
        report.action = CURRENT
        report.new_id = None
        return
    _check_key(manifest, old_key)
    done = _holding(holders, new_prefix)
    if len(done) == len(holders):  # a stopped run wrote it everywhere: only the rest is left
        new_manifest = _read_rekeyed(done[0], new_prefix, old_id)
        if not _matches(new_manifest, new) or (new.mode == "passphrase"
                                                and not is_current(new_manifest, new, done[0], age)):
            raise RekeyFailed(f"backup {new_id}, a re-encryption of {old_id} a stopped rekey left, is encrypted "
                              "to other recipients (or another passphrase) than those configured now",
                              f"Try: check backup -> encryption; to start over, delete {new_prefix} "
                              "from each storage (the original is complete beside it)", MANIFEST)
        if dry_run:
            report.action = WOULD_REKEY
            return
        _finish(report, holders, holders, new_manifest, catalog, progress, lease_on, lease_refresh)
        report.action = FINISHED
        _copied_meanwhile(report, [s for s in storages if s not in holders])
        return
    if dry_run:
        report.action = WOULD_REKEY
        report.bytes = manifest.size
        return
    # a reader's marker beside the original while it is read (as a copy's): a prune's retention keeps it meanwhile.
    # Released once the new set is complete (then retention keeps the original for it, and _finish, waiting for
    # the readers of the original, must not wait for this one)
    reading = take_reader(holders, target, database, old_id, "backups rekey", reader_on, lease_refresh)
    try:
        gone = [s.name for s in holders if s not in _holding(holders, old_prefix)]
        if gone:  # a prune deleted it between our look and our marker
            raise RekeyFailed(f"backup {old_id} was deleted from {', '.join(gone)} (by a prune?) as the rekey "
                              "started; nothing was changed", "Try: 'upkeeper backups sync', then rekey it again if "
                              "it is still listed", MANIFEST)
        new_manifest = _write_new(report, holders, manifest, done, old_key, new, age, catalog, progress, lease_on,
                                  lease_refresh)
    finally:
        if reading is not None:
            reading.release()
    _finish(report, holders, holders, new_manifest, catalog, progress, lease_on, lease_refresh)
    report.action = REKEYED
    _copied_meanwhile(report, [s for s in storages if s not in holders])


def _copied_meanwhile(report: RekeyReport, others: Sequence[Storage]) -> None:
    """The original deleted where rekey found it: does another storage of this config hold it now — copied there
    while rekey worked, by a ``backups copy`` of another host (no history lock shared), complete or being written?
    That copy is whole and still for the old key: rekey said 'rekeyed', and the key about to be destroyed still
    opened a copy of the backup.  Raised as a failure naming it (the re-encryption is complete and recorded)."""
    prefix = set_prefix(report.target, report.database, report.id)
    now = datetime.now(UTC)
    found: list[str] = []
    for s in others:
        try:
            if s.stat(prefix + MANIFEST) is not None:
                found.append(s.name)
            elif protects(s, prefix + LEASE, now):
                found.append(f"{s.name} (being written there)")
        except UpkeeperError as exc:
            found.append(f"{s.name} (cannot tell: {exc.message})")
    if found:
        raise RekeyFailed(f"backup {report.id} was re-encrypted as {report.new_id} and deleted from "
                          f"{', '.join(report.storages)}, but {', '.join(found)} holds backup {report.id} too — copied "
                          "there meanwhile (by another host?), still encrypted to the old key",
                          f"Try: once that copy is done, 'upkeeper backups sync', then 'upkeeper backups rekey "
                          f"{report.id}' (it re-encrypts that copy); keep the old key until then")


def _write_new(report: RekeyReport, holders: Sequence[Storage], manifest: Manifest, done: Sequence[Storage],
               old_key: OldKey, new: Encryption, age: str, catalog: Catalog | None, progress: Progress,
               lease_on: Mapping[str, Storage], lease_refresh: timedelta) -> Manifest:
    """The new set, written (objects, then manifest) under its lease on every storage of ``holders``."""
    target, database, old_id, new_id = report.target, report.database, report.id, report.new_id
    assert new_id is not None
    old_prefix, new_prefix = set_prefix(target, database, old_id), set_prefix(target, database, new_id)
    # taken in one step on each storage, before anything is deleted or written: of two hosts sharing the storages
    # but not the history database (whose locks keep two rekeys of one backup apart), one gets it, the other fails
    try:
        lease = Lease.take([lease_on.get(s.name, s) for s in holders], new_prefix,
                           writer_info(new_id, datetime.now(UTC), command="backups rekey", rekeying=old_id),
                           lease_refresh, patience=PRUNE_WAIT, waiting=progress)  # (a prune's: waited for a moment)
    except LeaseHeld as held:
        raise RekeyFailed(f"backup {new_id}, the re-encryption of {old_id}, is being written by {held.holder}; "
                          "nothing was changed", "Try: rekey it again once that is done (a lease its writer stopped "
                          "refreshing is stale after 30 minutes)", LEASE) from None
    try:
        if [s.name for s in _holding(holders, new_prefix)] != [s.name for s in done]:
            # another host's rekey completed it between our look and our lease (and now deletes the original)
            raise RekeyFailed(f"backup {new_id}, the re-encryption of {old_id}, was written by another rekey "
                              "meanwhile; nothing was changed", f"Try: 'upkeeper backups sync', then rekey "
                              f"{old_id} again if it is still listed", MANIFEST)
        for s in holders:  # a stopped run's partial (or, where complete, unused) new set: the original is complete
            delete_set(s, target, database, new_id, keep_lease=True)
    except BaseException:
        lease.release()
        raise
    if done and catalog is not None:
        catalog.remove(new_id)  # its row, if a stopped run got that far, records the manifest deleted just now
    objects: list[ObjectRecord] = []
    try:
        for rec in manifest.objects:
            progress(f"{rec.name}: re-encrypting")
            objects.append(_rekey_object(holders, old_prefix + rec.name, new_prefix + rec.name, rec, old_key, new,
                                         age))
            report.objects += 1
            report.bytes += objects[-1].size
        new_manifest = replace(manifest, id=new_id, objects=objects, encryption=encryption_info(new),
                               rekeyed_from=old_id, sha256=None)
        fault_pause("before-manifest")
        check_objects_stored(holders, new_manifest)
        lease.check()
        write_manifest(holders, new_manifest)
    except BaseException:
        with shielded():  # a stop arriving meanwhile waits for it (upkeeper.shield)
            lease.stop()  # (no refresh may write it again as the set is removed)
            for s in holders if lease.lost is None else []:  # (a set another writer took over is its own)
                try:
                    if s.stat(new_prefix + MANIFEST) is None:
                        delete_set(s, target, database, new_id, keep_lease=True)
                except Exception as exc:  # an incomplete set is never listed; prune cleans it later
                    log.warning("could not remove the partial re-encryption of %s from %s: %s", old_id, s.name,
                                exc)
            lease.release()  # last: no other writer may start on the set while it is removed
        raise
    lease.release()  # after the manifest: the set is never without one or the other
    return new_manifest


def _finish(report: RekeyReport, new_on: Sequence[Storage], old_on: Sequence[Storage], new_manifest: Manifest,
            catalog: Catalog | None, progress: Progress, lease_on: Mapping[str, Storage],
            lease_refresh: timedelta) -> None:
    """The new set is complete on ``new_on``: record it, then — holding the old one's lease on each storage of
    ``old_on`` (waiting while another writer holds it: a ``backups copy`` of another host repairing it there), and
    once no verify, restore or copy reads it — delete the old one (manifest first), then its row."""
    if catalog is not None:
        catalog.record(new_manifest, [s.name for s in new_on])
    fault_pause("before-delete")
    leases = _take_old(old_on, report, progress, lease_on, lease_refresh)
    try:
        _wait_for_readers(old_on, report, progress)
        for lease in leases:
            if lease.lost is not None:
                raise RekeyFailed(f"backup {report.new_id} is complete; the original {report.id} was kept: its lease "
                                  f"was taken over by {lease.lost} while rekey waited to delete it",
                                  "Try: 'upkeeper backups rekey' again once that is done (it deletes the original)")
        for s in old_on:
            delete_set(s, report.target, report.database, report.id, keep_lease=True)
    finally:
        for lease in leases:
            lease.release()  # last: the original's remains are never without it
    if catalog is not None:
        catalog.remove(report.id)
    report.replaced = True


def _take_old(old_on: Sequence[Storage], report: RekeyReport, progress: Progress, lease_on: Mapping[str, Storage],
              refresh: timedelta) -> list[Lease]:
    """The original's lease on each storage of ``old_on``, taken to delete it, as a prune's retention does: a copy
    of another host (no history lock shared) repairing the set there holds it; deleting the set under that repair
    left the repaired object behind as a leftover, and the copy saying 'repaired' of a set gone.  Waits while
    another writer holds it (a stale one is taken over, after 30 minutes)."""
    prefix = set_prefix(report.target, report.database, report.id)
    taken: list[Lease] = []
    said: str | None = None
    try:
        for s in old_on:
            while True:
                try:
                    taken.append(Lease.take([lease_on.get(s.name, s)], prefix, writer_info(
                        report.id, datetime.now(UTC), command="backups rekey", deleting=True,
                        rekeyed_as=report.new_id), refresh, patience=PRUNE_WAIT, waiting=progress))
                    break
                except LeaseHeld as held:
                    if held.holder != said:
                        said = held.holder
                        log.warning("backup %s: waiting to delete it (re-encrypted as %s) until %s is done",
                                    report.id, report.new_id, held.holder)
                        progress(f"waiting for {held.holder} to finish writing the original before deleting it")
                    time.sleep(READER_POLL)
                except UpkeeperError as exc:
                    raise RekeyFailed(f"backup {report.new_id} is complete; the original {report.id} was kept: "
                                      f"cannot take its lease on {s.name} to delete it: {exc.message}",
                                      "Try: 'upkeeper backups rekey' again (it deletes the original)") from None
    except BaseException:
        for lease in taken:
            lease.release()
        raise
    return taken


def _wait_for_readers(storages: Sequence[Storage], report: RekeyReport, progress: Progress) -> None:
    """Wait while a verify or restore reads the old set (:func:`upkeeper.backup.lease.readers`): deleting it
    under a verify failed that verify — a good backup marked verify-failed, a false alarm — and a restore midway.
    The new set is complete and recorded meanwhile; stopped here, rekey run again finishes."""
    said: list[str] = []
    while True:
        try:
            now = readers(storages, report.target, report.database, report.id)
        except UpkeeperError as exc:
            raise RekeyFailed(f"backup {report.new_id} is complete; the original {report.id} was kept: cannot "
                              f"tell whether a verify or restore reads it: {exc.message}",
                              "Try: 'upkeeper backups rekey' again (it deletes the original)") from None
        if not now:
            return
        if now != said:
            log.warning("backup %s: waiting to delete it (re-encrypted as %s) until %s is done", report.id,
                        report.new_id, "; ".join(now))
            said = now
            progress(f"waiting for {'; '.join(now)} to finish reading the original before deleting it")
        time.sleep(READER_POLL)


def _holding(storages: Sequence[Storage], prefix: str) -> list[Storage]:
    """The storages with ``prefix``'s manifest (a storage that cannot be asked fails the set: it may hold one)."""
    out = []
    for s in storages:
        try:
            if s.stat(prefix + MANIFEST) is not None:
                out.append(s)
        except UpkeeperError as exc:
            raise RekeyFailed(f"storage {s.name}: {exc.message}", exc.hint) from None
    return out


def _old_manifest(holders: Sequence[Storage], prefix: str, recorded: str | None, backup_id: str) -> Manifest:
    """The set's manifest, the same on every storage holding it and the one the catalog recorded."""
    found: Manifest | None = None
    for s in holders:
        m = read_manifest(s, prefix)
        if recorded and m.sha256 != recorded:
            raise RekeyFailed(f"{s.name}: {MANIFEST} of backup {backup_id} is not the one recorded when it was "
                              f"written (SHA-256 {(m.sha256 or '')[:16]}…, recorded {recorded[:16]}…); left as it is",
                              f"Try: 'upkeeper backups verify {backup_id} --storage {s.name}'", MANIFEST)
        if found is not None and m.sha256 != found.sha256:
            raise RekeyFailed(f"backup {backup_id} has different {MANIFEST} files on {holders[0].name} and "
                              f"{s.name}; left as it is", f"Try: 'upkeeper backups verify {backup_id}' on each",
                              MANIFEST)
        found = found or m
    assert found is not None
    return found


def _read_rekeyed(storage: Storage, prefix: str, old_id: str) -> Manifest:
    m = read_manifest(storage, prefix)
    if m.rekeyed_from != old_id:
        raise RekeyFailed(f"{storage.name}: {prefix}{MANIFEST} exists but is not a re-encryption of {old_id}; "
                          "nothing was changed", f"Try: 'upkeeper backups show {m.id}'", MANIFEST)
    return m


def _matches(m: Manifest, new: Encryption) -> bool:
    return m.encryption.get("method") == new.label and (
        new.mode != "x25519" or set(map(str, m.encryption.get("recipients") or [])) == set(new.recipients))


def _check_key(manifest: Manifest, old_key: OldKey) -> None:
    """The old key must open the set: said before anything is written (age would say it on the first object)."""
    methods = {o.encryption for o in manifest.objects} - {"none"}
    if "age-scrypt" in methods and old_key.passphrase is None:
        raise RekeyFailed(f"backup {manifest.id} was made with a passphrase, and no old passphrase is given",
                          "Try: --passphrase-file FILE holding the passphrase it was made with")
    if "age-x25519" in methods:
        if not old_key.identity_files:
            raise RekeyFailed(f"backup {manifest.id} is encrypted to age keys, and no identity is given",
                              "Try: --identity OLD_KEY_FILE (or backup -> encryption -> identity_file)")
        recipients = {str(r) for r in manifest.encryption.get("recipients") or []}
        ours: set[str] = set()
        for ident in old_key.identity_files:
            keys = identity_public_keys(ident)
            if keys is None:
                return  # SSH or plugin identities: age will tell
            ours |= set(keys)
        if recipients and not ours & recipients:
            raise RekeyFailed(f"backup {manifest.id} is encrypted to {', '.join(sorted(recipients))}; the identity "
                              f"given ({', '.join(old_key.identity_files)}) holds none of their keys",
                              "Try: --identity with the private key the backup was made for")


def _rekey_object(holders: Sequence[Storage], old_key_name: str, new_key_name: str, rec: ObjectRecord,
                  old_key: OldKey, new: Encryption, age: str) -> ObjectRecord:
    """One object, from the first holder whose copy matches the manifest, re-encrypted onto every holder."""
    problems: list[str] = []
    for source in holders:
        try:
            size, sha = _stream(source, holders, old_key_name, new_key_name, rec, old_key, new, age)
        except _SourceBad as exc:
            problems.append(f"{source.name}: {exc.message}")
            continue
        return ObjectRecord(name=rec.name, size=size, sha256=sha, raw_size=rec.raw_size,
                            compression=rec.compression, encryption=new.label, role=rec.role, extra=dict(rec.extra))
    raise RekeyFailed(f"object {rec.name} could not be read intact from any storage ({'; '.join(problems)}); "
                      "nothing was changed", f"Try: 'upkeeper backups verify {old_key_name.split('/')[2]}'",
                      rec.name)


class _SourceBad(BackupError):
    """This storage's copy of the object is damaged or unreadable: another storage's may do."""


def _stream(source: Storage, holders: Sequence[Storage], old_name: str, new_name: str, rec: ObjectRecord,
            old_key: OldKey, new: Encryption, age: str) -> tuple[int, str]:
    """storage → SHA-256 check → age --decrypt → (pipe) → age --encrypt → every holder, committed only when the
    source matched the manifest and both age processes succeeded."""
    sink = FanOut(holders, new_name)
    dec: AgeProcess | None = None
    enc: AgeProcess | None = None
    sha = hashlib.sha256()
    size = 0
    feed_error: list[BaseException] = []
    abandoned = threading.Event()
    try:
        if rec.encryption != "none":
            dec = AgeProcess(*old_key.argv(age, rec.encryption))
            enc = AgeProcess(new.argv(), new.passphrase, confirm=True, stdin=dec.stdout)
            dec.stdout.close()  # age --encrypt holds the pipe now: its death must break age --decrypt's output
            into = dec.stdin
        else:
            enc = AgeProcess(new.argv(), new.passphrase, confirm=True)
            into = enc.stdin

        def feed() -> None:
            nonlocal size
            broken = False
            try:
                with source.open_read(old_name) as fh:
                    while chunk := fh.read(CHUNK):
                        if abandoned.is_set():
                            return
                        sha.update(chunk)
                        size += len(chunk)
                        if not broken:
                            try:
                                into.write(chunk)
                            except (BrokenPipeError, OSError):
                                broken = True  # keep hashing: a damaged object is named as such
            except BaseException as exc:
                feed_error.append(exc)
            finally:
                with contextlib.suppress(OSError):
                    into.close()

        t = threading.Thread(target=feed, daemon=True, name="rekey-feed")
        t.start()
        try:
            while chunk := enc.stdout.read(CHUNK):
                sink.write(chunk)
        except BaseException:
            abandoned.set()
            for p in (dec, enc):
                if p is not None:
                    p.kill()
            raise
        finally:
            t.join()
        if feed_error:
            exc = feed_error[0]
            raise _SourceBad(exc.message if isinstance(exc, UpkeeperError) else f"cannot read {old_name}: {exc}")
        try:
            check_digest(rec, sha.hexdigest(), size)
        except BackupError as exc:
            raise _SourceBad(exc.message) from None
        if dec is not None:
            try:
                dec.wait()
            except UpkeeperError as exc:
                rejected = any(m in getattr(exc, "stderr", "") for m in AGE_KEY_REJECTED)
                raise RekeyFailed(f"object {rec.name}: decryption failed: {exc.message}",
                                  "Try: --identity (or --passphrase-file) with the key the backup was made with"
                                  if rejected else None, rec.name) from None
        enc.wait()
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    finally:
        for p in (dec, enc):
            if p is not None:
                p.close()
    return sink.size, sink.sha.hexdigest()
