"""Interleaved traces (see the README): two processes' real Python tracebacks, written one line per syslog
message as a service's stderr is by journald/rsyslog (``Mar  1 10:00:00 host app[101]: …``), their lines
alternating; then two Node traces as ``pm2 logs`` prints a cluster's instances (``0|api  | …``), alternating.
Usage: python interleaved.py NODE_TRACE_FILE > syslog-pm2-interleaved.log (NODE_TRACE_FILE: two Node traces
written by node_chains.js, the instance's lines first)."""

import sys
import traceback
from itertools import zip_longest


def trace(f: object) -> list[str]:
    try:
        f()  # type: ignore[operator]
    except Exception:
        return traceback.format_exc().rstrip("\n").split("\n")
    return []


def lookup() -> None:
    {}["user-1"]


def parse() -> None:
    try:
        {}["order-7"]
    except KeyError as e:
        raise ValueError("invalid order id 'x7'") from e


a = ["ERROR request failed", *trace(lookup)]
b = ["ERROR order import failed", *trace(parse)]
for i, (x, y) in enumerate(zip_longest(a, b)):
    if x is not None:
        print(f"Dec  5 07:20:{i:02d} web1 app[101]: {x}".rstrip())
    if y is not None:
        print(f"Dec  5 07:20:{i:02d} web1 app[202]: {y}".rstrip())
with open(sys.argv[1]) as f:
    node = f.read().rstrip("\n").split("\n")
half = node.index("", 1) if "" in node[1:] else len(node) // 2
for x, y in zip_longest(node[:half], node[half + 1:]):
    if x is not None:
        print(f"0|api      | {x}")
    if y is not None:
        print(f"1|api      | {y}")
