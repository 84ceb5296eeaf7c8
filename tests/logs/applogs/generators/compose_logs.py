"""Lines as ``docker compose logs`` prints them (see the README), made from real program output: each container's
lines behind its prefix, the containers' lines alternating (Compose reads each container's log in a goroutine of
its own and writes line by line). The formats, after Compose's source:

* Compose 2 (cmd/formatter/logs.go, colors.go): ``colour(f"{name:<{width}} | ") + line``, ``width`` the longest
  container name + 1, colours cyan, yellow, green, … in the order the containers come (``\\x1b[36m`` …
  ``\\x1b[0m``); ``--timestamps``: a time stamp in Go's RFC3339NanoFixed and a space before the line;
* docker-compose 1.x (compose/cli/log_printer.py, colors.py): ``colour(name.ljust(width) + " |") + " " + line``,
  ``width`` the longest service name + 3.

Usage: python compose_logs.py v2-ansi API1 API2 > compose-v2-ansi.log (API1, API2: what ``node_console.js N plain``
wrote on a terminal, as a container with ``tty: true`` writes it: Node's colours and CRLF line ends);
python compose_logs.py v2-timestamps WEB1 WEB2 > compose-v2-timestamps.log (``node_console.js N msg``);
python compose_logs.py v1 WEB1 > compose-v1.log (``node_console.js 1 net``)."""

import io
import logging
import sys
from datetime import UTC, datetime, timedelta
from itertools import zip_longest

COLOURS = ("36", "33", "32")  # the first three of both Composes' rainbows


def worker_lines() -> list[str]:
    """A Python worker's log: a line, then logging.exception's record with its traceback (real, from this run)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("worker")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.info("picked job 7")
    try:
        {}["job-7"]
    except KeyError:
        log.exception("job 7 failed")
    return out.getvalue().rstrip("\n").split("\n")


def read(path: str) -> list[str]:
    with open(path, newline="") as f:  # keep a terminal's \r: Compose does
        return f.read().rstrip("\n").split("\n")


def interleave(streams: list[tuple[str, list[str]]]) -> list[tuple[int, str, str]]:
    rows = []
    for group in zip_longest(*(lines for _, lines in streams)):
        for i, line in enumerate(group):
            if line is not None:
                rows.append((i, streams[i][0], line))
    return rows


def main() -> None:
    mode, files = sys.argv[1], sys.argv[2:]
    if mode == "v2-ansi":
        streams = [("api-1", read(files[0])), ("api-2", read(files[1])), ("worker-1", worker_lines())]
        width = max(len(n) for n, _ in streams) + 1
        for i, name, line in interleave(streams):
            print(f"\x1b[{COLOURS[i]}m{name:<{width}} | \x1b[0m{line}")
    elif mode == "v2-timestamps":
        streams = [("web-1", read(files[0])), ("web-2", read(files[1]))]
        width = max(len(n) for n, _ in streams) + 1
        t = datetime(2026, 12, 5, 9, 10, tzinfo=UTC)
        for k, (_, name, line) in enumerate(interleave(streams)):
            stamp = (t + timedelta(microseconds=1237 * k)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
            print(f"{name:<{width}} | {stamp} {line}")
    elif mode == "v1":
        streams = [("web_1", read(files[0])), ("worker_1", worker_lines())]
        width = max(len(n.rsplit("_", 1)[0]) for n, _ in streams) + 3
        for i, name, line in interleave(streams):
            print(f"\x1b[{COLOURS[i]}m{name.ljust(width)} |\x1b[0m {line}")


main()
