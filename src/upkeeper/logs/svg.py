"""Inline SVG charts for the offline HTML reports (no JavaScript, no network)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

PALETTE = ("#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d")
STATUS_COLORS = {"1": "#64748b", "2": "#16a34a", "3": "#0891b2", "4": "#d97706", "5": "#dc2626"}


def _fmt(v: float) -> str:
    if abs(v) >= 1e9:
        return f"{v / 1e9:.1f}G"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.1f}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.0f}k"
    if abs(v) >= 1e3:
        return f"{v / 1e3:.1f}k"
    if v == int(v):
        return f"{int(v)}"
    return f"{v:.1f}"


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    mag = 10 ** (len(str(int(v))) - 1)
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * mag:
            return float(m * mag)
    return float(10 * mag)


def line_chart(points: Sequence[tuple[str, float]], *, width: int = 860, height: int = 220, title: str = "",
               unit: str = "", threshold: float | None = None, threshold_label: str = "",
               color: str = PALETTE[0], area: bool = True) -> str:
    """A time series as a polyline (labels are the x values, shown sparsely)."""
    if not points:
        return '<p class="muted">no data</p>'
    left, right, top, bottom = 56, 12, 24 if title else 10, 34
    w, h = width - left - right, height - top - bottom
    vmax = _nice_max(max([v for _, v in points] + ([threshold] if threshold else [])))
    n = len(points)

    def x(i: int) -> float:
        return left + (w * i / (n - 1) if n > 1 else w / 2)

    def y(v: float) -> float:
        return top + h - h * v / vmax

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">']
    if title:
        parts.append(f'<text x="{left}" y="14" class="ct">{escape(title)}</text>')
    for k in range(5):
        v = vmax * k / 4
        parts.append(f'<line x1="{left}" x2="{left + w}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4:.1f}" class="ax" text-anchor="end">'
                     f'{_fmt(v)}{escape(unit)}</text>')
    step = max(1, n // 8)
    for i in range(0, n, step):
        anchor = "start" if i == 0 and n > 1 else ("end" if i == n - 1 and n > 1 else "middle")
        if i and n - 1 - i < step // 2 and i != n - 1:
            continue
        parts.append(f'<text x="{x(i):.1f}" y="{height - 14}" class="ax" text-anchor="{anchor}">'
                     f'{escape(points[i][0])}</text>')
    coords = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, (_, v) in enumerate(points))
    if area and n > 1:
        parts.append(f'<polygon points="{x(0):.1f},{y(0):.1f} {coords} {x(n - 1):.1f},{y(0):.1f}" '
                     f'fill="{color}" fill-opacity="0.12"/>')
    parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.8"/>')
    if n <= 60:
        for i, (lab, v) in enumerate(points):
            parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{color}">'
                         f'<title>{escape(lab)}: {_fmt(v)}{escape(unit)}</title></circle>')
    if threshold is not None:
        parts.append(f'<line x1="{left}" x2="{left + w}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
                     f'class="thr"/><text x="{left + w}" y="{y(threshold) - 4:.1f}" class="ax thrt" '
                     f'text-anchor="end">{escape(threshold_label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(items: Sequence[tuple[str, float]], *, width: int = 860, title: str = "", unit: str = "",
              threshold: float | None = None, threshold_label: str = "", colors: Sequence[str] | None = None,
              label_width: int = 260) -> str:
    """Horizontal bars, one per item, with the value printed after each bar."""
    if not items:
        return '<p class="muted">no data</p>'
    row = 22
    top = 24 if title else 6
    height = top + row * len(items) + (16 if threshold is not None else 8)
    left = label_width
    w = width - left - 70
    vmax = _nice_max(max([v for _, v in items] + ([threshold] if threshold else [])))
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">']
    if title:
        parts.append(f'<text x="4" y="14" class="ct">{escape(title)}</text>')
    for i, (lab, v) in enumerate(items):
        yy = top + i * row
        c = colors[i % len(colors)] if colors else PALETTE[0]
        bw = max(1.0, w * v / vmax) if v > 0 else 0.0
        short = lab if len(lab) <= 42 else lab[:40] + "…"
        parts.append(f'<text x="{left - 8}" y="{yy + 15}" class="ax" text-anchor="end">{escape(short)}'
                     f'<title>{escape(lab)}</title></text>'
                     f'<rect x="{left}" y="{yy + 3}" width="{bw:.1f}" height="{row - 7}" fill="{c}" rx="2">'
                     f'<title>{escape(lab)}: {_fmt(v)}{escape(unit)}</title></rect>'
                     f'<text x="{left + bw + 6:.1f}" y="{yy + 15}" class="ax">{_fmt(v)}{escape(unit)}</text>')
    if threshold is not None:
        tx = left + w * threshold / vmax
        parts.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{top}" y2="{height - 6}" class="thr"/>'
                     f'<text x="{min(tx + 4, width - 4):.1f}" y="{height - 1}" class="ax thrt" '
                     f'text-anchor="{"end" if tx + 4 > width - 150 else "start"}">{escape(threshold_label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def status_colors(codes: Sequence[str]) -> list[str]:
    return [STATUS_COLORS.get(c[:1], PALETTE[4]) for c in codes]
