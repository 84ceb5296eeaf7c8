"""The figures both report builders share (:mod:`upkeeper.logs.stats`): a PostgreSQL log's report is built without
the access-log scanner (importing it compiled its ~200 attack patterns: ~40 ms of every ``logs.postgres`` run)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import Counter

from upkeeper.logs import access, stats


def imported_after(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported once it has run ``code`` (which must not fail)."""
    code += f"\nimport sys\nprint(sorted(m for m in sys.modules if m in {modules!r}))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return list(ast.literal_eval(out.stdout.strip()))


def test_a_postgres_report_does_not_import_the_access_log_scanner() -> None:
    code = ("from upkeeper.logs import pglog\n"
            "acc = pglog.make_accumulator(pglog.PgScanOptions(log_line_prefix='%m [%p] '))\n"
            "acc.feed(b'2024-03-01 10:00:00.000 UTC [7] LOG:  duration: 12.5 ms  statement: SELECT 1\\n')\n"
            "part = acc.partial()\n"
            "pglog.resolve(part, [], None, carry=pglog.MAX_CARRIED_PIDS, final=True)\n"
            "rep = pglog.summarize(part)\n"
            "assert rep['statements']['count'] == 1, rep['statements']\n")
    assert imported_after(code, ("upkeeper.logs.access", "upkeeper.logs.classify")) == []


def test_the_access_module_hands_out_the_same_functions() -> None:
    assert access.percentiles is stats.percentiles and access.top is stats.top
    assert stats.percentiles([(10.0, 3), (20.0, 1)]) == {"count": 4.0, "p50": 10.0, "p95": 20.0, "p99": 20.0,
                                                         "mean": 12.5, "max": 20.0}
    assert stats.top(Counter({"b": 2, "a": 2, "c": 5}), 2) == [("c", 5), ("a", 2)]
