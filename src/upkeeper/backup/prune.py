"""Apply retention to the sets on storage, per (target, database, kind); clean incomplete leftovers."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from upkeeper.backup.lease import PRUNING, Lease, LeaseHeld, protects, readers, writer_info
from upkeeper.backup.manifest import (
    LEASE,
    LEASE_TTL,
    MANIFEST,
    Manifest,
    StoredSet,
    delete_set,
    read_manifest,
    scan_sets,
    set_prefix,
)
from upkeeper.backup.pipeline import fault_pause
from upkeeper.backup.retention import Decision, Item, apply_policy
from upkeeper.config.backup import RetentionPolicy
from upkeeper.errors import UpkeeperError
from upkeeper.fmt import human_duration
from upkeeper.shield import shielded
from upkeeper.storage import Storage
from upkeeper.storage.base import clean_partials, partial_activity

if TYPE_CHECKING:  # the catalog is loaded by whoever opens one (see tasks/backup/_common.py)
    from upkeeper.backup.catalog import Catalog

log = logging.getLogger(__name__)


@dataclass
class SeriesReport:
    target: str
    database: str
    kind: str
    decisions: list[Decision] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    incomplete_deleted: list[str] = field(default_factory=list)
    incomplete_kept: list[str] = field(default_factory=list)
    #: why each of ``incomplete_kept`` is kept ("written less than 1d ago: …")
    incomplete_why: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: stopped (SIGTERM, Ctrl-C) before it finished: ``not_deleted`` holds what it meant to delete and did not
    #: (retention's deletions, then leftovers), ``deleted`` and ``incomplete_deleted`` only what it did
    interrupted: bool = False
    not_deleted: list[str] = field(default_factory=list)
    #: what retention deleted from some of its storages only (the others failed, named in ``errors``): not in
    #: ``deleted`` — a copy is left, and the catalog still names its storage; the next prune retries.  (One that
    #: failed there after its manifest went is no copy: the catalog no longer names that storage for it, and the
    #: next prune deletes its remains as a leftover.)
    delete_failed: list[str] = field(default_factory=list)
    #: complete sets of the series written by a node this history knows nothing of (:func:`foreign_sets`), by id:
    #: that node — never counted, never deleted
    foreign: dict[str, str] = field(default_factory=dict)

    def keep_incomplete(self, bid: str, why: str) -> None:
        self.incomplete_kept.append(bid)
        self.incomplete_why[bid] = why

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "target": self.target, "database": self.database, "kind": self.kind,
            "backups": [{"id": d.item.id, "time": d.item.time.isoformat(), "keep": d.keep, "reasons": d.reasons}
                        for d in self.decisions],
            "deleted": self.deleted, "incomplete_deleted": self.incomplete_deleted,
            "incomplete_kept": self.incomplete_kept, "errors": self.errors,
        }
        if self.incomplete_why:
            d["incomplete_kept_why"] = dict(self.incomplete_why)
        if self.delete_failed:
            d["delete_failed"] = self.delete_failed
        if self.foreign:
            d["foreign"] = [{"id": bid, "node": node} for bid, node in sorted(self.foreign.items())]
        if self.interrupted:
            d.update(interrupted=True, not_deleted=self.not_deleted)
        return d

    def stopped(self, why: str) -> None:
        """Mark the report of a prune stopped before it finished this series: what it decided to delete and
        did not goes to ``not_deleted``."""
        self.interrupted = True
        self.errors.append(why)
        done = {*self.deleted, *self.incomplete_deleted, *self.delete_failed}
        self.not_deleted = [d.item.id for d in self.decisions if not d.keep and d.item.id not in done]


@dataclass
class SetIndex:
    """What the storages hold for one (target, database): complete sets by id (with their kind), leftovers."""

    complete: dict[str, tuple[str, datetime, list[Storage]]] = field(default_factory=dict)
    #: leftover (incomplete) sets by id: when they last changed, and where they are
    incomplete: dict[str, tuple[datetime | None, list[Storage]]] = field(default_factory=dict)
    #: sets with a manifest.json that could not be read (missing, corrupt) by id: where (reported in ``errors``);
    #: never pruned, never counted as complete; verify reports them
    unreadable: dict[str, list[Storage]] = field(default_factory=dict)
    #: sets whose manifest lists objects the storage does not hold, or holds with another size (a copy that lost
    #: an object), by id: where, and what is wrong (reported in ``errors``).  Not a copy: never counted as
    #: complete there; deleted with the set when retention deletes it, else left for you to look at
    damaged: dict[str, list[tuple[Storage, str]]] = field(default_factory=dict)
    #: complete sets that re-encrypt another (``backups rekey``): their id -> the id of the set they replace
    rekeyed_from: dict[str, str] = field(default_factory=dict)
    #: incomplete sets whose writer's lease (:data:`~upkeeper.backup.manifest.LEASE`) any storage holds: its
    #: newest refresh (the storage's modification time) by id
    leases: dict[str, datetime] = field(default_factory=dict)
    #: the node that wrote each complete set (its manifest's ``node``; None in manifests of older versions)
    nodes: dict[str, str | None] = field(default_factory=dict)


def index_sets(storages: Sequence[Storage], target: str | None = None, database: str | None = None,
               errors: list[str] | None = None, unlisted: dict[str, UpkeeperError] | None = None,
               known: Mapping[str, Manifest] | None = None,
               read: dict[tuple[str, str], Manifest] | None = None) -> dict[tuple[str, str], SetIndex]:
    """What the storages hold.  A storage that cannot be listed is left out (never taken for an empty one):
    its error goes to ``errors`` and, by storage name, to ``unlisted``.  ``known``: manifests by set id (with
    the SHA-256 of their manifest.json, as the catalog recorded them or as this process wrote them): only their
    kind, time, objects and ``rekeyed_from`` matter here (a files set's manifest lists every file).  One whose
    size is known (:attr:`Manifest.json_size`) is taken as it is, without reading the stored manifest.json,
    where the listing shows that file with that very size (see :func:`usable_copy`); one without a size is
    hashed as it is read and not parsed again when it has those very bytes (:func:`read_manifest`); any other
    manifest.json is read and parsed.  Which sets exist, complete or not, and with which objects, always comes
    from the listing.  ``read``, when given, receives the manifest of each complete set by (storage name, set id)
    — without its file lists — for a caller that needs them (``backups sync``) not to read them again."""
    out: dict[tuple[str, str], SetIndex] = {}
    for storage in storages:
        try:
            sets: list[StoredSet] = list(scan_sets(storage, target, database))
        except UpkeeperError as exc:
            if errors is not None:
                errors.append(f"{storage.name}: {exc.message}")
            if unlisted is not None:
                unlisted[storage.name] = exc
            continue
        for st in sets:
            idx = out.setdefault((st.target, st.database), SetIndex())
            if st.complete:
                mine = known.get(st.id) if known else None
                try:
                    m = usable_copy(st, mine) or read_manifest(
                        storage, st.prefix, file_lists=False,
                        known=mine if mine is not None and mine.json_size is None else None)  # another size: not it
                except UpkeeperError as exc:
                    if errors is not None:
                        path = f"{st.prefix}{MANIFEST}"
                        msg = exc.message.removeprefix(f"{storage.name}:{path}: ")  # read_manifest names it too
                        errors.append(f"{storage.name}: {path}: {msg}")
                    idx.unreadable.setdefault(st.id, []).append(storage)
                    continue
                if m.prefix != st.prefix:  # a set directory renamed or copied by hand: the manifest is another's
                    if errors is not None:
                        errors.append(f"{storage.name}: {st.prefix}{MANIFEST}: names backup {m.id} of "
                                      f"{m.target}/{m.database}, not this set (a directory renamed or copied by "
                                      f"hand?); it is left alone")
                    idx.unreadable.setdefault(st.id, []).append(storage)
                    continue
                missing = missing_objects(st, m)
                if missing:
                    problem = f"{storage.name}: {st.prefix}: not a complete copy: {missing}"
                    if errors is not None:
                        errors.append(problem)
                    idx.damaged.setdefault(st.id, []).append((storage, problem))
                    continue
                if read is not None:
                    read[(storage.name, st.id)] = m
                kind, t, where = idx.complete.get(st.id, (m.kind, m.started_at, []))
                if m.rekeyed_from:
                    idx.rekeyed_from[st.id] = m.rekeyed_from
                idx.nodes.setdefault(st.id, m.node)
                idx.complete[st.id] = (kind, t, [*where, storage])
            else:
                active, where2 = idx.incomplete.get(st.id, (st.last_activity, []))
                if active is None or (st.last_activity is not None and st.last_activity > active):
                    active = st.last_activity  # the latest activity on any storage
                idx.incomplete[st.id] = (active, [*where2, storage])
                lease = st.lease.modified if st.lease is not None else None
                if lease is not None and (st.id not in idx.leases or lease > idx.leases[st.id]):
                    idx.leases[st.id] = lease
    return out


def usable_copy(st: StoredSet, known: Manifest | None) -> Manifest | None:
    """``known`` (the catalog's copy of the set's manifest, or the one this process just wrote) when the storage
    lists the set's manifest.json with the size recorded for it, else None (read it from the storage).

    Safe for retention, which reads of a manifest only its kind, time, objects (checked against the listing)
    and ``rekeyed_from``: the catalog's copy is the manifest as written (it never takes other bytes found later,
    see :meth:`Catalog.record`), and a manifest.json changed since is read as before whenever its size differs
    (truncated, rewritten, another set's).  One changed in place to the very same size is not noticed here — as
    retention never notices an object changed to the same size either; ``backups verify`` hashes both."""
    if known is None or not known.sha256 or known.json_size is None or known.prefix != st.prefix:
        return None
    listed = next((o.size for o in st.objects if o.key == st.prefix + MANIFEST), None)
    return known if listed == known.json_size else None


def recorded_manifests(catalog: Catalog | None, target: str | None, database: str | None = None
                       ) -> dict[str, Manifest]:
    """The manifests of ``target`` (every one when None; of ``database`` only when given) as the catalog recorded
    them (without file lists), by set id, each with the SHA-256 and size of its manifest.json as written (rows
    without a SHA-256 are left out)."""
    out: dict[str, Manifest] = {}
    if catalog is None:
        return out
    from upkeeper.backup.catalog import ROW_KEYS as catalog_keys

    for row in catalog.list(target=target, database=database):
        sha = row.manifest_sha256
        if not sha:
            continue
        try:
            m = Manifest.from_dict({k: v for k, v in (row.manifest or {}).items() if k not in catalog_keys})
        except UpkeeperError:
            continue  # read from the storage instead
        if m.id == row.id and m.target == row.target and m.database == row.database:
            m.sha256 = sha
            m.json_size = row.manifest_size
            out[m.id] = m
    return out


def missing_objects(st: StoredSet, manifest: Manifest) -> str | None:
    """What of the objects ``manifest`` lists the storage's listing of the set lacks (or lists with another
    size), in words; None when every one is there with its size."""
    listed = {o.key.removeprefix(st.prefix): o.size for o in st.objects}
    gone = [o.name for o in manifest.objects if o.name not in listed]
    resized = [f"{o.name} ({listed[o.name]} bytes, the manifest says {o.size})" for o in manifest.objects
               if o.name in listed and listed[o.name] != o.size]
    parts = []
    if gone:
        parts.append("missing " + ", ".join(gone[:5]) + (f" and {len(gone) - 5} more" if len(gone) > 5 else ""))
    if resized:
        parts.append("wrong size " + ", ".join(resized[:5]) + (f" and {len(resized) - 5} more"
                                                              if len(resized) > 5 else ""))
    return "; ".join(parts) or None


def clean_leftovers(storages: Sequence[Storage], older_than: timedelta, errors: list[str],
                    target: str | None = None) -> int:
    """What crashed writers left (temp files, S3 multipart uploads) once idle for ``older_than``; only those of
    ``target``'s sets when it is given."""
    n = 0
    for s in storages:
        try:
            n += clean_partials(s, older_than, f"{target}/" if target else "")
        except UpkeeperError as exc:
            errors.append(f"{s.name}: cleaning partial uploads: {exc.message}")
    return n


