"""The lease a writer holds on the set it writes (:data:`~upkeeper.backup.manifest.LEASE`): a backup run's
:class:`~upkeeper.backup.sets.SetWriter`, ``backups copy`` on its destination, ``backups rekey`` for the new set.
Prune keeps an incomplete set whose lease is fresh (:data:`~upkeeper.backup.manifest.LEASE_TTL`), whatever
``incomplete_after`` says, and however long ago its listing saw the set (a prune of many series deletes a leftover
minutes after it listed it: by then its writer may have written the manifest)."""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from upkeeper.backup.manifest import LEASE, LEASE_REFRESH, LEASE_TTL, MANIFEST, READING, set_prefix
from upkeeper.errors import UpkeeperError
from upkeeper.storage import Storage
from upkeeper.storage.base import get_bytes, put_bytes

log = logging.getLogger(__name__)


def writer_info(backup_id: str, started_at: datetime, **extra: Any) -> dict[str, Any]:
    """What a lease says of its writer: the set, this process, when it started, and ``extra`` (the run's job and
    node, the command)."""
    return {"backup": backup_id, "host": socket.gethostname(), "pid": os.getpid(),
            "started_at": started_at.isoformat(), **extra}


def other_writer(storages: Sequence[Storage], prefix: str) -> str | None:
    """Who else holds a fresh lease on the set at ``prefix`` (``host``, ``pid``, what it runs), in words; None when
    no storage shows one.  A lease of this very process, or of a process of this host that is gone (a copy or
    rekey killed, run again), is no one else's.  A lease that cannot be read counts as another writer's."""
    now = datetime.now(UTC)
    for s in storages:
        info = s.stat(prefix + LEASE)
        if info is None or (info.modified is not None and now - info.modified >= LEASE_TTL):
            continue
        try:
            body = json.loads(get_bytes(s, prefix + LEASE))
            host, pid = str(body.get("host")), int(body.get("pid"))
        except (UpkeeperError, ValueError, TypeError, AttributeError):
            return f"a writer whose lease {prefix}{LEASE} on {s.name} cannot be read"
        if host == socket.gethostname() and (pid == os.getpid() or not _alive(pid)):
            continue
        what = body.get("command") or (f"job {body['job']}" if body.get("job") else "a backup run")
        return f"{what} on {host} (pid {pid}), per {prefix}{LEASE} on {s.name}"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    """A set's lease on its storages: written by :meth:`start`, rewritten every ``refresh`` by a thread of its
    own, deleted by :meth:`release`.  Prune leaves the set while the lease is fresh.  Failing to write or delete it
    fails nothing (it is logged): without a fresh lease the set is judged by ``incomplete_after`` as before, and
    the commit still refuses a set that lost an object.

    ``storages``: best opened for the lease alone (its thread then never shares a connection — an SSH session,
    an S3 client — with the uploads running beside it)."""

    what = "lease"
    unprotected = "a prune may take the set for a leftover"

    def __init__(self, storages: Sequence[Storage], key: str, info: dict[str, Any], refresh: timedelta) -> None:
        self.storages = list(storages)
        self.key = key
        self.info = info
        self.refresh = refresh
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def take(cls, storages: Sequence[Storage], prefix: str, info: dict[str, Any], refresh: timedelta) -> Lease:
        """The lease of the set at ``prefix``, started."""
        lease = cls(storages, prefix + LEASE, info, refresh)
        lease.start()
        return lease

    def _write(self) -> None:
        body = json.dumps({**self.info, "refreshed_at": datetime.now(UTC).isoformat()}, sort_keys=True).encode()
        for s in self.storages:
            try:
                put_bytes(s, self.key, body)
            except Exception as exc:
                log.warning("could not write the %s %s on %s (%s): %s", self.what, self.key, s.name, self.unprotected,
                            getattr(exc, "message", exc))

    def _run(self) -> None:
        while not self._stop.wait(self.refresh.total_seconds()):
            self._write()

    def start(self) -> None:
        self._write()
        self._thread = threading.Thread(target=self._run, daemon=True, name="backup-lease")
        self._thread.start()

    def stop(self) -> None:
        """No more refreshes (waits for one under way, so none lands after the lease is deleted)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def release(self) -> None:
        self.stop()
        for s in self.storages:
            try:
                s.delete(self.key)
            except Exception as exc:  # stale within LEASE_TTL; deleted with the set
                log.warning("could not delete the %s %s on %s: %s", self.what, self.key, s.name,
                            getattr(exc, "message", exc))


# Readers.  A verify or a restore reading a complete set holds a marker of its own beside it
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
    lease = ReaderMarker(holding, key, writer_info(backup_id, datetime.now(UTC), command=command, reading=True),
                         refresh)
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
                host, pid = str(body.get("host")), int(body.get("pid"))
            except UpkeeperError:
                if s.stat(o.key) is None:
                    continue  # released since the listing
                out.append(f"a reader whose marker {o.key} on {s.name} cannot be read")
                continue
            except (ValueError, TypeError, AttributeError):
                out.append(f"a reader whose marker {o.key} on {s.name} cannot be read")
                continue
            if host == socket.gethostname() and pid != os.getpid() and not _alive(pid):
                continue
            out.append(f"{body.get('command') or 'a reader'} on {host} (pid {pid}), per {o.key} on {s.name}")
    return out
