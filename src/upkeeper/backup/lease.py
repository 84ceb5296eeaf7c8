"""The lease a writer holds on the set it writes (:data:`~upkeeper.backup.manifest.LEASE`): a backup run's
:class:`~upkeeper.backup.sets.SetWriter`, ``backups copy`` on its destination (also to repair a set complete
there), ``backups rekey`` for the new set, and prune for the moment it deletes a set (a leftover, or by retention).
Prune keeps an incomplete set whose lease is fresh (:data:`~upkeeper.backup.manifest.LEASE_TTL`), whatever
``incomplete_after`` says, and however long ago its listing saw the set (a prune of many series deletes a leftover
minutes after it listed it: by then its writer may have written the manifest).

Taking a lease is one atomic step on each storage (:meth:`~upkeeper.storage.base.Storage.create_exclusive`): of
two hosts that share a storage but not a history database (whose locks keep writers of one host apart), taking
the same set's lease at the same instant, exactly one gets it; the other fails naming the holder.  A stale lease
(not refreshed for ``LEASE_TTL``, or left by a process of this host that is gone) is taken over: the taker first
creates, exclusively too, a *claim* named after that very version of the lease (``.writing.<hash>.takeover``),
so of two takers only one removes it, then takes the lease like a new one.

Prune holds a set's lease (marked :data:`PRUNING`) only while it deletes the set — a leftover, or a complete set
retention lets go: a copy or rekey meeting it waits up to :data:`PRUNE_WAIT` for it to go, rather than fail at
once; any other writer's lease fails them at once.  A prune's lease left by a process of this host that is gone
protects nothing (:func:`protects`): the next prune finishes the deletion."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from upkeeper.backup.manifest import (
    CLAIM_SUFFIX,
    LEASE,
    LEASE_REFRESH,
    LEASE_TTL,
    MANIFEST,
    READING,
    set_prefix,
)
from upkeeper.backup.pipeline import fault_pause
from upkeeper.core.hostid import host_label
from upkeeper.errors import BackupError, UpkeeperError
from upkeeper.storage import Storage
from upkeeper.storage.base import ObjectInfo, get_bytes

log = logging.getLogger(__name__)

#: the tokens of the leases this process holds now: a lease of this very process (its pid) is another thread's
#: while its token is here, and a leftover of an earlier one (its release failed) otherwise
_LIVE: set[str] = set()
_LIVE_LOCK = threading.Lock()
#: attempts to take a lease that is released, or taken over, under our eyes
ROUNDS = 6
#: how long a copy or rekey waits for a prune's lease on the set it would write (:data:`PRUNING`): a prune holds
#: it only while it deletes the set (seconds), and failing at once left a copy for an operator to run again
PRUNE_WAIT = 30.0
PRUNE_POLL = 0.5
#: the key of a lease body saying its holder is a prune deleting the set (a leftover, or by retention)
PRUNING = "pruning"


class LeaseHeld(BackupError):
    """Another writer holds the set's lease (``holder``: who, in words)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def writer_info(backup_id: str, started_at: datetime, **extra: Any) -> dict[str, Any]:
    """What a lease says of its writer: the set, this process, when it started, and ``extra`` (the run's job and
    node, the command)."""
    return {"backup": backup_id, "host": host_label(), "pid": os.getpid(),
            "started_at": started_at.isoformat(), **extra}


@dataclass
class _Seen:
    info: ObjectInfo
    raw: bytes | None  # None: it could not be read
    body: dict[str, Any] | None  # None: not a lease's JSON

    @property
    def version(self) -> str:
        """This very version of the lease (its bytes; its size and time when unreadable)."""
        ident = self.raw if self.raw is not None else f"{self.info.size}-{self.info.modified}".encode()
        return hashlib.sha256(ident).hexdigest()[:16]


def _look(storage: Storage, key: str) -> _Seen | None:
    """The lease at ``key`` as it is now (None: there is none)."""
    info = storage.stat(key)
    if info is None:
        return None
    try:
        raw = get_bytes(storage, key)
    except UpkeeperError:
        if storage.stat(key) is None:
            return None  # released meanwhile
        return _Seen(info, None, None)
    try:
        body = json.loads(raw)
        if not isinstance(body, dict):
            body = None
    except (ValueError, RecursionError):  # (not UTF-8, not JSON, or [[[[… nested too deeply)
        body = None
    return _Seen(info, raw, body)


