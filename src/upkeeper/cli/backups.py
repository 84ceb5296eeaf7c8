"""``upkeeper backups list|show|verify|restore|copy|rekey|prune|sync``: the backup catalog and what to do with it."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from upkeeper import lazy
from upkeeper.backup import pg
from upkeeper.backup.catalog import STATUSES, Catalog, CatalogRow
from upkeeper.backup.copy import COPIED, FAILED, PRESENT, REPAIRED, CopyReport, copy_set
from upkeeper.backup.crypto import age_binary, encryption_from
from upkeeper.backup.lease import take_reader
from upkeeper.backup.manifest import MANIFEST, Manifest, on_storage, safe_component, scan_sets, set_prefix
from upkeeper.backup.pipeline import fault_pause
from upkeeper.backup.prune import (
    CONTAINER_FIX,
    SeriesReport,
    clean_leftovers,
    container_like,
    index_sets,
    prune_series,
    recorded_manifests,
)
from upkeeper.backup.rdb import check_rdb
from upkeeper.backup.rdb_load import redis_check_problem
from upkeeper.backup.rekey import CURRENT, FINISHED, REKEYED, OldKey, RekeyReport, rekey_set, rekeyed_id
from upkeeper.backup.restore import (
    INCOMPLETE,
    Fetcher,
    FilesRestore,
    apply_database_level,
    check_restore_version,
    create_settings,
    database_entries,
    fetch_pg_archive,
    globals_for,
    locate,
    mount_of,
    older_server,
    os_error_hint,
    pg_restore,
    work_dir,
)
from upkeeper.backup.sets import close_storages, open_storages, storage_names
from upkeeper.backup.source import MANIFEST_KEY, SourceState
from upkeeper.backup.sqlite import as_read_note, recorded_as_read
from upkeeper.backup.verify import ManifestChanged, VerifyOptions, VerifyReport, verify_stored
from upkeeper.backup.workdir import STAGING_PREFIX, clean_stale, staging_dir
from upkeeper.cli._app import app, console, err_console, print_json, state
from upkeeper.cli._signals import sigterm_unwinds
from upkeeper.config.backup import REDIS_RETENTION, RetentionPolicy
from upkeeper.config.loader import find_config, load_config
from upkeeper.config.models import Config
from upkeeper.config.targets import PostgresTarget
from upkeeper.config.types import parse_size
from upkeeper.core.history import History, history_url, process_identity
from upkeeper.core.jobs import Setup
from upkeeper.core.runner import LOCK_TTL, LockKeeper
from upkeeper.errors import BackupError, SetupError, TaskError, UpkeeperError, UsageError
from upkeeper.fmt import human_bytes, human_duration, local_time
from upkeeper.shield import shielded, stop_or_defer
from upkeeper.storage import Storage

if TYPE_CHECKING:
    import psycopg
else:
    psycopg = lazy.module("psycopg")

backups_app = typer.Typer(help="Backups: list, show, verify, restore, copy, rekey, prune, sync (the catalog).",
                          no_args_is_help=True)
app.add_typer(backups_app, name="backups")

KIND_TASK = {"postgres": "postgres.backup", "files": "files.backup", "redis": "redis.backup"}


class _Env:
    """The config and history for backup commands, without resolving jobs: a broken job elsewhere in the
    config must never stand between you and a restore (and it skips loading every task family)."""

    def config(self) -> Config:
        if state._setup is not None:
            return state._setup.config
        return load_config(find_config(state.config))

    def history(self) -> History:
        if state._history is None:  # reset for every command by the app's callback
            config = self.config()
            state._history = History(history_url(config.history, config.source.parent if config.source else None))
        return state._history


_env = _Env()


def _catalog() -> Catalog:
    return Catalog(_env.history())


def _status(s: str) -> str:
    return {"complete": "[cyan]complete[/cyan]", "verified": "[green]verified[/green]",
            "verify-failed": "[bold red]verify-failed[/bold red]"}.get(s, s)


def _open(config: Config, names: list[str] | None = None) -> list[Storage]:
    """The storages a command reads: ``names``, else every configured one — jobs write to storages beyond
    ``backup.storages`` (their ``storages`` option), and sync, prune, verify and restore must see those too.
    An unknown name, or no storage at all, is an error on the command line or in the config (exit 2)."""
    try:
        wanted = storage_names(config, names or list(config.storages))
    except TaskError as exc:
        raise UsageError(exc.message, exc.hint) from None
    return open_storages(config, wanted)


def _row_storages(config: Config, rows: list[CatalogRow], storage: str | None) -> list[str] | None:
    """``--storage``, else the configured storages the catalog says hold ``rows``, in the order of ``storages:``
    (None: all of them)."""
    if storage:
        return [storage]
    held = set().union(*(r.storages or [] for r in rows))
    return [n for n in config.storages if n in held] or None


def _one(catalog: Catalog, backup_id: str) -> CatalogRow:
    rows = catalog.find(backup_id)
    exact = [r for r in rows if r.id == backup_id]
    if exact:
        return exact[0]
    if not rows:
        raise UsageError(f"no backup {backup_id!r} in the catalog",
                         "Try: 'upkeeper backups list', or 'upkeeper backups sync' to re-read the storages")
    if len(rows) > 1:
        raise UsageError(f"{backup_id!r} matches {len(rows)} backups", "Try: give more of the id")
    return rows[0]


@backups_app.command("list")
def list_cmd(
    target: str | None = typer.Option(None, "--target", "-t", help="only this target"),
    database: str | None = typer.Option(None, "--database", "-d", help="only this database / set"),
    kind: str | None = typer.Option(None, "--kind", help="postgres, files or redis"),
    status: list[str] = typer.Option([], "--status", help=f"only this status ({', '.join(STATUSES)}); repeatable"),
    limit: int = typer.Option(200, "--limit", "-n", min=1, help="at most this many, newest first"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Complete backups in the catalog, newest first.  Incomplete sets are never listed."""
    if kind is not None and kind not in KIND_TASK:
        raise UsageError(f"unknown --kind {kind!r}", f"Try: one of {', '.join(KIND_TASK)}")
    for s in status:
        if s not in STATUSES:
            raise UsageError(f"unknown --status {s!r}", f"Try: one of {', '.join(STATUSES)}")
    config = _env.config()
    _check_target(config, target)
    rows = _catalog().list(target=target, database=database, kind=kind, statuses=status or None, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    if more:  # on stderr, so that --json stays a plain list
        err_console.print(f"showing the newest {limit} backups; there are more (raise --limit, or filter with "
                          "--target/--database/--kind/--status)", highlight=False)
    if as_json:
        print_json([r.to_dict() for r in rows])
        return
    if not rows:
        filters = " ".join(f"--{k} {v}" for k, v in (("target", target), ("database", database), ("kind", kind),
                                                       *(("status", s) for s in status)) if v)
        console.print(f"no backups match {filters}." if filters else
                      "no backups in the catalog (run a backup job, or 'upkeeper backups sync').", markup=False)
        return
    tz = config.timezone
    table = Table(title="Backups", title_justify="left")
    for col in ("id", "target/database", "kind", "taken", "size", "ratio", "status", "restore", "storages"):
        # the id whole on one line: it is what 'backups show|verify|restore ID' take (copied from here)
        table.add_column(col, overflow="fold", no_wrap=col == "id")
    for r in rows:
        table.add_row(r.id, f"{r.target}/{r.database}", r.kind, local_time(r.started_at, tz, "%Y-%m-%d %H:%M"),
                      human_bytes(r.size), f"{r.compression_ratio:.1f}×", _status(r.status),
                      human_duration(r.restore_seconds) if r.restore_seconds is not None else "—",
                      ", ".join(r.storages or []) or NO_COPY)
    console.print(table)


#: the storages of a row that no storage holds whole (every copy lost an object: 'backups sync' names them)
NO_COPY = "[fail]no complete copy ('upkeeper backups sync' says why)[/fail]"


def _check_target(config: Config, target: str | None) -> None:
    """A --target neither the config nor the catalog knows is a usage error: a typo would read as 'no backups'."""
    if target is not None and target not in config.targets and not _catalog().list(target=target, limit=1):
        raise UsageError(f"no target {target!r} in the config or the backup catalog",
                         f"Try: a configured target ({', '.join(sorted(config.targets)) or 'none'}), or "
                         "'upkeeper backups sync' first if the storages hold backups the catalog does not know yet")


SHOW_ROW_COUNTS = 50  # tables whose row counts 'backups show' lists; beyond, the largest


@backups_app.command("show")
def show_cmd(
    backup_id: str = typer.Argument(..., help="backup id (a unique prefix is enough)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output (with the manifest)"),
) -> None:
    """One backup: its objects, row counts and verification."""
    row = _one(_catalog(), backup_id)
    if as_json:
        print_json(row.to_dict(full=True))
        return
    m = Manifest.from_dict(row.manifest)
    tz = _env.config().timezone  # as 'backups list' shows times
    console.print(f"[bold]{row.id}[/bold]  {row.kind} backup of {escape(row.target)}/{escape(row.database)}  "
                  f"{_status(row.status)}")
    console.print(f"taken {local_time(row.started_at, tz, '%Y-%m-%d %H:%M:%S %Z')}, took "
                  f"{human_duration((row.finished_at - row.started_at).total_seconds())}; "
                  f"{human_bytes(row.size)} stored, {human_bytes(row.raw_size)} raw ({row.compression_ratio:.2f}×); "
                  f"encryption {row.encryption}; on {', '.join(row.storages or []) or NO_COPY}")
    if row.verified_at:
        console.print(f"verified {local_time(row.verified_at, tz)}: {escape(row.verify_summary or '')}")
    source = SourceState.from_dict(m.details.get(MANIFEST_KEY))
    if source is not None:  # not recorded by an upkeeper before 'source' was
        style = "yellow" if source.unchecked or (source.role == "replica" and source.link != "up") else ""
        console.print(f"taken from {escape(source.describe())}", style=style, highlight=False)
    if m.kind == "files":
        _show_sqlite_as_read(m)
    t = Table(title="Objects", title_justify="left")
    for col in ("name", "role", "size", "raw", "sha256"):
        t.add_column(col, overflow="fold")
    for o in m.objects:
        t.add_row(escape(o.name), o.role, human_bytes(o.size), human_bytes(o.raw_size), o.sha256[:16] + "…")
    console.print(t)
    counts = m.details.get("row_counts")
    if counts:
        # a schema-per-tenant database has thousands of tables: the largest only (every one is in --json)
        title = "Row counts (in the dump's snapshot)"
        shown = sorted(counts.items())
        if len(counts) > SHOW_ROW_COUNTS:
            shown = sorted(counts.items(), key=lambda kv: (-int(kv[1]), kv[0]))[:SHOW_ROW_COUNTS]
            title += (f": the {SHOW_ROW_COUNTS} largest of {len(counts):,} tables, "
                      f"{sum(int(v) for v in counts.values()):,} rows in all (--json lists every table)")
        t = Table(title=title, title_justify="left")
        t.add_column("table", overflow="fold")
        t.add_column("rows", justify="right", overflow="fold")
        for k, v in shown:
            t.add_row(escape(k), f"{v:,}")  # a table may be named "a[/]b"
        console.print(t)


def _show_sqlite_as_read(m: Manifest) -> None:
    """The SQLite files a files backup archived as read, not as consistent copies (a manifest written before
    upkeeper recorded them says nothing)."""
    as_read = recorded_as_read(m.details)
    if not as_read:
        return
    t = Table(title=f"SQLite files archived as read, NOT as consistent copies ({len(as_read)}): possibly torn if "
              "written meanwhile; after a restore, check each with sqlite3 FILE 'PRAGMA integrity_check'",
              title_justify="left", title_style="yellow")
    for col in ("path", "archive", "why"):
        t.add_column(col, overflow="fold")
    for item in as_read:
        t.add_row(escape(item["path"]), escape(item["archive"]), escape(item["reason"]))
    console.print(t)


def _target_for(config: Config, name: str) -> Any:
    t = config.targets.get(name)
    if t is None:
        raise UsageError(f"target {name!r} of this backup is not in the config",
                         "Try: --target NAME to restore/verify against another configured target")
    return t


#: what --json says of a backup a command was stopped on (SIGTERM, Ctrl-C) and of those it had not reached
STOPPED_DURING = "interrupted: the command was stopped (SIGTERM or SIGINT) while it worked on this backup"
STOPPED_BEFORE = "interrupted: the command was stopped (SIGTERM or SIGINT) before it reached this backup"


def _stopped_json(done: list[dict[str, Any]], rows: list[CatalogRow],
                  entry: Callable[[CatalogRow, str], dict[str, Any]]) -> None:
    """``--json`` of a command stopped by SIGTERM or Ctrl-C (it then exits 143 or 130): the reports of the backups
    it finished, then an ``"interrupted": true`` entry for the one it was working on and for each it had not
    reached (``rows`` after the ``done``), so a script learns what was done and what was not."""
    left = rows[len(done):]
    print_json([*done, *(dict(entry(r, STOPPED_DURING if i == 0 else STOPPED_BEFORE), ok=False, interrupted=True)
                         for i, r in enumerate(left))])


@backups_app.command("verify")
def verify_cmd(
    backup_id: str | None = typer.Argument(None, help="backup id (default: the newest of each series)"),
    target: str | None = typer.Option(None, "--target", "-t", help="only backups of this target"),
    unverified: bool = typer.Option(False, "--unverified", help="every backup not verified yet"),
    storage: str | None = typer.Option(None, "--storage", help="verify this storage's copy only (default: every "
                                       "copy, see --rotate-copies)"),
    rotate_copies: bool = typer.Option(False, "--rotate-copies", help="save egress: restore the copy proven "
                                       "least recently, hash the other local copies and check the other remote "
                                       "ones by listing, without download (default: every copy read in full and "
                                       "hashed)"),
    no_restore: bool = typer.Option(False, "--no-restore", help="checksums, decryption and --list only"),
    scratch_target: str | None = typer.Option(None, "--scratch-target", help="postgres target for the scratch "
                                              "restore (default: the backed-up server)"),
    jobs: int | None = typer.Option(None, "--jobs", "-j", min=1, max=64, help="pg_restore jobs (1 = stream in one "
                                    "pass; default: stream when one table dominates, else 2)"),
    check: list[str] = typer.Option([], "--check", help="smoke SQL that must return true (repeatable)"),
    amcheck: bool = typer.Option(False, "--amcheck", help="run amcheck on every B-tree index"),
    redis_check: list[str] = typer.Option([], "--redis-check", help="Redis backups: a command that must reply "
                                          "true on the test-restored data, e.g. 'EXISTS config:site' "
                                          "(repeatable; run in order on one connection)"),
    min_free_space: str = typer.Option("1GiB", "--min-free-space", help="disk space a test restore always "
                                       "leaves free on the scratch server and in the work dir (see the "
                                       "backup.verify option)"),
    min_free_memory: str = typer.Option("256MiB", "--min-free-memory", help="Redis backups: MemAvailable a "
                                        "scratch redis-server leaves free, else it is not test-restored"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Verify backups: sizes and SHA-256, decrypt, decompress, restore into a scratch database, compare row
    counts.  Exit code 1 when any verification fails or could not run (a scratch server, tool or key
    missing: such a backup keeps its status and is tried again by --unverified)."""
    config = _env.config()
    catalog = _catalog()
    _check_target(config, target)
    if backup_id:
        rows = [_one(catalog, backup_id)]
    else:
        rows = catalog.list(target=target, statuses=["complete"] if unverified else None)
        if not unverified:
            newest: dict[tuple[str, str, str], CatalogRow] = {}
            for r in rows:
                newest.setdefault(r.series(), r)
            rows = list(newest.values())
    if not rows and unverified and catalog.list(target=target, limit=1):
        # nothing left to do is success, as for the backup.verify task with scope 'unverified' (a cron line
        # 'backups verify --unverified' must not fail once it has caught up)
        if as_json:
            print_json([])
        else:
            console.print("no unverified backups: every backup in the catalog is verified or verify-failed",
                          highlight=False)
        raise typer.Exit(0)
    if not rows:
        raise UsageError("no backups to verify", "Try: 'upkeeper backups list' (or 'upkeeper backups sync')")
    _check_smoke_options(rows, check, amcheck, redis_check)
    scratch: PostgresTarget | None = None
    if scratch_target:
        found = config.targets.get(scratch_target)
        if found is None:
            pg_targets = sorted(n for n, t in config.targets.items() if isinstance(t, PostgresTarget))
            raise UsageError(f"--scratch-target {scratch_target!r} is not a target in the config",
                             "Try: one of " + (", ".join(pg_targets) or "(no postgres target)"))
        if not isinstance(found, PostgresTarget):
            raise UsageError(f"--scratch-target {scratch_target!r} is not a postgres target")
        scratch = found
    opts = VerifyOptions(restore=not no_restore, scratch=scratch, jobs=jobs, checks=check, amcheck=amcheck,
                         redis_checks=redis_check, min_free_space=_size("--min-free-space", min_free_space),
                         min_free_memory=_size("--min-free-memory", min_free_memory),
                         copies="rotate" if rotate_copies else "all")
    storages = _open(config, _row_storages(config, rows, storage))
    lease_on = _open(config, [s.name for s in storages])  # the reader markers' refresh threads' own connections
    reports: list[VerifyReport] = []
    try:
        for r in rows:
            source = _target_for(config, r.target) if r.kind == "postgres" else None
            with console.status(f"verifying {r.id}…") as st:

                def progress(msg: str, st: Any = st, bid: str = r.id) -> None:
                    st.update(f"{bid}: {msg}")

                rep = verify_stored(storages, r.target, r.database, r.id, storage, config.backup, source, opts,
                                    progress=progress, catalog=catalog, lease_on={s.name: s for s in lease_on})
            reports.append(rep)
            if not as_json:
                label = ("[green]ok[/green] " if rep.ok else "[bold yellow]NOT CHECKED[/bold yellow] "
                         if rep.inconclusive else "[bold red]FAILED[/bold red] ")
                console.print(label + escape(rep.summary), markup=True, highlight=False)
    except KeyboardInterrupt:  # also SIGTERM (cli._signals): judged nothing, the backup keeps its status
        if as_json:
            _stopped_json([r.to_dict() for r in reports], rows, lambda row, why: VerifyReport(
                row.id, ok=False, error=why, inconclusive=True).to_dict())
        raise
    finally:
        close_storages([*lease_on, *storages])
    if as_json:
        print_json([r.to_dict() for r in reports])
    raise typer.Exit(0 if all(r.ok for r in reports) else 1)


def _size(flag: str, value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def _check_smoke_options(rows: list[CatalogRow], check: list[str], amcheck: bool, redis_check: list[str]) -> None:
    """Smoke checks that none of the backups to verify would run are refused: 'ok verified' must not stand for
    a check that was asked for and skipped (SQL on a Redis or files backup, a Redis command on a dump)."""
    kinds = {r.kind for r in rows}
    for c in redis_check:
        problem = redis_check_problem(c)
        if problem:
            raise UsageError(f"--redis-check: {problem}")
    files = ("leave it out: a files backup has no smoke checks (verify compares every file's size and SHA-256 "
             "with the manifest)")
    if (check or amcheck) and "postgres" not in kinds:
        raise UsageError(f"--check and --amcheck are for PostgreSQL backups; the backups to verify are "
                         f"{', '.join(sorted(kinds))} backups",
                         "Try: " + ("--redis-check CMD for a Redis backup" if "redis" in kinds else files))
    if redis_check and "redis" not in kinds:
        raise UsageError(f"--redis-check is for Redis backups; the backups to verify are "
                         f"{', '.join(sorted(kinds))} backups",
                         "Try: " + ("--check SQL for a PostgreSQL backup" if "postgres" in kinds else files))


PG_NAME_MAX = 63  # bytes: PostgreSQL truncates longer identifiers (NAMEDATALEN - 1)


def _fit(base: str, suffix: str) -> str:
    """``base + suffix`` within PostgreSQL's identifier length, shortening ``base`` (never mid-character)."""
    room = PG_NAME_MAX - len(suffix.encode())
    return base.encode()[:room].decode("utf-8", "ignore") + suffix


def _default_restore_name(database: str, when: datetime, n: int = 1) -> str:
    """``<database>_restored_<time>``, with ``_<n>`` from the second on (``n`` > 1)."""
    return _fit(database, f"_restored_{when:%Y%m%d%H%M}" + (f"_{n}" if n > 1 else ""))


@backups_app.command("restore")
def restore_cmd(
    backup_id: str = typer.Argument(..., help="backup id (a unique prefix is enough)"),
    database: str | None = typer.Option(None, "--database", "-d", help="database to restore into (default: a NEW "
                                        "database '<db>_restored_<time>')"),
    target: str | None = typer.Option(None, "--target", "-t", help="postgres target to restore to (default: the "
                                      "backed-up one)"),
    to_path: str | None = typer.Option(None, "--to", metavar="PATH", help="files/redis backups: directory (files) or "
                                       "file (RDB) to write"),
    force: bool = typer.Option(False, "--force", help="allow replacing an existing database (empty or not), "
                               "extracting into a non-empty directory, or overwriting an RDB file"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation (with --force)"),
    storage: str | None = typer.Option(None, "--storage", help="read this storage's copy only (default: the first "
                                       "good copy, object by object)"),
    jobs: int = typer.Option(2, "--jobs", "-j", min=1, max=64, help="pg_restore parallel jobs"),
    globals_: bool = typer.Option(False, "--globals", help="also apply the backup's roles/tablespaces SQL first "
                                  "(roles that already exist are skipped; any other error fails the restore)"),
    no_owner: bool = typer.Option(False, "--no-owner", help="every object owned by the restoring user, without the "
                                  "backup's GRANTs (pg_restore --no-owner --no-privileges): for a server that lacks "
                                  "the backup's roles"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Restore a backup — into a NEW database by default.  Replacing an existing database (even an empty one)
    needs --force and a confirmation (or --yes).  The backup is restored into a temporary database first; the
    existing one is replaced only once that succeeded, and stays untouched when it fails."""
    # an empty --database, --target, --to or --storage (an unset shell variable) never gets here: cli.main refuses
    # every empty argument, which would otherwise be taken for the option left out (the default)
    to = Path(to_path) if to_path is not None else None
    config = _env.config()
    row = _one(_catalog(), backup_id)
    _check_restore_options(row, {"--to": to is not None}, {"--database": database is not None,
                           "--target": target is not None, "--globals": globals_, "--no-owner": no_owner})
    if row.kind == "files":
        _check_files_destination(to, force, row.id)
    elif row.kind == "redis":
        _check_redis_destination(to, force)
    failed_verify = _failed_verify(row)
    if failed_verify:  # said before the restore starts (it may take long), and with its result
        err_console.print(f"[warn]warning[/warn] {escape(failed_verify)}", highlight=False)
    storages = _open(config, _row_storages(config, [row], storage))
    lease_on = _open(config, [s.name for s in storages])
    # a reader's marker beside the set while it is read: neither rekey nor prune deletes it under the restore
    reading = take_reader(storages, row.target, row.database, row.id, "backups restore",
                          {s.name: s for s in lease_on})
    try:
        fetcher = _restore_fetcher(config, row, storages, storage)
        fault_pause("restore-located")  # (the tests: a rekey or prune of the set while it is restored)
        with sigterm_unwinds():  # a stopped restore cleans up as after Ctrl-C (temporary database, staging dir)
            if row.kind == "postgres":
                result = _restore_postgres(config, row, fetcher, database, target, force, yes, jobs, globals_,
                                           no_owner)
            elif row.kind == "files":
                assert to is not None
                result = _restore_files_from_any_copy(fetcher, row, to)
            elif row.kind == "redis":
                assert to is not None
                result = _restore_redis(fetcher, row, to)
            else:
                raise BackupError(f"cannot restore backups of kind {row.kind!r}")
    except KeyboardInterrupt:  # also SIGTERM: the restore cleaned up what it had started (exit 143 or 130)
        if as_json:
            print_json({"backup": row.id, "ok": False, "interrupted": True, "error": STOPPED_DURING})
        raise
    except UpkeeperError as exc:
        gone = _deleted_while_read(config, row, storages)
        if gone is None:
            raise
        raise BackupError(f"{gone[0]} — {exc.message.rstrip('. ')}", gone[1]) from None
    finally:
        if reading is not None:
            reading.release()
        close_storages([*lease_on, *storages])
    result["storage"] = fetcher.located.storage.name
    if failed_verify:
        result["verify_failed"] = failed_verify
    if fetcher.copy_faults:
        result["copies_skipped"] = list(fetcher.copy_faults)
    _env.history().audit("cli", "backup.restore",
                         details={"backup": row.id, **{k: v for k, v in result.items() if k != "next"}})
    if as_json:
        print_json({"backup": row.id, **result})
    else:
        console.print(f"[green]restored[/green] {row.id} → {escape(result['destination'])} (from storage "
                      f"{result['storage']})", highlight=False)
        for fault in fetcher.copy_faults:
            err_console.print(f"[warn]warning[/warn] copy skipped: {escape(fault)}", highlight=False)
        if result.get("warning"):
            err_console.print(f"[warn]warning[/warn] {escape(result['warning'])}", highlight=False)
        if result.get("note"):
            err_console.print(f"note: {escape(result['note'])}", highlight=False)
        if result.get("next"):
            console.print(result["next"], highlight=False, markup=False)


def _failed_verify(row: CatalogRow) -> str:
    """What to know before restoring a backup whose test restore failed ("" for any other)."""
    if row.status != "verify-failed":
        return ""
    when = f" on {row.verified_at:%Y-%m-%d %H:%M} UTC" if row.verified_at else ""
    why = f": {row.verify_summary}" if row.verify_summary else ""
    return (f"backup {row.id} is marked verify-failed (its test restore{when} failed{why}); restoring it anyway — "
            "check what it gives, or restore a verified backup ('upkeeper backups list --status verified')")


def _deleted_while_read(config: Config, row: CatalogRow, storages: list[Storage]) -> tuple[str, str] | None:
    """Why a restore failed, when its backup is gone from every storage now (deleted while it was read by a
    rekey or prune that did not see the restore's reader's marker): what happened, and what to restore instead."""
    try:
        if any(s.stat(set_prefix(row.target, row.database, row.id) + MANIFEST) is not None for s in storages):
            return None
        enc = encryption_from(config.backup)
        new_id = rekeyed_id(row.id, enc) if enc is not None else None
        if new_id is not None and any(s.stat(set_prefix(row.target, row.database, new_id) + MANIFEST) is not None
                                      for s in storages):
            return (f"backup {row.id} was re-encrypted as {new_id} ('backups rekey') and deleted while it was "
                    "restored", f"Try: restore {new_id} (the same backup, re-encrypted)")
    except UpkeeperError:
        return None
    return (f"backup {row.id} was deleted from every storage while it was restored (by a prune or rekey)",
            "Try: 'upkeeper backups sync', then restore another backup ('upkeeper backups list')")


def _restore_fetcher(config: Config, row: CatalogRow, storages: list[Storage], storage: str | None) -> Fetcher:
    """The first copy of ``row`` (in the order of ``storages:``) whose manifest.json is the one the catalog
    recorded, with the storages after it to fall back on when one of its objects is corrupt or missing, or the
    storage fails.  ``--storage`` (or a single storage): that copy only, its own error when it is not good."""
    if storage or len(storages) == 1:
        located = locate(storages, row.target, row.database, row.id, storage)
        if row.manifest_sha256 is not None and located.manifest.sha256 != row.manifest_sha256:
            # the manifest names the objects and their hashes: restore nothing that a changed one vouches for
            raise ManifestChanged(row.id, located.storage.name, located.manifest.sha256, row.manifest_sha256)
        return Fetcher(located, config.backup)
    faults: list[str] = []
    for i, s in enumerate(storages):
        try:
            located = locate([s], row.target, row.database, row.id)
        except UpkeeperError as exc:
            faults.append(on_storage(s.name, exc.message))
            continue
        if row.manifest_sha256 is not None and located.manifest.sha256 != row.manifest_sha256:
            changed = ManifestChanged(row.id, s.name, located.manifest.sha256, row.manifest_sha256)
            faults.append(f"{s.name}: {changed.message}")
            continue
        return Fetcher(located, config.backup, fallback=storages[i + 1:], copy_faults=faults)
    raise BackupError(f"no storage has a good copy of backup {row.id}: " + "; ".join(faults),
                      "Try: 'upkeeper backups sync' then 'upkeeper backups list', or restore an older backup")


def _restore_files_from_any_copy(fetcher: Fetcher, row: CatalogRow, to: Path) -> dict[str, Any]:
    """:func:`_restore_files`, started over from the next copy when an archive of the one read was corrupt or
    missing there (that happens while extracting into the staging directory: ``to`` is as it was)."""
    while True:
        fetcher.stream_fault = None
        try:
            return _restore_files(fetcher, row, to)
        except BackupError as exc:
            fault = fetcher.stream_fault
            if fault is None or not (fetcher.can_fall_back or fetcher.copy_faults):
                raise
            if not fetcher.next_copy(fault):
                raise BackupError(f"{exc.message}; no storage has a good copy: " + "; ".join(fetcher.copy_faults),
                                  exc.hint) from None


def _restore_postgres(config: Config, row: CatalogRow, fetcher: Fetcher, database: str | None, target_name: str | None,
                      force: bool, yes: bool, jobs: int, apply_globals: bool, no_owner: bool) -> dict[str, Any]:
    """Restore into a temporary database ``<db>_upkeeper_restore_<token>`` on the same server, then rename it
    into place.  An existing database is renamed aside first and dropped only after the new one took its name;
    until then every failure (pg_restore, a lost connection, Ctrl-C) drops the temporary database and leaves
    the existing one as it was."""
    tgt = _target_for(config, target_name or row.target)
    if not isinstance(tgt, PostgresTarget):
        raise UsageError(f"target {target_name or row.target!r} is not a postgres target")
    now = datetime.now(UTC)
    name = database or _default_restore_name(row.database, now)
    if len(name.encode()) > PG_NAME_MAX:
        raise UsageError(f"database name {name!r} is longer than PostgreSQL's {PG_NAME_MAX} bytes",
                         "Try: a shorter --database name")
    check_restore_version(tgt, fetcher.located.manifest)
    server = tgt.display().rsplit("/", 1)[0]
    admin = pg.admin_db(tgt, name)
    with pg.admin_connect(tgt, admin) as conn:
        if database is None:  # a new database: one restored in the same minute has the name → "…_2", "…_3"
            n = 1
            while pg.database_exists(conn, name):
                n += 1
                name = _default_restore_name(row.database, now, n)
        exists = pg.database_exists(conn, name)
        server_ver, server_num = pg.server_version(conn)
        limits = pg.connection_limits(conn)
    where = f"database {name!r} on {server}"
    jobs, fewer_jobs = _restore_jobs(limits, jobs)
    if fewer_jobs:
        err_console.print(f"[warn]warning[/warn] {escape(fewer_jobs)}", highlight=False)
    older = _older_server_warning(fetcher.located.manifest, server, server_ver, server_num)
    if older:
        err_console.print(f"[warn]warning[/warn] {escape(older)}", highlight=False)
    leftovers = _restore_leftovers(tgt, admin)
    for left in leftovers:
        err_console.print(f"[warn]warning[/warn] {escape(left['warning'])}", highlight=False)
    if exists:
        # any existing database, however empty it looks: large objects, functions, types, schemas and
        # extensions hold data too, and a database can be in use before it holds anything
        try:
            holds = pg.database_contents(tgt, name)
        except UpkeeperError as exc:  # (it may allow no connections, or none more)
            holds = f"cannot look inside: {exc.message}"
        except psycopg.Error as exc:
            holds = f"cannot look inside: {pg.pg_error(exc)}"
        if not force:
            raise UsageError(f"{where} already exists ({holds})",
                             "Try: restore into a new database (omit --database, or name a new one), or add --force "
                             "to replace it")
        if not yes:
            if not sys.stdin.isatty():
                raise UsageError(f"--force would DROP {where} ({holds}) and replace it with backup {row.id}; "
                                 "confirm with --yes")
            err_console.print(f"This DROPS database [bold]{name}[/bold] on {server} ({holds}) and replaces it "
                              f"with backup {row.id} (once the backup has been restored into a temporary database).",
                              highlight=False)
            # the question goes where the explanation went, all of it (click's prompt writes a space to stdout):
            # stdout may be --json, or piped
            err_console.print(f"Replace database {name!r}? [y/N]: ", end="", highlight=False, markup=False)
            if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                err_console.print(f"not confirmed: {where} was not changed", highlight=False)
                raise typer.Exit(1)
    token = secrets.token_hex(4)
    temp = _fit(name, f"_upkeeper_restore_{token}")
    aside = _fit(name, f"_upkeeper_old_{token}")
    result: dict[str, Any] = {"destination": f"{server}/{name}", "database": name, "replaced": exists}
    if fewer_jobs:
        result["jobs_warning"] = fewer_jobs
    if leftovers:
        result["leftover_databases"] = leftovers
    with work_dir(config.backup, "upkeeper-restore-") as tmp:
        unchanged = f"{where} was not changed" if exists else f"{where} was not created"
        try:
            with console.status(f"fetching {row.id}…"):
                archive = fetch_pg_archive(fetcher, tmp)
        except OSError as exc:  # (a full disk)
            raise _work_dir_error(exc, tmp, row, fetcher.located.manifest, unchanged) from None
        if apply_globals and archive.globals_sql:
            result["globals_already_existed"] = _apply_globals(tgt, archive.globals_sql, unchanged)
        # the dump's CREATE DATABASE, for the temporary name: its encoding, collation, ctype and locale provider
        # come back as backed up (a database made from template0 with the server's defaults sorts and compares
        # text otherwise)
        try:
            entries = database_entries(tgt, archive, temp, no_owner=no_owner)
        except UpkeeperError as exc:
            raise BackupError(f"restore of backup {row.id} failed: {exc.message}; {unchanged}", exc.hint) from None
        except OSError as exc:  # (its table of contents is written beside the dump)
            raise _work_dir_error(exc, tmp, row, fetcher.located.manifest, unchanged) from None
        except BaseException:
            err_console.print(f"restore of backup {row.id} stopped: {unchanged}", highlight=False)
            raise
        created = False
        try:
            with pg.admin_connect(tgt, admin) as conn:
                if entries.create is None:
                    pg.create_database(conn, temp)
                else:
                    conn.execute(entries.create.encode())
                created = True
                # until it takes its name, the temporary database says what it is: a restore killed outright
                # (SIGKILL, power loss) leaves it, and pg_restore may go on filling it after upkeeper is gone
                pg.comment_database(conn, temp, _incomplete_comment(row.id, name))
        except psycopg.Error as exc:
            if created:  # (its comment failed)
                raise BackupError(f"restore of backup {row.id} failed: {pg.pg_error(exc)}; {unchanged}, "
                                  f"{_temp_dropped(tgt, admin, temp)}") from None
            settings = f" with the backup's settings ({create_settings(entries.create)})" if entries.create else ""
            raise SetupError(f"cannot create the temporary database {temp!r} on {server}{settings}: "
                             f"{pg.pg_error(exc)}; {unchanged}",
                             "Try: give this server what the error names (a locale: locale-gen or an OS package; "
                             "a tablespace: --globals, or create it), or restore where it exists" if entries.create
                             else None) from None
        except BaseException:
            # Ctrl-C or SIGTERM: the server may have completed the CREATE DATABASE as the stop came (dropped if so)
            gone = _temp_dropped(tgt, admin, temp) if created or temp in _existing(tgt, admin, temp) else None
            err_console.print(f"restore of backup {row.id} stopped: {escape(unchanged)}"
                              + (f", {escape(gone)}" if gone else ""), highlight=False)
            raise
        try:
            with console.status(f"restoring into {temp}…"):
                seconds = pg_restore(tgt, archive, temp, jobs=jobs, no_owner=no_owner)
                with pg.admin_connect(tgt, admin) as conn:
                    pg.comment_database(conn, temp, None)  # the backup's own comment, if any, follows
                # pg_restore gives the database itself its owner, comment, privileges and settings only with
                # --create, under the dump's own name: applied here to the temporary one, they move with it
                apply_database_level(tgt, entries.settings, temp)
            result["warning"] = _swap_in(tgt, admin, temp, name, aside if exists else None)
        except _SwapIncomplete:
            raise
        except BaseException as exc:
            leftover = _temp_dropped(tgt, admin, temp)
            if isinstance(exc, UpkeeperError):
                hint = exc.hint
                if isinstance(exc, SetupError) and not no_owner:  # a role missing, or not ours to give objects to
                    hint = ("Try: --globals to create the backup's roles first, or --no-owner to restore every "
                            "object owned by you, without the backup's GRANTs")
                raise BackupError(f"restore of backup {row.id} failed: {exc.message}; {unchanged}, {leftover}"
                                  + (f" (note: {older})" if older else ""), hint) from None
            if isinstance(exc, psycopg.Error):
                raise BackupError(f"restore of backup {row.id} failed: {pg.pg_error(exc)}; {unchanged}, "
                                  f"{leftover}") from None
            err_console.print(f"restore of backup {row.id} stopped: {escape(unchanged)}, {escape(leftover)}",
                              highlight=False)
            raise
    if result["warning"] is None:
        del result["warning"]
    if older:
        result["server_version_warning"] = older
    result["restore_seconds"] = round(seconds, 3)
    return result


def _work_dir_error(exc: OSError, tmp: Path, row: CatalogRow, manifest: Manifest, unchanged: str) -> BackupError:
    """A PostgreSQL restore that could not write the dump it fetches for pg_restore into its work directory (a
    full disk): what failed, where, and how much room the dump needs — not an internal error."""
    needed = sum(o.raw_size for o in manifest.objects if o.role in ("database", "database-dir"))
    return BackupError(f"restore of backup {row.id} failed: cannot write the dump fetched for pg_restore to the work "
                       f"directory {tmp}: {exc.strerror or exc}; {unchanged}",
                       f"Try: free space on the file system of {tmp.parent}, or point backup.work_dir (or TMPDIR) "
                       f"at one with room for the uncompressed dump (~{human_bytes(needed)})")


def _restore_jobs(limits: pg.ConnectionLimits, jobs: int) -> tuple[int, str | None]:
    """pg_restore's jobs within the restoring role's CONNECTION LIMIT (none for a superuser), and the note when
    fewer than ``jobs``.  The restore's other sessions come one at a time, and the temporary database it
    restores into is new (the backed-up database's limit is given to it after pg_restore), so the role's limit
    is the one that counts; a role allowed no connection never got this far."""
    role = None if limits.superuser else limits.role
    need = pg.restore_sessions(jobs)
    if role is None or need <= role.limit:
        return jobs, None
    fewer = pg.restore_jobs_within(role.limit, jobs, 0)
    return fewer, (f"pg_restore runs {fewer} job{'' if fewer == 1 else 's'} instead of {jobs}: {role.allows()}, "
                   f"and --jobs {jobs} needs {need} at once (one per job, and pg_restore's leader's as they start); "
                   f"{role.alter(need)} allows them")


#: marks the temporary database of a restore until it takes its name (:func:`_restore_leftovers` reads it)
INCOMPLETE_RESTORE = "INCOMPLETE: upkeeper restore"


def _incomplete_comment(backup_id: str, name: str) -> str:
    return (f"{INCOMPLETE_RESTORE} of backup {backup_id} into {name!r} (pid {os.getpid()} on {socket.gethostname()}, "
            f"started {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC): not a finished restore until it is renamed to "
            f"{name!r}")


def _restore_leftovers(tgt: PostgresTarget, admin: str) -> list[dict[str, str]]:
    """The databases on the server that restores leave only when killed outright: a temporary
    ``…_upkeeper_restore_<token>`` (part of a backup, or all of it not yet in place) and a set-aside
    ``…_upkeeper_old_<token>`` (the database a restore was replacing).  Nothing is dropped: the operator decides."""
    with pg.admin_connect(tgt, admin) as conn:
        rows = conn.execute("SELECT datname, coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database "
                            "WHERE datname ~ '_upkeeper_(restore|old)_[0-9a-f]{8}$' ORDER BY datname").fetchall()
    found = []
    for datname, comment in rows:
        if re.search(r"_upkeeper_restore_[0-9a-f]{8}$", datname):
            what = (f"temporary database {datname!r} of a restore that was killed (or is still running): "
                    + (f"{comment}" if comment else "it may hold only part of a backup")
                    + f"; once no restore runs, drop it: DROP DATABASE \"{datname}\"")
        else:
            what = (f"database {datname!r} was set aside by a restore killed while replacing a database: it holds "
                    f"that database as it was before; rename it back or drop it once you have checked")
        found.append({"database": datname, "comment": comment, "warning": what})
    return found


def _older_server_warning(manifest: Manifest, server: str, server_ver: str, server_num: int) -> str | None:
    """The warning for a restore into a server of an older major version than the backup's source: PostgreSQL
    does not support it, but it often works, and a failed attempt changes nothing (the temporary database is
    dropped), so it is tried — a downgrade may have no other way back."""
    source = older_server(manifest, server_num)
    if source is None:
        return None
    return (f"backup {manifest.id} was taken from PostgreSQL {source[0]}; {server} runs PostgreSQL {server_ver}, "
            "an older major version, into which PostgreSQL does not support restoring a dump: it may fail on "
            "newer syntax (nothing is replaced unless the whole restore succeeds)")


def _cause(exc: BaseException) -> str:
    """What stopped a step of the swap, in a few words: the server's error, or the exception's type (Ctrl-C)."""
    return pg.pg_error(exc) if isinstance(exc, psycopg.Error) else type(exc).__name__


def _put_back(tgt: PostgresTarget, admin: str, aside: str, name: str,
              failed: Callable[[str], _SwapIncomplete]) -> None:
    """Rename the original database, set aside as ``aside``, back to ``name`` (a connection of its own: the
    swap's may be what failed); when that fails too, raise ``failed(what the server said)``."""
    try:
        with pg.admin_connect(tgt, admin) as undo_conn:
            pg.rename_database(undo_conn, aside, name, evict=True)
    except BaseException as undo:
        raise failed(pg.pg_error(undo)) from None


class _SwapIncomplete(BackupError):
    """The swap stopped half-way where no cleanup may follow: the message says where each database is now."""


def _swap_in(tgt: PostgresTarget, admin: str, temp: str, name: str, aside: str | None) -> str | None:
    """Rename the restored ``temp`` to ``name``; an existing ``name`` is renamed to ``aside`` first (its sessions
    terminated) and dropped last.  Returns a warning when that final drop failed (the restore stands)."""
    server = tgt.display().rsplit("/", 1)[0]
    with pg.admin_connect(tgt, admin) as conn:
        if aside is None:
            try:
                pg.rename_database(conn, temp, name)
            except BaseException:
                # Ctrl-C may come as the server completes the rename: then the restore is complete, and says so
                if _existing(tgt, admin, temp, name) == {name}:
                    return None
                raise
            return None
        try:
            pg.rename_database(conn, name, aside, evict=True)
        except BaseException as exc:
            # Ctrl-C may come as the server completes the rename: the original, set aside, gets its name back
            # before the failure is reported as leaving it unchanged
            if _existing(tgt, admin, name, aside) == {aside}:
                cause = _cause(exc)
                _put_back(tgt, admin, aside, name, lambda undo: _SwapIncomplete(
                    f"stopped ({cause}) while setting aside {name!r} on {server}, and renaming it back failed "
                    f"({undo}): the original database is now named {aside!r}, the restored one {temp!r}",
                    f'Try: ALTER DATABASE "{aside}" RENAME TO "{name}" to put the original back'))
            raise
        try:
            pg.rename_database(conn, temp, name)
        except BaseException as exc:
            # Ctrl-C may come as the server completes the rename: what is where is read anew, never assumed
            if _existing(tgt, admin, temp, name) == {name}:
                raise _SwapIncomplete(f"backup restored into {name!r} on {server}, but stopped before dropping the "
                                      f"replaced database, which is still there as {aside!r}",
                                      f'Try: DROP DATABASE "{aside}" once you no longer need it') from None
            cause = _cause(exc)
            _put_back(tgt, admin, aside, name, lambda undo: _SwapIncomplete(
                f"renaming the restored database {temp!r} to {name!r} on {server} failed ({cause}), and so did "
                f"renaming the original back ({undo}): the original database is now named {aside!r}, the restored "
                f"one {temp!r}", f'Try: ALTER DATABASE "{aside}" RENAME TO "{name}" to put the original back'))
            raise
        # from here on the restore stands: a failure only leaves the old database behind under its new name
        try:
            pg.drop_database(conn, aside)
        except psycopg.Error as exc:
            return (f"the replaced database was kept as {aside!r} on {server}: dropping it failed: "
                    f"{pg.pg_error(exc)}; drop it with DROP DATABASE \"{aside}\"")
        except BaseException:
            # Ctrl-C may come as the server completes the drop: then the restore is complete, and says so
            if aside not in _existing(tgt, admin, aside):
                return None
            raise _SwapIncomplete(f"backup restored into {name!r} on {server}, but stopped while dropping the "
                                  f"replaced database, which is still there as {aside!r}",
                                  f'Try: DROP DATABASE "{aside}" once you no longer need it') from None
    return None


def _existing(tgt: PostgresTarget, admin: str, *names: str) -> set[str]:
    """Which of ``names`` exist on the server, read on a new connection (the one in use may be cancelled); all
    of them when that cannot be read (nothing is claimed gone that may be there)."""
    try:
        with pg.admin_connect(tgt, admin) as conn:
            return {n for n in names if pg.database_exists(conn, n)}
    except Exception:
        return set(names)


def _temp_dropped(tgt: PostgresTarget, admin: str, temp: str) -> str:
    """Drop a failed restore's temporary database; what the error then says of it."""
    dropped = _drop_quietly(tgt, admin, temp)
    return (f"the temporary database {temp!r} was dropped" if dropped is None else
            f"the temporary database {temp!r} could not be dropped ({dropped}): drop it with "
            f"DROP DATABASE \"{temp}\"")


@shielded()  # a stop arriving meanwhile waits for it (upkeeper.shield)
def _drop_quietly(tgt: PostgresTarget, admin: str, name: str) -> str | None:
    """Drop ``name``; the reason when that failed, else None."""
    try:
        with pg.admin_connect(tgt, admin) as conn:
            pg.drop_database(conn, name)
    except UpkeeperError as exc:
        return exc.message
    except psycopg.Error as exc:
        return pg.pg_error(exc)
    return None


def _apply_globals(tgt: PostgresTarget, globals_sql: bytes, unchanged: str) -> int:
    """Run the backup's roles/tablespaces SQL with psql.  The roles the server has are skipped (left as they are:
    :func:`globals_for`); statements go on past errors (``ON_ERROR_STOP=0``) because objects that already exist
    are expected (a tablespace); any other error fails the restore before any database is created.  Returns how
    many objects already existed."""
    from upkeeper.core import proc

    with pg.connect(tgt, tgt.dbname, options=pg.OWN_SESSION_OPTIONS) as conn:
        existing = {str(r[0]) for r in conn.execute("SELECT rolname FROM pg_roles")}
    sql, skipped = globals_for(globals_sql.decode("utf-8", "surrogateescape"), existing)
    res = proc.run([pg.tool(tgt, "psql"), "--no-password", "-X", "-q", "-v", "ON_ERROR_STOP=0", "-f", "-"],
                   input=sql.encode("utf-8", "surrogateescape"), extra_env=tgt.libpq_env(tgt.dbname), check=False)
    errors = pg.stderr_errors(res.stderr)
    existed = [ln for ln in errors if "already exists" in ln]
    others = [ln for ln in errors if "already exists" not in ln]
    if res.returncode != 0 or others:
        what = (f"psql {proc.describe_exit(res.returncode)}" if res.returncode != 0 else
                f"psql reported {len(others)} error(s)")
        detail = "; ".join(others[:3]) or "\n".join(res.stderr.strip().splitlines()[-4:])
        raise BackupError(f"applying the backup's globals (roles, tablespaces) failed: {what}"
                          + (f": {detail}" if detail else "")
                          + ("; its other statements ran, " if res.returncode == 0 else "; ") + unchanged,
                          "Try: fix what the error names (e.g. create the tablespace's directory), or restore "
                          "without --globals (with --no-owner where the backup's roles do not exist)")
    return len(skipped) + len(existed)


def _check_restore_options(row: CatalogRow, files_redis: dict[str, bool], postgres: dict[str, bool]) -> None:
    """An option of the other kind of restore is refused, never ignored (``--to FILE`` for a PostgreSQL backup
    would otherwise create a database on the server)."""
    given = [name for name, on in (postgres if row.kind != "postgres" else files_redis).items() if on]
    if not given:
        return
    if row.kind == "postgres":
        raise UsageError(f"{given[0]} is for files and Redis backups; {row.id} is a PostgreSQL backup, restored "
                         "into a database", "Try: omit --to (a new database '<db>_restored_<time>'), or "
                         "--database NAME")
    raise UsageError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for PostgreSQL backups; "
                     f"{row.id} is a {row.kind} backup, restored --to a "
                     f"{'directory' if row.kind == 'files' else 'file'}",
                     f"Try: upkeeper backups restore {row.id} --to PATH")


def _check_files_destination(to: Path | None, force: bool, backup_id: str) -> None:
    """``to`` must be a new or empty directory, or a non-empty one with ``force`` — or hold the part of this same
    backup that a killed restore left (:data:`INCOMPLETE`): restoring it again completes it."""
    if to is None:
        raise UsageError("restoring a files backup needs --to DIR", "Try: --to a new or empty directory")
    if to.exists() and not to.is_dir():
        raise UsageError(f"--to {to} is not a directory (a files backup is extracted into a directory)",
                         "Try: --to a new or empty directory")
    clean_stale(to.parent, (STAGING_PREFIX,))  # the staging directories of killed restores (plaintext) …
    if to.is_dir():
        try:
            clean_stale(to, (STAGING_PREFIX,))  # … beside or inside it: the latter does not count as content
            nonempty = any(to.iterdir())
            interrupted = _interrupted_restore(to)
        except OSError as exc:
            raise UsageError(f"cannot read directory {to}: {exc.strerror}",
                             "Try: a directory you can read and write") from None
        if interrupted is not None and interrupted != backup_id and not force:
            raise UsageError(f"{to} holds part of backup {interrupted}: a restore of it was stopped while moving "
                             f"entries into place (see {to / INCOMPLETE})",
                             f"Try: 'upkeeper backups restore {interrupted} --to {to}' to complete it, or --force "
                             "to extract this backup into it")
        if nonempty and not force and interrupted != backup_id:
            raise UsageError(f"{to} exists and is not empty", "Try: a new directory, or --force to extract into it")
        return
    blocker = next((p for p in to.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise UsageError(f"cannot create directory {to}: {blocker} is not a directory",
                         "Try: --to a path under an existing directory")


def _check_redis_destination(to: Path | None, force: bool) -> None:
    if to is None:
        raise UsageError("restoring a Redis backup needs --to FILE (the RDB to place in Redis' dir)")
    if to.is_dir():
        raise UsageError(f"--to {to} is a directory; a Redis restore writes one RDB file",
                         f"Try: --to {to / 'dump.rdb'}")
    if to.exists() and not force:
        raise UsageError(f"{to} exists", "Try: another path, or --force to overwrite it")
    blocker = next((p for p in to.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise UsageError(f"cannot write {to}: {blocker} is not a directory",
                         "Try: --to a path under an existing directory")


def _interrupted_restore(to: Path) -> str | None:
    """The backup whose restore into ``to`` was killed while moving entries into place (:data:`INCOMPLETE`)."""
    try:
        first = (to / INCOMPLETE).read_text(errors="replace").split("\n", 1)[0]
    except FileNotFoundError:
        return None
    return first.removeprefix("backup: ").strip() or "(unknown)"


def _stage_beside(to: Path) -> bool:
    """Whether the restore can be staged beside ``to`` and renamed into place as a whole: ``to`` is new, or an
    empty directory (not a link to one, not a mount point) in a parent directory we may write."""
    if to.name in ("", ".."):  # '.', '/', 'a/..': no parent to stage in beside it
        return False
    try:
        st = os.lstat(to)
    except FileNotFoundError:
        return True
    if not stat.S_ISDIR(st.st_mode) or any(to.iterdir()):
        return False
    if st.st_dev != os.stat(to.parent).st_dev or not os.access(to.parent, os.W_OK | os.X_OK):
        return False
    # a bind mount (a container's volume) has the device of its parent, but nothing is renamed into it from
    # there (EXDEV): the restore would fail
    mount, parent_mount = _mount_id(to), _mount_id(to.parent)
    return mount is None or mount == parent_mount


def _mount_id(path: Path) -> int | None:
    """The id of the mount ``path`` is on (each bind mount has its own), or None where that is not known."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return mount_of(fd)
    finally:
        os.close(fd)


def _restore_files(fetcher: Fetcher, row: CatalogRow, to: Path) -> dict[str, Any]:
    """Every tar object streams into a private staging directory (:class:`FilesRestore`): only the members its
    manifest lists, all inside ``to``.  The entries are put in place only once every object was read to its
    end with its SHA-256 matching; any failure before (a corrupt object, a refused member, a full disk, Ctrl-C)
    removes the staging directory and leaves ``to`` as it was.  A new or empty ``to`` is the staging directory,
    renamed (staged beside it): all or nothing.  Into a non-empty one (``--force``) entries are moved one by one,
    with :data:`INCOMPLETE` there until the last is moved."""
    existed = os.path.lexists(to)
    beside = _stage_beside(to)
    created = _make_dirs(to.parent if beside else to)
    unchanged = f"{to} was not changed" if existed else f"{to} was not created"
    n = 0
    m = fetcher.located.manifest
    restore: FilesRestore | None = None
    staged: Path | None = None
    try:
        with staging_dir(to.parent if beside else to) as staging:
            staged = staging
            restore = FilesRestore(fetcher, staging, to)
            with console.status(f"restoring {row.id}…"):
                # secrets first: the main archive's directories then get their mtimes after what lands in them
                for rec in sorted(m.objects, key=lambda o: o.role != "secrets"):
                    if rec.role in ("files", "secrets"):
                        n += restore.extract(rec)
                    else:
                        fetcher.check_only(rec)
                fault_pause("restore-staged")
                if not (beside and restore.rename_into_place()):
                    restore.move_into_place()
    except BaseException as exc:
        if restore is not None and restore.touched:
            where = (f"{to} holds part of the restore (the rest was removed with the staging directory; "
                     f"{to / INCOMPLETE} says so): restore the backup again to complete it")
        else:
            where = unchanged
            for d in reversed(created):
                with contextlib.suppress(OSError):
                    d.rmdir()
        if staged is not None and os.path.lexists(staged):  # (a file system remounted read-only meanwhile)
            where += (f"; the staging directory {staged} could not be removed: remove it (it holds what was "
                      "restored so far), or the next restore there does")
        if isinstance(exc, UpkeeperError):
            raise BackupError(f"restore of backup {row.id} failed: {exc.message}; {where}", exc.hint) from None
        if isinstance(exc, OSError):  # making the staging directory, moving entries into place
            if exc.errno == errno.EROFS:  # (the staging directory's or an entry's name says less)
                what = f"{to} is on a read-only file system"
            else:
                what = f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
            raise BackupError(f"restore of backup {row.id} failed: {what}; {where}", os_error_hint(exc, to)) from None
        err_console.print(f"restore of backup {row.id} stopped: {escape(where)}", highlight=False)
        raise
    out: dict[str, Any] = {"destination": str(to), "entries": n}
    as_read = recorded_as_read(m.details)
    if as_read:  # restored as archived; SQLite may find one torn: a note, the restore itself is whole
        out["sqlite_not_snapshotted"] = as_read
        out["note"] = as_read_note(as_read)
    assert restore is not None
    warnings = []
    skipped = restore.skipped_xattrs.summary()
    if skipped:  # (not restoring as root, a file system without extended attributes)
        warnings.append(skipped)
        out["xattrs_skipped"] = restore.skipped_xattrs.to_dict()
    owners = restore.owners.summary()
    if owners:  # (root without CAP_CHOWN, in a user namespace)
        warnings.append(owners)
        out["owners_not_restored"] = restore.owners.to_dict()
    setgid = restore.owners.setgid_summary()
    if setgid:  # (not restoring as root: the user is not in the entry's group)
        warnings.append(setgid)
        out["setgid_not_restored"] = {"entries": restore.owners.setgid_lost, "example": restore.owners.setgid_example}
    if warnings:
        out["warning"] = "; ".join(warnings)
    return out


def _make_dirs(to: Path) -> list[Path]:
    """``to`` and the missing directories above it, created; returns those that were created, outermost first."""
    missing = [p for p in (to, *to.parents) if not p.exists()][::-1]
    try:
        to.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        for d in reversed(missing):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise UsageError(f"cannot create directory {to}: {exc.strerror}",
                         "Try: --to a directory you can write to") from None
    return missing


def _restore_redis(fetcher: Fetcher, row: CatalogRow, to: Path) -> dict[str, Any]:
    """Fetch the RDB beside ``to``, check it with redis-check-rdb, then rename it into place: a file already
    there (``--force``) is replaced only by a checked RDB, and the new file takes its owner, group and mode
    (a root-owned 0600 dump.rdb in Redis' dir would stop a Redis running as ``redis`` from starting)."""
    m = fetcher.located.manifest
    rec = next((o for o in m.objects if o.role == "rdb"), None)
    if rec is None:
        raise BackupError(f"backup {row.id} has no RDB object")
    try:
        to.parent.mkdir(parents=True, exist_ok=True)
        # fetched into a private staging directory beside it (renamed from there into place): what a restore
        # killed outright (kill -9) leaves there, a plaintext copy of the data, the next restore there removes
        with staging_dir(to.parent) as staging:
            tmp = staging / to.name
            size = fetcher.to_file(rec, tmp)
            like = to if to.exists() else None
            fault_pause("restore-rdb-fetched")  # (the tests: killed while redis-check-rdb reads the plaintext)
            keys = check_rdb(str(tmp), f"the RDB of backup {row.id}",
                             str(m.details.get("redis_version") or "") or None).keys
            _take_ownership_of(tmp, like, to.parent)
            os.replace(tmp, to)
    except OSError as exc:
        raise BackupError(f"cannot write {to}: {exc.strerror or exc}",
                          "Try: a path you can write to, with free space") from None
    result: dict[str, Any] = {"destination": str(to), "bytes": size, "check": "redis-check-rdb: RDB looks OK",
                              "next": REDIS_LOAD_STEPS}
    if keys is not None:
        result["keys"] = keys
    return result


#: how to load a restored RDB, printed after ``backups restore`` of a Redis backup
REDIS_LOAD_STEPS = ("to load it: stop Redis (a running Redis writes its own dump.rdb over it on its next save or "
                    "at shutdown), put this file at Redis' dir/dbfilename (redis-cli config get dir; config get "
                    "dbfilename; with CONFIG renamed, its redis.conf), start Redis. A Redis with appendonly yes never "
                    "reads dump.rdb (without an AOF "
                    "it starts empty): start it with appendonly no, then redis-cli config set appendonly yes "
                    "(see docs/restore-without-upkeeper.md, Restore Redis)")


def _take_ownership_of(path: Path, like: Path | None, directory: Path) -> None:
    """Give ``path`` the owner, group and mode of the file it replaces; a new file, as root, the owner and group
    of the ``directory`` it goes to (Redis' dir belongs to the user Redis runs as)."""
    ref = like.stat() if like is not None else None
    if ref is not None:
        os.chmod(path, ref.st_mode & 0o7777)
    if os.geteuid() != 0:
        return
    owner = ref if ref is not None else directory.stat()
    os.chown(path, owner.st_uid, owner.st_gid)


LOCK_POLL = 1.0  # seconds between attempts to take a backup lock held by another upkeeper


def backup_lock(backup_id: str, storage: str) -> str:
    """The lock of one backup on one storage: a copy to that storage, and a rekey on every storage, hold it, so
    two commands never write (or clean up) the same set at once — a failing copy's cleanup must never remove
    what a concurrent copy completed, while the catalog names the storage."""
    return f"backup:{backup_id}@{storage}"


@contextlib.contextmanager
def _backup_locks(names: list[str], purpose: str, waiting: Callable[[str], None]) -> Iterator[None]:
    """Hold ``names`` (history locks, as the runner's job and target locks: taken over when their holder died)
    for the block, waiting while another process holds one (``waiting`` says who)."""
    history = _env.history()
    owner = process_identity()
    node = owner.rsplit(":", 2)[0]
    keeper = LockKeeper(history, owner)
    taken: list[str] = []
    try:
        for name in sorted(set(names)):  # one order everywhere: two commands never wait on each other
            while not history.acquire_lock(name, owner, node, LOCK_TTL, purpose=purpose):
                holder = history.lock_holder(name)
                waiting(f"waiting for {holder.purpose or 'another upkeeper'} (pid {holder.owner.split(':')[-2]} "
                        f"on {holder.node})" if holder is not None else "waiting for another upkeeper")
                time.sleep(LOCK_POLL)
            taken.append(name)
            keeper.hold()
        yield
    finally:
        keeper.stop()
        for name in taken:
            try:
                history.release_lock(name, owner)
            except Exception as exc:  # its lease runs out, and a dead owner's lock is taken over anyway
                err_console.print(f"could not release lock {escape(name)}: {escape(str(exc))}", highlight=False)


@backups_app.command("copy")
def copy_cmd(
    backup_ids: list[str] = typer.Argument(None, help="backup ids (unique prefixes are enough); or --target / --all",
                                           show_default=False),
    to: str = typer.Option(..., "--to", help="the storage to copy to (a name under 'storages:')"),
    target: str | None = typer.Option(None, "--target", "-t", help="every backup of this target"),
    all_: bool = typer.Option(False, "--all", help="every backup in the catalog"),
    from_: str | None = typer.Option(None, "--from", help="read only from this storage (default: any storage the "
                                     "catalog says holds the backup, the next one when a copy there is damaged)"),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="only say what would be copied (reads, never "
                                 "writes)"),
    check_present: bool = typer.Option(False, "--check-present", help="read back every object of a backup "
                                       "already complete on a remote --to and check its SHA-256, repairing any "
                                       "damaged (default: its manifest.json and the objects' listed sizes; a "
                                       "local --to is always read back)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Copy complete backups to another storage, as they are stored (encrypted objects stay encrypted).

    Each object streams from a storage holding the backup, its size and SHA-256 checked against the manifest;
    manifest.json is written last, so an interrupted copy is never listed on --to.  A backup already complete
    there (the recorded manifest.json, every object there at its size; on a local --to or with --check-present
    every object's SHA-256 read back) is skipped, damaged objects repaired.  Exit code 1 when any backup
    failed."""
    config = _env.config()
    catalog = _catalog()
    rows = _copy_selection(config, catalog, backup_ids or [], target, all_)
    names = sorted(config.storages)
    for flag, name in (("--to", to), ("--from", from_)):
        if name is not None and name not in config.storages:
            raise UsageError(f"{flag} {name!r} is not a storage in the config", "Try: one of " + (", ".join(names) or
                             "(none defined under 'storages')"))
    if from_ == to:
        raise UsageError(f"--from and --to are both {to!r}", "Try: --to another storage")
    sources = {r.id: _copy_sources(config, r, to, from_) for r in rows}
    storages = _open(config, sorted({to, *(n for ss in sources.values() for n in ss)}))
    by_name = {s.name: s for s in storages}
    # --to again, for the lease's refresh thread (never the copy's own connection); opened lazily when remote
    lease_on = [] if dry_run else _open(config, [to])
    # the sources again, for the refresh of the reader's marker the copy holds on them (opened lazily when remote)
    reader_on = [] if dry_run else _open(config, sorted({n for ss in sources.values() for n in ss}))
    reports: list[CopyReport] = []
    try:
        with sigterm_unwinds():  # a stopped copy removes what it wrote, as after Ctrl-C
            for r in rows:
                with console.status(f"{'checking' if dry_run else 'copying'} {r.id} to {to}…") as st:

                    def progress(msg: str, st: Any = st, bid: str = r.id) -> None:
                        st.update(f"{bid} → {to}: {msg}")

                    with _backup_locks([] if dry_run else [backup_lock(r.id, to)],
                                       f"backups copy {r.id} --to {to}", progress):
                        rep = copy_set([by_name[n] for n in sources[r.id]], by_name[to], r.target, r.database,
                                       r.id, recorded_sha256=r.manifest_sha256,
                                       allow_unencrypted_remote=config.backup.unencrypted_explicit,
                                       dry_run=dry_run, progress=progress, check_present=check_present,
                                       lease_on=lease_on[0] if lease_on else None,
                                       reader_on={s.name: s for s in reader_on})
                if rep.action in (COPIED, PRESENT, REPAIRED):
                    catalog.add_storage(r.id, to)
                reports.append(rep)
                if not as_json:
                    _print_copy(rep)
    except KeyboardInterrupt:  # also SIGTERM: what was copied stays copied (and audited), the rest is not
        _audit_copies(reports, to)
        if as_json:
            _stopped_json([rep.to_dict() for rep in reports], rows, lambda row, why: CopyReport(
                row.id, row.target, row.database, to, action="interrupted", error=why).to_dict())
        raise
    finally:
        close_storages([*reader_on, *lease_on, *storages])
    written = _audit_copies(reports, to)
    if as_json:
        print_json([rep.to_dict() for rep in reports])
    else:
        counts: dict[str, int] = {}
        for rep in reports:
            counts[rep.action] = counts.get(rep.action, 0) + 1
        console.print(f"{len(reports)} backup(s) → {to}: " + ", ".join(f"{n} {a}" for a, n in counts.items())
                      + (f"; {human_bytes(sum(rep.bytes for rep in written))} written" if written else ""),
                      highlight=False, markup=False)
    raise typer.Exit(1 if any(rep.action == FAILED for rep in reports) else 0)


def _audit_copies(reports: list[CopyReport], to: str) -> list[CopyReport]:
    """Record the copies written in the audit trail; returns them."""
    written = [rep for rep in reports if rep.action in (COPIED, REPAIRED)]
    if written:
        _env.history().audit("cli", "backup.copy", details={"to": to, "backups": [rep.id for rep in written],
                                                            "bytes": sum(rep.bytes for rep in written)})
    return written


def _selection(config: Config, catalog: Catalog, ids: list[str], target: str | None, all_: bool, *,
               both_hint: str, which_hint: str) -> tuple[list[CatalogRow], bool]:
    """The backups a bulk command (copy, rekey) works on: the ids given, else every backup of --target, else
    (--all) every one, newest first; and whether they were named by id.  Never all of them without saying so:
    a bare 'copy --to X' could start a transfer of every backup."""
    if ids and (target or all_):
        raise UsageError("give backup ids, or --target / --all, not both", both_hint)
    if ids:
        return list({r.id: r for r in (_one(catalog, i) for i in ids)}.values()), True
    if not (target or all_):
        raise UsageError("which backups? give backup ids, --target T, or --all", which_hint)
    _check_target(config, target)
    rows = catalog.list(target=target)
    if not rows:
        raise UsageError("no backups in the catalog" + (f" for target {target!r}" if target else ""),
                         "Try: 'upkeeper backups sync' to read the storages first")
    return rows, False


def _copy_selection(config: Config, catalog: Catalog, ids: list[str], target: str | None,
                    all_: bool) -> list[CatalogRow]:
    """The backups to copy (:func:`_selection`), less those only on storages this config does not have."""
    rows, named = _selection(
        config, catalog, ids, target, all_,
        both_hint="Try: 'upkeeper backups copy ID… --to NAME', or 'upkeeper backups copy --all --to NAME'",
        which_hint="Try: 'upkeeper backups list' for the ids; 'upkeeper backups copy --all --to NAME'")
    if named:
        return rows
    # rows only on storages this config does not have (another config's, or one removed) cannot be read here
    elsewhere = [r for r in rows if not set(r.storages or []) & set(config.storages)]
    if elsewhere:
        names = sorted(set().union(*(r.storages or [] for r in elsewhere)))
        err_console.print(f"{len(elsewhere)} backup(s) in the catalog are only on storages not in this config "
                          f"({', '.join(names) or 'none'}): not copied", highlight=False, markup=False)
    return [r for r in rows if r not in elsewhere]


def _copy_sources(config: Config, row: CatalogRow, to: str, from_: str | None) -> list[str]:
    """Where to read a backup: --from, else the configured storages the catalog says hold it (else every other
    configured storage: the catalog may not know yet).  Only on --to: read there, to check it."""
    if from_:
        return [from_]
    held = [n for n in (row.storages or []) if n in config.storages and n != to]
    if held:
        return held
    if to in (row.storages or []):
        return [to]
    return [n for n in sorted(config.storages) if n != to]


def _print_copy(rep: CopyReport) -> None:
    label = {COPIED: "[green]copied[/green]", PRESENT: "[cyan]already there[/cyan]",
             REPAIRED: "[yellow]repaired[/yellow]", FAILED: "[bold red]FAILED[/bold red]"}.get(rep.action, rep.action)
    what = f"{escape(rep.id)} ({escape(rep.target)}/{escape(rep.database)})"
    detail = ""
    if rep.action == FAILED:
        detail = f": {escape(rep.error or '')}"
    elif rep.bytes:
        detail = f": {human_bytes(rep.bytes)}" + (f" from {escape(rep.source or '')}" if rep.source else "")
    if rep.reused and rep.action == COPIED:
        detail += f" ({rep.reused} object(s) a stopped copy left, checked and kept)"
    console.print(f"{label} {what}{detail}", highlight=False)
    for note in rep.notes:
        console.print(f"  {escape(note)}", highlight=False)
    if rep.action == FAILED and rep.hint:
        err_console.print(f"  {escape(rep.hint)}", highlight=False)


@backups_app.command("rekey")
def rekey_cmd(
    backup_ids: list[str] = typer.Argument(None, help="backup ids (unique prefixes are enough); or --target / --all",
                                           show_default=False),
    target: str | None = typer.Option(None, "--target", "-t", help="every backup of this target"),
    all_: bool = typer.Option(False, "--all", help="every backup in the catalog"),
    identity: list[str] = typer.Option([], "--identity", "-i", help="age identity (private key) file the backups "
                                       "were encrypted for (repeatable; default: backup -> encryption -> "
                                       "identity_file)"),
    passphrase_file: str | None = typer.Option(None, "--passphrase-file", help="file holding the passphrase "
                                               "passphrase-encrypted backups were made with"),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="only say what would be re-encrypted (reads "
                                 "manifests, writes nothing)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Re-encrypt backups to the recipients (or passphrase) configured now, so that an old key can be destroyed.

    Each object streams through age --decrypt (the old key) into age --encrypt (the new one) and to every storage
    holding the backup, SHA-256 checked against the manifest on the way; nothing is decompressed and no
    plaintext touches the disk.  The result is a new backup id (same time); the old backup is deleted only once
    the new one is complete and recorded, so a crash leaves one of them complete, and running rekey again
    finishes the job.  Exit code 1 when any backup failed."""
    config = _env.config()
    catalog = _catalog()
    rows = _rekey_selection(config, catalog, backup_ids or [], target, all_)
    try:
        new = encryption_from(config.backup)
    except UpkeeperError as exc:
        raise UsageError(exc.message, exc.hint) from None
    if new is None:
        raise UsageError("backup -> encryption is not configured: rekey encrypts backups to its recipients (or "
                         "passphrase) and never stores them decrypted",
                         "Try: set backup -> encryption -> recipients to the new age public key(s)")
    old_key = _old_key(config, identity, passphrase_file)
    age = age_binary()
    storages = _open(config)
    # again, for the new sets' leases' refresh thread (never a rekey's own connection); opened lazily when remote
    lease_on = [] if dry_run else _open(config)
    # and once more, for the refresh of the reader's marker rekey holds beside the original while it reads it
    reader_on = [] if dry_run else _open(config)
    reports: list[RekeyReport] = []
    try:
        with sigterm_unwinds():  # a stopped rekey removes the partial new set, as after Ctrl-C
            for r in rows:
                with console.status(f"{'checking' if dry_run else 're-encrypting'} {r.id}…") as st:

                    def progress(msg: str, st: Any = st, bid: str = r.id) -> None:
                        st.update(f"{bid}: {msg}")

                    locks = [] if dry_run else [backup_lock(i, n) for i in (r.id, rekeyed_id(r.id, new))
                                                for n in config.storages]
                    with _backup_locks(locks, f"backups rekey {r.id}", progress):
                        rep = rekey_set(storages, r.target, r.database, r.id, recorded_sha256=r.manifest_sha256,
                                        catalog_storages=r.storages or [], old_key=old_key, new=new, age=age,
                                        catalog=catalog, dry_run=dry_run, progress=progress,
                                        lease_on={s.name: s for s in lease_on},
                                        reader_on={s.name: s for s in reader_on})
                reports.append(rep)
                if not as_json:
                    _print_rekey(rep)
    except KeyboardInterrupt:  # also SIGTERM: the backups re-encrypted so far stay so (and audited)
        _audit_rekeys(reports, new.label)
        if as_json:
            _stopped_json([rep.to_dict() for rep in reports], rows, lambda row, why: RekeyReport(
                row.id, row.target, row.database, action="interrupted", error=why).to_dict())
        raise
    finally:
        close_storages([*reader_on, *lease_on, *storages])
    done = _audit_rekeys(reports, new.label)
    if as_json:
        print_json([rep.to_dict() for rep in reports])
    else:
        counts: dict[str, int] = {}
        for rep in reports:
            counts[rep.action] = counts.get(rep.action, 0) + 1
        console.print(f"{len(reports)} backup(s): " + ", ".join(f"{n} {a}" for a, n in counts.items())
                      + ("; run 'upkeeper backups verify --unverified' with the new key" if done else ""),
                      highlight=False, markup=False)
    raise typer.Exit(1 if any(not rep.ok for rep in reports) else 0)


def _audit_rekeys(reports: list[RekeyReport], label: str) -> list[RekeyReport]:
    """Record the backups re-encrypted in the audit trail; returns them."""
    done = [rep for rep in reports if rep.action in (REKEYED, FINISHED) or rep.replaced]
    if done:
        _env.history().audit("cli", "backup.rekey", details={"encryption": label, "backups": {
            rep.id: rep.new_id for rep in done}})
    return done


def _old_key(config: Config, identity: list[str], passphrase_file: str | None) -> OldKey:
    """The key the backups were made for: --identity files, else the configured identity_file; and the
    passphrase of --passphrase-file."""
    enc = config.backup.encryption_settings()
    files = identity or (enc.identity_files if enc is not None else [])
    for f in files:
        if not Path(f).expanduser().is_file():
            raise UsageError(f"identity file {f} does not exist", "Try: --identity with the old age key file")
    passphrase = None
    if passphrase_file:
        try:
            passphrase = Path(passphrase_file).expanduser().read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --passphrase-file {passphrase_file}: {getattr(exc, 'strerror', exc)}",
                             "Try: a file holding the passphrase the backups were made with") from None
        if not passphrase:
            raise UsageError(f"--passphrase-file {passphrase_file} is empty")
    return OldKey(tuple(str(Path(f).expanduser()) for f in files), passphrase)


def _rekey_selection(config: Config, catalog: Catalog, ids: list[str], target: str | None,
                     all_: bool) -> list[CatalogRow]:
    """The backups to re-encrypt (:func:`_selection`)."""
    return _selection(config, catalog, ids, target, all_, both_hint="Try: 'upkeeper backups rekey --all'",
                      which_hint="Try: 'upkeeper backups rekey --all --identity OLD_KEY_FILE'")[0]


def _print_rekey(rep: RekeyReport) -> None:
    label = {REKEYED: "[green]rekeyed[/green]", FINISHED: "[green]finished[/green]",
             CURRENT: "[cyan]already current[/cyan]", "failed": "[bold red]FAILED[/bold red]"}.get(rep.action,
                                                                                                  rep.action)
    what = f"{escape(rep.id)} ({escape(rep.target)}/{escape(rep.database)})"
    if rep.action in (REKEYED, FINISHED):
        what += f" → {escape(rep.new_id or '')} on {escape(', '.join(rep.storages))}"
    detail = f": {escape(rep.error or '')}" if not rep.ok else (f": {human_bytes(rep.bytes)} written"
                                                              if rep.bytes else "")
    console.print(f"{label} {what}{detail}", highlight=False)
    if not rep.ok and rep.hint:
        err_console.print(f"  {escape(rep.hint)}", highlight=False)


def policy_for(setup: Setup, target: str, database: str, kind: str) -> tuple[RetentionPolicy, str]:
    """The retention a series' own backup job applies after each backup, so prune agrees with it.

    The job is the one of the kind's task on that target that writes the series: a files job by
    its set name (``set``, else the preset, else "files"; the secrets archive shares it), a
    PostgreSQL job naming the database, else one backing up every database but its excluded
    ones.  Its ``retention``, else ``backup.retention`` (Redis: the task's own default).
    """
    task = KIND_TASK.get(kind)
    catch_all: tuple[RetentionPolicy, str] | None = None
    for job in setup.jobs.values():
        if job.task_name != task or (job.target_name or "host") != target:
            continue
        opts = job.options
        pol = getattr(opts, "retention", None)
        found = (pol if isinstance(pol, RetentionPolicy) else setup.config.backup.retention, f"job {job.name}")
        if kind == "files":
            if safe_component(getattr(opts, "set_name", "files")) in (database, database.removesuffix(".secrets")):
                return found
        elif kind == "postgres":
            dbs = getattr(opts, "databases", None)
            if dbs:
                if database in {safe_component(d) for d in dbs}:
                    return found
            elif database not in {safe_component(d) for d in getattr(opts, "exclude_databases", [])}:
                catch_all = catch_all or found  # a job naming the database wins over one taking them all
        else:
            return found
    if catch_all is not None:
        return catch_all
    if kind == "redis":
        return REDIS_RETENTION, "redis default"
    return setup.config.backup.retention, "backup.retention"


@dataclass
class PruneProgress:
    """How far a prune got: the series it will prune (``plan``, as empty reports, filled as it goes) and how many
    of them it ``finished``."""

    plan: list[SeriesReport] = field(default_factory=list)
    finished: int = 0

    def stopped(self) -> list[SeriesReport]:
        """The reports of a prune stopped by a signal: those finished, the one under way and those not reached
        (both marked interrupted, with what they meant to delete and did not)."""
        for i, r in enumerate(self.plan[self.finished:]):
            r.stopped(PRUNE_STOPPED_DURING if i == 0 else PRUNE_STOPPED_BEFORE)
        return self.plan


def run_prune(setup: Setup, storages: list[Storage], catalog: Catalog, *, target: str | None, dry_run: bool,
              now: datetime | None = None, progress: PruneProgress | None = None) -> list[SeriesReport]:
    """Prune every series (of ``target``); then, unless ``dry_run``, the storages' partial uploads.
    ``progress``: filled as it goes, for a caller stopped by a signal to say what was done and what was not."""
    progress = progress if progress is not None else PruneProgress()
    errors: list[str] = []
    unlisted: dict[str, UpkeeperError] = {}
    # the listing says what exists; the catalog's copies of the manifests spare reading them (see usable_copy)
    index = index_sets(storages, target, None, errors, unlisted, known=recorded_manifests(catalog, target))
    reports = progress.plan
    reports.extend(SeriesReport(t, db, kind) for (t, db), idx in sorted(index.items())
                   for kind in sorted({k for k, _w, _s in idx.complete.values()}) or ["postgres"])
    for report in reports:
        policy, _src = policy_for(setup, report.target, report.database, report.kind)
        prune_series(storages, report.target, report.database, report.kind, policy,
                     default_tz=setup.config.timezone, now=now or datetime.now(UTC),
                     incomplete_after=setup.config.backup.incomplete_after, catalog=catalog, dry_run=dry_run,
                     index=index, report=report, node=setup.config.node)
        progress.finished += 1
    if not dry_run:
        clean_leftovers(storages, setup.config.backup.incomplete_after, errors, target)
    if errors and reports:
        reports[0].errors += errors
    elif errors:
        hint = next((e.hint for e in unlisted.values() if e.hint), None)
        raise BackupError(f"cannot list backups: {errors[0]}", hint)
    return reports


#: what ``backups prune`` says of the series it was stopped on, and of those it had not reached
PRUNE_STOPPED_DURING = "interrupted: the command was stopped (SIGTERM or SIGINT) while it pruned this series"
PRUNE_STOPPED_BEFORE = "interrupted: the command was stopped (SIGTERM or SIGINT) before it reached this series"


@contextlib.contextmanager
def _sigint_waits_for_shielded() -> Iterator[None]:
    """Ctrl-C, like SIGTERM (cli._signals), waits for the shielded section under way (a set being deleted from
    its storages and the catalog: upkeeper.shield) before it stops the command.  Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_int(_signum: int, _frame: FrameType | None) -> None:
        stop_or_defer(KeyboardInterrupt())

    old = signal.signal(signal.SIGINT, on_int)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@backups_app.command("prune")
def prune_cmd(
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="only print what would be deleted, and why the "
                                 "rest is kept"),
    target: str | None = typer.Option(None, "--target", "-t", help="only this target"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Apply retention (GFS, restic's semantics) to every series on every configured storage and delete
    incomplete leftovers.
    Prints every backup with the reasons it is kept."""
    setup = state.setup()
    _check_target(setup.config, target)
    storages = _open(setup.config)
    progress = PruneProgress()
    try:
        with _sigint_waits_for_shielded():
            reports = run_prune(setup, storages, _catalog(), target=target, dry_run=dry_run, progress=progress)
    except KeyboardInterrupt:  # also SIGTERM: each set was deleted whole (storages and catalog) or not at all
        _print_prune(setup, progress.stopped(), dry_run, as_json)  # then exit 130 or 143
        raise
    finally:
        close_storages(storages)
    _print_prune(setup, reports, dry_run, as_json)
    if any(r.errors for r in reports):
        raise typer.Exit(1)


def _print_prune(setup: Setup, reports: list[SeriesReport], dry_run: bool, as_json: bool) -> None:
    if as_json:
        print_json([r.to_dict() for r in reports])
        return
    tz = setup.config.timezone
    for r in reports:
        t = Table(title=f"{r.target}/{r.database} ({r.kind})", title_justify="left")
        for col in ("id", "taken", "action", "kept because"):
            t.add_column(col, overflow="fold", no_wrap=col == "id")
        for d in r.decisions:
            action = ("keep" if d.keep else "[warn]would delete[/warn]" if dry_run
                      else "not deleted (interrupted)" if d.item.id in r.not_deleted
                      else "[fail]not deleted everywhere (see the error)[/fail]" if d.item.id in r.delete_failed
                      else "[fail]deleted[/fail]")
            t.add_row(d.item.id, local_time(d.item.time, tz, "%Y-%m-%d %H:%M %Z"), action, ", ".join(d.reasons))
        for bid in r.incomplete_deleted:
            t.add_row(bid, "—", "would delete" if dry_run else "deleted", "incomplete (no manifest), old")
        for bid in r.incomplete_kept:
            t.add_row(bid, "—", "keep", f"incomplete (no manifest): {r.incomplete_why.get(bid, 'may still be written')}")
        for bid, node in sorted(r.foreign.items()):
            t.add_row(bid, "—", "leave alone", f"written by node {node}, unknown to this history (another "
                      "installation? 'upkeeper backups sync' adopts it)")
        console.print(t)
        if any(container_like(n) for n in r.foreign.values()):
            err_console.print(f"[warn]note[/warn] nodes named like container ids: {escape(CONTAINER_FIX)}",
                              highlight=False)
        for e in r.errors:
            err_console.print(f"[fail]error[/fail] {escape(e)}", highlight=False)
    if not reports:
        console.print("no backups on the storages.")


def _forget_pruned_meanwhile(catalog: Catalog, storages: list[Storage], recorded: dict[str, list[str]],
                             errors: list[str]) -> int:
    """After ``sync`` recorded the sets it listed: each storage listed once more, and a set whose manifest went
    from it meanwhile (a prune — a backup job's retention — deleted it after the first listing, and removed its
    row before sync recorded it again) is forgotten there.  A prune deletes a set's manifest before it tells
    the catalog: gone from this listing, its row is fixed here; still in it, the prune's own removal comes after
    sync's record.  Returns how many rows went."""
    gone = 0
    for storage in storages:
        mine = [bid for bid, where in recorded.items() if storage.name in where]
        if not mine:
            continue
        try:
            complete = {st.id for st in scan_sets(storage) if st.complete}
        except UpkeeperError as exc:
            errors.append(f"{storage.name}: listing again: {exc.message}")
            continue
        for bid in mine:
            if bid not in complete:
                catalog.remove_storage(bid, storage.name)
                if catalog.get(bid) is None:
                    gone += 1
    return gone


def _warn_other_manifests(manifests: dict[tuple[str, str], Manifest], where: Sequence[Storage], bid: str,
                          recorded: str | None) -> None:
    """Warn of each copy of ``bid`` after the first (whose manifest :meth:`Catalog.record` compares itself) whose
    manifest.json is not the one recorded (or, for a set new to the catalog, the one recorded now, the first
    storage's): never silently counted as the same backup there — verify fails on it, a restore skips it."""
    for st in where[1:]:
        found = manifests[(st.name, bid)].sha256
        if recorded and found and found != recorded:
            err_console.print(f"[warn]warning[/warn] backup {bid}: manifest.json on storage {escape(st.name)} (SHA-256 "
                              f"{found[:16]}…) is not the one recorded ({recorded[:16]}…); the catalog keeps the "
                              f"recorded one, 'upkeeper backups verify {bid}' fails and 'upkeeper backups restore' "
                              "skips that copy until the original is back there", highlight=False)


@backups_app.command("sync")
def sync_cmd(
    force: bool = typer.Option(False, "--force", help="also remove the rows of a storage that lists no backups at "
                               "all (only when they really are gone: an unmounted volume looks the same)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Rebuild the catalog from the manifests on every configured storage (storage is the source of truth).

    Every readable set is recorded.  A storage that cannot be listed and a manifest that cannot be read are
    reported (exit code 1) and cost no catalog row; nor does a storage that lists no backups at all while the
    catalog has some there (an unmounted volume or a wrong path), unless --force."""
    config = _env.config()
    catalog = _catalog()
    storages = _open(config)
    added = updated = removed = kept = 0
    errors: list[str] = []
    try:
        unlisted: dict[str, UpkeeperError] = {}
        manifests: dict[tuple[str, str], Manifest] = {}  # each read once, while listing: recorded as read
        # the catalog read before storage is listed: a set recorded meanwhile (a backup finishing) is not in
        # ``rows``, so it is never taken for a row whose set vanished from storage
        rows = {r.id: r for r in catalog.list()}
        nodes_seen = catalog.nodes_seen() | {config.node}
        adopted: dict[str, int] = {}  # sets of nodes this history did not know (see prune.foreign_sets), by node
        index = index_sets(storages, None, None, errors, unlisted, read=manifests)
        found: dict[str, int] = {s.name: 0 for s in storages}  # sets with a manifest, readable or not
        unreadable: dict[str, set[str]] = {}  # set id -> storages where its manifest could not be read
        damaged: dict[str, set[str]] = {}  # set id -> storages whose copy lacks an object: they do not hold it
        for idx in index.values():
            for _kind, _when, where in idx.complete.values():
                for st in where:
                    found[st.name] += 1
            for bid, where in idx.unreadable.items():
                unreadable.setdefault(bid, set()).update(st.name for st in where)
                for st in where:
                    found[st.name] += 1
            for bid, copies in idx.damaged.items():
                for st, _why in copies:
                    damaged.setdefault(bid, set()).add(st.name)
                    found[st.name] += 1
        # A storage that lists nothing while the catalog has backups there is more likely unmounted or
        # misconfigured than emptied: its rows stay unless --force says they really are gone.
        empty: set[str] = set()
        for name, n in found.items():
            claimed = sum(name in (r.storages or []) for r in rows.values())
            if n == 0 and claimed and name not in unlisted and not force:
                empty.add(name)
                errors.append(f"{name}: lists no backups, but the catalog has {claimed} there; their rows are kept "
                              "(an unmounted volume or a wrong path looks just like this). If they really are "
                              "gone: 'upkeeper backups sync --force'")
        unknown = set(unlisted) | empty  # storages whose contents we could not see
        seen: set[str] = set()
        recorded: dict[str, list[str]] = {}  # set id -> the storages whose listing showed it complete
        for _t_db, idx in sorted(index.items()):
            for bid, (_kind, _when, where) in sorted(idx.complete.items()):
                recorded[bid] = [st.name for st in where]
                manifest = manifests[(where[0].name, bid)]  # the first storage's copy, as a restore reads it
                row = rows.get(bid)
                _warn_other_manifests(manifests, where, bid, (row.manifest_sha256 if row is not None else None)
                                      or manifest.sha256)
                # the storages listed are those holding it now, and those we could not look into
                holders = {st.name for st in where}
                if row is not None:
                    holders |= {n for n in (row.storages or []) if n in unknown | unreadable.get(bid, set())}
                catalog.record(manifest, sorted(holders))
                catalog.set_storages(bid, sorted(holders))
                seen.add(bid)
                if row is None and manifest.node and manifest.node not in nodes_seen:
                    adopted[manifest.node] = adopted.get(manifest.node, 0) + 1
                added += row is None
                updated += row is not None
        for bid, row in rows.items():
            if bid in seen:
                continue
            where_row = set(row.storages or [])
            if bid in unreadable or where_row & unknown or (not where_row and unknown) or bid in damaged:
                kept += 1  # unreachable is not gone: the row, its verification and manifest hash stay as they are
                if where_row & damaged.get(bid, set()):  # but a copy that lost an object is no copy
                    catalog.set_storages(bid, sorted(where_row - damaged[bid]))
                continue
            catalog.remove(bid)
            removed += 1
        removed += _forget_pruned_meanwhile(catalog, storages, recorded, errors)
    except UpkeeperError:
        raise
    except Exception as exc:
        raise TaskError(f"sync failed: {exc}") from exc
    finally:
        close_storages(storages)
    names = [s.name for s in storages]
    result = {"added": added, "updated": updated, "removed": removed, "kept": kept, "storages": names,
              "adopted_nodes": adopted, "errors": errors}
    if as_json:
        print_json(result)
    else:
        console.print(f"catalog {'partly ' if errors else ''}synced from {', '.join(names)}: {added} added, "
                      f"{updated} refreshed, {removed} removed (no longer on any storage)"
                      + (f", {kept} left as they were (not seen where the storage or the manifest could not be "
                         "read, or the storage listed nothing)" if kept else ""))
        if adopted:
            console.print(f"adopted {sum(adopted.values())} backup(s) written by node(s) {', '.join(sorted(adopted))}, "
                          "which this history did not know: retention here counts them from now on. If such a "
                          "node is another installation still writing to these storages, give each installation "
                          "storages of its own first (docs/backups.md, 'Several nodes').", markup=False)
        hints = {f"{name}: {exc.message}": exc.hint for name, exc in unlisted.items()}
        for e in errors:
            err_console.print(f"[fail]error[/fail] {escape(e)}", highlight=False)
            if hints.get(e):
                err_console.print(f"  {escape(hints[e] or '')}", highlight=False)
    if errors:
        raise typer.Exit(1)
