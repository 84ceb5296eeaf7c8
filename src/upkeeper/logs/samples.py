"""Examples kept from a log, the same whatever way it was cut among processes.

A log is read in pieces by one or more processes (:mod:`upkeeper.logs.parallel`), each keeping a few examples
(attack requests, unparsable lines, untrusted client addresses).  Keeping the first ones each process sees would make
the report depend on the number of processes and on which piece each one took; keeping the first ones in *byte
order* does not: the first ``cap`` of the merged lists are the first ``cap`` of the whole log's.
"""

from __future__ import annotations

import bisect
from typing import Any


def keep_first(kept: list[Any], value: Any, cap: int) -> bool:
    """Keep in ``kept`` (sorted) the ``cap`` first distinct values seen, in their natural order; whether ``value``
    is kept now (it may be pushed out by a smaller one later)."""
    if len(kept) >= cap and not value < kept[-1]:
        return False
    at = bisect.bisect_left(kept, value)
    if at < len(kept) and kept[at] == value:
        return False
    kept.insert(at, value)
    del kept[cap:]
    return True


def merge_first(a: list[Any], b: list[Any], cap: int) -> list[Any]:
    """The ``cap`` first distinct values of two lists that :func:`keep_first` kept."""
    return sorted(set(a).union(b))[:cap]