def _write_in_progress(storages: Sequence[Storage], prefix: str, since: datetime, errors: list[str]) -> bool:
    """Does a write under ``prefix`` on any of ``storages`` show progress after ``since``?  A storage that cannot
    tell (an error) counts as yes: the set is left for the next prune, never deleted on a guess."""
    for storage in storages:
        try:
            t = partial_activity(storage, prefix)
        except UpkeeperError as exc:
            errors.append(f"{storage.name}: looking for writes in progress under {prefix}: {exc.message}")
            return True
        if t is not None and t > since:
            return True
    return False


_CONTAINER_ID = re.compile(r"[0-9a-f]{12}")


def container_like(node: str) -> bool:
    """Does ``node`` look like a Docker container's host name — its id's first 12 hex digits, which a container
    started without ``--hostname`` gets, anew with every container?"""
    return _CONTAINER_ID.fullmatch(node) is not None


#: What to do when the sets of "other nodes" are this host's own, written by its earlier containers
CONTAINER_FIX = ("set 'node:' in the config to a fixed name (e.g. node: web-1): the host name of a container started "
                 "without --hostname is its id, new with every container, so each new container took the backups of "
                 "the ones before for another installation's and retention never deleted them; then run "
                 "'upkeeper backups sync' once to adopt those backups")


