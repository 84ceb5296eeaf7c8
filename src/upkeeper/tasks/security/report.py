"""A small document model rendered to Markdown and to standalone HTML (evidence reports)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    verdict: str | None = None  # "ok" | "attention" | None


@dataclass
class Document:
    title: str
    meta: list[tuple[str, str]]
    sections: list[Section]


def _cell(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.2f}".rstrip("0").rstrip(".")
    if isinstance(v, list | tuple):
        return ", ".join(str(x) for x in v) or "—"
    return str(v)


def to_markdown(doc: Document) -> str:
    out = [f"# {doc.title}", ""]
    out += [f"- **{k}:** {v}" for k, v in doc.meta] + [""]
    for s in doc.sections:
        badge = {"ok": " ✅", "attention": " ⚠️"}.get(s.verdict or "", "")
        out += [f"## {s.title}{badge}", ""]
        for p in s.paragraphs:
            out += [p, ""]
        for t in s.tables:
            out.append("| " + " | ".join(t.headers) + " |")
            out.append("|" + "---|" * len(t.headers))
            for r in t.rows:
                out.append("| " + " | ".join(_cell(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


CSS = """body{font:14px/1.5 system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;width:100%}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f3f3f3}.ok{color:#17702a}.attention{color:#a35a00}
h1{border-bottom:2px solid #333}dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px}"""


def to_html(doc: Document) -> str:
    e = html.escape
    out = ["<!doctype html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">", f"<title>{e(doc.title)}</title>",
           f"<style>{CSS}</style></head><body>", f"<h1>{e(doc.title)}</h1>", "<dl>"]
    out += [f"<dt><b>{e(k)}</b></dt><dd>{e(v)}</dd>" for k, v in doc.meta]
    out.append("</dl>")
    for s in doc.sections:
        cls = f' class="{s.verdict}"' if s.verdict else ""
        mark = {"ok": " ✅", "attention": " ⚠️"}.get(s.verdict or "", "")
        out.append(f"<h2{cls}>{e(s.title)}{mark}</h2>")
        out += [f"<p>{e(p)}</p>" for p in s.paragraphs]
        for t in s.tables:
            out.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in t.headers) + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{e(_cell(c))}</td>" for c in r) + "</tr>" for r in t.rows]
            out.append("</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
