"""Standalone HTML reports: one file, inline CSS and SVG, readable offline and printable."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from html import escape
from typing import Any

from upkeeper.fmt import printable_lines
from upkeeper.logs.samples import trace_excerpt
from upkeeper.logs.svg import PALETTE, bar_chart, line_chart, status_colors
from upkeeper.redact import redact, redact_obj

FUTURE_SLACK = timedelta(days=1)  # log time may run ahead of the clock here (another time zone)

CSS = """
:root{--fg:#0f172a;--mut:#64748b;--bd:#e2e8f0;--bg:#f8fafc;--warn:#d97706;--crit:#dc2626;--ok:#16a34a}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);
margin:0;background:var(--bg)}main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid var(--bd);
padding-bottom:4px}h3{font-size:14px;margin:18px 0 6px}.muted{color:var(--mut)}
.kpis{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:10px;margin:16px 0}
.kpi{background:#fff;border:1px solid var(--bd);border-radius:8px;padding:10px 12px}
.kpi b{display:block;font-size:20px}.kpi span{color:var(--mut);font-size:12px}
.kpi.warn{border-color:var(--warn)}.kpi.crit{border-color:var(--crit)}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid var(--bd);margin:6px 0 14px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--bd);vertical-align:top}
th{background:#f1f5f9;font-weight:600;font-size:12px}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
td code,td.code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all;
white-space:pre-wrap}
.sev{font-weight:600;text-transform:uppercase;font-size:11px}.sev.warning{color:var(--warn)}
.sev.critical{color:var(--crit)}.sev.info{color:var(--mut)}
.chart{background:#fff;border:1px solid var(--bd);border-radius:8px;margin:6px 0 14px}
.chart .grid{stroke:#eef2f7}.chart .ax{font-size:11px;fill:#475569}.chart .ct{font-size:12px;font-weight:600;
fill:#0f172a}.chart .thr{stroke:#dc2626;stroke-dasharray:4 3}.chart .thrt{fill:#dc2626}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:14px}@media(max-width:800px){.grid2{grid-template-columns:1fr}}
footer{margin:30px 0 10px;color:var(--mut);font-size:12px}
@media print{body{background:#fff}main{padding:0}}
"""


def fmt_num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:
            return "-"
        if abs(v) >= 100 or v == int(v):
            return f"{v:,.0f}"
        return f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _cell(value: Any) -> str:
    """Text from a log (a path, an agent, a message) for a cell: control characters and bidi controls written
    as escapes (:func:`upkeeper.fmt.printable_lines`), so a right-to-left override in a request path cannot
    make a cell read as something else, then HTML-escaped."""
    return escape(printable_lines(str(value)))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, numeric: Sequence[int] = (),
          code: Sequence[int] = (), empty: str = "nothing to show") -> str:
    if not rows:
        return f'<p class="muted">{escape(empty)}</p>'
    out = ["<table><thead><tr>"]
    for i, h in enumerate(headers):
        out.append(f'<th class="n">{escape(h)}</th>' if i in numeric else f"<th>{escape(h)}</th>")
    out.append("</tr></thead><tbody>")
    for r in rows:
        out.append("<tr>")
        for i, v in enumerate(r):
            text = escape(fmt_num(v)) if i in numeric else _cell(v)
            if i in numeric:
                out.append(f'<td class="n">{text}</td>')
            elif i in code:
                out.append(f"<td><code>{text}</code></td>")
            else:
                out.append(f"<td>{text}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _masked_together(requests: Sequence[dict[str, Any]]) -> tuple[list[tuple[Any, ...]], int]:
    """GoAccess's requested-files rows with the rows that read the same once their credentials are masked
    (``/reset?token=***`` of several tokens) made one, hits added up, busiest first; and how many rows were
    merged so.  Without that, the list showed the same line several times, each with a part of the hits."""
    rows: dict[tuple[Any, Any, Any], list[int]] = {}
    for x in requests:
        row = rows.setdefault((x["data"], x["method"], x["protocol"]), [0, 0])
        row[0] += 1
        row[1] += int(x["hits"])
    merged = sum(n for n, _h in rows.values() if n > 1)
    ordered = sorted(rows.items(), key=lambda kv: -kv[1][1])  # (stable: ties keep GoAccess's order)
    return [(*key, n, hits) for key, (n, hits) in ordered], merged


def kpis(items: Sequence[tuple[str, str, str]]) -> str:
    """(value, label, state) cards; state is '', 'warn' or 'crit'."""
    return '<div class="kpis">' + "".join(
        f'<div class="kpi {escape(state)}"><b>{escape(value)}</b><span>{escape(label)}</span></div>'
        for value, label, state in items) + "</div>"


def findings_table(findings: Sequence[dict[str, Any]], *, checked: bool = True) -> str:
    """The findings; ``checked`` False: a report of ``upkeeper logs``, which runs none of the job's checks."""
    if not checked:
        return ('<p class="muted">None: this report of <code>upkeeper logs</code> only reads the files; the '
                'scheduled job (<code>upkeeper run</code>) judges the figures and reports findings.</p>')
    if not findings:
        return '<p class="muted">No findings: every check passed.</p>'
    order = {"critical": 0, "warning": 1, "info": 2}
    rows = sorted(findings, key=lambda f: (order.get(f.get("severity", "info"), 3), f.get("check", "")))
    out = ["<table><thead><tr><th>severity</th><th>check</th><th>subject</th><th>finding</th>"
           "<th>what to do</th></tr></thead><tbody>"]
    for f in rows:
        sev = escape(str(f.get("severity", "")))
        out.append(f'<tr><td class="sev {sev}">{sev}</td><td><code>{escape(str(f.get("check", "")))}</code></td>'
                   f'<td class="code">{_cell(f.get("subject", ""))}</td>'
                   f'<td>{_cell(f.get("message", ""))}</td><td>{escape(str(f.get("remediation", "")))}</td>'
                   "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def page(title: str, subtitle: str, body: str, footer: str = "") -> str:
    title, subtitle, footer = redact(title), redact(subtitle), redact(footer)
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>"
            f"<h1>{escape(title)}</h1><div class=\"muted\">{escape(subtitle)}</div>{body}"
            f"<footer>{escape(footer)}</footer></main></body></html>\n")


def _redacted(rep: dict[str, Any], findings: Sequence[dict[str, Any]]
              ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The report data with secrets masked (tokens in query strings, passwords in DSNs and SQL): a report
    is a file that gets shared, so it never shows what history and notifications would not."""
    return redact_obj(rep), redact_obj(list(findings))


#: beyond this many hours from the first to the last, a time chart counts per day (a point per hour of a
#: year-long log would be unreadable)
MAX_HOURLY_POINTS = 24 * 45


def time_chart(counts: dict[str, int], *, what: str, color: str = PALETTE[0]) -> str:
    """A line chart of ``counts`` per hour (keys ``YYYY-MM-DD HH:00``) with the hours of no entries as zeros —
    an outage between two busy hours shows as the gap it was — or per day over a long span."""
    try:
        hours = sorted((datetime.strptime(k, "%Y-%m-%d %H:%M"), float(v)) for k, v in counts.items())
    except ValueError:  # not the hour keys the scanners write: the points as they are
        return line_chart([(k, float(v)) for k, v in counts.items()], title=f"{what} per hour", color=color)
    # a line dated 2099 or 9999 (a wrong clock, a forged line) would stretch the chart over decades, or
    # past the last date Python knows: such hours are left out, and the title says so
    latest = datetime.now() + FUTURE_SLACK
    future = sum(v for h, v in hours if h > latest)
    hours = [(h, v) for h, v in hours if h <= latest]
    note = f" ({future:,.0f} dated in the future left out)" if future else ""
    if not hours:
        return line_chart([], title=f"{what} per hour{note}")
    first, last = hours[0][0], hours[-1][0]
    daily = (last - first) // timedelta(hours=1) >= MAX_HOURLY_POINTS
    step = timedelta(days=1) if daily else timedelta(hours=1)
    start = first.replace(hour=0) if daily else first
    filled: dict[datetime, float] = {}
    t = start
    while t <= last:
        filled[t] = 0.0
        t += step
    for h, v in hours:
        filled[h.replace(hour=0) if daily else h] += v
    fmt = "%m/%d" if daily else "%m/%d %Hh"
    return line_chart([(t.strftime(fmt), v) for t, v in filled.items()],
                      title=f"{what} per {'day' if daily else 'hour'}{note}", color=color)


def trend_charts(trends: dict[str, list[tuple[str, float]]], specs: Sequence[tuple[str, str, str, float | None]]
                 ) -> str:
    """Small charts of earlier runs' metrics: specs are (metric, title, unit, threshold)."""
    out = []
    for i, (metric, title, unit, thr) in enumerate(specs):
        pts = trends.get(metric) or []
        if len(pts) < 2:
            continue
        out.append(line_chart(pts, width=520, height=170, title=title, unit=unit, threshold=thr,
                              threshold_label="objective" if thr else "", color=PALETTE[i % len(PALETTE)]))
    if not out:
        return '<p class="muted">Trends appear after a few runs (figures are kept in the history).</p>'
    return '<div class="grid2">' + "".join(out) + "</div>"


# ---------------------------------------------------------------------------------------------
# access logs
# ---------------------------------------------------------------------------------------------


def access_report(rep: dict[str, Any], findings: Sequence[dict[str, Any]], *, title: str, subtitle: str,
                  trends: dict[str, list[tuple[str, float]]], objectives: dict[str, float],
                  footer: str = "", history: bool = True, redacted: bool = False) -> str:
    """The access report's page; ``rep`` and ``findings`` are redacted first (:func:`_redacted`) unless the caller
    redacted them itself (``redacted``)."""
    if not redacted:
        rep, findings = _redacted(rep, findings)
    lat = rep.get("latency", {}).get("overall", {})
    p95 = lat.get("p95")
    p95_obj = objectives.get("latency_p95_ms", 200.0)
    fail_obj = objectives.get("failed_pct", 0.1)
    body = [kpis([
        (fmt_num(rep["requests"]), "requests", ""),
        (fmt_num(rep["visitors"]), "unique visitors", ""),
        (fmt_bytes(rep["bandwidth"]), "bandwidth", "") if rep["bandwidth"] is not None else
        ("n/a", "bandwidth (the log format has no $body_bytes_sent)", ""),
        (f"{rep['failed_pct']:.3f} %", f"failed (objective < {fail_obj:g} %)",
         "warn" if rep["failed_pct"] > fail_obj else "") if rep["failed_pct"] is not None else
        ("n/a", "failed (the log format has no $status)", ""),
        (f"{p95:.0f} ms" if p95 is not None else "n/a", f"p95 latency (objective < {p95_obj:g} ms)",
         "warn" if p95 is not None and p95 > p95_obj else ""),
        (f"{rep['bots']['bot_pct']:.1f} %", "bot requests", "") if rep["bots"]["bot_pct"] is not None else
        ("n/a", "bot requests (the log format has no $http_user_agent)", ""),
        (f"{rep['unparsed_pct']:.2f} %", f"unparsed lines ({fmt_num(rep['invalid'])})",
         "warn" if rep["unparsed_pct"] > objectives.get("unparsed_pct", 1.0) else ""),
    ])]
    body.append(_read_with(rep))
    body.append("<h2>Findings</h2>" + findings_table(findings, checked=history))
    body.append("<h2>Traffic</h2>" + time_chart(rep.get("hourly", {}), what="requests"))
    st = rep.get("status", {})
    codes = sorted(st, key=lambda c: -st[c])
    body.append('<div class="grid2">' + bar_chart([(c, float(st[c])) for c in codes[:12]], width=520,
                                                    title="status codes", colors=status_colors(codes[:12]),
                                                    label_width=80)
                + bar_chart([(k, float(v)) for k, v in rep.get("status_classes", {}).items()], width=520,
                            title="status classes", colors=status_colors(list(rep.get("status_classes", {}))),
                            label_width=80) + "</div>")
    body.append("<h2>Latency</h2>")
    if lat:
        body.append(bar_chart([(f"p{p}", float(lat.get(f"p{p}", 0.0))) for p in (50, 95, 99)], width=520,
                              title="response time percentiles (all requests)", unit=" ms", threshold=p95_obj,
                              threshold_label=f"p95 objective {p95_obj:g} ms", label_width=60))
        slow = rep.get("slowest_endpoints", [])
        body.append(bar_chart([(e["endpoint"], float(e.get("p95", 0.0))) for e in slow], unit=" ms",
                              title="slowest endpoints (p95)", threshold=p95_obj, threshold_label="objective",
                              colors=["#d97706"]))
        body.append(table(["endpoint", "hits", "p50 ms", "p95 ms", "p99 ms", "max ms", "4xx", "5xx"],
                          [(e["endpoint"], e["hits"], e.get("p50"), e.get("p95"), e.get("p99"), e.get("max"),
                            e["4xx"], e["5xx"]) for e in rep.get("endpoints", [])[:25]],
                          numeric=(1, 2, 3, 4, 5, 6, 7), code=(0,)))
    elif rep.get("latency", {}).get("available") and rep.get("requests", 0) > rep["latency"].get("untimed_upgrades", 0):
        body.append(f'<p class="muted">None of the {rep["requests"]:,} requests read had a response time: their lines '
                    'end before $request_time (or hold no number there), so the log_format read is not the one '
                    'nginx writes this log with.</p>')
    elif rep.get("latency", {}).get("available"):
        body.append('<p class="muted">No request with a response time was read (yet): the percentiles appear '
                    'once the log has requests.</p>')
    else:
        body.append('<p class="muted">The log format has no $request_time: add it to measure latency.</p>')
    top = rep.get("top", {})
    body.append("<h2>Top lists</h2>")
    vhosts = rep.get("vhosts") or []
    if len(vhosts) > 1:
        body.append("<h3>Sites</h3>" + table(
            ["host", "requests", "4xx", "5xx", "failed %", "p50 ms", "p95 ms", "p99 ms", "top paths"],
            [(v["host"], v["requests"], v["4xx"], v["5xx"], v["failed_pct"], v.get("p50"), v.get("p95"), v.get("p99"),
              ", ".join(f"{x['path']} ({x['hits']:,})" for x in v["paths"][:3])) for v in vhosts],
            numeric=(1, 2, 3, 4, 5, 6, 7), code=(0,)))
    body.append("<h3>Paths</h3>" + table(["path", "hits"], [(x.get("host", "") + x["path"], x["hits"])
                                                            for x in top.get("paths", [])], numeric=(1,), code=(0,)))
    body.append("<h3>Not found (404)</h3>" + table(["path", "hits"], [(x["path"], x["hits"])
                                                                      for x in top.get("not_found", [])],
                                                   numeric=(1,), code=(0,)))
    body.append("<h3>Client addresses</h3>" + _proxy_note(rep) + table(["IP", "hits"], [(x["ip"], x["hits"])
                                                                    for x in top.get("hosts", [])],
                                                   numeric=(1,), code=(0,)))
    body.append("<h3>User agents</h3>" + table(["user agent", "bot", "hits"],
                                               [(x["agent"], "yes" if x["bot"] else "", x["hits"])
                                                for x in top.get("agents", [])], numeric=(2,), code=(0,)))
    body.append("<h3>Referrers</h3>" + table(["referrer", "hits"], [(x["referer"], x["hits"])
                                                                     for x in top.get("referers", [])],
                                             numeric=(1,), code=(0,)))
    ga = rep.get("goaccess", {})
    requested, masked = _masked_together(ga.get("requests", []))
    pruned = ga.get("requests_pruned")
    body.append("<h3>Requested files (GoAccess-compatible)</h3>" + (
        f'<p class="muted">More distinct URLs than a scanning process keeps: {pruned["hits"]:,} hits of the least '
        f"seen were left out of this list (not of the top paths, nor of any total), and each count here may miss up "
        f"to {pruned['max_error']:,}.</p>" if pruned else "") + (
        f'<p class="muted">{masked} URLs that differ only in a masked credential (***) are shown as one row, '
        "with their hits added up (GoAccess lists each of them).</p>" if masked else "") + (table(
            ["URL", "method", "protocol", "URLs", "hits"], requested, numeric=(3, 4), code=(0,)) if masked else table(
            ["URL", "method", "protocol", "hits"], [(*r[:3], r[4]) for r in requested], numeric=(3,), code=(0,))))
    sec = rep.get("security", {})
    body.append("<h2>Security signals</h2>")
    body.append("<h3>Attack patterns</h3>" + table(
        ["category", "requests", "clients", "answered 2xx", "2xx on free-text paths", "top client", "sample"],
        [(a["category"], a["hits"], a["clients"], a["ok"], a.get("free_text", 0), a["top_client"],
          a["samples"][0] if a["samples"] else "")
         for a in sec.get("attacks", [])], numeric=(1, 2, 3, 4), code=(6,), empty="none seen"))
    body.append("<h3>Sensitive files answered 2xx</h3>" + table(
        ["severity", "path", "file", "statuses", "bytes", "hits", "clients", "first"],
        [("critical" if e["secret"] else "warning", e["path"], e["file"].replace("_", " "),
          ", ".join(str(x) for x in e["statuses"]), ", ".join(f"{b:,}" for b in e["bytes"]), e["hits"],
          ", ".join(e["clients"][:5]) + (" …" if e["client_count"] > 5 else ""), e["first"])
         for e in sec.get("exposed", [])], numeric=(5,), code=(1,), empty="none"))
    body.append("<h3>Scanner user agents</h3>" + table(
        ["scanner", "requests", "clients"], [(s["scanner"], s["hits"], ", ".join(s["clients"][:5]))
                                             for s in sec.get("scanners", [])], numeric=(1,), empty="none seen"))
    body.append("<h3>404 bursts</h3>" + table(
        ["client", "404s in its worst two minutes", "from", "404s in total"],
        [(b["ip"], b["max_in_window"], b["from"], b["total"]) for b in sec.get("not_found_bursts", [])],
        numeric=(1, 3), code=(0,), empty="none above the threshold"))
    body.append("<h3>Login brute force</h3>" + table(
        ["client", "login paths", "failed logins in its worst window", "window (minutes)",
         "logins that succeeded then", "failed logins in total"],
        [(b["ip"] + (" (shared address?)" if b.get("shared") else ""), ", ".join(b.get("paths", [b["path"]])),
          b["max_per_window"], b.get("window_minutes", 20), b.get("succeeded", 0), b["total"])
         for b in sec.get("brute_force", [])],
        numeric=(2, 3, 4, 5), code=(0, 1), empty="none above the threshold"))
    if history:
        body.append("<h2>Trends across runs</h2>" + trend_charts(trends, (
            ("requests", "requests per run", "", None), ("visitors", "unique visitors per run", "", None),
            ("latency_p95_ms", "p95 latency per run", " ms", p95_obj), ("failed_pct", "failed requests per run",
                                                                          " %", fail_obj))))
    if rep.get("invalid_samples"):
        body.append("<h2>Unparsed lines (samples)</h2>" + table(
            ["file", "offset", "reason", "line"], [(s["source"], s["offset"] if s["offset"] is not None else "",
                                                    s["reason"], s["line"]) for s in rep["invalid_samples"]],
            code=(3,)))
    return page(title, subtitle, "".join(body), footer)


def _read_with(rep: dict[str, Any]) -> str:
    """How the log was read: its log_format and where the client address came from."""
    parts = []
    if rep.get("log_format"):
        parts.append(f"log format <code>{escape(str(rep['log_format']))}</code>")
    clients = rep.get("clients") or {}
    if clients.get("client_ip"):
        parts.append(f"client address from <code>{escape(str(clients['client_ip']))}</code>")
    po = clients.get("passed_on")
    if po:  # how often the passed-on client was taken, and why not otherwise ($remote_addr kept)
        kept = [f"{fmt_num(po[k])} {what}" for k, what in (
            ("absent", "without one"), ("invalid", "with no address in it"),
            ("untrusted", "from addresses not in trusted_proxies")) if po[k]]
        parts.append(f"taken on {fmt_num(po['used'])} requests"
                     + (f"; $remote_addr kept on {', '.join(kept)}" if kept else ""))
    return f'<p class="muted">Read with {" · ".join(parts)}</p>' if parts else ""


def _proxy_note(rep: dict[str, Any]) -> str:
    """The proxy warning (logs.nginx.proxy_address) by the client table it makes wrong."""
    proxy = (rep.get("clients") or {}).get("proxy")
    if not proxy:
        return ""
    return (f'<p class="sev warning">{fmt_num(proxy["share_pct"])} % of requests come from '
            f'{escape(str(proxy["ip"]))}, a private address: a load balancer or reverse proxy in front of nginx, so '
            "unique visitors, these clients, 404 bursts and brute force count the proxy, not the clients (see "
            "client_ip and trusted_proxies)</p>")


# ---------------------------------------------------------------------------------------------
# PostgreSQL logs
# ---------------------------------------------------------------------------------------------


#: why a duration's statement is not known, in words (pglog.ORPHAN_REASONS)
_UNPAIRED_WHY = {"forgotten": "its statement was logged too long before (or in a part of the log not read)",
                 "not_logged": "its statement was not logged (log_statement does not log it)",
                 "before_error": "logged just before an error: the failed statement's Parse/Bind, or a statement "
                                 "not logged (%i in log_line_prefix tells them apart)"}


def _pairing(st: dict[str, Any]) -> str:
    """The durations that are no statement's run: Parse/Bind time, and durations whose statement is not known
    (counted in the figures above under their placeholder; nothing when there are none)."""
    pb = st.get("prepare_bind") or {}
    up = st.get("unpaired") or {}
    if not pb.get("count") and not up.get("count"):
        return ""
    out = ["<h3>Durations that are no statement's run</h3>", table(
        ["what", "durations", "total ms"],
        [("Parse and Bind of the extended protocol (not counted as statements)", pb.get("count", 0),
          pb.get("total_ms", 0.0))], numeric=(1, 2))]
    if up.get("count"):
        out.append(table(["durations without their statement (counted as " + str(up.get("counted_as", "")) + ")",
                          "count"], [(why, up.get(reason, 0)) for reason, why in _UNPAIRED_WHY.items()
                                     if up.get(reason)], numeric=(1,)))
        out.append(table(["slowest of them: ms", "pid", "logged at"],
                         [(d["ms"], d["pid"], d["time"] or "") for d in up.get("slowest", [])], numeric=(0,)))
    return "".join(out)


def postgres_report(rep: dict[str, Any], findings: Sequence[dict[str, Any]], *, title: str, subtitle: str,
                    trends: dict[str, list[tuple[str, float]]], objectives: dict[str, float],
                    footer: str = "", history: bool = True) -> str:
    rep, findings = _redacted(rep, findings)
    st = rep["statements"]
    pct = st.get("percentiles", {})
    p95_obj = objectives.get("query_p95_ms", 100.0)
    p95 = pct.get("p95")
    body = [kpis([
        (fmt_num(st["count"]), "statements with a duration", ""),
        (fmt_num(st["fingerprints"]), "distinct queries", ""),
        (f"{p95:.1f} ms" if p95 is not None else "n/a", f"query p95 (objective < {p95_obj:g} ms)",
         "warn" if p95 is not None and p95 > p95_obj else ""),
        (fmt_num(rep["errors"]["total"]), "errors and warnings", "warn" if rep["errors"]["total"] else ""),
        (fmt_num(rep["deadlocks"]["count"]), "deadlocks", "crit" if rep["deadlocks"]["count"] else ""),
        (fmt_num(rep["locks"]["waits"]), "lock waits", "warn" if rep["locks"]["waits"] else ""),
        (fmt_bytes(rep["temp_files"]["total_bytes"]), f"temp files ({rep['temp_files']['count']})", ""),
        (fmt_num(rep["checkpoints"]["count"]), "checkpoints", ""),
    ])]
    if rep.get("format"):
        body.append(f'<p class="muted">Read as <code>{escape(str(rep["format"]))}</code>'
                    + (f' with the log_line_prefix <code>{escape(str(rep["log_line_prefix"]))}</code>'
                       if rep.get("log_line_prefix") is not None else "") + "</p>")
    body.append("<h2>Findings</h2>" + findings_table(findings, checked=history))
    body.append("<h2>Statements</h2>")
    body.append(time_chart(rep["by_hour"], what="statements"))
    if pct:
        body.append(bar_chart([(p, float(pct.get(p, 0.0))) for p in ("p50", "p90", "p95", "p99")], width=520,
                              title="statement duration percentiles", unit=" ms", threshold=p95_obj,
                              threshold_label=f"p95 objective {p95_obj:g} ms", label_width=60))
    body.append(bar_chart([(k, float(v)) for k, v in st.get("by_kind", {}).items()], width=520,
                          title="statements by kind", label_width=80))
    body.append(_pairing(st))

    def qtable(rows: list[dict[str, Any]]) -> str:
        return table(["query (fingerprint)", "count", "total ms", "mean ms", "max ms", "% of time"],
                     [(q["fingerprint"], q["count"], q["total_ms"], q["mean_ms"], q["max_ms"], q["share_pct"])
                      for q in rows], numeric=(1, 2, 3, 4, 5), code=(0,))

    body.append("<h3>Most time consuming</h3>" + qtable(rep["slowest_total"]))
    body.append("<h3>Most frequent</h3>" + qtable(rep["most_frequent"]))
    untimed = st.get("untimed") or {}
    if untimed.get("count"):  # log_statement's statements with no duration: counted, their time unknown (not 0)
        body.append(f"<h3>Logged without their duration ({fmt_num(untimed['count'])})</h3>"
                    '<p class="muted">log_statement logged these statements, nothing logged how long they took '
                    "(set log_min_duration_statement = 0, or log_duration = on): counted, their time unknown.</p>"
                    + time_chart(untimed.get("by_hour", {}), what="statements without a duration")
                    + bar_chart([(k, float(v)) for k, v in untimed.get("by_kind", {}).items()], width=520,
                                title="statements without a duration, by kind", label_width=80)
                    + table(["database", "statements"], list(untimed.get("by_database", {}).items()), numeric=(1,),
                            empty="no database in the log_line_prefix (%d)")
                    + table(["user", "statements"], list(untimed.get("by_user", {}).items()), numeric=(1,),
                            empty="no user in the log_line_prefix (%u)")
                    + table(["query (fingerprint)", "count", "time"],
                            [(q["fingerprint"], q["count"], "unknown") for q in untimed.get("most_frequent", [])],
                            numeric=(1,), code=(0,)))
    body.append("<h3>Slowest single runs</h3>" + table(
        ["query (slowest run)", "max ms", "count"], [(q["slowest"], q["max_ms"], q["count"])
                                                    for q in rep["slowest_single"]], numeric=(1, 2), code=(0,)))
    err = rep["errors"]
    body.append("<h2>Errors</h2>")
    body.append(bar_chart([(k, float(v)) for k, v in err["by_sqlstate"].items()][:15], width=520,
                          title="errors by SQLSTATE", colors=["#dc2626"], label_width=80))
    body.append(table(["level", "SQLSTATE", "message", "count", "statement"],
                      # (a PL/pgSQL RAISE's, unknown without %e: its likely code said, not taken for the real one)
                      [(e["level"], e["sqlstate"] + (f" (a RAISE: likely {e['likely_sqlstate']})"
                                                     if e.get("likely_sqlstate") else ""),
                        e["message"], e["count"], (e["statements"] or [""])[0])
                       for e in err["classes"]], numeric=(3,), code=(4,), empty="no errors"))
    locks = rep["locks"]
    body.append("<h2>Locks and deadlocks</h2>" + table(
        ["lock waits", "acquired after waiting", "total wait ms", "longest wait ms",
         "failed for a lock (lock_timeout, NOWAIT)", "deadlocks"],
        [(locks["waits"], locks["acquired_after_wait"], locks["total_wait_ms"], locks["max_wait_ms"],
          locks["failures"], rep["deadlocks"]["count"])], numeric=(0, 1, 2, 3, 4, 5)))
    body.append(table(["waiting queries", "count"], [(q["fingerprint"], q["count"]) for q in locks["queries"]],
                      numeric=(1,), code=(0,), empty="no lock waits"))
    if locks["failed_queries"]:
        body.append(table(["queries that failed for a lock", "count"],
                          [(q["fingerprint"], q["count"]) for q in locks["failed_queries"]], numeric=(1,), code=(0,)))
    for d in rep["deadlocks"]["details"]:
        body.append(f"<pre class=\"muted\">{escape(d)}</pre>")
    tf = rep["temp_files"]
    body.append("<h2>Temporary files</h2>" + table(
        ["query", "files", "bytes"], [(q["fingerprint"], q["count"], fmt_bytes(q["bytes"])) for q in tf["queries"]],
        numeric=(1,), code=(0,), empty="no temporary files"))
    cp = rep["checkpoints"]
    body.append("<h2>Checkpoints</h2>" + table(
        ["checkpoints", "of which restartpoints (standby)", "buffers written", "write s", "sync s", "total s",
         "longest s", "WAL distance", "'too frequent' warnings"],
        [(cp["count"], cp["restartpoints"], cp["buffers"], cp["write_s"], cp["sync_s"], cp["total_s"], cp["max_s"],
          fmt_bytes(cp["distance_kb"] * 1024), cp["too_frequent_warnings"])], numeric=(0, 1, 2, 3, 4, 5, 6, 8)))
    body.append(table(["reason", "count"], list(cp["reasons"].items()), numeric=(1,), empty="no checkpoints logged"))
    if history:
        body.append("<h2>Trends across runs</h2>" + trend_charts(trends, (
            ("statements", "statements per run", "", None), ("query_p95_ms", "query p95 per run", " ms", p95_obj),
            ("errors", "errors per run", "", None), ("temp_bytes", "temp file bytes per run", "", None))))
    if rep.get("unparsed_samples"):
        body.append("<h2>Unparsed lines (samples)</h2>" + table(["line"], [(s,) for s in rep["unparsed_samples"]],
                                                                 code=(0,)))
    return page(title, subtitle, "".join(body), footer)


# ---------------------------------------------------------------------------------------------
# error logs
# ---------------------------------------------------------------------------------------------


#: bar colours of log levels: the severe ones red, warnings amber, the rest grey
LEVEL_COLORS = {"emerg": "#7f1d1d", "alert": "#991b1b", "crit": "#b91c1c", "critical": "#b91c1c",
                "error": "#dc2626", "err": "#dc2626", "warn": "#d97706", "warning": "#d97706"}


def level_colors(levels: Sequence[str]) -> list[str]:
    return [LEVEL_COLORS.get(lv.lower(), "#94a3b8") for lv in levels]


def errors_report(rep: dict[str, Any], findings: Sequence[dict[str, Any]], *, title: str, subtitle: str,
                  trends: dict[str, list[tuple[str, float]]], footer: str = "", history: bool = True) -> str:
    """The error-log report of the ``logs.errors`` task, or of ``upkeeper logs errors --html`` (``history``
    False: no earlier run, so no group is new and there are no trends)."""
    rep, findings = _redacted(rep, findings)
    ng = rep.get("nginx")
    app = rep.get("app")
    cards = []
    if ng:
        lv = ng["levels"]
        cards += [(fmt_num(sum(lv.values())), "nginx error-log lines", ""),
                  (fmt_num(sum(v for k, v in lv.items() if k in ("crit", "alert", "emerg"))), "nginx crit/alert/emerg",
                   "crit" if any(lv.get(k) for k in ("crit", "alert", "emerg")) else ""),
                  (fmt_num(ng["upstream"]), "upstream errors", "warn" if ng["upstream"] else "")]
    if app:
        cards.append((fmt_num(app["exceptions_total"]), f"exceptions in {app['groups']} groups",
                      "warn" if app["exceptions_total"] else ""))
        if history:
            cards.append((fmt_num(app["new_groups"]), "new exception groups", "warn" if app["new_groups"] else ""))
        cards.append((fmt_num(app["levels"].get("error", 0) + app["levels"].get("critical", 0)), "error lines", ""))
    body = [kpis(cards), "<h2>Findings</h2>" + findings_table(findings, checked=history or bool(ng))]
    if app:
        levels = list(app["levels"])
        body.append("<h2>Application exceptions</h2>" + '<div class="grid2">'
                    + bar_chart([(k, float(v)) for k, v in app.get("by_type", {}).items()], width=520,
                                title="exceptions by type", colors=["#dc2626"], label_width=180)
                    + bar_chart([(k, float(app["levels"][k])) for k in levels], width=520, title="lines by level",
                                colors=level_colors(levels), label_width=80) + "</div>")
        groups = app["exception_groups"]
        if history:
            new = [g for g in groups if g["new"]]
            body.append("<h3>New since the last run</h3>")
            if new:
                body.append(bar_chart([(f"{g['type']}: {g['message']}", float(g["count"])) for g in new],
                                      title="new exception groups", colors=["#dc2626"], label_width=320))
            elif app.get("baseline_groups"):
                body.append(f'<p class="muted">First run: its {fmt_num(app["baseline_groups"])} exception '
                            "group(s) are recorded as known; later runs show the groups not seen before here.</p>")
            else:
                body.append('<p class="muted">No exception group that earlier runs had not seen.</p>')
        cols = ["type", "message", "count", "example (a long trace: its first and last lines)"]
        rows: list[tuple[Any, ...]] = [(g["type"] + (f" (caused by {g['cause']})" if g.get("cause") else ""), g["message"],
                                        g["count"], trace_excerpt(g["example"]))
                                       for g in groups]
        if history:
            cols, rows = ["new", *cols], [("NEW" if g["new"] else "", *r) for g, r in zip(groups, rows, strict=True)]
        off = 1 if history else 0
        body.append("<h3>Exception groups</h3>" + table(cols, rows, numeric=(2 + off,), code=(off, 3 + off),
                                                         empty="no exceptions"))
        body.append("<h3>Warning and error messages</h3>" + table(
            ["level", "message (normalized)", "count", "example (all its lines)"],
            [(m["level"], m["message"], m["count"], m.get("example", "")[:500]) for m in app["messages"]],
            numeric=(2,), code=(1, 3)))
    if ng:
        body.append("<h2>nginx error log</h2>")
        body.append(time_chart(ng["by_hour"], what="error-log lines", color="#dc2626"))
        levels = list(ng["levels"])
        body.append('<div class="grid2">'
                    + bar_chart([(k, float(ng["levels"][k])) for k in levels], width=520, title="lines by level",
                                label_width=80, colors=level_colors(levels))
                    + bar_chart([(c["class"], float(c["count"])) for c in ng["classes"][:10]], width=520,
                                title="biggest message classes", label_width=250,
                                colors=level_colors([c["level"] for c in ng["classes"][:10]]))
                    + "</div>")
        body.append(table(["level", "message class", "count", "example"],
                          [(c["level"], c["class"], c["count"], c["example"]) for c in ng["classes"]],
                          numeric=(2,), code=(1, 3)))
    if history:
        body.append("<h2>Trends across runs</h2>" + trend_charts(trends, (
            ("exceptions", "exceptions per run", "", None), ("nginx_errors", "nginx errors per run", "", None))))
    return page(title, subtitle, "".join(body), footer)
