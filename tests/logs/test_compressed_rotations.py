"""Rotated logs compressed with zstd, xz or bzip2 (logrotate's compresscmd / compressext), made by the real
CLIs: found, read whole as zstdcat/xzcat/bzcat read them, damage kept to what comes before it, and the live
file's cursor followed into its compressed copy. They were not even listed: their lines were silently missing
(and a live file rotated and compressed before a run was reported lost)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logs.test_sources import read_units
from upkeeper.logs import parallel
from upkeeper.logs.sources import StreamReader, discover, finish_cursors, live_log, plan_reads

CODECS = {"zstd": (".zst", ["zstd", "-q", "-c"], ["zstd", "-dc"]),
          "xz": (".xz", ["xz", "-c"], ["xz", "-dc"]),
          "bz2": (".bz2", ["bzip2", "-c"], ["bzip2", "-dc"])}
TEXT = b"".join(f"203.0.113.{i % 200} GET /items/{i} {i * 7919 % 100000}\n".encode() for i in range(30_000))


def compress(codec: str, data: bytes) -> bytes:
    tool = CODECS[codec][1]
    if shutil.which(tool[0]) is None:
        pytest.skip(f"{tool[0]} is not installed")
    return subprocess.run(tool, input=data, capture_output=True, check=True).stdout


def decompress_cli(codec: str, path: Path) -> tuple[bytes, bytes]:
    res = subprocess.run([*CODECS[codec][2], str(path)], capture_output=True)
    return res.stdout, res.stderr


def line(i: int) -> bytes:
    return f"line {i}\n".encode()


def read_all(path: Path, codec: str, size: int = 1 << 20) -> tuple[bytes, StreamReader]:
    with open(path, "rb") as fh:
        r = StreamReader(fh, codec)
        parts = []
        while piece := r.read(size):
            assert len(piece) <= size
            parts.append(piece)
        return b"".join(parts), r


def read_plan(files: list, cursors: list) -> tuple[bytes, list, list[parallel.ReadNote]]:  # type: ignore[type-arg]
    got, done, notes = read_units(plan := plan_reads(files, cursors, incremental=True))
    return got, finish_cursors(plan, done), notes


@pytest.mark.parametrize("codec", list(CODECS))
def test_rotated_files_of_each_compression_are_found_and_read_in_order(tmp_path: Path, codec: str) -> None:
    ext = CODECS[codec][0]
    log = tmp_path / "access.log"
    (tmp_path / f"access.log.3{ext}").write_bytes(compress(codec, line(0) + line(1)))
    (tmp_path / f"access.log.2{ext}").write_bytes(compress(codec, line(2)))
    (tmp_path / "access.log.1").write_bytes(line(3))
    log.write_bytes(line(4))
    (tmp_path / f"error.log-20240301{ext}").write_bytes(compress(codec, b"other log\n"))
    files = discover(str(log))
    assert [Path(f.path).name for f in files] == [f"access.log.3{ext}", f"access.log.2{ext}", "access.log.1",
                                                  "access.log"]
    assert [f.gz for f in files] == [True, True, False, False]
    assert live_log(str(tmp_path / f"access.log-20240301{ext}")) == str(log)
    got, _cur, notes = read_plan(files, [])
    assert got == b"".join(line(i) for i in range(5)) and notes == []


@pytest.mark.parametrize("codec", list(CODECS))
def test_reader_reads_as_the_cli_does(tmp_path: Path, codec: str) -> None:
    whole = compress(codec, TEXT)
    cases = {
        "sound": (whole, None, False),
        "streams": (compress(codec, TEXT[:1000]) + compress(codec, TEXT[1000:]), None, False),
        "padded": (whole + b"\0" * 700, None, False),
        "garbage": (whole + b"junk after the stream", "trailing garbage", False),
        "truncated": (whole[:len(whole) // 2], "truncated", True),
        "corrupt": (whole[:len(whole) // 3] + b"\xa5" * 64 + whole[len(whole) // 3 + 64:], "damaged", True),
    }
    for name, (blob, problem, damaged) in cases.items():
        path = tmp_path / (name + CODECS[codec][0])
        path.write_bytes(blob)
        ref, _complaint = decompress_cli(codec, path)
        for size in (1 << 20, 4093):
            got, r = read_all(path, codec, size)
            if problem is None:
                assert got == TEXT and r.problem is None, (codec, name, r.problem)
                if name != "padded":  # xz and bzip2 do not skip zero padding; zcat and we do
                    assert ref == TEXT, (codec, name)
                continue
            assert r.problem is not None and r.problem.startswith(problem) and r.damaged is damaged, \
                (codec, name, r.problem)
            if not damaged:
                assert got == TEXT, (codec, name)
            else:  # what comes before the damage, a prefix of the log
                assert TEXT.startswith(got), (codec, name)
    (tmp_path / "empty.zst").write_bytes(b"")
    assert read_all(tmp_path / "empty.zst", codec)[0] == b""


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(list(CODECS)), st.integers(0, 5_000), st.binary(max_size=40))
def test_reader_never_raises_on_a_cut_or_garbage(codec: str, cut: int, junk: bytes) -> None:
    import tempfile

    blob = {"zstd": _ZST, "xz": _XZ, "bz2": _BZ2}[codec]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x"
        p.write_bytes(blob[:cut] + junk)
        got, r = read_all(p, codec, 3000)
        assert TEXT.startswith(got) or r.problem is not None


def _blob(tool: list[str]) -> bytes:
    if shutil.which(tool[0]) is None:
        return b""
    return subprocess.run(tool, input=TEXT[:100_000], capture_output=True, check=True).stdout


_ZST, _XZ, _BZ2 = (_blob(CODECS[c][1]) for c in CODECS)


@pytest.mark.parametrize("codec", list(CODECS))
def test_the_live_file_is_followed_into_its_compressed_copy(tmp_path: Path, codec: str) -> None:
    """logrotate without delaycompress: the live file renamed, more lines written to it, compressed with zstd
    (xz, bzip2) before the next run. The run reads the lines written after the last one, once."""
    ext = CODECS[codec][0]
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(line(i) for i in range(5)))
    _, cur, _ = read_plan(discover(str(log)), [])
    with open(log, "ab") as fh:
        fh.write(line(5) + line(6))
    (tmp_path / f"access.log.1{ext}").write_bytes(compress(codec, log.read_bytes()))
    log.unlink()
    log.write_bytes(line(7))
    got, cur, notes = read_plan(discover(str(log)), cur)
    assert got == line(5) + line(6) + line(7) and notes == []
    got, cur, _ = read_plan(discover(str(log)), cur)
    assert got == b""
    # and in the task: nothing said lost
    plan = plan_reads(discover(str(log)), cur, incremental=True)
    assert plan.notes == [] and plan.ranges == []
    os.unlink(tmp_path / f"access.log.1{ext}")


def test_logs_nginx_counts_the_lines_of_a_zstd_rotated_log(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    def req(i: int) -> bytes:
        return (f'203.0.113.{i} - - [01/Mar/2024:10:00:{i:02d} +0000] "GET /items/{i} HTTP/1.1" 200 512 "-" '
                f'"Mozilla/5.0"\n').encode()

    log = tmp_path / "access.log"
    (tmp_path / "access.log.2.zst").write_bytes(compress("zstd", b"".join(req(i) for i in range(10))))
    (tmp_path / "access.log.1.xz").write_bytes(compress("xz", b"".join(req(i) for i in range(10, 15))))
    log.write_bytes(req(15))
    res = cli(["logs", "nginx", str(log), "--json"])
    assert res.code == 0, res.output
    out = res.json()
    assert out["requests"] == 16 and out["invalid"] == 0, out
    assert [(Path(f["path"]).name, f["compressed"]) for f in out["files"]] == [
        ("access.log.2.zst", True), ("access.log.1.xz", True), ("access.log", False)]


@pytest.mark.parametrize("codec", ["gzip", *CODECS])
def test_a_rotated_file_compressed_under_a_plain_name_is_read_decompressed(tmp_path: Path, codec: str) -> None:
    """logrotate with compressext "" (or a hand-made copy): access.log.1 holds gzip (zstd, xz, bzip2) data. It was
    read as text: every line invalid, the unparsed-line warning, the requests missing."""
    import gzip

    log = tmp_path / "access.log"
    data = b"".join(line(i) for i in range(500))
    blob = gzip.compress(data) if codec == "gzip" else compress(codec, data)
    (tmp_path / "access.log.1").write_bytes(blob)
    log.write_bytes(line(500))
    files = discover(str(log))
    assert [(Path(f.path).name, f.gz) for f in files] == [("access.log.1", True), ("access.log", False)]
    got, _cur, notes = read_plan(files, [])
    assert got == data + line(500) and notes == []


def test_a_plain_rotated_file_that_starts_like_bzip2_text_stays_plain(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    (tmp_path / "access.log.1").write_bytes(b"BZh is how this line starts\n")
    log.write_bytes(line(1))
    files = discover(str(log))
    assert [f.gz for f in files] == [False, False]
    assert read_plan(files, [])[0] == b"BZh is how this line starts\n" + line(1)
