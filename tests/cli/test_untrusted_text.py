"""Text upkeeper does not control (request paths, log messages, file names, server errors) reaches the terminal
as text: no escape sequence from a log is sent raw, no square bracket is read as Rich markup, no ``:fire:`` as an
emoji; ``--json`` keeps the exact values."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from upkeeper.notify.transports import Slack

#: any control character but a newline: Rich writes no styles when not on a terminal, so each came from a log
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")
#: a client's request: nginx logs it as sent; the path is percent-decoded to ESC, BEL, CSI (U+009B as %C2%9B)
NASTY = "/%1B[2J%1B]0;pwned%07%C2%9B31m[/]x[b]:fire:/.env"
DECODED = "/\x1b[2j\x1b]0;pwned\x07\x9b31m[/]x[b]:fire:/.env"  # lower-cased, as findings name the path


def _log(path: Path) -> Path:
    ok = "".join(f'10.0.0.{i} - - [01/Mar/2024:10:00:{i:02d} +0000] "GET /ok HTTP/1.1" 200 5 "-" "ua" 0.010\n'
                 for i in range(20))
    leak = "".join(f'10.0.1.{i} - - [01/Mar/2024:10:01:{i:02d} +0000] "GET {NASTY} HTTP/1.1" 200 500 "-" "ua" '
                   "0.010\n" for i in range(3))
    path.write_text(ok + leak)
    return path


def test_findings_and_summaries_print_escaped_and_json_stays_exact(cli: Any, make_config: Any,
                                                                   tmp_path: Path) -> None:
    access = _log(tmp_path / "access.log")
    gone = tmp_path / "gone[/]\x1b[2J.log"  # a missing log named with a bracket tag and an ESC: the summary quotes it
    cfg = make_config({
        "targets": {"web": {"kind": "nginx", "access_log": str(access)}, "gone": {"kind": "nginx", "access_log": str(gone)}},
        "jobs": {"leak": {"task": "logs.nginx", "target": "web", "options": {"log_format": "combined_timed",
                                                                               "report_dir": str(tmp_path / "r")}},
                 "missing": {"task": "logs.nginx", "target": "gone", "options": {"log_format": "combined_timed"}}},
    })
    outs = {}
    for args in (["run", "-p", "1", "leak", "missing"], ["show", "1"], ["show", "2"], ["history"], ["status"]):
        r = outs[" ".join(args)] = cli(["--config", cfg, *args])
        assert not CONTROL.search(r.output), (args, r.output)
        assert r.code == (1 if args[0] == "run" else 0), (args, r.output)  # the run: a leaked .env, a missing log
        assert "🔥" not in r.output, (args, r.output)
    # shown, escaped as nginx escapes (one line, unwrapped, in show's log excerpt and the run table's cells)
    folded = re.sub(r"\s*│\s*", "", outs["show 1"].out)
    assert r"/\x1B[2j\x1B]0;pwned\x07\x9B31m[/]x[b]:fire:/.env" in folded, outs["show 1"].out
    for what in ("show 2", "history", "status"):  # the summary
        assert r"gone[/]\x1B[2J.log" in re.sub(r"\s*│\s*", "", outs[what].out), outs[what].out

    shown = cli(["--config", cfg, "show", "1", "--json"])
    assert shown.code == 0 and not CONTROL.search(shown.out), shown.out  # \u001b, \u009b
    exposed = [f for f in shown.json()["findings"] if f["check"] == "logs.nginx.exposed_file"]
    assert [f["subject"] for f in exposed] == [DECODED]
    status = cli(["--config", cfg, "status", "--json"]).json()
    assert str(gone) in {j["job"]: j["last_run"]["summary"] for j in status["jobs"]}["missing"]


def test_slack_shows_quoted_text_literally() -> None:
    """Slack reads <!channel> and <url|label> in a message; a finding quoting a request path must not."""
    event = {"state": "problem", "severity": "critical", "title": "leak: critical on web", "job": "leak",
             "text": "• /<!channel>/<https://evil.example|login> & \x1b[2J: answered 200"}
    msg = Slack.message({"title": "leak critical", "node": "n", "events": [event]})
    text = msg["attachments"][0]["text"]
    assert text == r"• /&lt;!channel&gt;/&lt;https://evil.example|login&gt; &amp; \x1B[2J: answered 200"


def test_bidi_controls_are_shown_escaped_in_terminal_text_and_html_cells() -> None:
    """A right-to-left override in a request path ("Trojan Source", CVE-2021-42574) reorders what follows it:
    ``/invoice\\u202Efdp.exe`` reads as ``/invoiceexe.pdf``.  Terminal text and the HTML report show it escaped."""
    from upkeeper.fmt import printable, printable_lines
    from upkeeper.logs.report_html import findings_table, table

    path = "/invoice\u202efdp.exe\u2066x\u2069\u200f"
    assert printable(path) == r"/invoice\u202Efdp.exe\u2066x\u2069\u200F"
    assert printable_lines(path + "\n\tend\x1b") == r"/invoice\u202Efdp.exe\u2066x\u2069\u200F" + "\n\tend\\x1B"
    assert printable("plain é ü ✓ 日本 \u200d") == "plain é ü ✓ 日本 \u200d"  # letters, symbols, ZWJ (emoji) stay
    html = table(["path"], [[path]]) + findings_table([{"severity": "warning", "check": "c", "subject": path,
                                                         "message": f"requests to {path}", "remediation": "r"}])
    assert "\u202e" not in html and "\u2066" not in html and html.count(r"/invoice\u202Efdp.exe") == 3, html
