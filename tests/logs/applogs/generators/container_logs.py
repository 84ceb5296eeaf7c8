"""Compose a container runtime's log of two programs' real output (uvicorn.log on stderr, structlog.jsonl on stdout,
their lines alternating, and a warning of 40,000 characters), as the runtime writes it (no Docker or containerd
here; after their source):

* Docker's json-file driver (daemon/logger/jsonfilelog): one JSON object per line of output, ``log`` (the line with
  its newline; a line over 16 KiB split into records of 16 KiB, only the last with the newline), ``stream``,
  ``time`` (RFC 3339, nanoseconds); its encoder escapes ``<``, ``>`` and ``&`` as ``\\u003c`` …
* the CRI format of containerd and CRI-O (Kubernetes' /var/log/containers/*.log): ``TIME STREAM TAG line``, TAG
  ``F`` for a whole line, ``P`` for a part of one the runtime split (16 KiB).

python container_logs.py docker|cri > FILE"""

import json
import sys
from datetime import UTC, datetime, timedelta
from itertools import zip_longest
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
SPLIT = 16 * 1024
err = HERE.joinpath("uvicorn.log").read_text().splitlines()
out = HERE.joinpath("structlog.jsonl").read_text().splitlines()
lines = [(s, ln) for pair in zip_longest(err, out) for s, ln in zip(("stderr", "stdout"), pair, strict=True)
         if ln is not None]
lines.append(("stdout", json.dumps({"event": "payload too large: " + "A" * 40000, "level": "warning"})))
t0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
for i, (stream, ln) in enumerate(lines):
    when = t0 + timedelta(microseconds=1234 * i)
    parts = [ln[k:k + SPLIT] for k in range(0, len(ln), SPLIT)] or [""]
    for k, part in enumerate(parts):
        last = k == len(parts) - 1
        if sys.argv[1] == "docker":
            stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
            rec = json.dumps({"log": part + ("\n" if last else ""), "stream": stream, "time": stamp},
                             separators=(",", ":"))
            print(rec.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))
        else:
            stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".") + "Z"  # Go's RFC3339Nano
            print(f"{stamp} {stream} {'F' if last else 'P'} {part}")
