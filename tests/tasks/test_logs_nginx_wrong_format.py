"""logs.nginx on a log whose log_format matches none of its lines: the file is given up after its first lines
(upkeeper.logs.access.wrong_format) with a finding that says how to fix it, instead of minutes spent counting
every line of it as unparsed; its read position is kept, so the fixed format reads it from there."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from tasks.test_logs_nginx import access_line, checks, file_config, run
from upkeeper.logs.access import PROBE_LINES

N = PROBE_LINES + 500  # more lines than the probe tries


def json_line(i: int) -> bytes:
    """A JSON access-log line (escape=json), what a log_format for a log shipper writes."""
    return (json.dumps({"time": f"2024-03-01T10:{i // 60 % 60:02d}:{i % 60:02d}+00:00", "ip": "192.0.2.9",
                        "request": f"GET /items/{i} HTTP/1.1", "status": 200, "token": "s3cr3t"}) + "\n").encode()


def test_a_log_in_another_format_is_given_up_with_a_finding_and_read_once_the_format_is_fixed(
        cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A JSON log read as combined_timed: every line was parsed (slowly: 10–40 µs each, minutes for a gigabyte)
    only to be counted unparsed, with a warning.  Now the run stops after the first lines, fails with a critical
    finding naming the file, the format, a sample line and the option to set, and the file's cursor stays put:
    the run with the right format reads every line of it, those written meanwhile too."""
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(json_line(i) for i in range(N)))
    wrong = file_config(make_config, log, tmp_path)
    first = run(cli, wrong)
    assert first["status"] == "fail", first["summary"]
    assert first["metrics"]["lines"] == 0 and first["metrics"]["invalid"] == 0  # not read on
    assert "1 file(s) not read" in first["summary"] and str(log) in first["summary"]
    (f,) = checks(first)["logs.nginx.wrong_format"]
    assert f["severity"] == "critical" and f["subject"] == str(log)
    assert f"none of the first {PROBE_LINES:,} lines" in f["message"] and "'combined_timed'" in f["message"]
    assert '"request": "GET /items/0 HTTP/1.1"' in f["message"] and "its read position is kept" in f["message"]
    assert "jobs.log-analysis.options.log_format" in f["remediation"]
    assert f["data"]["lines"] == PROBE_LINES and len(f["data"]["samples"]) == 3
    assert f["data"]["samples"][0]["offset"] == 0 and f["data"]["reasons"] == {"invalid %h": PROBE_LINES}
    assert "logs.nginx.unparsed" not in checks(first)
    with open(log, "ab") as fh:
        fh.write(b"".join(json_line(i) for i in range(N, N + 7)))
    again = run(cli, wrong)  # the same format again: the same finding, nothing read
    assert again["status"] == "fail" and again["metrics"]["lines"] == 0
    fixed = file_config(make_config, log, tmp_path, log_format=(
        '{"time": "$time_iso8601", "ip": "$remote_addr", "request": "$request", "status": $status, '
        '"token": "$arg_token"}'))
    third = run(cli, fixed)
    assert third["metrics"]["requests"] == N + 7 and third["metrics"]["invalid"] == 0, third["summary"]
    assert "logs.nginx.wrong_format" not in checks(third)
    assert run(cli, fixed)["metrics"]["lines"] == 0  # read once


def test_bad_first_lines_then_good_ones_and_a_format_changed_mid_file_are_read_as_before(
        cli: Any, make_config: Any, tmp_path: Path) -> None:
    """Only a file none of whose first lines parse is given up: a few bad ones before good ones are counted as
    unparsed; so are the many lines before nginx's log_format changed in the middle of the file when the lines
    after the change parse (its last lines: given up, the file's cursor would never get past the change)."""
    log = tmp_path / "access.log"
    log.write_bytes(b"garbage\n" * 40 + b"\n# comment\n" + b"".join(access_line(i) for i in range(100)))
    r = run(cli, file_config(make_config, log, tmp_path))
    assert r["metrics"]["requests"] == 100 and r["metrics"]["invalid"] == 40
    assert "logs.nginx.wrong_format" not in checks(r)
    log2 = tmp_path / "changed" / "access.log"
    log2.parent.mkdir()
    log2.write_bytes(b"".join(json_line(i) for i in range(N)) + b"".join(access_line(i) for i in range(50)))
    r = run(cli, file_config(make_config, log2, tmp_path / "changed"))
    assert r["metrics"]["requests"] == 50 and r["metrics"]["invalid"] == N, r["summary"]
    assert "logs.nginx.wrong_format" not in checks(r)
    # fewer lines than the probe tries, none of them parsing: read and counted as before (a warning)
    log3 = tmp_path / "small" / "access.log"
    log3.parent.mkdir()
    log3.write_bytes(b"".join(json_line(i) for i in range(300)))
    r = run(cli, file_config(make_config, log3, tmp_path / "small"))
    assert r["metrics"]["invalid"] == 300 and "logs.nginx.unparsed" in checks(r)
    assert "logs.nginx.wrong_format" not in checks(r)


