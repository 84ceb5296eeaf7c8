"""Writing one backup set, and the environment every backup task shares (storages, encryption, catalog)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from upkeeper.backup.crypto import Encryption, encryption_from
from upkeeper.backup.lease import Lease, writer_info
from upkeeper.backup.manifest import (
    LEASE,
    LEASE_REFRESH,
    READING,
    Manifest,
    check_objects_stored,
    delete_set,
    new_backup_id,
    set_prefix,
    write_manifest,
)
from upkeeper.backup.pipeline import ObjectRecord, ObjectUpload, fault_pause
from upkeeper.config.backup import UNENCRYPTED_REMOTE_HINT, BackupSettings, unencrypted_remote
from upkeeper.config.models import Config
from upkeeper.errors import BackupError, TaskError
from upkeeper.shield import shielded
from upkeeper.storage import Storage, open_storage

if TYPE_CHECKING:  # only the tasks that open a catalog load it
    from upkeeper.backup.catalog import Catalog

log = logging.getLogger(__name__)


def storage_names(config: Config, names: Sequence[str] | None) -> list[str]:
    """The storages a backup goes to: ``names``, else ``backup.storages``, else every configured storage."""
    wanted = list(names) if names else (config.backup.storages or list(config.storages))
    if not wanted:
        raise TaskError("no storage configured for backups",
                        "Try: add an entry under 'storages:' (e.g. kind: local, path: /var/backups/upkeeper)",
                        permanent=True)
    unknown = [n for n in wanted if n not in config.storages]
    if unknown:
        raise TaskError(f"unknown storage {unknown[0]!r}",
                        "Try: one of " + (", ".join(sorted(config.storages)) or "(none defined under 'storages')"),
                        permanent=True)
    return list(dict.fromkeys(wanted))


def open_storages(config: Config, names: Sequence[str] | None) -> list[Storage]:
    opened: list[Storage] = []
    try:
        for n in storage_names(config, names):
            opened.append(open_storage(n, config.storages[n]))
    except BaseException:
        close_storages(opened)
        raise
    return opened


def close_storages(storages: Sequence[Storage]) -> None:
    for s in storages:
        with contextlib.suppress(Exception):
            s.close()


def check_encryption(config: Config, names: Sequence[str]) -> Encryption | None:
    """age settings for the pipeline; refuse remote storage without encryption unless ``encryption: none``.
    Config load already refuses such jobs (``config_problems``); this guards every other way in."""
    enc = encryption_from(config.backup)
    remote = unencrypted_remote(config, names) if enc is None else []
    if remote:
        raise TaskError(f"refusing to send unencrypted backups to remote storage {', '.join(remote)}",
                        UNENCRYPTED_REMOTE_HINT, permanent=True)
    return enc


@dataclass
class BackupEnv:
    config: Config
    settings: BackupSettings
    storages: list[Storage]
    encryption: Encryption | None
    catalog: Catalog | None
    job: str | None = None
    node: str | None = None
    run_id: int | None = None
    leftovers_cleaned: bool = False
    warming: threading.Thread | None = None  # Catalog.warm, see warm_catalog
    #: the storages opened again for the sets' leases (see lease_storages)
    _lease_storages: list[Storage] | None = field(default=None, repr=False)
    #: the leases taken by this env's sets (stopped at close, should a set be neither committed nor aborted)
    leases: list[Lease] = field(default_factory=list, repr=False)

    @property
    def storage_names(self) -> list[str]:
        return [s.name for s in self.storages]

    def warm_catalog(self) -> None:
        """Start :meth:`Catalog.warm` in a thread of its own, once: the catalog's first query in a process pays
        for SQLAlchemy's set-up, which the set's commit would otherwise wait for after its data was stored.
        Called as the first object's upload starts: the thread runs beside the stream, whose threads mostly
        wait for data or work outside the GIL (started earlier, it slowed the task's own queries before the dump
        starts as much as it saved at the commit)."""
        if self.catalog is not None and self.warming is None:
            self.warming = threading.Thread(target=self.catalog.warm, daemon=True, name="catalog-warm")
            self.warming.start()

    def lease_storages(self) -> list[Storage]:
        """The storages again, each opened a second time (once per env) for the leases' refresh thread: it never
        shares a connection (an SSH session, an S3 client) with the uploads running beside it."""
        if self._lease_storages is None:
            self._lease_storages = []
            for s in self.storages:
                conf = self.config.storages.get(s.name)
                try:
                    self._lease_storages.append(open_storage(s.name, conf) if conf is not None else s)
                except Exception as exc:  # (opening is lazy for the remote kinds: this hardly fails)
                    log.warning("could not open storage %s for the backup's lease: %s", s.name,
                                getattr(exc, "message", exc))
        return self._lease_storages

    def close(self) -> None:
        for lease in self.leases:
            lease.stop()
        if self.warming is not None:
            self.warming.join(timeout=60)  # (a query of the history database: its busy_timeout bounds it)
        close_storages([s for s in self._lease_storages or [] if all(s is not t for t in self.storages)])
        close_storages(self.storages)

    def encryption_info(self) -> dict[str, Any]:
        if self.encryption is None:
            return {"method": "none"}
        info: dict[str, Any] = {"method": self.encryption.label, "tool": "age"}
        if self.encryption.recipients:
            info["recipients"] = list(self.encryption.recipients)
        return info


def open_env(config: Config, storages_wanted: Sequence[str] | None, catalog: Catalog | None, *,
             job: str | None = None, run_id: int | None = None) -> BackupEnv:
    names = storage_names(config, storages_wanted)
    enc = check_encryption(config, names)
    storages = open_storages(config, names)
    return BackupEnv(config=config, settings=config.backup, storages=storages, encryption=enc, catalog=catalog,
                     job=job, node=config.node, run_id=run_id)


@dataclass
class SetWriter:
    """Objects of one set, then its manifest (the commit marker), then its catalog row."""

    env: BackupEnv
    kind: str
    target: str
    database: str
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    id: str = ""
    objects: list[ObjectRecord] = field(default_factory=list)
    committed: bool = False
    lease_refresh: timedelta = LEASE_REFRESH
    lease: Lease | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.id:
            self.id = new_backup_id(self.started_at)

    def hold_lease(self) -> None:
        """Take the set's lease on its storages (once; :meth:`upload` does, before the first object)."""
        if self.lease is None and not self.committed:
            self.lease = Lease.take(self.env.lease_storages(), self.prefix,
                                    writer_info(self.id, self.started_at, node=self.env.node, job=self.env.job,
                                                run_id=self.env.run_id), self.lease_refresh, strict=False)
            self.env.leases.append(self.lease)

    @property
    def prefix(self) -> str:
        return set_prefix(self.target, self.database, self.id)

    def upload(self, name: str, role: str = "data", *, always_encrypt: bool = False) -> ObjectUpload:
        if always_encrypt and self.env.encryption is None:
            raise BackupError(f"{name} must be encrypted, but no encryption is configured",
                              "Try: set backup -> encryption -> recipients (age public keys)")
        if any(o.name == name for o in self.objects):
            raise BackupError(f"object {name} written twice in backup {self.id}")
        if name == LEASE or name.startswith(READING):
            raise BackupError(f"{name} is the name of a set's lease or reader marker, not of an object")
        self.hold_lease()
        self.env.warm_catalog()
        return ObjectUpload(self.env.storages, self.prefix + name, name, level=self.env.settings.compression_level,
                            threads=self.env.settings.compression_threads, encryption=self.env.encryption, role=role)

    def add(self, record: ObjectRecord) -> None:
        self.objects.append(record)

    def commit(self, details: dict[str, Any]) -> Manifest:
        if not self.objects:
            raise BackupError(f"backup {self.id} has no objects")
        manifest = Manifest(id=self.id, kind=self.kind, target=self.target, database=self.database,
                            started_at=self.started_at, finished_at=datetime.now(UTC), objects=list(self.objects),
                            job=self.env.job, node=self.env.node, encryption=self.env.encryption_info(),
                            details=details)
        fault_pause("before-manifest")
        check_objects_stored(self.env.storages, manifest)  # nothing deleted them meanwhile (a prune, elsewhere)
        if self.lease is not None:
            self.lease.check()  # nor took the set over (a prune, once the lease could not be refreshed for long)
        write_manifest(self.env.storages, manifest)
        self.committed = True
        if self.lease is not None:  # after the manifest: the set is never without one or the other
            self.lease.release()
        if self.env.catalog is not None:
            try:
                self.env.catalog.record(manifest, self.env.storage_names, run_id=self.env.run_id)
            except Exception as exc:  # storage is the truth; 'backups sync' repairs the catalog
                log.warning("backup %s is stored but could not be recorded in the catalog: %s "
                            "(run 'upkeeper backups sync')", self.id, exc)
        return manifest

    @shielded()  # a stop arriving meanwhile waits for it (upkeeper.shield)
    def abort(self) -> None:
        """Remove what this set wrote (best effort; leftovers are cleaned as incomplete sets later)."""
        if self.committed:
            return
        if self.lease is not None:  # no refresh may write it again once the set is deleted
            self.lease.stop()
        for s in self.env.storages if self.lease is None or self.lease.lost is None else []:
            try:
                delete_set(s, self.target, self.database, self.id, keep_lease=self.lease is not None)
            except Exception as exc:
                log.warning("could not remove the partial backup %s from %s: %s", self.id, s.name, exc)
        if self.lease is not None:  # last: the set is never without it while it is removed
            self.lease.release()