def foreign_sets(idx: SetIndex, ids: Iterable[str], catalog: Catalog | None, node: str | None) -> dict[str, str]:
    """Of the complete sets ``ids``, those another upkeeper installation wrote (by id: its node): written by a node
    other than ``node``, not in the catalog, by a node that never recorded a run or a daemon in this history.

    Two installations with histories of their own (a config copied to every web server) that name their targets
    alike and share a storage write one series: each one's retention counted the other's backups as its own and
    deleted them (keep_last 2 left each node one backup; a day's slot kept whichever node ran last).  Nodes
    sharing one history (``history: postgresql://…``) know each other's runs and backups, so theirs is one series
    as meant.  ``backups sync`` adopts such sets into the catalog (a host rebuilt under a new name takes over its
    predecessor's backups)."""
    if catalog is None or not node:
        return {}
    others = {bid: n for bid in ids if (n := idx.nodes.get(bid)) and n != node}
    if not others:
        return {}
    recorded = catalog.known_ids(others)
    unknown = {bid: n for bid, n in others.items() if bid not in recorded}
    if not unknown:
        return {}
    seen = catalog.nodes_seen()
    return {bid: n for bid, n in unknown.items() if n not in seen}


def _taken_up(storages: Sequence[Storage], prefix: str, now: datetime, errors: list[str],
              lease_ok: bool = False) -> bool:
    """Does any of ``storages`` hold, now, a manifest or a fresh lease under ``prefix``, a leftover when listed?
    A storage that cannot tell counts as yes (left for the next prune).  ``lease_ok``: the lease is this prune's,
    only a manifest counts."""
    for storage in storages:
        try:
            if storage.stat(prefix + MANIFEST) is not None or (not lease_ok and protects(storage, prefix + LEASE,
                                                                                          now)):
                return True
        except UpkeeperError as exc:
            errors.append(f"{storage.name}: looking again at {prefix}: {exc.message}")
            return True
    return False