def test_rotated_files_in_an_older_format_are_a_warning_and_the_live_log_is_read(
        cli: Any, make_config: Any, tmp_path: Path) -> None:
    """The files rotated before nginx's log_format changed (plain and compressed) are given up with a warning
    each (the live log's lines parse: not a format that is wrong for the log), their positions kept; the live
    log is read, once."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "access.log.2.gz").write_bytes(gzip.compress(b"".join(json_line(i) for i in range(N))))
    (logs / "access.log.1").write_bytes(b"".join(json_line(i) for i in range(N)))
    live = logs / "access.log"
    live.write_bytes(b"".join(access_line(i) for i in range(30)))
    cfg = file_config(make_config, live, tmp_path)
    first = run(cli, cfg)
    assert first["status"] == "warn" and first["metrics"]["requests"] == 30 and first["metrics"]["invalid"] == 0
    found = {f["subject"]: f for f in checks(first)["logs.nginx.wrong_format"]}
    assert set(found) == {str(logs / "access.log.2.gz"), str(logs / "access.log.1")}
    assert all(f["severity"] == "warning" and "written before nginx's log_format changed" in f["message"]
               for f in found.values())
    second = run(cli, cfg)  # still not read (their positions were kept), the live log not counted again
    assert second["metrics"]["requests"] == 0 and len(checks(second)["logs.nginx.wrong_format"]) == 2


def test_a_compressed_file_in_an_older_format_is_decompressed_to_its_end_once(
        cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A compressed file's last lines are tried too (its format may have changed within it), which decompresses
    it to its end: 1.4 s a GB. A rotated file written before nginx's log_format changed is given up at every run
    until it is deleted, so each run did it again for each such file (30 rotated files of 1 GB: 42 s a run). The
    job's state now remembers the files (identity, size, format) found so: a later run tries their first lines
    only. Another file at that name, or another format, is tried whole again."""
    from upkeeper.core.history import History
    from upkeeper.logs import access, parallel
    from upkeeper.logs.access import ScanOptions

    logs = tmp_path / "logs"
    logs.mkdir()
    gz = logs / "access.log.2.gz"
    gz.write_bytes(gzip.compress(b"".join(json_line(i) for i in range(N))))
    live = logs / "access.log"
    live.write_bytes(b"".join(access_line(i) for i in range(30)))
    cfg = file_config(make_config, live, tmp_path)
    history = History(f"sqlite:///{tmp_path / 'history.db'}")
    for _ in range(2):
        r = run(cli, cfg)
        assert [f["subject"] for f in checks(r)["logs.nginx.wrong_format"]] == [str(gz)]
        st = gz.stat()
        assert history.get_state("log-analysis", "access_wrong_gz") == [
            f"combined_timed\nremote_addr\n{st.st_dev}:{st.st_ino}:{st.st_size}"]
    # (what a remembered file is spared: its last lines, which would have parsed here)
    mixed = tmp_path / "mixed.gz"
    mixed.write_bytes(gzip.compress(b"".join(json_line(i) for i in range(N)) + access_line(0)))
    unit = parallel.Unit(str(mixed), 0, None, True, True)
    assert access.wrong_format(ScanOptions(log_format="combined_timed"), unit) is None
    assert access.wrong_format(ScanOptions(log_format="combined_timed"), unit, tail=0) is not None
    gz.unlink()  # deleted by logrotate: forgotten
    run(cli, cfg)
    assert history.get_state("log-analysis", "access_wrong_gz") == []
