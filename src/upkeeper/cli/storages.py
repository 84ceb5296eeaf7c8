"""``upkeeper storages list|check``: the configured backup storages, and a round trip through each.

``check`` proves credentials, host keys, permissions and reachability before the
first backup depends on them: it writes a small probe object, stats it, reads it
back, lists it and deletes it.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import typer
from rich.table import Table

from upkeeper.cli._app import app, console, print_json, state
from upkeeper.errors import StorageError, UsageError
from upkeeper.redact import redact
from upkeeper.storage import open_storage
from upkeeper.storage.base import Storage, get_bytes, put_bytes

storages_app = typer.Typer(help="Backup storages: list them, check that each one works.", no_args_is_help=True)
app.add_typer(storages_app, name="storages")

PROBE_PREFIX = ".upkeeper-check/"


def _configured(names: list[str] | None) -> dict[str, Any]:
    configured = state.setup().config.storages
    if not names:
        if not configured:
            raise UsageError("no storages are configured", "Try: add a 'storages:' section (docs/storage.md)")
        return dict(configured)
    unknown = [n for n in names if n not in configured]
    if unknown:
        known = ", ".join(sorted(configured)) or "none"
        raise UsageError(f"unknown storage {unknown[0]!r} (configured: {known})",
                         "Try: upkeeper storages list")
    return {n: configured[n] for n in names}


@storages_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """List the configured storages and where they point."""
    rows = []
    for name, cfg in _configured(None).items():
        storage = open_storage(name, cfg)
        rows.append({"name": name, "kind": cfg.kind, "where": storage.describe()})
        storage.close()
    if as_json:
        print_json(rows)
        return
    table = Table(title="Storages", title_justify="left")
    for col in ("name", "kind", "where"):
        table.add_column(col, style="bold" if col == "name" else None, overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["kind"], r["where"])
    console.print(table)


def check_storage(name: str, storage: Storage) -> dict[str, Any]:
    """Write, stat, read, list and delete a probe object; ``exclusive``: whether the storage refused to create it
    again where it was (what the sets' leases count on; False: a store that ignores S3's If-None-Match).  Never
    raises for a storage problem."""
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    payload = os.urandom(4096)
    result: dict[str, Any] = {"name": name, "kind": storage.kind, "where": storage.describe(), "ok": False,
                              "seconds": None, "step": None, "error": None, "hint": None, "permanent": None,
                              "exclusive": None}
    started = time.monotonic()
    step = "write"
    try:
        put_bytes(storage, key, payload)
        step = "stat"
        info = storage.stat(key)
        if info is None or info.size != len(payload):
            raise StorageError(f"the probe object {key} was written but stat reports {info}")
        step = "read"
        if get_bytes(storage, key) != payload:
            raise StorageError(f"the probe object {key} read back different bytes")
        step = "exclusive create"
        # what the leases of sets being written count on: a create where an object is, refused
        result["exclusive"] = not storage.create_exclusive(key, b"another writer") and \
            get_bytes(storage, key) == payload
        step = "list"
        if key not in {o.key for o in storage.list(PROBE_PREFIX)}:
            raise StorageError(f"the probe object {key} is missing from the listing")
        step = "delete"
        storage.delete(key)
        if storage.stat(key) is not None:
            raise StorageError(f"the probe object {key} is still there after delete")
        result["ok"] = True
    except StorageError as exc:
        result.update(step=step, error=exc.message, hint=exc.hint, permanent=exc.permanent)
        if step not in ("write", "delete"):
            try:
                storage.delete(key)
            except StorageError:
                pass
    finally:
        storage.close()
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


@storages_app.command("check")
def check_cmd(
    names: list[str] = typer.Argument(None, help="storages to check (default: all)", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Write, read back, list and delete a small probe object on each storage; exit 1 if any fails."""
    results = []
    for name, cfg in _configured(names).items():
        try:
            storage = open_storage(name, cfg)
        except StorageError as exc:
            results.append({"name": name, "kind": cfg.kind, "where": None, "ok": False, "seconds": None,
                            "step": "open", "error": exc.message, "hint": exc.hint, "permanent": exc.permanent})
            continue
        results.append(check_storage(name, storage))
    if as_json:
        print_json(results)
    else:
        for r in results:
            if r["ok"]:
                console.print(f"[ok]ok[/ok]    {r['name']} ({r['where']}) — write, read, list, delete in "
                              f"{r['seconds']:.2f}s")
                if r.get("exclusive") is False:
                    console.print("       but it overwrote the probe when asked to create it only where nothing "
                                  "is (S3: If-None-Match ignored): two hosts sharing it can both take a set's "
                                  "lease at once", markup=False)
            else:
                console.print(f"[fail]FAILED[/fail] {r['name']} at {r['step']}: ", end="")
                console.print(redact(r["error"]), markup=False)
                if r["hint"]:
                    console.print(f"       {redact(r['hint'])}", markup=False)
    if not all(r["ok"] for r in results):
        raise typer.Exit(1)
