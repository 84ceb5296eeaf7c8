"""User-agent classification cost per distinct agent: :func:`is_bot` and :func:`scanner_name` now and as they were
(the frozen copy in tests/logs/agentref), and ``access.summarize`` of a log with that many distinct agents.

A busy site's log has thousands to tens of thousands of distinct agents (tests/logs/agent_corpus.py builds such a
corpus, seeded); each is classified once per scan.  The machine may be shared: the old and new functions are timed
alternately, ``--repeat`` times, and the medians reported.  Results go to bench/results/agents.json.
Usage: ``python bench/agents.py [--agents 20000] [--summarize-agents 10000] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# tests/logs is a namespace package: bench/logs.py (this script's directory comes first) would shadow it
sys.path[:] = [str(ROOT / "tests")] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from logs.agent_corpus import corpus  # noqa: E402
from logs.agentref import classify as ref  # noqa: E402
from upkeeper.logs import classify, parallel  # noqa: E402
from upkeeper.logs.access import ScanOptions, summarize  # noqa: E402
from upkeeper.logs.nginx_format import COMBINED_TIMED  # noqa: E402


def per_agent_us(fn: Callable[[bytes], object], agents: list[bytes]) -> float:
    t0 = time.perf_counter()
    for a in agents:
        fn(a)
    return (time.perf_counter() - t0) / len(agents) * 1e6


def summarize_seconds(agents: list[bytes], repeat: int, work: Path) -> dict[str, float]:
    """``summarize`` of a log with one request per distinct agent: with the new classify and with the old
    ``is_bot`` put in its place (access imported it by name), alternately; medians."""
    import upkeeper.logs.access as access

    log = work / "access.log"
    log.write_bytes(b"".join(
        b'10.0.%d.%d - - [01/Mar/2024:10:00:00 +0000] "GET /p%d HTTP/1.1" 200 5 "-" "%s" 0.010\n'
        % (i // 250, i % 250, i, a.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"\n", b" "))
        for i, a in enumerate(agents)))
    units = parallel.split_units(str(log), 0, os.path.getsize(log), final=True, unit=1 << 20)
    partial, _ = parallel.scan("upkeeper.logs.access", ScanOptions(log_format=COMBINED_TIMED), units, workers=1)
    times: dict[str, list[float]] = {"old": [], "new": []}
    new_is_bot = access.is_bot
    try:
        for _ in range(repeat):
            for name, fn in (("old", ref.is_bot), ("new", new_is_bot)):
                access.is_bot = fn  # type: ignore[assignment]
                t0 = time.perf_counter()
                rep = summarize(partial, log_format=COMBINED_TIMED)
                times[name].append(time.perf_counter() - t0)
                assert rep["requests"] > 0.99 * len(agents), rep["requests"]  # a few junk agents break their line
    finally:
        access.is_bot = new_is_bot
    return {f"summarize_{k}_s": round(statistics.median(v), 4) for k, v in times.items()} | {
        "distinct_agents_in_log": len(partial.agents)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=20000)
    ap.add_argument("--summarize-agents", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    agents = corpus(args.agents)
    res: dict[str, Any] = {"agents": len(agents), "mean_agent_bytes": round(sum(map(len, agents)) / len(agents), 1)}
    for fname in ("is_bot", "scanner_name"):
        old: list[float] = []
        new: list[float] = []
        for _ in range(args.repeat):
            old.append(per_agent_us(getattr(ref, fname), agents))
            new.append(per_agent_us(getattr(classify, fname), agents))
        res[f"{fname}_old_us"] = round(statistics.median(old), 2)
        res[f"{fname}_new_us"] = round(statistics.median(new), 2)
    with tempfile.TemporaryDirectory() as tmp:
        res |= summarize_seconds(corpus(args.summarize_agents, seed=2), args.repeat, Path(tmp))
    print(json.dumps(res, indent=1))
    (ROOT / "bench" / "results" / "agents.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