#: Linux's PID_MAX_LIMIT: no process id of this host is larger
PID_MAX = 4_194_304


def _pid(v: Any) -> int | None:
    """The process id a lease or marker names, None when it names none a process of this host can have (1e999,
    2**64, -1: a damaged lease another tool wrote is no process of ours, and os.kill would not take it)."""
    if isinstance(v, bool):
        return None
    try:
        pid = int(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return pid if 0 < pid <= PID_MAX else None


def _stale(seen: _Seen, now: datetime) -> bool:
    """Protects nothing: not refreshed for LEASE_TTL, or left by a process of this host that is gone (or by this
    process, a lease it no longer holds).  One that cannot be read is another writer's while fresh."""
    if seen.info.modified is not None and now - seen.info.modified >= LEASE_TTL:
        return True
    body = seen.body
    if body is None:
        return False
    host, pid = str(body.get("host")), _pid(body.get("pid"))
    if pid is None:  # (a lease that names no process: another writer's while fresh)
        return False
    if host != host_label():  # (another host, or a container of this one with PIDs of its own)
        return False
    if pid == os.getpid():
        with _LIVE_LOCK:
            return body.get("token") not in _LIVE
    return not _alive(pid)


def _holder(seen: _Seen, key: str, storage: Storage) -> str:
    """Who holds the lease, in words: what it runs, host, pid, node, since when."""
    body = seen.body
    if body is None:
        return f"a writer whose lease {key} on {storage.name} cannot be read"
    what = body.get("command") or (f"job {body['job']}" if body.get("job") else "a backup run")
    if isinstance(body.get("rekeyed_as"), str):  # a rekey deleting the original it re-encrypted
        what = f"{what} (re-encrypted as {body['rekeyed_as']})"
    node = body.get("node")
    extra = f", node {node}" if node and node != body.get("host") else ""
    since = body.get("started_at")
    try:
        extra += f", since {datetime.fromisoformat(str(since)).astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    except (ValueError, OverflowError):  # (OverflowError: 0001-01-01T00:00+01:00, before year 1 in UTC)
        pass
    return f"{what} on {body.get('host')} (pid {body.get('pid')}{extra}), per {key} on {storage.name}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_claim(storage: Storage, claim: str) -> None:
    try:
        storage.delete(claim)
    except UpkeeperError as exc:  # a claim of a version gone is never asked for again; the set's deletion takes it
        log.warning("could not delete the takeover claim %s on %s: %s", claim, storage.name, exc.message)


def _pruning(seen: _Seen) -> bool:
    """Is the lease a prune's, held while it deletes the set?"""
    return seen.body is not None and seen.body.get(PRUNING) is True


def acquire(storage: Storage, key: str, data: bytes, token: str, now: datetime | None = None, *,
            patience: float = 0.0, waiting: Callable[[str], None] | None = None) -> str | None:
    """Take the lease ``key`` on ``storage`` (``data``: this lease, with ``token``): None when taken, else who
    holds it, in words.  A stale lease is taken over (see the module's docstring); ``now``: the time a lease's age
    is judged at (a prune's).  ``patience``: seconds to wait, looking every PRUNE_POLL, while the holder is a prune
    deleting the set (``waiting`` told who), before giving up; another writer's lease is given up on at once."""
    taking_over = False
    deadline: float | None = None
    rounds = 0
    while rounds < ROUNDS:
        rounds += 1
        if taking_over:
            time.sleep(0.2)  # another writer takes the stale lease over (a moment's work): then it is that one's
        fault_pause("lease-take")  # (the tests: two writers that both found no lease, or the same stale one)
        if storage.create_exclusive(key, data):
            return None
        seen = _look(storage, key)
        if seen is None:
            continue  # released meanwhile
        if seen.body is not None and seen.body.get("token") == token:
            return None  # this very lease (a retried PUT found its own first attempt)
        if not _stale(seen, now or datetime.now(UTC)):
            holder = _holder(seen, key, storage)
            if patience > 0 and _pruning(seen):
                if deadline is None:
                    deadline = time.monotonic() + patience
                    if waiting is not None:
                        waiting(f"waiting (up to {patience:g} s) for {holder} to finish")
                if time.monotonic() < deadline:
                    time.sleep(PRUNE_POLL)
                    rounds -= 1  # (not a round lost to writers taking and releasing it)
                    continue
                return f"{holder} (still there after {patience:g} s)"
            return holder
        claim = f"{key}.{seen.version}{CLAIM_SUFFIX}"
        if not storage.create_exclusive(claim, data):
            info = storage.stat(claim)
            if info is not None and info.modified is not None and datetime.now(UTC) - info.modified >= LEASE_TTL:
                _delete_claim(storage, claim)  # its taker died in the middle: take it over next round
            else:
                taking_over = True
            continue
        try:
            again = _look(storage, key)
            if again is not None and again.version == seen.version:  # still that very one: remove it
                if again.raw is not None:  # only while it holds those very bytes (its writer, refreshing it now,
                    storage.delete_if(key, again.raw)  # keeps it: then it is not stale; looked at next round)
                else:
                    storage.delete(key)
        finally:
            _delete_claim(storage, claim)
    if taking_over:
        return f"another writer taking over the stale lease {key} on {storage.name} right now"
    return f"writers taking and releasing the lease {key} on {storage.name} again and again"


def rekeyed_as(storage: Storage, key: str) -> str | None:
    """The backup id a rekey holding the lease ``key`` is deleting its set for (re-encrypted as), else None."""
    try:
        seen = _look(storage, key)
    except UpkeeperError:
        return None
    new = seen.body.get("rekeyed_as") if seen is not None and seen.body is not None else None
    return new if isinstance(new, str) and new else None


def protects(storage: Storage, key: str, now: datetime) -> bool:
    """Does the lease ``key`` on ``storage`` keep a prune off the set: there, refreshed within LEASE_TTL, and not a
    prune's own left by a process of this host that is gone (a prune killed while it deleted the set: the next
    prune finishes the deletion at once; a killed writer's lease still protects its set until stale)."""
    info = storage.stat(key)
    if info is None or (info.modified is not None and now - info.modified >= LEASE_TTL):
        return False
    seen = _look(storage, key)
    if seen is None:
        return False
    return not (_pruning(seen) and _stale(seen, now))


class Lease:
    """A set's lease on its storages: taken by :meth:`start` (atomically, see the module's docstring), rewritten
    every ``refresh`` by a thread of its own (none: ``refresh`` None), deleted by :meth:`release`.  Prune leaves
    the set while the lease is fresh.

    ``strict`` (copy, rekey, prune): a storage error while taking it is raised, and the storages where it was
    taken are released.  Otherwise (a backup run, whose set's id is new) failing to write it fails nothing (it
    is logged): without a fresh lease the set is judged by ``incomplete_after`` as before, and the commit still
    refuses a set that lost an object.  Another writer's fresh lease always raises :class:`LeaseHeld`.

    A refresh rewrites the lease only while it is still this one: one another writer took over (this one was not
    refreshed for LEASE_TTL: a storage unreachable that long) is *lost* (:meth:`check` raises), and never
    written over.

    ``storages``: best opened for the lease alone (its thread then never shares a connection — an SSH session,
    an S3 client — with the uploads running beside it)."""

    what = "lease"
    unprotected = "a prune may take the set for a leftover"

    def __init__(self, storages: Sequence[Storage], key: str, info: dict[str, Any], refresh: timedelta | None,
                 strict: bool = True, patience: float = 0.0, waiting: Callable[[str], None] | None = None) -> None:
        self.storages = list(storages)
        self.patience = patience
        self.waiting = waiting
        self.key = key
        self.token = uuid.uuid4().hex
        self.info = {**info, "token": self.token}
        self.refresh = refresh
        self.strict = strict
        #: who took the lease over, once this one lost it (None: not lost)
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def take(cls, storages: Sequence[Storage], prefix: str, info: dict[str, Any], refresh: timedelta | None,
             *, strict: bool = True, now: datetime | None = None, patience: float = 0.0,
             waiting: Callable[[str], None] | None = None) -> Lease:
        """The lease of the set at ``prefix``, taken (:class:`LeaseHeld` when another writer holds it; ``now``,
        ``patience`` — how long a prune's lease is waited for — and ``waiting``: see :func:`acquire`)."""
        lease = cls(storages, prefix + LEASE, info, refresh, strict, patience, waiting)
        lease.start(now)
        return lease

    def _body(self) -> bytes:
        return json.dumps({**self.info, "refreshed_at": datetime.now(UTC).isoformat()}, sort_keys=True).encode()

    def start(self, now: datetime | None = None) -> None:
        with _LIVE_LOCK:
            _LIVE.add(self.token)
        taken: list[Storage] = []
        for s in self.storages:
            try:
                holder = acquire(s, self.key, self._body(), self.token, now, patience=self.patience,
                                 waiting=self.waiting)
            except UpkeeperError as exc:
                if self.strict:
                    self._give_back(taken)
                    raise
                log.warning("could not write the %s %s on %s (%s): %s", self.what, self.key, s.name,
                            self.unprotected, exc.message)
                continue
            except BaseException:
                self._give_back(taken)
                raise
            if holder is not None:
                self._give_back(taken)
                raise LeaseHeld(holder)
            taken.append(s)
        if self.refresh is not None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="backup-lease")
            self._thread.start()

    def _give_back(self, taken: Sequence[Storage]) -> None:
        for s in taken:
            self._delete(s)
        with _LIVE_LOCK:
            _LIVE.discard(self.token)

    def _refresh_one(self, s: Storage) -> None:
        seen = _look(s, self.key)
        if seen is None:  # never written (the storage failed at the start), or deleted by hand: take it again
            holder = acquire(s, self.key, self._body(), self.token)
        elif seen.body is not None and seen.body.get("token") == self.token and seen.raw is not None:
            fault_pause("lease-refresh")  # (the tests: another writer takes the lease over right now)
            # only over the very bytes just read (S3: If-Match their ETag, atomic; local, SFTP: compared, then
            # renamed into place — a takeover landing in those milliseconds is written over unseen)
            if s.replace_if(self.key, self._body(), seen.raw):
                return
            again = _look(s, self.key)
            if again is None:  # deleted meanwhile: take it again (one taking it over at once wins, atomically)
                holder = acquire(s, self.key, self._body(), self.token)
            elif again.body is not None and again.body.get("token") == self.token:
                return  # (still ours: rewritten by a retried request)
            else:
                holder = _holder(again, self.key, s)
        else:
            holder = _holder(seen, self.key, s)
        if holder is not None:
            self.lost = holder
            log.warning("the lease %s on %s was taken over by %s (not refreshed for %s?): this writer will not "
                        "commit the set", self.key, s.name, holder, LEASE_TTL)

    def _write(self) -> None:
        for s in self.storages:
            if self.lost is not None:
                return
            try:
                self._refresh_one(s)
            except Exception as exc:
                log.warning("could not refresh the %s %s on %s (%s): %s", self.what, self.key, s.name,
                            self.unprotected, getattr(exc, "message", exc))

    def _run(self) -> None:
        assert self.refresh is not None
        while not self._stop.wait(self.refresh.total_seconds()) and self.lost is None:
            self._write()

    def check(self) -> None:
        """Raise when the lease was lost to another writer (before a manifest is written)."""
        if self.lost is not None:
            raise BackupError(f"the lease {self.key} was taken over by {self.lost} while this writer worked (it "
                              f"could not refresh it for {int(LEASE_TTL.total_seconds() // 60)} minutes); the set "
                              "was not committed", "Try: run it again once that writer is done")

    def stop(self) -> None:
        """No more refreshes (waits for one under way, so none lands after the lease is deleted)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _delete(self, s: Storage) -> None:
        """Delete the lease on ``s`` if it is still this one (one another writer took over stays): only while it
        holds the very bytes read (:meth:`~upkeeper.storage.base.Storage.delete_if`) — a look then a delete
        deleted the lease of a writer that took it over between the two, and a prune then took the set that writer
        was writing for a leftover."""
        try:
            seen = _look(s, self.key)
            if (seen is not None and seen.raw is not None and seen.body is not None
                    and seen.body.get("token") == self.token and not s.delete_if(self.key, seen.raw)):
                log.info("the %s %s on %s changed as it was released (taken over by another writer?): it "
                         "is left as it is", self.what, self.key, s.name)
        except Exception as exc:  # stale within LEASE_TTL; deleted with the set
            log.warning("could not delete the %s %s on %s: %s", self.what, self.key, s.name,
                        getattr(exc, "message", exc))

    def release(self) -> None:
        self.stop()
        for s in self.storages:
            self._delete(s)
        with _LIVE_LOCK:
            _LIVE.discard(self.token)


# Readers.  A verify, a restore or a copy (on its sources) reading a complete set holds a marker of its own beside it
# (``<prefix>.reading-<host>-<pid>-<random>``, the same JSON as a lease, refreshed the same way), written before it
# reads the manifest and deleted when it is done.  Deleting a complete set while someone reads it made a verify fail
# (a good backup marked verify-failed, a false alarm) and a restore fail midway: ``backups rekey`` waits for the
# readers of the original before deleting it, and retention keeps a set being read (deleted by a later prune).


class ReaderMarker(Lease):
    what = "reader's marker"
    unprotected = "a rekey or prune elsewhere may delete the set while it is read"


def take_reader(storages: Sequence[Storage], target: str, database: str, backup_id: str, command: str,
                lease_on: Mapping[str, Storage] | None = None, refresh: timedelta = LEASE_REFRESH) -> Lease | None:
    """A reader's marker on every storage of ``storages`` holding the set (by its manifest), refreshed from
    ``lease_on`` (the storages opened again, by name; default: ``storages``); None when none holds it.  A storage
    that cannot be asked is left out, one that refuses the write (read-only credentials) logged: the reading goes
    on without the marker there."""
    prefix = set_prefix(target, database, backup_id)
    holding = []
    for s in storages:
        try:
            if s.stat(prefix + MANIFEST) is not None:
                holding.append((lease_on or {}).get(s.name, s))
        except UpkeeperError:
            continue  # the reading itself says what is wrong with this storage
    if not holding:
        return None
    key = f"{prefix}{READING}{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    # a key of its own (no other reader or writer takes it): taking it never waits, and a storage that refuses the
    # write only goes without the marker (strict=False)
    lease = ReaderMarker(holding, key, writer_info(backup_id, datetime.now(UTC), command=command, reading=True),
                         refresh, strict=False)
    lease.start()
    return lease


def readers(storages: Sequence[Storage], target: str, database: str, backup_id: str) -> list[str]:
    """Who reads the set now, in words (``backups verify on HOST (pid N), per KEY on STORAGE``): every fresh
    reader's marker on ``storages`` but those of processes of this host that are gone.  A marker that cannot be
    read counts (a reader unknown)."""
    prefix = set_prefix(target, database, backup_id)
    now = datetime.now(UTC)
    out: list[str] = []
    for s in storages:
        for o in s.list(prefix):
            if not o.key.removeprefix(prefix).startswith(READING):
                continue
            if o.modified is not None and now - o.modified >= LEASE_TTL:
                continue
            try:
                body = json.loads(get_bytes(s, o.key))
                host, pid = str(body.get("host")), _pid(body.get("pid"))
                if pid is None:
                    raise ValueError("no process id")
            except UpkeeperError:
                if s.stat(o.key) is None:
                    continue  # released since the listing
                out.append(f"a reader whose marker {o.key} on {s.name} cannot be read")
                continue
            except (ValueError, TypeError, AttributeError, RecursionError):
                out.append(f"a reader whose marker {o.key} on {s.name} cannot be read")
                continue
            if host == host_label() and pid != os.getpid() and not _alive(pid):
                continue
            out.append(f"{body.get('command') or 'a reader'} on {host} (pid {pid}), per {o.key} on {s.name}")
    return out
