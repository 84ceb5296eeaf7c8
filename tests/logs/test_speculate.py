"""Reading ahead (:mod:`upkeeper.logs.speculate`): a helper started before the scan reads the first pieces of its
job's log; the scan takes them over when its own plan is the same, and has them thrown away otherwise — either way
the figures are those of a scan by one process."""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from upkeeper.logs import access, parallel, sources, speculate
from upkeeper.logs.access import ScanOptions
from upkeeper.logs.speculate import Claims, Speculated
from upkeeper.logs.synth import write_access_log

ACCESS = "upkeeper.logs.access"


@pytest.fixture(autouse=True)
def _dismiss() -> Iterator[None]:
    parallel.dismiss_prestarted()
    yield
    parallel.dismiss_prestarted()


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("speculate") / "access.log"
    write_access_log(str(path), parallel.MIN_PARALLEL + (4 << 20))  # 20 MB: 16 pieces for 2 processes
    return path


@pytest.fixture
def new_claims() -> Iterator[Callable[[], Claims]]:
    """Claim files for a test, removed after it whatever it asserted."""
    made: list[Claims] = []

    def make() -> Claims:
        made.append(Claims.make())
        return made[-1]

    yield make
    for claims in made:
        claims.remove()


def _units(log: Path, workers: int = 2) -> list[parallel.Unit]:
    plan = sources.plan_reads(sources.discover(str(log)), [], incremental=False)
    return access.units(plan.ranges, workers)


def _alone(log: Path, opts: ScanOptions) -> dict[str, Any]:
    partial, _gz = parallel.scan(ACCESS, opts, _units(log, 1), workers=1)
    return access.summarize(partial)


def _claimed(claims: Claims) -> int:
    with open(claims.path, "rb") as fh:
        return int.from_bytes(fh.read(8), "little", signed=True)


def _wait_claimed(at_least: int, timeout: float = 60.0) -> None:
    """Until the helper that reads ahead has claimed ``at_least`` pieces (read them, or is reading the last)."""
    claims = next(iter(parallel._claims.values()))
    deadline = time.monotonic() + timeout
    while _claimed(claims) < at_least:
        assert time.monotonic() < deadline, "the helper read nothing ahead"
        time.sleep(0.01)


def test_claims_hand_out_pieces_in_order_up_to_the_cap_and_none_once_closed() -> None:
    claims = Claims.make()
    try:
        assert claims.publish(("plan", 1))
        assert [claims.claim(3) for _ in range(4)] == [0, 1, 2, None]
        assert claims.close() == (3, ("plan", 1))
        assert claims.claim(10) is None  # closed: the scan has begun
        assert not claims.publish(("late", 2))
        assert claims.close() == (0, ("plan", 1))
    finally:
        claims.remove()
    assert not Path(claims.path).exists()


def test_a_claim_file_closed_before_any_plan_was_published_has_none() -> None:
    claims = Claims.make()
    try:
        assert claims.close() == (0, None)
        assert not claims.publish(("plan",))  # the helper comes too late: it reads nothing ahead
    finally:
        claims.remove()


