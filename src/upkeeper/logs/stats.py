"""Figures both report builders use — nearest-rank percentiles of a histogram and the top entries of a counter —
light (stdlib and the C extension), so that a PostgreSQL log's report does not import the access-log scanner (its
~200 attack patterns compiled: ~40 ms of every ``logs.postgres`` run's tail)."""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from itertools import accumulate, starmap
from operator import itemgetter, mul
from typing import Any

_top_candidates: Callable[[dict[Any, int], int], list[tuple[Any, int]] | None] | None
try:  # top's pre-selection of a large counter, in C
    from upkeeper.logs._cut import top_candidates as _top_candidates
except ImportError:  # pragma: no cover - built without a C compiler (or before top_candidates)
    _top_candidates = None


def percentiles(hist: Iterable[tuple[float, int]], ps: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles of a histogram of (value, count), plus mean, max and count."""
    items = sorted(hist)
    counts = list(map(itemgetter(1), items))
    total = sum(counts)
    if not total:
        return {}
    out: dict[str, float] = {"count": float(total)}
    cum = list(accumulate(counts))  # (a step in C per value: an endpoint's histogram has thousands)
    at = 0
    for p in ps:  # the first value whose running count reaches the rank (and not before the last one's)
        at = max(at, bisect_left(cum, max(1, math.ceil(p / 100.0 * total))))
        out[f"p{p:g}"] = items[at][0]
    out["mean"] = round(sum(starmap(mul, items)) / total, 3)
    out["max"] = items[-1][0]
    return out


def top(counter: Counter[Any], n: int, key: Any = None) -> list[tuple[Any, int]]:
    """The ``n`` most frequent entries, ties broken by key (deterministic)."""
    items: Iterable[tuple[Any, int]] = counter.items()
    if key is None and n > 0 and len(counter) > 4 * n:
        # a large counter (paths, clients, agents): the n-th highest count first, comparing plain integers, so
        # that only the entries that reach it are ordered by (count, key) (the same n entries, fewer key calls)
        picked = _top_candidates(counter, n) if _top_candidates is not None else None
        if picked is None:  # (no C extension, or a count that is not a machine integer)
            floor = heapq.nlargest(n, counter.values())[-1]
            picked = [kv for kv in items if kv[1] >= floor]
        items = picked
    return heapq.nsmallest(n, items, key=key or _by_count)


def _by_count(kv: tuple[Any, int]) -> tuple[int, Any]:
    return -kv[1], kv[0]


