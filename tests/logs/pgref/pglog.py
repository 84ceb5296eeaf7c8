"""REFERENCE COPY (tests only, frozen at 0a6635e): PostgreSQL server logs (stderr format): pgBadger's core, fast.

Understood entries (``log_line_prefix`` configurable, PostgreSQL's default ``%m [%p] ``):

* ``duration: X ms  statement|execute <name>: …`` (``log_min_duration_statement``):
  statements grouped by normalized fingerprint with count, total, mean, max, and
  every duration in a histogram for exact percentiles.  Bare ``duration:`` lines
  (``log_duration``) are paired with the session's last ``statement:`` line.
* ``ERROR``/``FATAL``/``PANIC`` by SQLSTATE (from ``%e``, from
  ``log_error_verbosity = verbose``, or inferred from the message text) and by
  normalized message, with the ``STATEMENT`` that caused it.
* lock waits (``log_lock_waits``), deadlocks, temporary files (``log_temp_files``),
  checkpoints (``log_checkpoints``: reasons, buffers, write/sync time, "occurring
  too frequently"), autovacuum/autoanalyze runs, connections.

Duration entries — the bulk of a busy log — are extracted for a whole buffer with
one ``findall``; their statements are fingerprinted together (see
:mod:`upkeeper.logs.sqlfp`).  Everything else goes through one ``finditer``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from logs.pgref.sqlfp import fingerprints, statement_kind
from upkeeper.errors import UpkeeperError

# CHANGED: durations (their unit too: мс, ミリ秒 …) and severities in another language, as upkeeper reads them
from upkeeper.logs.pglog import _SQLSTATE_PATTERNS as _NEW_SQLSTATE_PATTERNS
from upkeeper.logs.pglog import _TRANSLATED_DURATION, TRANSLATED_LEVEL_RX

DEFAULT_PREFIX = "%m [%p] "  # PostgreSQL 13+ default
LEVELS = rb"DEBUG[1-5]|INFO|NOTICE|WARNING|ERROR|LOG|FATAL|PANIC|DETAIL|HINT|QUERY|CONTEXT|STATEMENT|LOCATION"

_ESCAPES: dict[str, bytes] = {
    "a": rb"(?:[^\n]*?)",
    "u": rb"(?P<user>[^\n]*?)",
    "d": rb"(?P<db>[^\n]*?)",
    "r": rb"(?:[^\n]*?)",
    "h": rb"(?:[^\n]*?)",
    "b": rb"(?:[^\n]*?)",
    "p": rb"(?P<pid>\d+)",
    "P": rb"(?:\d*)",
    "t": rb"(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?: [^\s\]\[]+)?",
    "m": rb"(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.\d+(?: [^\s\]\[]+)?",
    "n": rb"(?P<epoch>\d+(?:\.\d+)?)",
    "i": rb"(?:[^\n]*?)",
    "e": rb"(?P<sqlstate>[0-9A-Z]{5})",
    "c": rb"(?:[0-9a-f]+\.[0-9a-f]+)",
    "l": rb"(?:\d+)",
    "s": rb"(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?: [^\s\]\[]+)?)",
    "v": rb"(?:[\d/]*)",
    "x": rb"(?:\d+)",
    "Q": rb"(?:-?\d+)",
}


class PrefixError(UpkeeperError):
    """The log_line_prefix cannot be used."""


def compile_prefix(prefix: str) -> bytes:
    """A regex (bytes) for ``log_line_prefix``; named groups ts, pid, user, db, sqlstate, epoch."""
    out: list[bytes] = []
    seen: set[str] = set()
    optional_from: int | None = None
    i = 0
    while i < len(prefix):
        c = prefix[i]
        if c == "%" and i + 1 < len(prefix):
            e = prefix[i + 1]
            i += 2
            if e == "%":
                out.append(b"%")
            elif e == "q":
                optional_from = len(out)  # non-session processes stop printing here
            elif e in _ESCAPES:
                pat = _ESCAPES[e]
                name = re.search(rb"\?P<(\w+)>", pat)
                if name and name.group(1).decode() in seen:
                    pat = re.sub(rb"\?P<\w+>", b"?:", pat)  # a field printed twice: capture it once
                elif name:
                    seen.add(name.group(1).decode())
                out.append(pat)
            else:
                raise PrefixError(f"log_line_prefix {prefix!r}: unknown escape %{e}",
                                  "Try: copy log_line_prefix from postgresql.conf (SHOW log_line_prefix)")
            continue
        out.append(re.escape(c.encode()))
        i += 1
    if optional_from is not None:
        out = out[:optional_from] + [b"(?:" + b"".join(out[optional_from:]) + b")?"]
    if "pid" not in seen:
        raise PrefixError(f"log_line_prefix {prefix!r} has no %p (process id)",
                          "Try: add [%p] to log_line_prefix in postgresql.conf; without it entries cannot be "
                          "paired with their statements")
    if "ts" not in seen and "epoch" not in seen:
        raise PrefixError(f"log_line_prefix {prefix!r} has no time (%m, %t or %n)",
                          "Try: log_line_prefix = '%m [%p] ' (PostgreSQL's default)")
    return b"".join(out)


# ---------------------------------------------------------------------------------------------
# SQLSTATE for messages logged without one (log_error_verbosity = default and no %e)
# ---------------------------------------------------------------------------------------------

_SQLSTATE_PATTERNS: tuple[tuple[str, str], ...] = (
    ("40P01", r"^deadlock detected"),
    ("40001", r"^could not serialize access"),
    ("57014", r"^canceling statement due to (?:statement timeout|user request)"),
    ("55P03", r"^canceling statement due to lock timeout|^could not obtain lock"),
    ("25P03", r"^terminating connection due to idle-in-transaction timeout"),
    ("57P01", r"^terminating connection due to administrator command"),
    ("57P03", r"^the database system is (?:starting up|shutting down|in recovery mode)"),
    ("53300", r"^(?:sorry, )?too many clients|^remaining connection slots are reserved"),
    ("53100", r"^could not (?:extend|write to) file|no space left on device"),
    ("53200", r"^out of memory"),
    ("28P01", r"^password authentication failed"),
    ("28000", r"^(?:role \".*\" does not exist|no pg_hba\.conf entry|Peer authentication failed)"),
    ("3D000", r"^database \".*\" does not exist"),
    ("42P01", r"^relation \".*\" does not exist|^missing FROM-clause entry"),
    ("42703", r"^column \".*\" (?:of relation \".*\" )?does not exist"),
    ("42883", r"^(?:function|operator) (?:.* )?does not exist"),  # CHANGED: "operator does not exist: …"
    ("42601", r"^syntax error at|^unterminated quoted string|^zero-length delimited identifier"),
    ("42501", r"^permission denied|^must be owner of"),
    ("42P07", r"^relation \".*\" already exists"),
    ("42710", r"^(?:role|extension|constraint) \".*\" already exists"),
    ("42804", r"^column \".*\" is of type .* but expression is of type"),
    ("42702", r"^column reference \".*\" is ambiguous"),
    ("42803", r"must appear in the GROUP BY clause"),
    ("23505", r"^duplicate key value violates unique constraint"),
    ("23503", r"violates foreign key constraint"),
    ("23502", r"violates not-null constraint"),
    ("23514", r"violates check constraint"),
    ("23P01", r"violates exclusion constraint"),
    ("22P02", r"^invalid input syntax for"),
    ("22001", r"^value too long for type"),
    ("22003", r"out of range"),
    ("22012", r"^division by zero"),
    ("22007", r"^invalid (?:value for|input syntax for type (?:date|time|timestamp))"),
    ("22008", r"^date/time field value out of range"),
    ("25P02", r"^current transaction is aborted"),
    ("25001", r"cannot be executed (?:from a function|inside a transaction block)"),
    ("0A000", r"^cannot .* (?:is not supported|not supported)"),
    ("08P01", r"^unexpected EOF|^invalid frontend message|^unsupported frontend protocol"),
    ("08006", r"^could not receive data from client|^connection to client lost"),
    ("XX000", r"^could not read block|^invalid page in block|^unexpected data beyond EOF"),
)
# CHANGED: upkeeper's patterns (more SQLSTATEs told by their messages, warnings' too), not the frozen ones
_SQLSTATE_RX = [(code, re.compile(p.encode(), re.I)) for code, p in _NEW_SQLSTATE_PATTERNS]
_VERBOSE_CODE = re.compile(rb"^([0-9A-Z]{5}): ")


def infer_sqlstate(message: bytes) -> str | None:
    for code, rx in _SQLSTATE_RX:
        if rx.search(message):
            return code
    return None


_MSG_NORM = (
    (re.compile(rb'"(?:[^"]|"")*"'), b'"?"'),
    (re.compile(rb"'(?:[^']|'')*'"), b"'?'"),
    (re.compile(rb"(?<![\w.])\d+(?:\.\d+)?"), b"?"),
    (re.compile(rb"\s+"), b" "),
)


def normalize_message(msg: bytes) -> bytes:
    """Error messages grouped: identifiers, strings and numbers become ``?``."""
    m = msg.split(b"\n", 1)[0]
    for rx, repl in _MSG_NORM:
        m = rx.sub(repl, m)
    return m.strip()[:300]


# ---------------------------------------------------------------------------------------------
# the accumulator
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PgScanOptions:
    log_line_prefix: str = DEFAULT_PREFIX
    samples: int = 5


_CHECKPOINT_DONE = re.compile(
    rb"(?:checkpoint|restartpoint) complete: wrote (\d+) buffers .*?; (\d+) WAL file\(s\) added, (\d+) removed, (\d+) recycled; "
    rb"write=([\d.]+) s, sync=([\d.]+) s, total=([\d.]+) s(?:.*?distance=(\d+) kB)?")
_LOCK_WAIT = re.compile(
    rb"process (\d+) (still waiting for|acquired|detected deadlock while waiting for) (\w+) on (.+?) after ([\d.]+) ms")
_TEMP_FILE = re.compile(rb'temporary file: path "([^"]*)", size (\d+)')
_BARE_DURATION = re.compile(rb"duration: ([\d.]+) ms$")
_STATEMENT = re.compile(rb"statement: ")
_AUTOVACUUM = re.compile(rb"automatic (?:aggressive )?vacuum (?:to prevent wraparound )?of table ")  # CHANGED
_TOO_FREQUENT = re.compile(rb"checkpoints are occurring too frequently \((\d+) seconds? apart\)")


@dataclass
class PgPartial:
    lines: int = 0
    entries: int = 0
    unparsed: int = 0
    unparsed_samples: list[str] = field(default_factory=list)
    bytes_read: int = 0
    # statements: fingerprint -> [count, total ms, max ms, example, slowest example]
    queries: dict[bytes, list[Any]] = field(default_factory=dict)
    durations: Counter[bytes] = field(default_factory=Counter)  # duration text ("12.345") -> count
    by_hour: Counter[bytes] = field(default_factory=Counter)  # "2024-03-01 10" -> statements
    by_db: Counter[bytes] = field(default_factory=Counter)
    by_user: Counter[bytes] = field(default_factory=Counter)
    prepare_ms: float = 0.0
    prepare_count: int = 0
    orphans: Counter[str] = field(default_factory=Counter)  # CHANGED: bare durations with no statement, by reason
    orphan_list: list[tuple[float, bytes, bytes]] = field(default_factory=list)  # CHANGED: (ms, time, pid) each
    errors: Counter[tuple[str, str, bytes]] = field(default_factory=Counter)  # (level, sqlstate, message)
    error_examples: dict[tuple[str, str, bytes], list[bytes]] = field(default_factory=dict)
    errors_by_hour: Counter[bytes] = field(default_factory=Counter)
    inferred_codes: int = 0
    lock_waits: int = 0
    lock_acquired: int = 0
    lock_wait_ms: list[float] = field(default_factory=list)
    lock_types: Counter[bytes] = field(default_factory=Counter)
    lock_queries: Counter[bytes] = field(default_factory=Counter)
    lock_failures: int = 0  # CHANGED after freezing, as in upkeeper.logs.pglog: SQLSTATE 55P03 failures
    lock_failure_queries: Counter[bytes] = field(default_factory=Counter)
    deadlocks: int = 0
    deadlock_details: list[str] = field(default_factory=list)
    temp_files: int = 0
    temp_bytes: int = 0
    temp_max: int = 0
    temp_queries: Counter[bytes] = field(default_factory=Counter)
    temp_query_bytes: Counter[bytes] = field(default_factory=Counter)
    checkpoints: int = 0
    restartpoints: int = 0  # CHANGED after freezing, as in upkeeper.logs.pglog: a standby's checkpoints
    checkpoint_reasons: Counter[bytes] = field(default_factory=Counter)
    checkpoint_buffers: int = 0
    checkpoint_write_s: float = 0.0
    checkpoint_sync_s: float = 0.0
    checkpoint_total_s: float = 0.0
    checkpoint_max_s: float = 0.0
    checkpoint_distance_kb: int = 0
    checkpoint_warnings: int = 0
    checkpoint_min_apart_s: int = 0
    autovacuum: int = 0
    autoanalyze: int = 0
    connections: int = 0
    translated: int = 0  # CHANGED after freezing, as in upkeeper.logs.pglog: durations in another language
    translated_lines: int = 0  # CHANGED: lines with a severity in another language
    first: bytes | None = None
    last: bytes | None = None


class PgAccumulator:
    def __init__(self, opts: PgScanOptions) -> None:
        self.opts = opts
        pre = compile_prefix(opts.log_line_prefix)
        # one regex for every entry: duration entries fill ms/kind/q, all others level/msg
        self.entry_rx = re.compile(
            rb"(?m)^" + pre + rb"(?:LOG:  (?:\d{5}: )?duration: (?P<ms>\d+(?:\.\d+)?) ms  "
            rb"(?P<kind>statement|execute|parse|bind)(?: [^:\n]*)?: (?P<q>[^\n]*(?:\n\t[^\n]*)*)"
            rb"|(?P<level>" + LEVELS + rb"):  (?P<msg>[^\n]*(?:\n\t[^\n]*)*))")
        gi = self.entry_rx.groupindex
        self.g_ts = gi.get("ts")
        self.g_db = gi.get("db")
        self.g_user = gi.get("user")
        self.g_sqlstate = gi.get("sqlstate")
        self.g_pid = gi["pid"]
        self.g_ms, self.g_kind, self.g_q = gi["ms"], gi["kind"], gi["q"]
        self.g_level, self.g_msg = gi["level"], gi["msg"]
        self.p = PgPartial()
        self.translated_rx = re.compile(rb"(?m)^" + pre + TRANSLATED_LEVEL_RX)  # CHANGED
        self.last_statement: dict[bytes, bytes] = {}  # pid -> last "statement:" text (log_statement)
        # CHANGED after freezing, as in upkeeper.logs.pglog (a semantic fix): pid -> its bare durations with no
        # statement (the last 2: a Parse and a Bind, would an "execute" follow); the others, and these when the
        # backend's next entry is a "statement:", are counted unpaired under a placeholder, never dropped
        self.held: dict[bytes, list[tuple[bytes, bytes | None, bytes | None, bytes | None]]] = {}
        self.pending: dict[bytes, tuple[str, Any]] = {}  # pid -> entry waiting for its STATEMENT/DETAIL
        self.waiting: dict[bytes, bytes] = {}  # CHANGED (a semantic fix): pid -> the lock it waits for

    # -- input -------------------------------------------------------------------------------

    def feed(self, buf: bytes, source: str = "", offset: int = 0) -> None:
        if not buf:
            return
        p = self.p
        p.bytes_read += len(buf)
        nlines = buf.count(b"\n") + (0 if buf.endswith(b"\n") else 1)
        cont = buf.count(b"\n\t") + (1 if buf.startswith(b"\t") else 0)
        p.lines += nlines
        rows = self.entry_rx.findall(buf)
        gms = self.g_ms - 1
        dur = [r for r in rows if r[gms]]
        ndur = len(dur)
        nother = len(rows) - ndur
        if dur:
            self._durations(dur)
        if nother:
            for r in (r for r in rows if not r[gms]) if ndur else rows:
                try:
                    self._other(r)
                except (ValueError, IndexError):  # a malformed number in a message: count it, never crash
                    p.unparsed += 1
        p.entries += ndur + nother
        unparsed = nlines - cont - ndur - nother
        if unparsed > 0:
            p.unparsed += unparsed
            if 2 * unparsed > nlines - cont:  # CHANGED
                p.translated_lines += sum(1 for _ in self.translated_rx.finditer(buf))  # CHANGED
            if len(p.unparsed_samples) < self.opts.samples:
                self._sample_unparsed(buf, source)

    def _sample_unparsed(self, buf: bytes, source: str) -> None:
        entry = re.compile(rb"^" + compile_prefix(self.opts.log_line_prefix) + rb"(?:" + LEVELS + rb"):  ")
        for ln in buf.split(b"\n"):
            if ln and not ln.startswith(b"\t") and not entry.match(ln):
                self.p.unparsed_samples.append(f"{source}: {ln[:300].decode('utf-8', 'replace')}")
                if len(self.p.unparsed_samples) >= self.opts.samples:
                    return

    def _durations(self, rows: list[tuple[bytes, ...]]) -> None:
        p = self.p
        gms, gkind, gq = self.g_ms - 1, self.g_kind - 1, self.g_q - 1
        kinds = set(map(lambda r: r[gkind], rows))
        if kinds - {b"statement", b"execute"}:
            prep = [r for r in rows if r[gkind] in (b"parse", b"bind")]
            p.prepare_count += len(prep)
            p.prepare_ms += sum(float(r[gms]) for r in prep)
            rows = [r for r in rows if r[gkind] in (b"statement", b"execute")]
            if not rows:
                return
        ms_txt = [r[gms] for r in rows]
        p.durations.update(ms_txt)
        qs = [r[gq] for r in rows]
        if any(b"\n\t" in q for q in qs):
            qs = [q.replace(b"\n\t", b"\n") for q in qs]
        fps = fingerprints(qs)
        queries = p.queries
        for fp, ms_b, q in zip(fps, ms_txt, qs, strict=True):
            ms = float(ms_b)
            st = queries.get(fp)
            if st is None:
                queries[fp] = [1, ms, ms, q[:2000], q[:2000]]
            else:
                st[0] += 1
                st[1] += ms
                if ms > st[2]:
                    st[2] = ms
                    st[4] = q[:2000]
        if self.g_ts is not None:
            gts = self.g_ts - 1
            hours = [r[gts][:13] for r in rows]
            p.by_hour.update(hours)
            if p.first is None or rows[0][gts] < p.first:
                p.first = rows[0][gts]
            if p.last is None or rows[-1][gts] > p.last:
                p.last = rows[-1][gts]
        if self.g_db is not None:
            p.by_db.update(r[self.g_db - 1] for r in rows)
        if self.g_user is not None:
            p.by_user.update(r[self.g_user - 1] for r in rows)

    def _other(self, r: tuple[bytes, ...]) -> None:
        p = self.p
        level = r[self.g_level - 1].decode()
        msg = r[self.g_msg - 1]
        pid = r[self.g_pid - 1]
        ts = r[self.g_ts - 1] if self.g_ts is not None else None
        if level in ("DETAIL", "HINT", "STATEMENT", "CONTEXT", "QUERY", "LOCATION"):
            pend = self.pending.get(pid)
            if pend is not None and level in ("STATEMENT", "DETAIL"):
                self._attach(pend, level, msg.replace(b"\n\t", b"\n"))
            return
        if ts is not None:
            if p.first is None or ts < p.first:
                p.first = ts
            if p.last is None or ts > p.last:
                p.last = ts
        self.pending.pop(pid, None)
        # CHANGED after freezing, as in upkeeper.logs.pglog (a semantic fix): log_error_verbosity = verbose
        # writes the SQLSTATE before LOG and WARNING messages too; it is read and skipped for every level
        code: bytes | str | None = r[self.g_sqlstate - 1] if self.g_sqlstate is not None else None
        vm = _VERBOSE_CODE.match(msg)
        if vm:
            code = vm.group(1)
            msg = msg[vm.end():]
        if level == "LOG":
            self._log(pid, msg, ts, r)  # CHANGED: the row, for the paired statement's database and user
        elif level in ("ERROR", "FATAL", "PANIC"):
            # CHANGED after freezing, as in upkeeper.logs.pglog (a semantic fix, not an optimization): a failed
            # statement logs no duration, so the backend's remembered statement is forgotten at its error
            self.last_statement.pop(pid, None)
            # CHANGED (a semantic fix): the bare durations held right before it (a failed statement's Parse/Bind, or
            # statements log_statement did not log: nothing tells which) are counted unpaired, never dropped
            for d in self.held.pop(pid, []):
                self._orphan(pid, d, "before_error")
            self.waiting.pop(pid, None)  # CHANGED: a backend that failed waits no longer
            if not code:
                code = infer_sqlstate(msg)
                if code:
                    p.inferred_codes += 1
            key = (level, (code.decode() if isinstance(code, bytes) else code) or "-----", normalize_message(msg))
            p.errors[key] += 1
            if ts is not None:
                p.errors_by_hour[ts[:13]] += 1
            if msg.startswith(b"deadlock detected"):
                p.deadlocks += 1
                self.pending[pid] = ("deadlock", key)
            elif key[1] == "55P03":  # CHANGED: a statement that failed for a lock is a lock problem too
                p.lock_failures += 1
                self.pending[pid] = ("lock_failure", key)
            else:
                self.pending[pid] = ("error", key)
        elif level == "WARNING":
            if not code:  # CHANGED: a warning's code told by its message too
                code = infer_sqlstate(msg)
                if code:
                    p.inferred_codes += 1
            key = ("WARNING", (code.decode() if isinstance(code, bytes) else code) or "01000",  # CHANGED: its code
                   normalize_message(msg))
            p.errors[key] += 1
            self.pending[pid] = ("error", key)

    def _attach(self, pend: tuple[str, Any], level: str, text: bytes) -> None:
        p = self.p
        kind, key = pend
        if kind in ("error", "deadlock", "lock_failure") and level == "STATEMENT":
            ex = p.error_examples.setdefault(key, [])
            if len(ex) < 2 and text[:1000] not in ex:
                ex.append(text[:1000])
            if kind == "lock_failure":  # CHANGED
                p.lock_failure_queries[fingerprints([text])[0]] += 1
        elif kind == "deadlock" and level == "DETAIL":
            if len(p.deadlock_details) < self.opts.samples:
                p.deadlock_details.append(text[:2000].decode("utf-8", "replace"))
        elif kind == "lock" and level == "STATEMENT":
            p.lock_queries[fingerprints([text])[0]] += 1
        elif kind == "temp" and level == "STATEMENT":
            fp = fingerprints([text])[0]
            p.temp_queries[fp] += 1
            p.temp_query_bytes[fp] += int(key)

    def _log(self, pid: bytes, msg: bytes, ts: bytes | None, r: tuple[bytes, ...]) -> None:
        p = self.p
        if msg.startswith(b"duration: "):
            bm = _BARE_DURATION.match(msg)
            if bm is None:  # CHANGED: auto_explain's "duration: X ms  plan:" leaves the statement waiting
                return
            q = self.last_statement.pop(pid, None)
            if q is not None:  # log_duration + log_statement: pair them
                self._durations_bare(bm.group(1), q, ts)
                # CHANGED after freezing, as in upkeeper.logs.pglog (a semantic fix): the paired statement
                # counts for its session's database and user, as a "duration: … statement:" one does
                if self.g_db is not None:
                    p.by_db[r[self.g_db - 1]] += 1
                if self.g_user is not None:
                    p.by_user[r[self.g_user - 1]] += 1
            else:  # CHANGED: see self.held
                held = self.held.setdefault(pid, [])
                held.append((bm.group(1), ts, r[self.g_db - 1] if self.g_db is not None else None,
                             r[self.g_user - 1] if self.g_user is not None else None))
                while len(held) > 2:
                    self._orphan(pid, held.pop(0))
            return
        if msg.startswith(b"statement: "):
            for d in self.held.pop(pid, []):  # CHANGED: see self.held
                self._orphan(pid, d)
            self.last_statement[pid] = msg[11:].replace(b"\n\t", b"\n")
            return
        if msg.startswith(b"restartpoint "):  # CHANGED: a standby's checkpoint, counted as one
            msg = msg[len(b"restart"):]
            if msg.startswith(b"point complete: "):
                p.restartpoints += 1
            msg = b"check" + msg
        if msg.startswith(b"checkpoint "):
            if msg.startswith(b"checkpoint starting: "):
                p.checkpoint_reasons[msg[21:].strip()] += 1
            elif msg.startswith(b"checkpoint complete: "):
                cm = _CHECKPOINT_DONE.match(msg)
                p.checkpoints += 1
                if cm:
                    p.checkpoint_buffers += int(cm.group(1))
                    p.checkpoint_write_s += float(cm.group(5))
                    p.checkpoint_sync_s += float(cm.group(6))
                    total = float(cm.group(7))
                    p.checkpoint_total_s += total
                    p.checkpoint_max_s = max(p.checkpoint_max_s, total)
                    if cm.group(8):
                        p.checkpoint_distance_kb += int(cm.group(8))
            return
        if msg.startswith(b"checkpoints are occurring too frequently"):
            p.checkpoint_warnings += 1
            fm = _TOO_FREQUENT.match(msg)
            if fm:
                s = int(fm.group(1))
                p.checkpoint_min_apart_s = s if not p.checkpoint_min_apart_s else min(p.checkpoint_min_apart_s, s)
            return
        if msg.startswith(b"process ") and b" after " in msg:
            lm = _LOCK_WAIT.match(msg)
            if lm:
                # CHANGED after freezing, as in upkeeper.logs.pglog (a semantic fix): "still waiting" logged
                # again for the lock the backend already waits for is the same wait
                lock = lm.group(3) + b" on " + lm.group(4)
                if lm.group(2) == b"still waiting for":
                    if self.waiting.get(pid) == lock:
                        return
                    self.waiting[pid] = lock
                    p.lock_waits += 1
                    p.lock_types[lm.group(3) + b" on " + lm.group(4).split(b" ")[0]] += 1
                    self.pending[pid] = ("lock", None)
                else:
                    self.waiting.pop(pid, None)
                    if lm.group(2) == b"acquired":
                        p.lock_acquired += 1
                        p.lock_wait_ms.append(float(lm.group(5)))
            return
        if msg.startswith(b"temporary file: "):
            tm = _TEMP_FILE.match(msg)
            if tm:
                size = int(tm.group(2))
                p.temp_files += 1
                p.temp_bytes += size
                p.temp_max = max(p.temp_max, size)
                self.pending[pid] = ("temp", size)
            return
        if _AUTOVACUUM.match(msg):  # CHANGED: aggressive and wraparound runs too
            p.autovacuum += 1
        elif msg.startswith(b"automatic analyze"):
            p.autoanalyze += 1
        elif msg.startswith(b"connection authorized"):
            p.connections += 1
        elif _TRANSLATED_DURATION.match(msg):  # CHANGED: durations in another language than English, counted
            p.translated += 1

    def _orphan(self, pid: bytes, d: tuple[bytes, bytes | None, bytes | None, bytes | None],
                why: str = "not_logged") -> None:
        """CHANGED: a bare duration whose statement was not logged, counted under a placeholder."""
        p = self.p
        ms_b, ts, db, user = d
        self._durations_bare(ms_b, b"(statement not in the log window)", ts, fp=b"(statement not in the log window)")
        if db is not None:
            p.by_db[db] += 1
        if user is not None:
            p.by_user[user] += 1
        p.orphans[why] += 1
        p.orphan_list.append((float(ms_b), ts or b"", pid))

    def _durations_bare(self, ms_b: bytes, q: bytes, ts: bytes | None, fp: bytes | None = None) -> None:
        p = self.p
        p.durations[ms_b] += 1
        fp = fp if fp is not None else fingerprints([q])[0]
        ms = float(ms_b)
        st = p.queries.get(fp)
        if st is None:
            p.queries[fp] = [1, ms, ms, q[:2000], q[:2000]]
        else:
            st[0] += 1
            st[1] += ms
            if ms > st[2]:
                st[2], st[4] = ms, q[:2000]
        if ts is not None:
            p.by_hour[ts[:13]] += 1

    def partial(self) -> PgPartial:
        # CHANGED (a semantic fix): the bare durations still held at the end of the log (no "execute" line came)
        # are counted unpaired, never dropped
        for pid, held in self.held.items():
            for d in held:
                self._orphan(pid, d)
        self.held = {}
        return self.p


def make_accumulator(opts: PgScanOptions) -> PgAccumulator:
    return PgAccumulator(opts)


def merge(parts: list[PgPartial]) -> PgPartial:
    if not parts:
        return PgPartial()
    out = parts[0]
    for p in parts[1:]:
        for name in ("lines", "entries", "unparsed", "bytes_read", "prepare_ms", "prepare_count", "inferred_codes",
                     "lock_waits", "lock_acquired", "lock_failures", "restartpoints", "deadlocks", "temp_files", "temp_bytes", "checkpoints",
                     "checkpoint_buffers", "checkpoint_write_s", "checkpoint_sync_s", "checkpoint_total_s",
                     "checkpoint_distance_kb", "checkpoint_warnings", "autovacuum", "autoanalyze", "connections", "translated",
                     "translated_lines"):  # CHANGED
            setattr(out, name, getattr(out, name) + getattr(p, name))
        for name in ("durations", "by_hour", "by_db", "by_user", "errors", "errors_by_hour", "lock_types",
                     "lock_queries", "lock_failure_queries", "temp_queries", "temp_query_bytes", "checkpoint_reasons"):
            getattr(out, name).update(getattr(p, name))
        for fp, st in p.queries.items():
            mine = out.queries.get(fp)
            if mine is None:
                out.queries[fp] = st
            else:
                mine[0] += st[0]
                mine[1] += st[1]
                if st[2] > mine[2]:
                    mine[2], mine[4] = st[2], st[4]
        for k, ex in p.error_examples.items():
            out.error_examples.setdefault(k, []).extend(ex[: max(0, 2 - len(out.error_examples.get(k, [])))])
        out.lock_wait_ms += p.lock_wait_ms
        out.orphans.update(p.orphans)  # CHANGED
        out.orphan_list += p.orphan_list  # CHANGED
        out.unparsed_samples += p.unparsed_samples[: max(0, 10 - len(out.unparsed_samples))]
        out.deadlock_details += p.deadlock_details[: max(0, 5 - len(out.deadlock_details))]
        out.temp_max = max(out.temp_max, p.temp_max)
        out.checkpoint_max_s = max(out.checkpoint_max_s, p.checkpoint_max_s)
        if p.checkpoint_min_apart_s:
            out.checkpoint_min_apart_s = (p.checkpoint_min_apart_s if not out.checkpoint_min_apart_s
                                          else min(out.checkpoint_min_apart_s, p.checkpoint_min_apart_s))
        for a, b in ((p.first, "first"), (p.last, "last")):
            cur = getattr(out, b)
            if a is not None and (cur is None or (a < cur if b == "first" else a > cur)):
                setattr(out, b, a)
    return out


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


def _s(b: bytes | None) -> str:
    return "" if b is None else b.decode("utf-8", errors="replace")


def summarize(p: PgPartial, *, top_n: int = 20) -> dict[str, Any]:
    from upkeeper.logs.access import percentiles, top

    hist: Counter[float] = Counter()
    for txt, c in p.durations.items():
        hist[float(txt)] += c
    total_n = sum(st[0] for st in p.queries.values())
    total_ms = sum(st[1] for st in p.queries.values())
    kinds: Counter[str] = Counter()
    for fp, st in p.queries.items():
        kinds[statement_kind(fp)] += st[0]

    def qrow(fp: bytes, st: list[Any]) -> dict[str, Any]:
        return {"fingerprint": _s(fp), "count": st[0], "total_ms": round(st[1], 3), "mean_ms": round(st[1] / st[0], 3),
                "max_ms": st[2], "example": _s(st[3]), "slowest": _s(st[4]),
                "share_pct": round(100.0 * st[1] / total_ms, 2) if total_ms else 0.0}

    by_total = sorted(p.queries.items(), key=lambda kv: (-kv[1][1], kv[0]))[:top_n]
    by_count = sorted(p.queries.items(), key=lambda kv: (-kv[1][0], kv[0]))[:top_n]
    by_max = sorted(p.queries.items(), key=lambda kv: (-kv[1][2], kv[0]))[:top_n]
    errors: list[dict[str, Any]] = []
    by_code: Counter[str] = Counter()
    for (level, code, msg), c in sorted(p.errors.items(), key=lambda kv: (-kv[1], kv[0])):
        by_code[code] += c
        if len(errors) < top_n * 2:
            errors.append({"level": level, "sqlstate": code, "message": _s(msg), "count": c,
                           "statements": [_s(x) for x in p.error_examples.get((level, code, msg), [])]})
    waits = sorted(p.lock_wait_ms)
    return {
        "lines": p.lines, "entries": p.entries, "unparsed": p.unparsed,
        "unparsed_pct": round(100.0 * p.unparsed / p.lines, 4) if p.lines else 0.0,
        "unparsed_samples": p.unparsed_samples, "bytes_read": p.bytes_read,
        "translated_durations": p.translated, "translated_lines": p.translated_lines,  # CHANGED
        "first": _s(p.first) or None, "last": _s(p.last) or None,
        "statements": {"count": total_n, "total_ms": round(total_ms, 3), "fingerprints": len(p.queries),
                       "percentiles": percentiles(hist.items(), (50, 90, 95, 99)),
                       "by_kind": dict(kinds.most_common()), "prepare_bind": {"count": p.prepare_count,
                                                                              "total_ms": round(p.prepare_ms, 3)},
                       # CHANGED: bare durations with no statement
                       "unpaired": {"count": sum(p.orphans.values()), "forgotten": 0,
                                    "not_logged": p.orphans["not_logged"],
                                    "before_error": p.orphans["before_error"],  # CHANGED
                                    "counted_as": "(statement not in the log window)",
                                    "slowest": [{"ms": ms, "pid": _s(pid), "time": _s(ts) or None} for ms, ts, pid
                                                in sorted(p.orphan_list, key=lambda o: (-o[0], o[1], o[2]))[:5]]}},
        "by_hour": {_s(k) + ":00": v for k, v in sorted(p.by_hour.items())},
        "by_database": {_s(k) or "(none)": v for k, v in top(p.by_db, top_n)},
        "by_user": {_s(k) or "(none)": v for k, v in top(p.by_user, top_n)},
        "slowest_total": [qrow(fp, st) for fp, st in by_total],
        "most_frequent": [qrow(fp, st) for fp, st in by_count],
        "slowest_single": [qrow(fp, st) for fp, st in by_max],
        "errors": {"total": sum(p.errors.values()), "by_sqlstate": dict(by_code.most_common()),
                   "inferred_sqlstates": p.inferred_codes, "classes": errors,
                   "by_hour": {_s(k) + ":00": v for k, v in sorted(p.errors_by_hour.items())}},
        "locks": {"waits": p.lock_waits, "acquired_after_wait": p.lock_acquired,
                  "total_wait_ms": round(sum(waits), 3), "max_wait_ms": waits[-1] if waits else 0.0,
                  "types": {_s(k): v for k, v in top(p.lock_types, top_n)},
                  "queries": [{"fingerprint": _s(k), "count": v} for k, v in top(p.lock_queries, top_n)],
                  "failures": p.lock_failures,  # CHANGED
                  "failed_queries": [{"fingerprint": _s(k), "count": v}
                                     for k, v in top(p.lock_failure_queries, top_n)]},
        "deadlocks": {"count": p.deadlocks, "details": p.deadlock_details},
        "temp_files": {"count": p.temp_files, "total_bytes": p.temp_bytes, "max_bytes": p.temp_max,
                       "queries": [{"fingerprint": _s(k), "count": v, "bytes": p.temp_query_bytes[k]}
                                   for k, v in top(p.temp_queries, top_n)]},
        "checkpoints": {"count": p.checkpoints, "restartpoints": p.restartpoints, "reasons": {_s(k): v for k, v in p.checkpoint_reasons.items()},
                        "buffers": p.checkpoint_buffers, "write_s": round(p.checkpoint_write_s, 3),
                        "sync_s": round(p.checkpoint_sync_s, 3), "total_s": round(p.checkpoint_total_s, 3),
                        "max_s": p.checkpoint_max_s, "distance_kb": p.checkpoint_distance_kb,
                        "too_frequent_warnings": p.checkpoint_warnings,
                        "min_seconds_apart": p.checkpoint_min_apart_s or None},
        "autovacuum": {"vacuums": p.autovacuum, "analyzes": p.autoanalyze},
        "connections": p.connections,
    }
