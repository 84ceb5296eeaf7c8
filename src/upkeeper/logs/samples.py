"""Examples kept from a log, the same whatever way it was cut among processes.

A log is read in pieces by one or more processes (:mod:`upkeeper.logs.parallel`), each keeping a few examples
(attack requests, unparsable lines, untrusted client addresses).  Keeping the first ones each process sees would make
the report depend on the number of processes and on which piece each one took; keeping the first ones in *byte
order* does not: the first ``cap`` of the merged lists are the first ``cap`` of the whole log's.

Light on purpose: the report builders import it (:func:`trace_excerpt` made :mod:`upkeeper.logs.report_html` import
the error-log parser, ~10 ms of every access and PostgreSQL run's worker).
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


def trace_excerpt(example: str, head: int = 3, tail: int = 6, width: int = 300) -> str:
    """An exception's example for a table cell: all of it when short, else its first ``head`` lines (a JVM
    or JS exception and its first frames) and its last ``tail`` ones (where a Python traceback was raised
    and its exception line), each cut at ``width`` characters."""
    lines = [ln if len(ln) <= width else ln[:width] + "…" for ln in example.split("\n")]
    if len(lines) > head + tail + 1:
        lines = lines[:head] + [f"… {len(lines) - head - tail} more lines …"] + lines[-tail:]
    return "\n".join(lines)
