"""Heavy libraries, imported on first use.

``upkeeper run JOB`` validates every job's options in the CLI process, which imports
every task module the config names; the task runs in a worker process.  A task module
that imports psycopg, redis, httpx, dnspython or cryptography at its top would make
the CLI pay for libraries only the worker uses (psycopg alone: ~50 ms).  Such a module
binds the library with :func:`module` instead::

    if TYPE_CHECKING:
        import psycopg
    else:
        psycopg = lazy.module("psycopg")

The name is a stand-in until an attribute is first read; then the real module is
imported (thread-safe: the import system locks each module) and its namespace copied
in, so later reads cost what a module attribute costs.  The worker calls
:func:`load_all` while it waits for its first run, so runs never pay for the import.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable, Collection
from types import ModuleType
from typing import Any

_stand_ins: dict[tuple[str, tuple[str, ...]], _LazyModule] = {}
_lock = threading.Lock()


class _LazyModule(ModuleType):
    def __init__(self, name: str, submodules: tuple[str, ...]) -> None:
        super().__init__(name)
        self._lazy_submodules = submodules
        self._lazy_loaded: ModuleType | None = None
        self._lazy_owners: set[str] = set()  # the modules that asked for it (:func:`load_all`'s ``first``)

    def _lazy_load(self) -> ModuleType:
        real = self._lazy_loaded
        if real is None:
            real = importlib.import_module(self.__name__)
            for sub in self._lazy_submodules:
                importlib.import_module(f"{self.__name__}.{sub}")
            self.__dict__.update({k: v for k, v in real.__dict__.items() if not k.startswith("__")})
            self._lazy_loaded = real
        return real

    def __getattr__(self, attr: str) -> Any:  # only for names not (yet) copied in
        if attr.startswith("_lazy_"):
            raise AttributeError(attr)
        return getattr(self._lazy_load(), attr)

    def __repr__(self) -> str:
        state = "loaded" if self._lazy_loaded is not None else "not loaded yet"
        return f"<lazy module {self.__name__!r} ({state})>"


def module(name: str, *submodules: str) -> ModuleType:
    """A stand-in for module ``name`` that imports it (and ``name.sub`` for each of ``submodules``)
    when an attribute is first read."""
    owner = sys._getframe(1).f_globals.get("__name__", "")
    with _lock:
        found = _stand_ins.get((name, submodules))
        if found is None:
            found = _stand_ins[(name, submodules)] = _LazyModule(name, submodules)
        found._lazy_owners.add(owner)
        return found


def load_all(first: Collection[str] = (), stop: Callable[[], bool] | None = None) -> None:
    """Import every library a stand-in waits for (the worker does this before its first run): those of the
    modules ``first`` names (the task modules of the runs to come) first, then the others.  ``stop``: asked
    before each import; once true, the rest is left for first use (a run has come: it imports what it needs
    itself, instead of waiting for libraries of tasks it does not run).

    Best effort: a library that fails to import is left for first use, which reports the error
    where it matters (in the run of the task that needs it).
    """
    with _lock:
        pending = list(_stand_ins.values())
    wanted = set(first)
    for m in sorted(pending, key=lambda m: not (m._lazy_owners & wanted)):  # (stable: else in creation order)
        if stop is not None and stop():
            return
        try:
            m._lazy_load()
        except Exception:
            continue
