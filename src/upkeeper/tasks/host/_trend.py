"""Least-squares trends over time series: disk fill rate, process memory growth."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Trend:
    slope: float  # units per second
    r2: float  # 1.0: every sample on the line; near 0: no linear trend
    n: int
    span_s: float

    def per_hour(self) -> float:
        return self.slope * 3600


def fit(points: Sequence[tuple[float, float]]) -> Trend | None:
    """Fit value = a + slope·t over (t seconds, value) points; None for fewer than two distinct times."""
    n = len(points)
    if n < 2:
        return None
    t0 = points[0][0]
    xs = [t - t0 for t, _ in points]
    ys = [v for _, v in points]
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    syy = sum((y - my) ** 2 for y in ys)
    slope = sxy / sxx
    r2 = 1.0 if syy == 0 else max(0.0, min(1.0, (sxy * sxy) / (sxx * syy)))
    return Trend(slope=slope, r2=r2, n=n, span_s=max(xs) - min(xs))