def prune_series(
    storages: Sequence[Storage],
    target: str,
    database: str,
    kind: str,
    policy: RetentionPolicy,
    *,
    default_tz: str,
    now: datetime,
    incomplete_after: timedelta,
    catalog: Catalog | None = None,
    dry_run: bool = False,
    index: dict[tuple[str, str], SetIndex] | None = None,
    known: Manifest | None = None,
    report: SeriesReport | None = None,
    node: str | None = None,
) -> SeriesReport:
    """``known``: the manifest of the set just written (with its ``sha256``), which, like those the catalog
    recorded, is not parsed again if the storages hold it as written.  ``report``: filled as the prune goes
    (so that a caller stopped by a signal can say what was done), else a new one.  ``node``: this node's name;
    sets another installation wrote (:func:`foreign_sets`) are left alone, listed in the report's ``foreign``."""
    report = report if report is not None else SeriesReport(target, database, kind)
    if index is None:
        manifests = recorded_manifests(catalog, target, database)
        if known is not None and known.sha256:
            manifests[known.id] = known
        index = index_sets(storages, target, database, report.errors, known=manifests)
    idx = index.get((target, database), SetIndex())
    sets = {i: v for i, v in idx.complete.items() if v[0] == kind}
    report.foreign = foreign_sets(idx, sets, catalog, node)
    for bid in report.foreign:
        del sets[bid]
    # A set being re-encrypted ('backups rekey') and its complete re-encryption hold the same data at the same
    # time: the policy sees the new one only, so it never deletes that in favour of the old one (which rekey then
    # deletes), and the old one stays until rekey — or rekey run again after a crash — removes it.
    replaced = {old: new for new, old in idx.rekeyed_from.items() if new in sets and old in sets}
    items = [Item(i, t) for i, (_k, t, _w) in sets.items() if i not in replaced]
    decisions = apply_policy(items, policy, default_tz, now)
    # Never delete the newest verified backup either: a string of failed verifications must not cost
    # the last copy known to restore.
    if catalog is not None and decisions:
        from upkeeper.backup.catalog import VERIFIED

        verified = {r.id for r in catalog.list(target=target, database=database, kind=kind, statuses=[VERIFIED])}
        for d in decisions:  # newest first
            if d.item.id in verified:
                if not d.keep:
                    d.keep = True
                    d.reasons.append("newest verified")
                break
    # Nor a storage's newest copy: the policy decides on what all the storages hold together, and a storage
    # that missed the newest backups (an upload that failed there, a copy lost) must not be emptied by it.
    newest_on: dict[str, str] = {}
    for bid, (_k, _t, where) in sorted(((i, v) for i, v in sets.items() if i not in replaced),
                                       key=lambda kv: (kv[1][1], kv[0])):  # oldest first
        for storage in where:
            newest_on[storage.name] = bid
    for d in decisions:
        if not d.keep and d.item.id in newest_on.values():
            d.keep = True
            d.reasons.append("newest on " + ", ".join(sorted(n for n, b in newest_on.items() if b == d.item.id)))
    for old, new in sorted(replaced.items()):
        decisions.append(Decision(Item(old, sets[old][1]), True,
                                  [f"being re-encrypted as {new} ('upkeeper backups rekey {old}' finishes it)"]))
    report.decisions = decisions
    # Each set is deleted whole — from every storage, then from the catalog — before a stop (SIGTERM; the
    # worker's, the CLI's) is acted on (upkeeper.shield): a stop between its storage's deletion and the
    # catalog's left the catalog listing as complete a set no storage holds (until 'backups sync').
    for d in decisions:
        if d.keep:
            continue
        # a verify or a restore reading it now (its reader's marker, upkeeper.backup.lease): deleting it under
        # them failed the verify (a good backup marked verify-failed) or the restore midway; a later prune deletes it
        reading = _reading(sets[d.item.id][2], target, database, d.item.id, report.errors)
        if reading:
            d.keep = True
            d.reasons.append(f"being read by {'; '.join(reading)} (a later prune deletes it)")
            continue
        if dry_run:
            report.deleted.append(d.item.id)
            continue
        fault_pause("prune-readers-checked")  # (the tests: a restore of the set starts now, before the lease)
        # with the copies that lost an object: retention is done with the set, they go with it
        on = [*sets[d.item.id][2], *(s for s, _why in idx.damaged.get(d.item.id, []))]
        with shielded():
            # the set's lease, taken on each storage holding it (in one step, as for a leftover): a 'backups copy'
            # repairing it there right now (under that lease) keeps it — deleting it under the repair left the
            # repaired objects behind as a leftover and the catalog naming a storage without the set — and one that
            # comes while it is deleted waits for this prune, then finds it gone.  A storage where the lease cannot
            # be written is not deleted from (in errors, as a deletion failing there: the next prune retries)
            holding: list[Lease] = []
            failed = False
            writer = None
            for storage in on:
                taken = _lease_to_delete([storage], target, database, d.item.id, now, report.errors,
                                         "a prune deleting it (retention)")
                if isinstance(taken, Lease):
                    holding.append(taken)
                elif taken is None:
                    failed = True
                else:
                    writer = taken
                    break
            # readers again, now that the lease is held: a restore or verify that put its marker beside the set
            # after the first look (above) was read from under (its backup deleted midway); one that comes after
            # this look fails cleanly, finding the set gone ('deleted … while it was restored')
            reading = (_reading(sets[d.item.id][2], target, database, d.item.id, report.errors)
                       if writer is None and holding else [])
            if writer is not None or not holding or reading:
                for lease_ in holding:
                    lease_.release()
                if writer is not None:
                    d.keep = True
                    d.reasons.append(f"being written by {writer} (a later prune deletes it)")
                elif reading:
                    d.keep = True
                    d.reasons.append(f"being read by {'; '.join(reading)} (a later prune deletes it)")
                else:
                    report.delete_failed.append(d.item.id)
                continue
            try:
                fault_pause("prune-set-deleting")  # (the tests: a copy repairing the set comes now)
                for lease_ in holding:
                    storage = lease_.storages[0]
                    done: list[str] = []
                    try:
                        delete_set(storage, target, database, d.item.id, keep_lease=True, done=done)
                    except UpkeeperError as exc:
                        failed = True
                        if not done:  # its manifest is there (or may be): the catalog names it, the next prune
                            report.errors.append(f"{storage.name}: deleting {d.item.id}: {exc.message}")  # retries
                            continue
                        # its manifest went, some objects not: that copy is no backup any more, whatever the
                        # catalog said ('backups list' named it complete there, a restore from it failed)
                        report.errors.append(f"{storage.name}: deleting {d.item.id}: {exc.message}; its manifest "
                                             f"was deleted there first: what is left of it is no backup, and is "
                                             f"deleted as a leftover by the next prune")
                        if catalog is not None:
                            catalog.remove_storage(d.item.id, storage.name)
                        continue
                    fault_pause("prune-set-deleted")  # (the tests: deleted from storage, the catalog not yet told)
                    if catalog is not None:
                        catalog.remove_storage(d.item.id, storage.name)
            finally:
                for lease_ in holding:
                    lease_.release()  # last: the set's remains are never without it
            (report.delete_failed if failed else report.deleted).append(d.item.id)
    for bid, (active, where) in sorted(idx.incomplete.items()):
        if bid in idx.complete and set(s.name for s in where) & set(s.name for s in idx.complete[bid][2]):
            continue
        if active is not None and now - active < incomplete_after:
            report.keep_incomplete(bid, f"written {human_duration(now - active)} ago, less than "
                                        f"{human_duration(incomplete_after)}: its backup may still be running; "
                                        f"deleted once older if it never completes")
            continue
        # its writer is alive (its lease refreshed lately), though busy elsewhere for longer than incomplete_after
        # (pg_dump on a huge table before the next upload): not a leftover.  A stale lease (the writer died)
        # protects nothing.
        lease = idx.leases.get(bid)
        if lease is not None and now - lease < LEASE_TTL and _protected(where, set_prefix(target, database, bid),
                                                                        now, report.errors):
            report.keep_incomplete(bid, "its writer holds its lease (renewed lately): still being written")
            continue
        # its listed objects are old, but one may still be on its way (a dump streaming for longer than
        # incomplete_after: its temporary file or multipart upload is not listed): a writer alive is no leftover
        writing = _write_in_progress(where, set_prefix(target, database, bid), now - incomplete_after,
                                     report.errors)
        if writing:
            report.keep_incomplete(bid, "an upload into it is under way")
            continue
        # the listing may be minutes old (a prune of many series): a copy, or a rekey, run again since over a
        # leftover it had left holds a fresh lease on it now, or has completed it
        if _taken_up(where, set_prefix(target, database, bid), now, report.errors):
            report.keep_incomplete(bid, "a copy or rekey took it up since it was listed")
            continue
        if dry_run:
            report.incomplete_deleted.append(bid)
            continue
        with shielded():
            # the set's lease, taken (in one step, a stale one taken over) for the deletion: a copy or rekey run
            # again over the leftover from now on fails naming this prune instead of writing into a set being
            # deleted, and one that took it first keeps the set
            taken = _lease_to_delete(where, target, database, bid, now, report.errors,
                                     "a prune deleting it as a leftover")
            held = taken if isinstance(taken, Lease) else None
            if held is None or _taken_up(where, set_prefix(target, database, bid), now, report.errors,
                                         lease_ok=True):
                if held is not None:
                    held.release()
                report.keep_incomplete(bid, "another process holds its lease, or took it up, as this prune "
                                            "came to delete it")
                continue
            try:
                fault_pause("prune-leftover-deleting")  # (the tests: a copy run again over the leftover now)
                for storage in where:
                    try:
                        delete_set(storage, target, database, bid, keep_lease=True)
                    except UpkeeperError as exc:
                        report.errors.append(f"{storage.name}: deleting leftover {bid}: {exc.message}")
                        continue
                    # a set whose manifest is gone there is not complete there, whatever the catalog says (a
                    # prune killed — SIGKILL, a crash — while it deleted the set left the catalog naming this
                    # storage)
                    if catalog is not None:
                        catalog.remove_storage(bid, storage.name)
            finally:
                held.release()  # last: the set's remains are never without it
            report.incomplete_deleted.append(bid)
    return report