def test_speculate_reads_its_share_of_the_pieces_and_stops_when_a_message_waits(
        log: Path, new_claims: Callable[[], Claims]) -> None:
    options = {"access_log": str(log), "incremental": False}
    order = parallel.queue_order(_units(log))
    read, write = os.pipe()
    try:
        claims = new_claims()
        got = speculate.speculate(ACCESS, claims.path, options, {}, 2, read)
        half = -(-len(order) // 2)  # (rounded up)
        assert [i for i, _n, _notes in got.done] == list(range(half))
        assert [n for _i, n, _notes in got.done] == [u.end - u.start for u in order[:half]]  # type: ignore[operator]
        assert not got.failed and got.acc is not None
        k, plan = claims.close()
        assert k == half and plan == (ACCESS, ScanOptions(log_format="combined"), b"", order)

        os.write(write, b"x")  # the scan's init waits: nothing more is read ahead
        claims = new_claims()
        got = speculate.speculate(ACCESS, claims.path, options, {}, 2, read)
        assert got.done == [] and claims.close()[0] == 0
    finally:
        os.close(read)
        os.close(write)


def test_speculate_reads_nothing_for_a_run_it_cannot_foresee(log: Path, new_claims: Callable[[], Claims]) -> None:
    read, write = os.pipe()
    try:
        for options in ({"access_log": str(log)},  # incremental (the default): what is new is not known yet
                        {"access_log": str(log), "incremental": False, "login_paths": ["/x"]},
                        {"access_log": str(log.parent / "*.log"), "incremental": False},
                        {"access_log": str(log), "incremental": False, "workers": "two"}):
            claims = new_claims()
            assert speculate.speculate(ACCESS, claims.path, options, {}, 2, read).done == []
            assert claims.close() == (0, None)
    finally:
        os.close(read)
        os.close(write)


def test_the_scan_takes_over_the_pieces_a_helper_read_ahead(log: Path, tmp_path: Path) -> None:
    opts = ScanOptions(log_format="combined")
    assert parallel.prestart(ACCESS, 1, speculate=({"incremental": False}, {"access_log": str(log)})) == 1
    _wait_claimed(2)
    claims = next(iter(parallel._claims.values()))
    processes: dict[str, int] = {}
    partial, _gz = parallel.scan(ACCESS, opts, _units(log), workers=2, processes=processes)
    assert processes["read_ahead"] >= 2 and processes["pieces"] == len(_units(log))
    assert processes["read_ahead_bytes"] == sum(u.size_hint for u in parallel.queue_order(_units(log))
                                                [:processes["read_ahead"]])
    assert access.summarize(partial) == _alone(log, opts)  # nothing counted twice, nothing missed
    assert not parallel._claims and not Path(claims.path).exists()


def test_what_a_helper_read_ahead_for_another_plan_is_thrown_away(log: Path) -> None:
    """The helper guessed the scan options wrong (the job's options as validated differ): what it read is not used,
    and it scans the rest of the pieces afresh with the scan's options."""
    opts = ScanOptions(log_format="combined", public_paths=("/downloads/*",))
    assert parallel.prestart(ACCESS, 1, speculate=({"incremental": False}, {"access_log": str(log)})) == 1
    _wait_claimed(1)
    claims = next(iter(parallel._claims.values()))
    processes: dict[str, int] = {}
    partial, _gz = parallel.scan(ACCESS, opts, _units(log), workers=2, processes=processes)
    assert processes["read_ahead"] == 0 and processes["scanning"] == 2
    assert access.summarize(partial) == _alone(log, opts)
    assert not Path(claims.path).exists()


def test_pieces_read_ahead_of_a_live_log_that_grew_meanwhile_are_taken_over(tmp_path: Path) -> None:
    """nginx wrote on between the helper's plan and the scan's: the log is cut at the same places but at its end, so
    the pieces read ahead (the biggest first) are the scan's, and nothing is counted twice or missed."""
    path = tmp_path / "access.log"
    write_access_log(str(path), parallel.MIN_PARALLEL + (4 << 20))
    planned = set(_units(path))
    assert parallel.prestart(ACCESS, 1, speculate=({"incremental": False}, {"access_log": str(path)})) == 1
    _wait_claimed(1)
    with open(path, "ab") as fh:
        fh.write(path.read_bytes()[:100_000].rsplit(b"\n", 1)[0] + b"\n")
    units = _units(path)
    assert set(units) != planned and len(planned & set(units)) >= len(units) // 2  # (only the end is cut elsewhere)
    processes: dict[str, int] = {}
    opts = ScanOptions(log_format="combined")
    partial, _gz = parallel.scan(ACCESS, opts, units, workers=2, processes=processes)
    assert processes["read_ahead"] >= 1
    assert access.summarize(partial) == _alone(path, opts)


def test_pieces_read_ahead_of_a_log_rotated_meanwhile_are_thrown_away(tmp_path: Path) -> None:
    """The log was replaced (another inode, the same bytes) between the helper's plan and the scan's: not one piece
    read ahead is one of the scan's; what was read is thrown away."""
    path = tmp_path / "access.log"
    write_access_log(str(path), parallel.MIN_PARALLEL + (4 << 20))
    assert parallel.prestart(ACCESS, 1, speculate=({"incremental": False}, {"access_log": str(path)})) == 1
    _wait_claimed(1)
    data = path.read_bytes()
    path.rename(tmp_path / "access.log.1")
    path.write_bytes(data)
    processes: dict[str, int] = {}
    opts = ScanOptions(log_format="combined")
    units = [u for u in _units(path) if u.path == str(path)]
    partial, _gz = parallel.scan(ACCESS, opts, units, workers=2, processes=processes)
    assert processes["read_ahead"] == 0
    assert access.summarize(partial) == access.summarize(parallel.scan(ACCESS, opts, units, workers=1)[0])


def test_a_helper_dismissed_while_reading_ahead_ends_and_leaves_no_claim_file(log: Path) -> None:
    assert parallel.prestart(ACCESS, 1, speculate=({"incremental": False}, {"access_log": str(log)})) == 1
    _wait_claimed(1)
    claims = next(iter(parallel._claims.values()))
    sp = parallel._prestarted[0][1]
    parallel.dismiss_prestarted()
    assert sp.popen.poll() == 0 and not Path(claims.path).exists()


def _unit(i: int) -> parallel.Unit:
    return parallel.Unit("/x", i * 10, i * 10 + 10, False, False)


def test_pieces_the_helper_could_not_read_ahead_go_back_to_the_queue() -> None:
    todo: queue.Queue[parallel.Unit] = queue.Queue()
    counted: list[tuple[parallel.Unit, int]] = []
    taken = [_unit(0), _unit(1)]
    parallel._settle(("respec", "FileChanged: /x was replaced"), taken, todo,
                     lambda u, n, notes: counted.append((u, n)))
    assert [todo.get_nowait(), todo.get_nowait()] == taken and counted == []
    parallel._settle(("spec", [(1, 7, []), (0, 10, [])]), taken, todo, lambda u, n, notes: counted.append((u, n)))
    assert counted == [(_unit(1), 7), (_unit(0), 10)] and todo.empty()
    with pytest.raises(RuntimeError, match="answered 'spec' for 1 of the 2 pieces"):
        parallel._settle(("spec", [(0, 10, [])]), taken, todo, lambda u, n, notes: None)


def test_a_helper_that_could_not_read_a_piece_ahead_says_so_and_starts_afresh() -> None:
    acc = access.make_accumulator(ScanOptions())
    assert speculate.answer(Speculated(acc, [(0, 10, [])], failed="FileChanged: x"), 2) == (
        ("respec", "FileChanged: x"), None, None)
    assert speculate.answer(Speculated(acc, [(0, 10, [])], base=5), 2) == (
        ("respec", "1 of the 2 pieces claimed read"), None, None)
    assert speculate.answer(Speculated(acc, [(0, 10, []), (1, 3, [])], base=5), 2) == (
        ("spec", [(0, 10, []), (1, 3, [])]), acc, 5)
    assert speculate.answer(Speculated(acc, [(0, 10, [])], base=5), -1) == (None, None, None)  # thrown away
    assert speculate.answer(None, 0) == (None, None, None)


PG_PREFIX = "%m [%p] %q%u@%d "


def _pg_log(path: Path, size: int) -> None:
    """A stderr log with statements (some on several lines), errors with their STATEMENT, lock waits."""
    out: list[bytes] = []
    i = 0
    total = 0
    while total < size:
        t = f"2024-03-01 10:{i // 3600 % 60:02d}:{i // 60 % 60:02d}.{i % 1000:03d} UTC [{1000 + i % 97}] app@db "
        if i % 7 == 0:
            chunk = (f"{t}ERROR:  duplicate key value violates unique constraint \"t_pkey\"\n"
                     f"{t}DETAIL:  Key (id)=({i}) already exists.\n"
                     f"{t}STATEMENT:  INSERT INTO t VALUES ({i})\n")
        elif i % 5 == 0:
            chunk = f"{t}LOG:  duration: {i % 300}.5 ms  statement: SELECT *\n\tFROM orders\n\tWHERE id = {i}\n"
        else:
            chunk = f"{t}LOG:  duration: {i % 90}.25 ms  statement: SELECT name FROM users WHERE id = {i}\n"
        out.append(chunk.encode())
        total += len(out[-1])
        i += 1
    path.write_bytes(b"".join(out))


def test_a_postgres_scan_takes_over_the_pieces_a_helper_read_ahead(tmp_path: Path) -> None:
    from upkeeper.logs import pglog, pgplan

    path = tmp_path / "postgresql.log"
    _pg_log(path, pglog.MIN_PARALLEL + (6 << 20))
    options = {"log_file": str(path), "format": "stderr", "log_line_prefix": PG_PREFIX, "incremental": False}
    kind, opts, cont, _start, min_parallel = pgplan.scan_setup("stderr", PG_PREFIX, "")
    ranges = sources.plan_reads(sources.discover(str(path)), [], incremental=False).ranges
    alone, _gz = parallel.scan(kind, opts, pgplan.units(ranges, "stderr", PG_PREFIX, "", 1), workers=1,
                               continuation=cont, min_parallel=min_parallel)
    assert parallel.prestart(kind, 1, speculate=(options, {})) == 1
    _wait_claimed(1)
    processes: dict[str, int] = {}
    together, _gz = parallel.scan(kind, opts, pgplan.units(ranges, "stderr", PG_PREFIX, "", 2), workers=2,
                                  continuation=cont, min_parallel=min_parallel, processes=processes)
    assert processes["read_ahead"] >= 1
    assert pglog.summarize(together) == pglog.summarize(alone)
    assert pglog.summarize(alone)["errors"]["total"] > 0


def test_speculate_reads_no_postgres_log_whose_run_asks_the_server() -> None:
    from upkeeper.logs import pgplan

    for options in ({"log_file": "/var/log/postgresql.log", "format": "stderr", "incremental": False},  # no prefix
                    {"log_file": "/var/log/pg.log", "format": "syslog", "log_line_prefix": "%m ", "incremental": False},
                    {"format": "jsonlog", "incremental": False}):
        assert pgplan.speculation("upkeeper.logs.pglog", options, {}) is None


def test_a_scan_within_a_memory_limit_takes_over_the_pieces_read_ahead(log: Path) -> None:
    """The helper's memory counts from its first buffer read ahead, as a helper's counts from its first: a limit that
    a scan of this log keeps to is kept to when pieces were read ahead."""
    opts = ScanOptions(log_format="combined")
    assert parallel.prestart(ACCESS, 1, speculate=({"incremental": False}, {"access_log": str(log)})) == 1
    _wait_claimed(1)
    processes: dict[str, int] = {}
    partial, _gz = parallel.scan(ACCESS, opts, _units(log), workers=2, processes=processes,
                                 memory_limit=2 * parallel.MIN_SHARE)
    assert processes["read_ahead"] >= 1
    assert access.summarize(partial) == _alone(log, opts)


def test_a_csvlog_scan_takes_over_the_pieces_a_helper_read_ahead(tmp_path: Path) -> None:
    """A live csvlog whose last record is not whole yet (a newline inside a quoted field was the last byte written):
    the helper holds it back as the run does, so its pieces are the run's."""
    from logs.test_pgstruct import Rec, csv_line
    from upkeeper.logs import pglog, pgplan, pgstruct

    path = tmp_path / "postgresql.csv"
    recs = [Rec("LOG", f"duration: {i % 97}.5 ms  statement: SELECT *\n  FROM t{i % 13}\n  WHERE id = {i}", pid=i % 40)
            for i in range(90_000)]
    body = "".join(csv_line(r) for r in recs).encode()
    path.write_bytes(body + csv_line(Rec("LOG", "duration: 1.0 ms  statement: SELECT 'half\nwritten")).encode()[:-30])
    assert len(body) > pgstruct.MIN_PARALLEL
    options = {"log_file": str(path), "format": "csvlog", "incremental": False}
    kind, opts, cont, _start, min_parallel = pgplan.scan_setup("csvlog", "", "")
    plan = sources.plan_reads(sources.discover(str(path)), [], incremental=False)
    pgplan.hold_back_open_record(plan, pgstruct.complete_end)
    assert plan.ranges[0].end == len(body)  # (the half-written record is left for a later run)
    alone, _gz = parallel.scan(kind, opts, pgplan.units(plan.ranges, "csvlog", "", "", 1), workers=1,
                               min_parallel=min_parallel)
    assert parallel.prestart(kind, 1, speculate=(options, {})) == 1
    _wait_claimed(1)
    processes: dict[str, int] = {}
    together, _gz = parallel.scan(kind, opts, pgplan.units(plan.ranges, "csvlog", "", "", 2), workers=2,
                                  min_parallel=min_parallel, processes=processes)
    assert processes["read_ahead"] >= 1
    assert pglog.summarize(together) == pglog.summarize(alone)
    assert pglog.summarize(alone)["statements"]["count"] == 90_000