def _protected(storages: Sequence[Storage], prefix: str, now: datetime, errors: list[str]) -> bool:
    """Does a lease on any of ``storages`` keep the leftover at ``prefix`` (:func:`upkeeper.backup.lease.protects`)?
    A storage that cannot tell counts as yes."""
    for storage in storages:
        try:
            if protects(storage, prefix + LEASE, now):
                return True
        except UpkeeperError as exc:
            errors.append(f"{storage.name}: looking at the lease of {prefix}: {exc.message}")
            return True
    return False


def _reading(storages: Sequence[Storage], target: str, database: str, bid: str, errors: list[str]) -> list[str]:
    """Who reads the set now (:func:`~upkeeper.backup.lease.readers`); a storage that cannot be asked counts as a
    reader unknown (the set is kept), and goes into ``errors``."""
    try:
        return readers(storages, target, database, bid)
    except UpkeeperError as exc:
        errors.append(f"looking for readers of {bid}: {exc.message}")
        return [f"a reader unknown ({exc.message})"]


def _lease_to_delete(storages: Sequence[Storage], target: str, database: str, bid: str, now: datetime,
                     errors: list[str], command: str) -> Lease | str | None:
    """The lease of the set ``bid`` on every storage holding it, taken by this prune (no refresh thread: it is held
    while the set is deleted; marked :data:`~upkeeper.backup.lease.PRUNING`, so that a copy or rekey meeting it
    waits a moment rather than fail), or who holds it (another writer, in words), or None when a storage cannot
    tell (in ``errors``: left for the next prune)."""
    prefix = set_prefix(target, database, bid)
    try:
        return Lease.take(storages, prefix, writer_info(bid, datetime.now(UTC), command=command, **{PRUNING: True}),
                          None, now=now)
    except LeaseHeld as held:
        log.info("%s is kept: its lease is held by %s", prefix, held.holder)
        return held.holder
    except UpkeeperError as exc:
        errors.append(f"{', '.join(s.name for s in storages)}: taking the lease of {prefix} to delete it: "
                      f"{exc.message}")
    return None
