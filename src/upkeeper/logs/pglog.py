"""PostgreSQL server logs (stderr format): pgBadger's core, fast.

Understood entries (``log_line_prefix`` configurable, PostgreSQL's default ``%m [%p] ``):

* ``duration: X ms  statement|execute <name>: …`` (``log_min_duration_statement``):
  statements grouped by normalized fingerprint with count, total, mean, max, and
  every duration in a histogram for exact percentiles.  Bare ``duration:`` lines
  (``log_duration``) are paired with the session's last ``statement:`` or
  ``execute <name>:`` line (``log_statement``); with the extended protocol, the bare
  durations logged just before an ``execute`` line are its Parse and Bind (prepare/bind time).  With ``%i`` in
  the prefix (the command tag: ``PARSE``, ``BIND``, then the statement's) each bare duration says what it is,
  whatever ``log_statement`` logs.  A bare duration whose statement is not known is counted unpaired (with
  why: :data:`ORPHAN_REASONS`), never dropped.  A ``statement:`` or ``execute`` line no duration comes for
  (``log_statement`` alone, a statement faster than ``log_min_duration_statement``, one that failed) is counted
  once, untimed (:attr:`PgPartial.untimed`: per fingerprint, no time), when its backend logs its next statement,
  an error or its end — a statement paired with its duration is never untimed as well.
  The pairing does not depend on where the log is cut: each piece scanned on its own (a
  :class:`Segment`) keeps the bare durations of backends it saw no statement of yet and the
  statements still waiting at its end, and :func:`resolve` pairs them in log order — with
  the statements the last run left waiting too (see :func:`open_to_json`).  Likewise, a lock
  wait logged again ("still waiting" each time the backend wakes) counts once across pieces.
* ``ERROR``/``FATAL``/``PANIC`` by SQLSTATE (from ``%e``, from
  ``log_error_verbosity = verbose``, or inferred from the message text) and by
  normalized message, with the ``STATEMENT`` that caused it.
* lock waits (``log_lock_waits``), statements that failed for a lock (SQLSTATE 55P03:
  ``lock_timeout``, ``NOWAIT``), deadlocks, temporary files (``log_temp_files``),
  checkpoints and a standby's restartpoints (``log_checkpoints``: reasons, buffers,
  write/sync time, "occurring too frequently"), autovacuum/autoanalyze runs (aggressive and wraparound
  ones too), connections.  auto_explain plans ("duration: … plan:") are no statements and break no pairing.

Duration entries — the bulk of a busy log — are extracted for a whole buffer with
one ``findall``; their statements are fingerprinted together (see
:mod:`upkeeper.logs.sqlfp`).  Everything else goes through one ``finditer``.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import compress
from operator import itemgetter
from typing import Any

from upkeeper.errors import UpkeeperError
from upkeeper.logs.pgformat import SCANNERS
from upkeeper.logs.sqlfp import fingerprints, statement_kind
from upkeeper.redact import redact

DEFAULT_PREFIX = "%m [%p] "  # PostgreSQL 13+ default
# for parallel.scan: below this a helper process does not pay.  Measured on 2 CPUs, idle, once the
# helper's imports had become light (~0.07 s to start): a 17 MB log took 0.46-0.57 s alone and
# 0.34-0.44 s with a helper; an 8 MB log 0.23-0.28 s either way.  (It was 48 MB when a helper cost
# ~0.4 s to start and report back.)
MIN_PARALLEL = SCANNERS["stderr"][1]
LEVELS = rb"DEBUG[1-5]|INFO|NOTICE|WARNING|ERROR|LOG|FATAL|PANIC|DETAIL|HINT|QUERY|CONTEXT|STATEMENT|LOCATION"

_ESCAPES: dict[str, bytes] = {
    "a": rb"(?:[^\n]*?)",
    "u": rb"(?P<user>[^\n]*?)",
    "d": rb"(?P<db>[^\n]*?)",
    "r": rb"(?:[^\n]*?)",
    "h": rb"(?:[^\n]*?)",
    "L": rb"(?:[^\n]*?)",  # PostgreSQL 16+: the server address the client connected to
    "b": rb"(?:[^\n]*?)",
    "p": rb"(?P<pid>\d+)",
    "P": rb"(?:\d*)",
    "t": rb"(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?: [^\s\]\[]+)?",
    "m": rb"(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.\d+(?: [^\s\]\[]+)?",
    "n": rb"(?P<epoch>\d+(?:\.\d+)?)",
    # the command tag (the ps display): PARSE and BIND while the extended protocol's Parse and Bind run, then the
    # statement's tag (SELECT …): what tells a bare duration's phase (empty with update_process_title = off)
    "i": rb"(?P<tag>[^\n]*?)",
    "e": rb"(?P<sqlstate>[0-9A-Z]{5})",
    "c": rb"(?:[0-9a-f]+\.[0-9a-f]+)",
    "l": rb"(?:\d+)",
    "s": rb"(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?: [^\s\]\[]+)?)",
    "v": rb"(?:[\d/]*)",
    "x": rb"(?:\d+)",
    "Q": rb"(?:-?\d+)",
}


#: %c (the session id: start time and pid, in hex) as the backend's key, in a prefix without %p
_SESSION_PID = rb"(?P<pid>[0-9a-f]+\.[0-9a-f]+)"

#: the syslog line's time that :mod:`upkeeper.logs.pgsyslog` writes before a message whose log_line_prefix has
#: none (its ``effective_prefix``): %t without the zone PostgreSQL's %t writes — read as %t, that zone took a first
#: word after it, the pid of '%q%p ' (%q: what follows may be missing).  An escape of upkeeper's own, understood at
#: the start of a prefix only; no log_line_prefix holds it (PostgreSQL's cannot hold a NUL)
SYSLOG_TIME = "%\0"
_SYSLOG_TS = rb"(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)"


# a padded escape (PostgreSQL's process_log_prefix_padding): "%-10u" pads the user name with spaces on the
# right to 10 characters, "%5p" the pid on the left; "%-u" is no padding at all
_PADDING = re.compile(r"-?\d*")


class PrefixError(UpkeeperError):
    """The log_line_prefix cannot be used."""


def compile_prefix(prefix: str, *, shown: str | None = None) -> bytes:
    """A regex (bytes) for ``log_line_prefix``; named groups ts, pid, user, db, sqlstate, epoch, tag.  Its errors
    name ``shown`` (default: ``prefix``), the log_line_prefix as the user wrote it.

    Padded escapes are understood as PostgreSQL writes them (``%-10u``, ``%5p``: the value, and spaces
    up to the width after it for a negative width, before it for a positive one; a longer value is not
    cut); as in PostgreSQL, a prefix that ends in a width ends there."""
    written = repr(prefix.replace(SYSLOG_TIME, "%t") if shown is None else shown)
    out: list[bytes] = []
    seen: set[str] = set()
    optional_from: int | None = None
    # without %p, the session id %c ("65e1a0b1.1f2c": the backend's start time and pid, in hex) tells backends
    # apart as well (Azure's default prefix is '%t-%c-'): it is the backend's key then
    session_key = re.search(r"%-?\d*p", prefix) is None
    i = 0
    while i < len(prefix):
        c = prefix[i]
        if c == "%" and i + 1 < len(prefix):
            pm = _PADDING.match(prefix, i + 1)  # always matches (maybe the empty string)
            end = pm.end() if pm else i + 1
            if end == len(prefix):
                break  # "…%-10": PostgreSQL stops writing the prefix here
            digits = prefix[i + 1:end].lstrip("-")
            width = int(digits) * (-1 if prefix[i + 1] == "-" else 1) if digits else 0
            e = prefix[end]
            i = end + 1
            if e == "%":
                out.append(b"%")
            elif e == "\0" and i == 2:
                out.append(_SYSLOG_TS)
                seen.add("ts")
            elif e == "q":
                optional_from = len(out)  # non-session processes stop printing here
            elif e in _ESCAPES:
                pat = _SESSION_PID if e == "c" and session_key else _ESCAPES[e]
                name = re.search(rb"\?P<(\w+)>", pat)
                if name and name.group(1).decode() in seen:
                    pat = re.sub(rb"\?P<\w+>", b"?:", pat)  # a field printed twice: capture it once
                elif name:
                    seen.add(name.group(1).decode())
                # padding spaces: before a right-aligned value, after a left-aligned one (values never start
                # or end with a space, so the field's own pattern stays unchanged)
                out.append(b" *" + pat if width > 0 else pat + b" *" if width < 0 else pat)
            else:
                raise PrefixError(f"log_line_prefix {written}: unknown escape %{e}",
                                  "Try: copy log_line_prefix from postgresql.conf (SHOW log_line_prefix)")
            continue
        out.append(re.escape(c.encode()))
        i += 1
    if optional_from is not None:
        out = out[:optional_from] + [b"(?:" + b"".join(out[optional_from:]) + b")?"]
    if "pid" not in seen:
        raise PrefixError(f"log_line_prefix {written} has no %p (process id) nor %c (session id)",
                          "Try: add [%p] to log_line_prefix in postgresql.conf; without it entries cannot be "
                          "paired with their statements")
    if "ts" not in seen and "epoch" not in seen:
        raise PrefixError(f"log_line_prefix {written} has no time (%m, %t or %n)",
                          "Try: log_line_prefix = '%m [%p] ' (PostgreSQL's default)")
    return b"".join(out)


#: the lines that end a message rather than start one (PostgreSQL writes them with it, in one write)
SECONDARY = rb"(?:DETAIL|HINT|CONTEXT|QUERY|STATEMENT|LOCATION):  "


def message_start(prefix: str) -> re.Pattern[bytes]:
    """Matches at a line that may start a message: not a continuation line (a tab), nor a DETAIL, HINT,
    CONTEXT, QUERY, STATEMENT or LOCATION line of the message before it (for
    :func:`upkeeper.logs.parallel.split_units`: a piece cut there keeps each error with its STATEMENT, each
    temporary file and lock wait with its query).  A line the prefix does not match may start one too."""
    return re.compile(rb"(?!\t)(?!" + compile_prefix(prefix) + SECONDARY + rb")")


# ---------------------------------------------------------------------------------------------
# SQLSTATE for messages logged without one (log_error_verbosity = default and no %e)
# ---------------------------------------------------------------------------------------------

_SQLSTATE_PATTERNS: tuple[tuple[str, str], ...] = (
    ("40P01", r"^deadlock detected"),
    ("40001", r"^could not serialize access"),
    ("57014", r"^canceling statement due to (?:statement timeout|user request)|^canceling autovacuum task"),
    ("55P03", r"^canceling statement due to lock timeout|^could not obtain lock"),
    ("25P03", r"^terminating connection due to idle-in-transaction timeout"),
    # (a parallel worker's too, when its leader's statement failed: 'terminating background worker "parallel
    # worker" due to administrator command'; an autovacuum worker's, a walsender's …)
    ("57P01", r"^terminating .* due to administrator command"),
    ("57P02", r"^terminating connection because of crash of another server process"),
    ("57P05", r"^terminating connection due to idle-session timeout"),
    ("40001", r"^(?:canceling statement|terminating connection) due to conflict with recovery"),
    ("57P03", r"^the database system is (?:starting up|shutting down|in recovery mode|not (?:yet )?accepting "
              r"connections)"),
    ("53300", r"^(?:sorry, )?too many clients|^remaining connection slots are reserved"),
    ("53100", r"^could not (?:extend|write to) file|no space left on device"),
    ("53200", r"^out of memory"),
    ("28P01", r"^password authentication failed"),
    ("28000", r"^(?:role \".*\" does not exist|no pg_hba\.conf entry|Peer authentication failed)"),
    ("3D000", r"^database \".*\" does not exist"),
    ("42P01", r"^relation \".*\" does not exist|^missing FROM-clause entry"),
    ("26000", r"^prepared statement \".*\" does not exist"),
    ("42P05", r"^prepared statement \".*\" already exists"),
    ("34000", r"^cursor \".*\" does not exist"),
    ("42P10", r"^there is no unique or exclusion constraint matching the ON CONFLICT"),
    ("42701", r"^column \".*\" specified more than once"),
    ("42P02", r"^there is no parameter \$"),
    ("42846", r"^cannot cast type"),
    ("42P04", r"^database \".*\" already exists"),
    ("42P06", r"^schema \".*\" already exists"),
    ("2BP01", r"^cannot drop .* because other objects depend on it"),
    ("55006", r"is being accessed by other users"),
    ("25006", r"^cannot execute .* in a read-only transaction"),
    ("25P01", r"^there is no transaction in progress"),
    ("25001", r"^there is already a transaction in progress"),
    ("21000", r"^more than one row returned by a subquery"),
    ("P0002", r"^query returned no rows"),
    ("P0003", r"^query returned more than one row"),
    ("22021", r"^invalid byte sequence for encoding"),
    ("2201W", r"^LIMIT must not be negative"),
    ("2201X", r"^OFFSET must not be negative"),
    ("54000", r"^index row (?:size .* exceeds|requires)"),
    ("42703", r"^column \".*\" (?:of relation \".*\" )?does not exist"),
    ("42883", r"^(?:function|operator) (?:.* )?does not exist"),
    ("42601", r"^syntax error at|^unterminated quoted string|^zero-length delimited identifier"),
    ("42501", r"^permission denied|^must be owner of"),
    ("42P07", r"^relation \".*\" already exists"),
    ("42710", r"^(?:role|extension|constraint) \".*\" already exists"),
    ("42804", r"^column \".*\" is of type .* but expression is of type"),
    ("42702", r"^column reference \".*\" is ambiguous"),
    ("42803", r"must appear in the GROUP BY clause"),
    ("23505", r"^duplicate key value violates unique constraint|^could not create unique index"),
    ("23503", r"violates foreign key constraint"),
    ("23502", r"violates not-null constraint"),
    ("23514", r"violates check constraint"),
    ("23P01", r"violates exclusion constraint"),
    ("22007", r"^invalid input syntax for type (?:date|time|timestamp)"),
    ("22P02", r"^invalid input syntax for|^invalid input value for enum"),
    ("22001", r"^value too long for type"),
    ("22008", r"^date/time field value out of range|^(?:timestamp|date) out of range"),
    ("22003", r"out of range|^numeric field overflow"),
    ("22012", r"^division by zero"),
    ("22007", r"^invalid (?:value for|input syntax for type (?:date|time|timestamp))"),
    ("25P02", r"^current transaction is aborted"),
    ("25001", r"cannot be executed (?:from a function|inside a transaction block)"),
    ("0A000", r"^cannot .* (?:is not supported|not supported)"),
    ("08P01", r"^unexpected EOF|^invalid frontend message|^unsupported frontend protocol"),
    ("08006", r"^could not receive data from client|^connection to client lost"),
    ("XX000", r"^could not read block|^invalid page in block|^unexpected data beyond EOF"),
    # a parallel worker whose leader's statement failed as it started
    ("55000", r"^could not (?:attach to dynamic shared area|map dynamic shared memory segment)|^invalid magic number in "
              r"dynamic shared memory segment"),
)
_SQLSTATE_RX = [(code, re.compile(p.encode(), re.I)) for code, p in _SQLSTATE_PATTERNS]
_VERBOSE_CODE = re.compile(rb"^([0-9A-Z]{5}): ")
#: an error's CONTEXT when a PL/pgSQL RAISE or ASSERT raised it (its first line: the innermost frame)
_PLPGSQL_RAISE = re.compile(rb"PL/pgSQL function [^\n]*? line \d+ at (RAISE|ASSERT)(?:\n|$)")


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


#: a checkpoint's or, on a standby, a restartpoint's end (the same figures)
_CHECKPOINT_DONE = re.compile(
    rb"(?:checkpoint|restartpoint) complete: wrote (\d+) buffers .*?; (\d+) WAL file\(s\) added, (\d+) removed, (\d+) recycled; "
    rb"write=([\d.]+) s, sync=([\d.]+) s, total=([\d.]+) s(?:.*?distance=(\d+) kB)?")
_LOCK_WAIT = re.compile(
    rb"process (\d+) (still waiting for|acquired|detected deadlock while waiting for) (\w+) on (.+?) after ([\d.]+) ms")
_TEMP_FILE = re.compile(rb'temporary file: path "([^"]*)", size (\d+)')
_BARE_DURATION = re.compile(rb"duration: ([\d.]+) ms$")
_STATEMENT = re.compile(rb"statement: ")
# log_statement's line for an extended-protocol Execute: "execute <unnamed>: …", "execute S_1: …",
# "execute fetch from S_1/C_2: …" (a portal run again for more rows)
_EXECUTE = re.compile(rb"execute (?:fetch from )?[^:\n]*: ")
#: bare durations of a backend kept until its "execute …:" line tells they were its Parse and Bind
MAX_UNPAIRED = 2
#: an autovacuum run's report: PostgreSQL 14+ also writes "automatic aggressive vacuum …" (a freezing scan) and
#: "automatic [aggressive ]vacuum to prevent wraparound of table …" (as pgBadger reads them)
_AUTOVACUUM = re.compile(rb"automatic (?:aggressive )?vacuum (?:to prevent wraparound )?of table ")
#: a duration in another language than English (lc_messages: "durée : 0.036 ms, instruction : …", "Dauer: 0.036 ms
#: Anweisung: …"): nothing of such a log is recognized but its SQLSTATEs, so it is counted to say so
_TRANSLATED_DURATION = re.compile(
    rb"[^\s:\d][^:\n]{0,40}?: \d+(?:[.,]\d+)? (?:ms|"
    # its unit in the languages that translate it (PostgreSQL 15's catalogs: ru and uk, ja, zh_TW, ka)
    + "|".join(("\u043c\u0441", "\u30df\u30ea\u79d2", "\u6beb\u79d2", "\u10db\u10ec\u10db")).encode()
    + rb")(?:[ ,]|$)")
#: the severities (and DETAIL, STATEMENT … labels) PostgreSQL 15 writes in another language than English (its
#: catalogs: de es fr it ja ka ko ru sv uk zh_CN zh_TW) — where a translated LOG hides every entry of the log (ru,
#: ko, zh_CN …: "СООБЩЕНИЕ:  продолжительность: 0.036 мс, оператор: …"), a line that starts with the prefix and
#: one of them says the server logs in another language, not that log_line_prefix is wrong
TRANSLATED_LEVELS: tuple[str, ...] = (
    # de, es, fr, it, sv
    "HINWEIS", "WARNUNG", "FEHLER", "PANIK", "TIPP", "ANFRAGE", "ZUSAMMENHANG", "ANWEISUNG", "ORT",
    "DETALLE", "CONSULTA", "CONTEXTO", "SENTENCIA", "UBICACIÓN",
    "ATTENTION", "ERREUR", "DÉTAIL", "ASTUCE", "REQUÊTE", "CONTEXTE", "INSTRUCTION", "EMPLACEMENT",
    "NOTIFICA", "ATTENZIONE", "ERRORE", "FATALE", "PANICO", "DETTAGLI", "SUGGERIMENTO", "CONTESTO", "ISTRUZIONE",
    "POSIZIONE",
    "LOGG", "NOTIS", "VARNING", "FEL", "FATALT", "DETALJ", "TIPS", "FRÅGA", "KONTEXT", "SATS", "PLATS",
    # ru, uk
    "ОТЛАДКА", "СООБЩЕНИЕ", "ИНФОРМАЦИЯ", "ЗАМЕЧАНИЕ", "ПРЕДУПРЕЖДЕНИЕ", "ОШИБКА", "ВАЖНО", "ПАНИКА", "ПОДРОБНОСТИ",
    "ПОДСКАЗКА", "ЗАПРОС", "КОНТЕКСТ", "ОПЕРАТОР", "ПОЛОЖЕНИЕ",
    "НАЛАГОДЖЕННЯ", "ЗАПИСУВАННЯ", "ІНФОРМАЦІЯ", "ПОВІДОМЛЕННЯ", "ПОПЕРЕДЖЕННЯ", "ПОМИЛКА", "ФАТАЛЬНО", "ПАНІКА",
    "ВІДОМОСТІ", "УКАЗІВКА", "ЗАПИТ", "ІНСТРУКЦІЯ", "РОЗТАШУВАННЯ",
    # ja, ka, ko, zh_CN, zh_TW
    "詳細", "ヒント", "問い合わせ", "文脈", "文", "場所",
    "გამართვა", "ჟურნალი", "ინფორმაცია", "გაფრთხილება", "შეცდომა", "ფატალური", "პანიკა", "დეტალები", "მინიშნება",
    "მოთხოვნა", "კონტექსტი", "ოპერატორი", "მდებარეობა",
    "디버그", "로그", "정보", "알림", "경고", "오류", "치명적오류", "손상", "상세정보", "힌트", "쿼리", "내용", "명령 구문", "위치",
    "调试", "日志", "信息", "注意", "警告", "错误", "致命错误", "灾难性错误", "详情", "提示", "查询", "上下文", "语句", "位置",
    "除錯", "日誌", "資訊", "錯誤", "致命錯誤", "嚴重錯誤", "詳情", "查詢", "陳述式",
)
_TRANSLATED_LEVEL_SET = frozenset(TRANSLATED_LEVELS)
#: (as PostgreSQL writes them: "ERREUR:  ", "INSTRUCTION :  " in French)
TRANSLATED_LEVEL_RX = rb"(?:" + b"|".join(re.escape(w.encode()) for w in sorted(TRANSLATED_LEVELS, key=len,
                                                                                    reverse=True)) + rb") ?:  "
_TOO_FREQUENT = re.compile(rb"checkpoints are occurring too frequently \((\d+) seconds? apart\)")


# Where an entry is in the log: (source, offset of the buffer, index of the entry in the buffer).  Tuples
# compare in log order within a file, so examples and samples can be the earliest ones whatever the
# order in which pieces of the log were scanned and merged.
Pos = tuple[str, int, int]
#: when and by whom a statement was logged: (its hour "2024-03-01 10", (its database, its user)), each None when the
#: prefix (or the record) has none (a pair as :func:`_who_getter` makes it: no tuple built in Python per statement) — what an untimed statement counts under in the by-hour/database/user figures
Where = tuple[bytes | None, tuple[bytes | None, bytes | None]]
_NO_WHERE: Where = (None, (None, None))
#: a statement waiting for its bare duration at the end of a piece: (fingerprint, example, position, where)
OpenStatement = tuple[bytes, bytes, Pos, Where]
#: a statement waiting for its bare duration in a scan: (text or its first WAITING_TEXT bytes, position, the whole
#: text's fingerprint when cut, where)
Waiting = tuple[bytes, Pos, bytes | None, Where]
#: a forgotten statement counted untimed (taken back if its duration comes): its fingerprint and where
Forgotten = tuple[bytes, Where]
#: a backend's pairing state: its statement waiting for a duration, and bare durations with no statement
#: (its Parse and Bind when an "execute" line follows)
#: a bare duration: (ms text, time, database, user) — database and user None when the prefix has none
Dur = tuple[bytes, bytes | None, bytes | None, bytes | None]
PidState = tuple[OpenStatement | None, list[Dur]]
#: what a bare duration whose statement is not known is counted as (see :func:`_orphan`)
UNPAIRED_FP = b"(statement not in the log window)"
_NO_POS: Pos = ("", -1, -1)
#: where the durations whose statement is not known are counted (:func:`_orphan`)
_UNPAIRED: OpenStatement = (UNPAIRED_FP, UNPAIRED_FP, _NO_POS, _NO_WHERE)
#: why a bare duration was not paired: its statement was forgotten (more backends waited than are remembered:
#: MAX_WAITING in a scan, MAX_CARRIED_PIDS across runs), or none was logged before it (before the log window,
#: or log_statement does not log it), or it was one of the (at most MAX_UNPAIRED) logged right before an error
#: with no statement between them: the failed statement's Parse/Bind (extended protocol) or statements
#: log_statement does not log — nothing in the log tells which, unless the prefix has %i (see _log)
ORPHAN_REASONS = ("forgotten", "not_logged", "before_error")
#: the command tags (%i) of the extended protocol's Parse and Bind: their bare durations are parse/bind time
_PREPARE_TAGS = (b"PARSE", b"BIND")


@dataclass
class Segment:
    """A stretch of the log scanned in one go from ``start`` of ``src``: what its pairing depends on before it.

    ``heads``: per backend whose pairing state was unknown when it logged, until it logged a ``statement:``,
    an ``execute …:`` or an error (the ``closer``; None if it did not in this stretch), its bare durations
    (the first one and the last :data:`MAX_UNPAIRED`: all that can count).  ``tail``: the state of every
    backend whose state became known here (None: nothing waits), as the stretch ends."""

    src: str
    start: int
    heads: dict[bytes, tuple[list[Dur], str | None]] = field(default_factory=dict)
    tail: dict[bytes, PidState | None] = field(default_factory=dict)
    #: lock waits, likewise: per backend whose wait was unknown, its first "still waiting" (counted here, taken
    #: back by :func:`resolve` when the backend was waiting for that lock already): [lock, type, fingerprint of
    #: its STATEMENT or None]; and the lock each backend whose wait became known waits for at the end (or None)
    wait_heads: dict[bytes, list[Any]] = field(default_factory=dict)
    wait_tail: dict[bytes, bytes | None] = field(default_factory=dict)
    #: backends of ``tail`` whose waiting statement was forgotten in this stretch (see PgAccumulator._bound_state),
    #: with its fingerprint (it was counted untimed: taken back if its duration comes after all)
    gone: dict[bytes, Forgotten] = field(default_factory=dict)
    #: backends whose first entry here was a "statement:" (and no bare duration before it)
    stmt_first: set[bytes] = field(default_factory=set)


@dataclass
class OpenState:
    """What waits at a point of the log: statements for their bare duration (and bare durations for their
    "execute" line) per backend, and the lock each backend waits for."""

    pairs: dict[bytes, PidState] = field(default_factory=dict)
    waits: dict[bytes, bytes] = field(default_factory=dict)
    #: backends whose waiting statement was forgotten (over the bound): their next bare duration is its (the
    #: statement's fingerprint when this run counted it untimed, None when a run before did)
    gone: dict[bytes, Forgotten | None] = field(default_factory=dict)


@dataclass
class PgPartial:
    lines: int = 0
    entries: int = 0
    unparsed: int = 0
    samples: int = 5  # at most this many unparsed lines and deadlock details are kept (the earliest)
    unparsed_samples: list[str] = field(default_factory=list)
    unparsed_pos: list[Pos] = field(default_factory=list)
    bytes_read: int = 0
    # statements: fingerprint -> [count, total ms, max ms, example, slowest example, example pos, slowest pos]
    # (the example is the earliest statement, the slowest the earliest of those with the max duration)
    queries: dict[bytes, list[Any]] = field(default_factory=dict)
    durations: Counter[bytes] = field(default_factory=Counter)  # duration text ("12.345") -> count
    #: statements log_statement logged that got no duration (none logged: log_statement alone, or only slow ones
    #: timed; or the statement failed): fingerprint -> [count, earliest example, its pos] — counted, never timed
    untimed: dict[bytes, list[Any]] = field(default_factory=dict)
    #: the same statements by the hour, database and user of their "statement:"/"execute" line
    untimed_by_hour: Counter[bytes] = field(default_factory=Counter)
    untimed_by_db: Counter[bytes] = field(default_factory=Counter)
    untimed_by_user: Counter[bytes] = field(default_factory=Counter)
    by_hour: Counter[bytes] = field(default_factory=Counter)  # "2024-03-01 10" -> statements
    by_db: Counter[bytes] = field(default_factory=Counter)
    by_user: Counter[bytes] = field(default_factory=Counter)
    prepare_ms: float = 0.0
    prepare_count: int = 0
    #: bare durations whose statement is not known, by reason (ORPHAN_REASONS): counted under UNPAIRED_FP
    orphans: Counter[str] = field(default_factory=Counter)
    #: the slowest of them: (ms, time, pid), slowest first
    orphan_slowest: list[tuple[float, bytes, bytes]] = field(default_factory=list)
    errors: Counter[tuple[str, str, bytes]] = field(default_factory=Counter)  # (level, sqlstate, message)
    # the first two distinct STATEMENTs of each error class, with their positions
    error_examples: dict[tuple[str, str, bytes], list[tuple[Pos, bytes]]] = field(default_factory=dict)
    errors_by_hour: Counter[bytes] = field(default_factory=Counter)
    #: error classes (keys of ``errors``) raised by a PL/pgSQL RAISE whose SQLSTATE the log does not give (no %e):
    #: P0001 unless the RAISE named another condition — which the log does not tell
    raised: Counter[tuple[str, str, bytes]] = field(default_factory=Counter)
    inferred_codes: int = 0
    lock_waits: int = 0
    lock_acquired: int = 0
    lock_wait_ms: list[float] = field(default_factory=list)
    lock_types: Counter[bytes] = field(default_factory=Counter)
    lock_queries: Counter[bytes] = field(default_factory=Counter)
    #: statements that failed for a lock they could not get (SQLSTATE 55P03: lock_timeout, NOWAIT, SKIP LOCKED
    #: aside) and their fingerprints
    lock_failures: int = 0
    lock_failure_queries: Counter[bytes] = field(default_factory=Counter)
    deadlocks: int = 0
    deadlock_details: list[str] = field(default_factory=list)
    deadlock_pos: list[Pos] = field(default_factory=list)
    temp_files: int = 0
    temp_bytes: int = 0
    temp_max: int = 0
    temp_queries: Counter[bytes] = field(default_factory=Counter)
    temp_query_bytes: Counter[bytes] = field(default_factory=Counter)
    checkpoints: int = 0  # checkpoints and restartpoints (a standby's checkpoints), as pgBadger counts them
    restartpoints: int = 0
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
    #: LOG entries with a duration in another language (lc_messages other than English): not understood
    translated: int = 0
    #: lines (records) whose severity is in another language (ERREUR, СООБЩЕНИЕ …: TRANSLATED_LEVELS): not understood
    translated_lines: int = 0
    first: bytes | None = None
    last: bytes | None = None
    #: pieces whose bare durations are not paired yet (see :func:`resolve`; none left in a resolved partial)
    segments: list[Segment] = field(default_factory=list)
    #: a syslog file's lines of other programs (another ident: :mod:`upkeeper.logs.pgsyslog`), not read, and the
    #: first idents among them with their lines
    syslog_skipped: int = 0
    syslog_idents: Counter[str] = field(default_factory=Counter)


def _earliest(items: list[tuple[Pos, Any]], n: int) -> list[tuple[Pos, Any]]:
    return sorted(items, key=itemgetter(0))[:n]


def _add_example(ex: list[tuple[Pos, bytes]], pos: Pos, text: bytes, n: int = 2) -> None:
    """Keep in ``ex`` the ``n`` distinct texts seen first (by position), in log order."""
    for i, (p, t) in enumerate(ex):
        if t == text:
            if pos < p:
                ex[i] = (pos, text)
                ex.sort(key=itemgetter(0))
            return
    if len(ex) < n or pos < ex[-1][0]:
        ex.append((pos, text))
        ex.sort(key=itemgetter(0))
        del ex[n:]


#: backends (pids) whose last statement or pending entry is remembered across buffers
MAX_OPEN_PIDS = 10_000
#: statements waiting for their bare duration remembered (the oldest forgotten first: their durations are counted
#: unpaired), at most: per backend of the backends that logged last, as long as their texts (and fingerprints)
#: hold in WAITING_BYTES; else MAX_OPEN_PIDS.  (Clients that connect per request, with no log_disconnections,
#: leave a statement waiting per connection whose duration is not logged: at 100 connections a second,
#: 50,000 is 8 minutes of them.)
MAX_WAITING = 50_000
WAITING_BYTES = 24 << 20
#: bytes of a waiting statement's text kept (the examples a report shows are no longer): a longer one keeps its
#: fingerprint, computed from the whole text
WAITING_TEXT = 2000
#: backends whose forgotten statement's duration is still recognized as such (a pid each: cheap)
MAX_GONE_PIDS = 100_000
#: statement texts whose fingerprint is cached (the cache is emptied when it grows past this)
MAX_FP_CACHE = 200_000


class PgAccumulator:
    def sizes(self) -> dict[str, int]:
        """The lines read (``lines``) and the distinct values held (what a memory limit's message names)."""
        p = self.p
        return {"lines": p.lines, "statement fingerprints": len(p.queries) + len(p.untimed),
                "error messages": len(p.errors), "distinct durations": len(p.durations),
                "backends waiting": len(self.last_statement) + len(self.unpaired)}

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
        # %n (seconds since 1970) instead of %m/%t: its value is turned into a time as %m writes it, in the
        # local time of the machine upkeeper runs on (its TZ), as pgBadger does
        self.g_epoch = gi.get("epoch") if self.g_ts is None else None
        if self.g_epoch is not None:
            self.g_ts = self.g_epoch
        self._epoch_ts: dict[bytes, bytes] = {}
        self.g_db = gi.get("db")
        self.g_user = gi.get("user")
        # an entry's database and user (None: not in the prefix), what an untimed statement counts under
        self._who: Who = _who_getter(self.g_db, self.g_user)
        self._wheres: dict[Where, Where] = {}  # see _where
        self.g_sqlstate = gi.get("sqlstate")
        self.g_tag = gi.get("tag")
        self.g_pid = gi["pid"]
        self.g_ms, self.g_kind, self.g_q = gi["ms"], gi["kind"], gi["q"]
        self.g_level, self.g_msg = gi["level"], gi["msg"]
        # an unparsed line whose severity is in another language (counted where lines are left unparsed only)
        self.translated_rx = re.compile(rb"(?m)^" + pre + TRANSLATED_LEVEL_RX)
        self.p = PgPartial(samples=opts.samples)
        # pid -> last "statement:"/"execute …:" (log_statement), waiting for its bare duration (log_duration)
        # (a long text is kept as its first WAITING_TEXT bytes — all a report shows of it — and its fingerprint,
        # computed from the whole text when it is logged: up to MAX_WAITING of them wait, each up to 1 MiB)
        self.last_statement: dict[bytes, Waiting] = {}
        self._sized = self._added = 0  # their bytes at the last look, and the bytes stored since (see _bound_state)
        self.unpaired: dict[bytes, list[Dur]] = {}  # pid -> bare durations with no statement (yet): Parse, Bind
        # pid -> fingerprint: backends whose waiting statement _bound_state forgot, counting it untimed (their next
        # bare duration is its: then counted unpaired, and taken back from the untimed ones)
        self.gone: dict[bytes, Forgotten] = {}
        # statements that got no duration (superseded by the backend's next statement, failed, the session ended),
        # fingerprinted and counted together at the end of each consume() (see _flush_untimed)
        self._untimed_q: list[Waiting] = []
        # the current piece of the log (see Segment): backends whose pairing state is known in it (an ordered
        # set), and the bare durations (and what ended them) of the others
        # (-> what made it known: "statement", "execute", "error", "end" (its session ended), "duration" (a bare
        # duration that %i tells is a statement's own))
        self.known: dict[bytes, str] = {}
        self.heads: dict[bytes, tuple[list[Dur], str | None]] = {}
        self.wait_known: dict[bytes, None] = {}  # the same for lock waits (see Segment)
        self.wait_heads: dict[bytes, list[Any]] = {}
        self._seg: tuple[str, int] | None = None  # where the current piece began
        self._unit_end: tuple[str, int | None] | None = None  # where the last unit ended
        self.pending: dict[bytes, tuple[str, Any]] = {}  # pid -> entry waiting for its STATEMENT/DETAIL
        # pid -> whether its error's SQLSTATE was told by its message: errors whose SQLSTATE the log does not give,
        # until their CONTEXT tells whether PL/pgSQL raised them (see _raised_by_plpgsql)
        self.unlogged: dict[bytes, bool] = {}
        # pid -> the lock it waits for ("ShareLock on transaction 726"): PostgreSQL logs "still waiting" again
        # each time the backend wakes while it waits (any signal does it), all for one wait
        self.waiting: dict[bytes, bytes] = {}
        self.fp_cache: dict[bytes, bytes] = {}  # statement text -> fingerprint, for this scan only
        self._src = ""
        self._off = 0
        self._last_fed: tuple[str, int] | None = None  # (source, offset) of the latest buffer fed

    # -- input -------------------------------------------------------------------------------

    def _bound_state(self) -> None:
        """Keep what lives across buffers bounded, however long the log (checked once per buffer).

        ``last_statement`` and ``pending`` hold one entry per backend pid: a busy server without
        connection pooling starts a new pid per connection, so old ones are dropped — waiting statements past
        MAX_WAITING (or WAITING_BYTES, see :func:`_excess`), the oldest first.  Which of them will still get a
        duration the log cannot tell (a long query still running and a session that ended, its statement
        untimed, both logged nothing since), so the oldest go, but never silently: the backend is remembered
        (``gone``) and its next bare duration counted unpaired, as "forgotten".  With ``log_disconnections``
        the ended sessions are forgotten at once, and nothing is dropped.  The fingerprint cache only saves
        work: it starts again when full.
        """
        waiting = self.last_statement
        n = len(waiting)
        excess = max(0, n - MAX_WAITING)
        # (their bytes: at most what was counted at the last look plus what was added since — counted again only
        # when that is over WAITING_BYTES)
        if n > MAX_OPEN_PIDS and self._sized + self._added > WAITING_BYTES:
            excess, self._sized = _excess(n, lambda: [len(st[0]) + len(st[2] or b"") for st in waiting.values()])
            self._added = 0
        if excess > 0:  # their durations, if they come, are counted unpaired ("forgotten"), never dropped
            old = list(itertools.islice(waiting, excess))
            sts = [waiting.pop(pid) for pid in old]
            # counted untimed now (a backend that ended without log_disconnections never logs their duration), and
            # taken back from the untimed ones if the duration comes after all
            for pid, st, fp in zip(old, sts, self._count_untimed(sts), strict=True):
                self.gone[pid] = (fp, st[3])
        excess = len(self.unpaired) - MAX_OPEN_PIDS
        if excess > 0:
            for pid in list(itertools.islice(self.unpaired, excess)):
                for d in self.unpaired.pop(pid):
                    _orphan(self.p, d, pid, "forgotten")
        _bound(self.known, MAX_WAITING)  # (at least as many as statements wait: see _close_segment)
        _bound(self.heads, MAX_WAITING)
        for pids in (self.pending, self.unlogged, self.waiting, self.wait_known, self.wait_heads):
            excess = len(pids) - MAX_OPEN_PIDS
            if excess > 0:
                for pid in list(itertools.islice(pids, excess)):  # the oldest first (insertion order)
                    del pids[pid]
        _bound(self.gone, MAX_GONE_PIDS)
        if len(self.fp_cache) > MAX_FP_CACHE:
            self.fp_cache.clear()
        if len(self._wheres) > MAX_FP_CACHE:
            self._wheres.clear()

    def feed(self, buf: bytes, source: str = "", offset: int = 0) -> None:
        if not buf:
            return
        p = self.p
        in_order = self.begin(source, offset)
        p.bytes_read += len(buf)
        nlines = buf.count(b"\n") + (0 if buf.endswith(b"\n") else 1)
        cont = buf.count(b"\n\t") + (1 if buf.startswith(b"\t") else 0)
        p.lines += nlines
        rows = self.entry_rx.findall(buf)
        self.consume(rows, multiline=cont > 0, in_order=in_order)
        unparsed = nlines - cont - len(rows)
        if unparsed > 0:
            p.unparsed += unparsed
            # most lines of the buffer unparsed (a translated LOG leaves them all so): severities in another
            # language?  (Looked for there only: that costs as much as the scan)
            if 2 * unparsed > nlines - cont:
                p.translated_lines += sum(1 for _ in self.translated_rx.finditer(buf))
            if len(p.unparsed_samples) < p.samples or (p.unparsed_pos and (source, offset, 0) < p.unparsed_pos[-1]):
                self._sample_unparsed(buf, source, offset)

    def begin(self, source: str, offset: int) -> bool:
        """Start a buffer (at ``offset`` of ``source``); True when it comes after every buffer fed so far.

        Buffers usually come in log order; one that comes before an earlier-fed one (parallel.scan
        hands out pieces biggest first) must compare positions to keep the earliest examples."""
        if self._seg is None:
            self._seg = (source, offset)
        in_order = self._last_fed is None or (source, offset) > self._last_fed
        if in_order:
            self._last_fed = (source, offset)
        self._src, self._off = source, offset
        self._bound_state()
        return in_order

    def start_unit(self, source: str, start: int, end: int | None) -> None:
        """A unit of work begins (:func:`upkeeper.logs.parallel.scan_unit`): unless it continues the last one,
        a new piece of the log begins — what this process saw before is not what comes before it in the log."""
        if self._seg is not None and self._unit_end == (source, start):
            self._unit_end = (source, end)
            return
        self._close_segment()
        self._seg, self._unit_end = (source, start), (source, end)

    def _close_segment(self) -> None:
        self._flush_untimed()
        if self._seg is None:
            return
        tail: dict[bytes, PidState | None] = {}
        # (a backend whose state is no longer known here — past the bound of MAX_WAITING — cannot be paired later)
        lost = [st for pid, st in self.last_statement.items() if pid not in self.known]
        if lost:
            self._count_untimed(lost)
        texts = [st[0] for pid, st in self.last_statement.items() if pid in self.known and st[2] is None]
        fps = dict(zip(texts, fingerprints(texts, self.fp_cache), strict=True))
        for pid in self.known:
            st = self.last_statement.get(pid)
            stmt = ((st[2] if st[2] is not None else fps[st[0]]), st[0][:2000], st[1], st[3]) if st is not None else None
            unp = self.unpaired.get(pid)
            tail[pid] = (stmt, list(unp or [])) if stmt is not None or unp else None
        wait_tail = {pid: self.waiting.get(pid) for pid in self.wait_known}
        gone = {pid: fp for pid, fp in self.gone.items() if pid in tail}
        # backends known here from a "statement:" on (no durations before it): what waited before this piece ends
        # there — the bare durations of statements not logged are counted unpaired (see resolve)
        stmt_first = {pid for pid, c in self.known.items() if c == "statement" and pid not in self.heads}
        self.p.segments.append(Segment(self._seg[0], self._seg[1], self.heads, tail, self.wait_heads, wait_tail,
                                       gone, stmt_first))
        self.last_statement, self.unpaired, self.known, self.heads, self.gone = {}, {}, {}, {}, {}
        self._sized = self._added = 0
        self.waiting, self.wait_known, self.wait_heads = {}, {}, {}
        self._seg = self._unit_end = None

    def _knows(self, pid: bytes, closer: str) -> None:
        """``pid`` logged a statement, an execute, an error or its session's end: its state is known from here on."""
        if pid in self.known:
            return
        self.known[pid] = closer
        head = self.heads.get(pid)
        if head is not None:
            self.heads[pid] = (head[0], closer)
        elif closer in ("error", "end"):  # the bare durations left waiting before this piece end here: resolve()
            self.heads[pid] = ([], closer)  # counts them (a "statement:" line does it by stmt_first)

    def consume(self, rows: list[tuple[bytes, ...]], *, multiline: bool, in_order: bool) -> None:
        """Aggregate entries as ``entry_rx.findall`` returns them (one tuple of its groups each), in log order:
        the stderr parser's and the csvlog/jsonlog readers' (:mod:`upkeeper.logs.pgstruct`) common path.
        ``multiline``: a text may hold continuation lines ("\\n\\t")."""
        p = self.p
        if self.g_epoch is not None:
            rows = self._epoch_times(rows)
        gms = self.g_ms - 1
        is_dur = list(map(itemgetter(gms), rows))
        dur = list(compress(rows, is_dur))
        ndur = len(dur)
        nother = len(rows) - ndur
        if dur:
            idx = list(compress(range(len(rows)), is_dur)) if nother else range(ndur)
            self._durations(dur, idx, multiline, in_order)
        if nother:
            for i, r in enumerate(rows):
                if r[gms]:
                    continue
                try:
                    self._other(r, i)
                except (ValueError, IndexError):  # a malformed number in a message: count it, never crash
                    p.unparsed += 1
            self._flush_untimed()
        p.entries += ndur + nother

    def _epoch_times(self, rows: list[tuple[bytes, ...]]) -> list[tuple[bytes, ...]]:
        """``rows`` with their %n value (``1709287200.123``) written as a time (``2024-03-01 10:00:00``)."""
        k = self.g_ts - 1 if self.g_ts is not None else 0
        seen = self._epoch_ts
        if len(seen) > MAX_FP_CACHE:
            seen.clear()
        out = []
        for r in rows:
            ep = r[k]
            ts = seen.get(ep)
            if ts is None:
                try:  # b"" (no time: the optional part of a %q prefix) is no number either
                    ts = datetime.fromtimestamp(int(ep.partition(b".")[0])).strftime("%Y-%m-%d %H:%M:%S").encode()
                except (ValueError, OverflowError, OSError):  # out of any calendar: no time, as no %m would be
                    ts = b""
                seen[ep] = ts
            out.append((*r[:k], ts, *r[k + 1:]))
        return out

    def _sample_unparsed(self, buf: bytes, source: str, offset: int) -> None:
        p = self.p
        entry = re.compile(rb"^" + compile_prefix(self.opts.log_line_prefix) + rb"(?:" + LEVELS + rb"):  ")
        found: list[tuple[Pos, str]] = []
        for i, ln in enumerate(buf.split(b"\n")):
            if ln and not ln.startswith(b"\t") and not entry.match(ln):
                found.append(((source, offset, i), f"{source}: {ln[:300].decode('utf-8', 'replace')}"))
                if len(found) >= p.samples:
                    break
        kept = _earliest([*zip(p.unparsed_pos, p.unparsed_samples, strict=True), *found], p.samples)
        p.unparsed_pos = [k[0] for k in kept]
        p.unparsed_samples = [k[1] for k in kept]

    def _durations(self, rows: list[tuple[bytes, ...]], idx: Sequence[int], multiline: bool,
                   in_order: bool) -> None:
        p = self.p
        gms, gkind, gq = self.g_ms - 1, self.g_kind - 1, self.g_q - 1
        kinds = list(map(itemgetter(gkind), rows))
        if not set(kinds) <= {b"statement", b"execute"}:
            keep = [k == b"statement" or k == b"execute" for k in kinds]
            prep = [r for r, k in zip(rows, keep, strict=True) if not k]
            p.prepare_count += len(prep)
            p.prepare_ms += sum(float(r[gms]) for r in prep)
            rows = list(compress(rows, keep))
            idx = list(compress(idx, keep))
            if not rows:
                return
        ms_txt = list(map(itemgetter(gms), rows))
        p.durations.update(ms_txt)
        qs = list(map(itemgetter(gq), rows))
        if multiline:
            qs = [q.replace(b"\n\t", b"\n") if b"\n\t" in q else q for q in qs]
        fps = fingerprints(qs, self.fp_cache)
        queries = p.queries
        get = queries.get
        src, off = self._src, self._off
        if in_order:  # every position here comes after every one already seen: no comparisons
            for i, fp, ms, q in zip(idx, fps, map(float, ms_txt), qs, strict=True):
                st = get(fp)
                if st is None:
                    pos = (src, off, i)
                    queries[fp] = [1, ms, ms, q[:2000], q[:2000], pos, pos]
                else:
                    st[0] += 1
                    st[1] += ms
                    if ms > st[2]:
                        st[2] = ms
                        st[4] = q[:2000]
                        st[6] = (src, off, i)
        else:  # an earlier piece of the log after a later one: keep the earliest examples
            for i, fp, ms, q in zip(idx, fps, map(float, ms_txt), qs, strict=True):
                st = get(fp)
                if st is None:
                    pos = (src, off, i)
                    queries[fp] = [1, ms, ms, q[:2000], q[:2000], pos, pos]
                    continue
                st[0] += 1
                st[1] += ms
                if ms >= st[2]:
                    pos = (src, off, i)
                    if ms > st[2] or pos < st[6]:
                        st[2], st[4], st[6] = ms, q[:2000], pos
                if (src, off) < st[5][:2]:
                    st[3], st[5] = q[:2000], (src, off, i)
        if self.g_ts is not None:
            gts = self.g_ts - 1
            per_ts = Counter(map(itemgetter(gts), rows))
            per_ts.pop(b"", None)  # no time: a %q prefix's optional part, a %n out of any calendar
            by_hour = p.by_hour
            for ts, n in per_ts.items():
                by_hour[ts[:13]] += n
            if per_ts:
                lo, hi = min(per_ts), max(per_ts)
                if p.first is None or lo < p.first:
                    p.first = lo
                if p.last is None or hi > p.last:
                    p.last = hi
        if self.g_db is not None:
            p.by_db.update(map(itemgetter(self.g_db - 1), rows))
        if self.g_user is not None:
            p.by_user.update(map(itemgetter(self.g_user - 1), rows))

    def _other(self, r: tuple[bytes, ...], i: int) -> None:
        p = self.p
        level = r[self.g_level - 1].decode()
        msg = r[self.g_msg - 1]
        pid = r[self.g_pid - 1]
        ts = (r[self.g_ts - 1] or None) if self.g_ts is not None else None
        if level in ("DETAIL", "HINT", "STATEMENT", "CONTEXT", "QUERY", "LOCATION"):
            pend = self.pending.get(pid)
            if pend is not None and level in ("STATEMENT", "DETAIL"):
                self._attach(pend, level, msg.replace(b"\n\t", b"\n"), (self._src, self._off, i))
            elif level == "CONTEXT" and pid in self.unlogged:
                self._raised_by_plpgsql(pid, msg)
            return
        if ts is not None:
            if p.first is None or ts < p.first:
                p.first = ts
            if p.last is None or ts > p.last:
                p.last = ts
        self.pending.pop(pid, None)
        self.unlogged.pop(pid, None)
        code: bytes | str | None = r[self.g_sqlstate - 1] if self.g_sqlstate is not None else None
        # log_error_verbosity = verbose writes the SQLSTATE before every primary message, LOG ones too
        # ("LOG:  00000: checkpoint starting: time"): read it, and match the message after it
        vm = _VERBOSE_CODE.match(msg) if msg[5:7] == b": " else None  # the cheap test first: most entries are not
        if vm:
            code = vm.group(1)
            msg = msg[vm.end():]
        if level == "LOG":
            self._log(pid, msg, ts, i, r)
        elif level in ("ERROR", "FATAL", "PANIC"):
            # the failed statement logs no duration: the next bare one (the next statement's Parse, with the
            # extended protocol) is not its; nor does it wait for a lock any longer (lock_timeout, cancel)
            self._knows(pid, "error")
            self.wait_known[pid] = None
            failed = self.last_statement.pop(pid, None)
            if failed is not None:  # logged by log_statement, and failed: a statement that ran, no duration
                self._untimed_q.append(failed)
            # the bare durations logged right before it (no statement between): the failed statement's Parse/Bind
            # with the extended protocol, or statements log_statement does not log — counted, never dropped
            for d in self.unpaired.pop(pid, ()):
                _orphan(p, d, pid, "before_error")
            self.gone.pop(pid, None)
            self.waiting.pop(pid, None)
            if not code:
                code = infer_sqlstate(msg)
                self.unlogged[pid] = code is not None
                if code:
                    p.inferred_codes += 1
            key = (level, (code.decode() if isinstance(code, bytes) else code) or "-----", normalize_message(msg))
            p.errors[key] += 1
            if ts is not None:
                p.errors_by_hour[ts[:13]] += 1
            if msg.startswith(b"deadlock detected"):
                p.deadlocks += 1
                self.pending[pid] = ("deadlock", key)
            elif key[1] == "55P03":  # lock_not_available: lock_timeout expired, or NOWAIT could not lock
                p.lock_failures += 1
                self.pending[pid] = ("lock_failure", key)
            else:
                self.pending[pid] = ("error", key)
        elif level in _TRANSLATED_LEVEL_SET:  # (a csvlog or jsonlog record: the stderr format leaves it unparsed)
            p.translated_lines += 1
            if _TRANSLATED_DURATION.match(msg):  # a translated LOG's duration ("продолжительность: 0.036 мс")
                p.translated += 1
        elif level == "WARNING":
            if not code:  # its own when the message tells it ("there is no transaction in progress": 25P01)
                code = infer_sqlstate(msg)
                self.unlogged[pid] = code is not None
                if code:
                    p.inferred_codes += 1
            key = ("WARNING", (code.decode() if isinstance(code, bytes) else code) or "01000",
                   normalize_message(msg))
            p.errors[key] += 1
            self.pending[pid] = ("error", key)

    def _raised_by_plpgsql(self, pid: bytes, context: bytes) -> None:
        """The CONTEXT of an error (or warning) whose SQLSTATE the log does not give: raised by a PL/pgSQL RAISE or
        ASSERT (the innermost frame, its first line: a re-raised error keeps the context where it was raised)?
        ASSERT raises assert_failure, P0004, always.  A RAISE's message is the function's own text ("division by
        zero" there is no division by zero: it was taken for 22012), and its SQLSTATE P0001 (raise_exception)
        unless the RAISE named another condition (USING ERRCODE, RAISE unique_violation …), which the log does
        not tell: unknown (``-----``), the class marked raised.  So is a RAISE WARNING's (01000 unless it named
        another: ``RAISE WARNING '…' USING ERRCODE = '22012'`` logs 22012)."""
        inferred = self.unlogged.pop(pid)
        m = _PLPGSQL_RAISE.match(context)
        pend = self.pending.get(pid)
        if m is None or pend is None:
            return
        kind, key = pend
        level, _code, msg = key
        by_assert = m.group(1) == b"ASSERT"
        if by_assert and level == "WARNING":
            return
        new = (level, "P0004" if by_assert else "-----", msg)
        p = self.p
        p.inferred_codes += by_assert - inferred
        if kind == "deadlock":  # (its message said "deadlock detected": the function's words, no deadlock)
            p.deadlocks -= 1
        elif kind == "lock_failure":
            p.lock_failures -= 1
        p.errors[key] -= 1
        if p.errors[key] <= 0:
            del p.errors[key]
        p.errors[new] += 1
        if not by_assert:
            p.raised[new] += 1
        self.pending[pid] = ("error", new)

    def _attach(self, pend: tuple[str, Any], level: str, text: bytes, pos: Pos) -> None:
        p = self.p
        kind, key = pend
        if kind in ("error", "deadlock", "lock_failure") and level == "STATEMENT":
            _add_example(p.error_examples.setdefault(key, []), pos, text[:1000])
            if kind == "lock_failure":
                p.lock_failure_queries[fingerprints([text], self.fp_cache)[0]] += 1
        elif kind == "deadlock" and level == "DETAIL":
            if len(p.deadlock_details) < p.samples or (p.deadlock_pos and pos < p.deadlock_pos[-1]):
                kept = _earliest([*zip(p.deadlock_pos, p.deadlock_details, strict=True),
                                  (pos, text[:2000].decode("utf-8", "replace"))], p.samples)
                p.deadlock_pos = [k[0] for k in kept]
                p.deadlock_details = [k[1] for k in kept]
        elif kind == "lock" and level == "STATEMENT":
            fp = fingerprints([text], self.fp_cache)[0]
            p.lock_queries[fp] += 1
            if key is not None:
                key[2] = fp
        elif kind == "temp" and level == "STATEMENT":
            fp = fingerprints([text], self.fp_cache)[0]
            p.temp_queries[fp] += 1
            p.temp_query_bytes[fp] += int(key)

    def _log(self, pid: bytes, msg: bytes, ts: bytes | None, i: int, r: tuple[bytes, ...]) -> None:
        p = self.p
        if msg.startswith(b"duration: "):
            bm = _BARE_DURATION.match(msg)
            if bm is None:
                # auto_explain's "duration: X ms  plan:" (logged at the executor's end, before the statement's own
                # log_duration line): not a statement, and the statement waiting for its duration still waits
                return
            ms_b = bm.group(1)
            ms = float(ms_b)  # "1.2.3": ValueError, counted unparsed by the caller (before it is kept for later)
            tag = r[self.g_tag - 1] if self.g_tag is not None else b""
            if tag in _PREPARE_TAGS:  # %i says so: the extended protocol's Parse or Bind, never a statement's own
                p.prepare_count += 1
                p.prepare_ms += ms
                return
            prev = self.last_statement.pop(pid, None)
            if prev is not None:  # log_duration + log_statement: pair them
                self._durations_bare(ms_b, prev, ts, r)
                return
            dur: Dur = (ms_b, ts, r[self.g_db - 1] if self.g_db is not None else None,
                        r[self.g_user - 1] if self.g_user is not None else None)
            if pid in self.gone:  # the duration of the statement _bound_state forgot (and counted untimed)
                _uncount_untimed(p, self.gone.pop(pid))
                _orphan(p, dur, pid, "forgotten")
            elif tag and pid in self.known:  # %i: a statement's own (its tag: SELECT …), of a statement not logged
                _orphan(p, dur, pid, "not_logged")
            elif tag:  # the same, but it may be the duration of a statement logged before this piece: resolve() tells
                durs = self.heads.pop(pid, ([], None))[0]
                if durs:  # (only the first duration of a piece can be that statement's)
                    _orphan(p, dur, pid, "not_logged")
                else:
                    durs.append(dur)
                self.heads[pid] = (durs, None)
                self._knows(pid, "duration")
            elif pid in self.known:
                # no statement waits: with the extended protocol, a Parse or Bind (logged before the Execute's
                # "execute …:" line), else a statement log_statement does not log (counted unpaired when the
                # backend's next entry is no "execute")
                seen = self.unpaired.pop(pid, [])
                seen.append(dur)
                for d in seen[:-MAX_UNPAIRED]:
                    _orphan(p, d, pid, "not_logged")
                self.unpaired[pid] = seen[-MAX_UNPAIRED:]
            else:  # what it is depends on what this backend logged before this piece: resolve() tells
                durs = self.heads.pop(pid, ([], None))[0]
                durs.append(dur)
                if len(durs) > 1 + MAX_UNPAIRED:
                    # the first may pair with a statement before, the last ones be Parse and Bind: not this one
                    _orphan(p, durs.pop(1), pid, "not_logged")
                self.heads[pid] = (durs, None)
            return
        if msg.startswith(b"statement: "):
            self._knows(pid, "statement")
            self.gone.pop(pid, None)
            for d in self.unpaired.pop(pid, ()):  # durations of statements log_statement did not log
                _orphan(p, d, pid, "not_logged")
            prev = self.last_statement.pop(pid, None)  # re-inserted last: the dict stays in order of last use
            if prev is not None:  # the backend's statement before got no duration: untimed
                self._untimed_q.append(prev)
            self.last_statement[pid] = self._waiting(msg[11:].replace(b"\n\t", b"\n"), (self._src, self._off, i),
                                                     self._where(ts, r))
            return
        if msg.startswith(b"execute "):
            em = _EXECUTE.match(msg)
            if em:
                if pid not in self.known:  # its Parse and Bind may have been logged before this piece
                    self.heads.setdefault(pid, ([], None))
                    self._knows(pid, "execute")
                self.gone.pop(pid, None)
                parse_bind = self.unpaired.pop(pid, None)
                if parse_bind:
                    ms = sum(float(d[0]) for d in parse_bind)  # "1.2.3": ValueError, counted unparsed by the caller
                    p.prepare_count += len(parse_bind)
                    p.prepare_ms += ms
                prev = self.last_statement.pop(pid, None)
                if prev is not None:  # the backend's statement before got no duration: untimed
                    self._untimed_q.append(prev)
                self.last_statement[pid] = self._waiting(msg[em.end():].replace(b"\n\t", b"\n"),
                                                         (self._src, self._off, i),
                                                         self._where(ts, r))
            return
        if msg.startswith((b"checkpoint ", b"restartpoint ")):
            restart = msg[:1] == b"r"
            what = msg[len(b"restartpoint ") if restart else len(b"checkpoint "):]
            if what.startswith(b"starting: "):
                p.checkpoint_reasons[what[10:].strip()] += 1
            elif what.startswith(b"complete: "):
                cm = _CHECKPOINT_DONE.match(msg)
                p.checkpoints += 1
                if restart:
                    p.restartpoints += 1
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
                lock = lm.group(3) + b" on " + lm.group(4)
                if lm.group(2) == b"still waiting for":
                    if self.waiting.get(pid) == lock:
                        return  # the same wait, logged again
                    self.waiting[pid] = lock
                    p.lock_waits += 1
                    kind = lm.group(3) + b" on " + lm.group(4).split(b" ")[0]
                    p.lock_types[kind] += 1
                    head = None
                    if pid not in self.wait_known:  # logged again for a wait seen before this piece? resolve() tells
                        self.wait_known[pid] = None
                        head = self.wait_heads[pid] = [lock, kind, None]
                    self.pending[pid] = ("lock", head)
                else:
                    self.wait_known[pid] = None
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
        if msg.startswith(b"automatic ") and _AUTOVACUUM.match(msg):
            p.autovacuum += 1
        elif msg.startswith(b"automatic analyze"):
            p.autoanalyze += 1
        elif msg.startswith(b"connection authorized"):
            p.connections += 1
        elif msg.startswith(b"disconnection: "):
            # (log_disconnections) the session ended: nothing of it waits any longer — a statement logged without
            # a duration (log_statement logs them all, durations come only for slow ones) is no statement a later
            # duration belongs to, and must not crowd out one that waits (see _bound_state)
            self._knows(pid, "end")
            self.wait_known[pid] = None
            for d in self.unpaired.pop(pid, ()):  # no "execute" line follows: durations of statements not logged
                _orphan(p, d, pid, "not_logged")
            prev = self.last_statement.pop(pid, None)
            if prev is not None:  # its last statement got no duration: untimed
                self._untimed_q.append(prev)
            self.waiting.pop(pid, None)
            self.gone.pop(pid, None)
        elif _TRANSLATED_DURATION.match(msg):
            p.translated += 1

    def _count_untimed(self, sts: list[Waiting]) -> list[bytes]:
        """Count waiting statements (as :meth:`_waiting` keeps them) that got no duration: untimed.  Their
        fingerprints, in order."""
        texts = [st[0] for st in sts if st[2] is None]
        computed = iter(fingerprints(texts, self.fp_cache)) if texts else iter(())
        fps = [st[2] if st[2] is not None else next(computed) for st in sts]
        untimed = self.p.untimed
        for (q, pos, _fp, _where), fp in zip(sts, fps, strict=True):
            _add_untimed(untimed, fp, q, pos)
        _count_where(self.p, Counter(map(itemgetter(3), sts)))  # (few distinct: hours x databases x users)
        return fps

    def _flush_untimed(self) -> None:
        if self._untimed_q:
            self._count_untimed(self._untimed_q)
            self._untimed_q = []

    def _where(self, ts: bytes | None, r: tuple[bytes, ...]) -> Where:
        """The hour, database and user of the entry ``r`` logged at ``ts``: one object for all entries alike (kept
        with each waiting statement; a log of log_statement lines alone scanned ~10 % faster than with one object
        each)."""
        w = (ts[:13] if ts else None, self._who(r))
        return self._wheres.setdefault(w, w)

    def _waiting(self, q: bytes, pos: Pos, where: Where) -> Waiting:
        """A statement waiting for its bare duration, as kept: a long one cut, with the whole's fingerprint."""
        if len(q) <= WAITING_TEXT:
            self._added += len(q)
            return q, pos, None, where
        fp = fingerprints([q], self.fp_cache)[0]
        self._added += WAITING_TEXT + len(fp)
        return q[:WAITING_TEXT], pos, fp, where

    def _durations_bare(self, ms_b: bytes, st: Waiting, ts: bytes | None, r: tuple[bytes, ...]) -> None:
        q, pos, fp, where = st
        # the statement's database and user: its session's, on the duration line's prefix as on any
        _pair(self.p, (ms_b, ts, r[self.g_db - 1] if self.g_db is not None else None,
                       r[self.g_user - 1] if self.g_user is not None else None),
              (fp if fp is not None else fingerprints([q], self.fp_cache)[0], q, pos, where))

    def partial(self) -> PgPartial:
        self._close_segment()
        return self.p


#: a row's (database, user)
Who = Callable[[tuple[bytes, ...]], tuple[bytes | None, bytes | None]]


def _who_getter(g_db: int | None, g_user: int | None) -> Who:
    """A row's (database, user) by their groups (1-based; None: not in the prefix)."""
    if g_db is not None and g_user is not None:
        return itemgetter(g_db - 1, g_user - 1)
    return lambda r: (r[g_db - 1] if g_db is not None else None, r[g_user - 1] if g_user is not None else None)


def _pair(p: PgPartial, dur: Dur, stmt: OpenStatement) -> None:
    """A statement (log_statement) and its bare duration (log_duration) counted as one timed statement."""
    ms_b, ts, db, user = dur
    fp, q, pos, _where = stmt
    p.durations[ms_b] += 1
    _add_query(p.queries, fp, float(ms_b), q, pos)
    if ts is not None:
        p.by_hour[ts[:13]] += 1
    if db is not None:
        p.by_db[db] += 1
    if user is not None:
        p.by_user[user] += 1


def _orphan(p: PgPartial, dur: Dur, pid: bytes, why: str) -> None:
    """A bare duration whose statement is not known: counted all the same (in the totals and percentiles, under
    :data:`UNPAIRED_FP`), and why (:data:`ORPHAN_REASONS`), with the slowest ones' backend and time."""
    _pair(p, dur, _UNPAIRED)
    p.orphans[why] += 1
    ms, ts = float(dur[0]), dur[1]
    sl = p.orphan_slowest
    if p.samples and (len(sl) < p.samples or ms >= sl[-1][0]):
        sl.append((ms, ts or b"", pid))
        sl.sort(key=_slowest_key)
        del sl[p.samples:]


def _slowest_key(o: tuple[float, bytes, bytes]) -> tuple[float, bytes, bytes]:
    return (-o[0], o[1], o[2])


def _bound(d: dict[bytes, Any], n: int) -> list[bytes]:
    """Drop the oldest keys of ``d`` (insertion order) past ``n``; returns them."""
    excess = len(d) - n
    if excess <= 0:
        return []
    old = list(itertools.islice(d, excess))
    for k in old:
        del d[k]
    return old


def _add_query(queries: dict[bytes, list[Any]], fp: bytes, ms: float, q: bytes, pos: Pos) -> None:
    st = queries.get(fp)
    if st is None:
        queries[fp] = [1, ms, ms, q[:2000], q[:2000], pos, pos]
        return
    st[0] += 1
    st[1] += ms
    if ms > st[2] or (ms == st[2] and pos < st[6]):
        st[2], st[4], st[6] = ms, q[:2000], pos
    if pos < st[5]:
        st[3], st[5] = q[:2000], pos


def _add_untimed(untimed: dict[bytes, list[Any]], fp: bytes, q: bytes, pos: Pos, n: int = 1) -> None:
    st = untimed.get(fp)
    if st is None:
        untimed[fp] = [n, q[:2000], pos]
        return
    st[0] += n
    if pos < st[2]:
        st[1], st[2] = q[:2000], pos


def _untimed(p: PgPartial, fp: bytes, q: bytes, pos: Pos, where: Where) -> None:
    """A statement that got no duration counted untimed: by fingerprint, and by its hour, database and user."""
    _add_untimed(p.untimed, fp, q, pos)
    _count_where(p, {where: 1})


def _count_where(p: PgPartial, wheres: Mapping[Where, int]) -> None:
    """Count untimed statements by their hour, database and user (``wheres``: how many of each)."""
    for (hour, (db, user)), n in wheres.items():
        if hour:
            p.untimed_by_hour[hour] += n
        if db is not None:
            p.untimed_by_db[db] += n
        if user is not None:
            p.untimed_by_user[user] += n


def _uncount_untimed(p: PgPartial, forgot: Forgotten | None) -> None:
    """A statement counted untimed when it was forgotten got its duration after all (counted unpaired): take it
    back (``forgot`` None: a run before counted it)."""
    if forgot is None:
        return
    fp, (hour, (db, user)) = forgot
    st = p.untimed.get(fp)
    if st is not None:
        st[0] -= 1
        if st[0] <= 0:
            del p.untimed[fp]
    for c, k in ((p.untimed_by_hour, hour), (p.untimed_by_db, db), (p.untimed_by_user, user)):
        if k is not None and k in c:
            _uncount(c, k)


def _by_log_order(order: Sequence[str] | None) -> Callable[[Segment], tuple[int, str, int]]:
    rank = {src: i for i, src in enumerate(order or ())}
    return lambda s: (rank.get(s.src, len(rank)), s.src if s.src not in rank else "", s.start)


def resolve(p: PgPartial, order: Sequence[str] | None = None, before: OpenState | None = None,
            carry: int | None = None, *, final: bool = False) -> OpenState:
    """Pair the bare durations of ``p``'s pieces (:class:`Segment`) that came before any statement of their
    backend in their piece with what that backend left waiting before it, in log order: the sources in
    ``order`` (each by offset; others after them, by name), ``before`` what waited before the first one (the
    last run's: :func:`open_from_json`).  A lock wait a piece counted that was logged again for a wait of before
    is taken back.  The same figures as one scan of the whole log in one go.  Returns what waits after the last
    piece (for the next run), of at most ``carry`` backends (those that logged last) when given: the others'
    bare durations are counted unpaired here, and their statements' durations will be in the next run.
    ``final``: no run reads on from here (a run that is not incremental, one read of files): the bare durations
    still waiting for an ``execute`` line are counted unpaired here, as "not_logged" (the returned state keeps
    only the statements waiting).  ``p`` has no segments left."""
    state: dict[bytes, PidState] = dict(before.pairs) if before is not None else {}
    waits: dict[bytes, bytes] = dict(before.waits) if before is not None else {}
    gone: dict[bytes, Forgotten | None] = dict(before.gone) if before is not None else {}

    for seg in sorted(p.segments, key=_by_log_order(order)):
        for pid, (durs, closer) in seg.heads.items():
            was = state.pop(pid, None)
            stmt, unp = was if was is not None else (None, [])
            forgot = pid in gone
            forgot_fp = gone.pop(pid, None)
            if forgot and stmt is None and durs:
                _uncount_untimed(p, forgot_fp)  # counted untimed when it was forgotten (by this run)
                _orphan(p, durs[0], pid, "forgotten")  # the duration of a statement forgotten before
                durs = durs[1:]
            if stmt is not None and durs:
                _pair(p, durs[0], stmt)  # (a statement waiting has no bare durations before it: unp is empty)
                durs = durs[1:]
            elif stmt is not None:  # its backend logged another statement, an error, its end: no duration came
                _untimed(p, *stmt)
            unp = [*unp, *durs]
            for d in unp[:-MAX_UNPAIRED]:
                _orphan(p, d, pid, "not_logged")
            unp = unp[-MAX_UNPAIRED:]
            if closer == "execute" and unp:  # its Parse and Bind
                p.prepare_count += len(unp)
                p.prepare_ms += sum(float(d[0]) for d in unp)
            elif closer == "error":  # the failed statement's Parse/Bind, or statements not logged (see _other)
                for d in unp:
                    _orphan(p, d, pid, "before_error")
            elif closer in ("statement", "end", "duration"):  # durations of statements log_statement did not log
                for d in unp:
                    _orphan(p, d, pid, "not_logged")
            elif closer is None and unp:
                state[pid] = (None, unp)
        for pid in seg.stmt_first:  # durations of statements log_statement did not log
            was = state.get(pid)
            for d in was[1] if was is not None else ():
                _orphan(p, d, pid, "not_logged")
        for pid, st in seg.tail.items():
            was = state.pop(pid, None)
            if was is not None and was[0] is not None:  # (a backend whose first entry here was a "statement:")
                _untimed(p, *was[0])
            gone.pop(pid, None)
            if st is not None:
                state[pid] = st
        for pid, fp in seg.gone.items():
            gone[pid] = fp
        for pid, (lock, kind, fp) in seg.wait_heads.items():
            if waits.get(pid) == lock:  # the same wait, logged again
                p.lock_waits -= 1
                _uncount(p.lock_types, kind)
                if fp is not None:
                    _uncount(p.lock_queries, fp)
        for pid, lock in seg.wait_tail.items():
            waits.pop(pid, None)
            if lock is not None:
                waits[pid] = lock
        _forget(p, state, gone)
        _bound(waits, MAX_OPEN_PIDS)
        _bound(gone, MAX_GONE_PIDS)
    if carry is not None:
        _forget(p, state, gone, carry)
        _bound(waits, carry)
        _bound(gone, MAX_CARRIED_GONE)
    if final:  # no next run: what still waits for an "execute" line never gets one here, nor a statement its duration
        for pid, (stmt, unp) in list(state.items()):
            for d in unp:
                _orphan(p, d, pid, "not_logged")
            if stmt is not None:
                _untimed(p, *stmt)
            del state[pid]
    p.segments = []
    return OpenState(state, waits, gone)


def _excess(n: int, sizes: Callable[[], list[int]]) -> tuple[int, int]:
    """How many of ``n`` waiting statements to forget, the oldest first: past MAX_WAITING, and past MAX_OPEN_PIDS
    as long as their texts' and fingerprints' bytes (``sizes()``, oldest first) exceed WAITING_BYTES; and the
    bytes of those kept (0 when not looked at)."""
    excess = max(0, n - MAX_WAITING)
    total = 0
    if n > MAX_OPEN_PIDS:  # (a text is at most WAITING_TEXT bytes: below that count, no need to look)
        size = sizes()
        total = sum(size[excess:])
        while total > WAITING_BYTES and n - excess > MAX_OPEN_PIDS:
            total -= size[excess]
            excess += 1
    return excess, total


def _forget(p: PgPartial, state: dict[bytes, PidState], gone: dict[bytes, Forgotten | None], n: int | None = None
            ) -> None:
    """Keep ``n`` backends of ``state`` (those that logged last; None: as many as :func:`_excess` allows): the
    others' waiting statements are forgotten (their duration, when it comes, is counted unpaired: ``gone``), their
    bare durations counted unpaired now."""
    excess = (len(state) - n if n is not None else
              _excess(len(state), lambda: [len(st[0][0]) + len(st[0][1]) if st[0] else 0 for st in state.values()])[0])
    if excess <= 0:
        return
    for pid in list(itertools.islice(state, excess)):
        stmt, unp = state.pop(pid)
        if stmt is not None:  # counted untimed (taken back if its duration comes in this run after all)
            _untimed(p, *stmt)
            gone[pid] = (stmt[0], stmt[3])
        for d in unp:
            _orphan(p, d, pid, "forgotten")


def _uncount(c: Counter[bytes], key: bytes) -> None:
    c[key] -= 1
    if c[key] <= 0:
        del c[key]


#: backends whose waiting statement (or bare durations) the next run is told about, at most
MAX_CARRIED_PIDS = 1000
#: characters of a waiting statement's example kept for the next run
CARRIED_EXAMPLE = 500
#: backends whose forgotten statement's duration the next run still recognizes (pids only)
MAX_CARRIED_GONE = 10_000


def open_to_json(state: OpenState, limit: int = MAX_CARRIED_PIDS) -> dict[str, list[Any]]:
    """What waits at the end of a run (:func:`resolve`), as JSON for the job's state: of the ``limit`` backends
    that logged last each.  Statements are kept as their fingerprint and a redacted example (no secret is
    stored), locks as logged ("ShareLock on transaction 726")."""
    out: list[list[Any]] = []
    waits = [[pid.decode("latin-1"), lock.decode("latin-1")]
             for pid, lock in (list(state.waits.items())[-limit:] if limit > 0 else [])]
    for pid, (stmt, unp) in list(state.pairs.items())[-limit:] if limit > 0 else []:
        unp_j = [[None if x is None else x.decode("latin-1") for x in u] for u in unp]
        if stmt is None:
            out.append([pid.decode("latin-1"), None, unp_j])
            continue
        fp, q, pos, where = stmt
        # (an example only: 500 characters of it keep the state small when log_statement logs statements whose
        # duration is never logged, and many backends have one waiting)
        out.append([pid.decode("latin-1"), [fp.decode("latin-1"), redact(_s(q))[:CARRIED_EXAMPLE], list(pos),
                                            [None if x is None else x.decode("latin-1") for x in (where[0], *where[1])]],
                    unp_j])
    gone = [pid.decode("latin-1") for pid in list(state.gone)[-MAX_CARRIED_GONE:]]
    return {"pairs": out, "waits": waits, "gone": gone}


def open_from_json(data: Any) -> OpenState:
    """:func:`open_to_json`'s data back (anything malformed in it is left out: at worst a pair is missed, or a
    wait logged again counted again)."""
    data = data if isinstance(data, dict) else {}
    waits: dict[bytes, bytes] = {}
    for item in data["waits"] if isinstance(data.get("waits"), list) else []:
        if isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item):
            try:
                waits[item[0].encode("latin-1")] = item[1].encode("latin-1")
            except UnicodeError:
                continue
    out: dict[bytes, PidState] = {}
    for item in data["pairs"] if isinstance(data.get("pairs"), list) else []:
        try:
            pid_s, stmt_j, unp_j = item
            unp: list[Dur] = []
            for u in unp_j[-MAX_UNPAIRED:]:
                # [ms, time, database, user]; a plain "ms" from before the time and session were kept
                ms_s, ts_s, db_s, user_s = u if isinstance(u, list) else (u, None, None, None)
                float(ms_s)
                ms_b, ts_b, db_b, user_b = (None if x is None else str(x).encode("latin-1")
                                            for x in (ms_s, ts_s, db_s, user_s))
                unp.append((ms_b or b"0", ts_b, db_b, user_b))
            stmt: OpenStatement | None = None
            if stmt_j is not None:
                # [fingerprint, example, position, [hour, database, user]] (no where: saved before it was kept)
                fp_s, q_s, (src, off, i), *rest = stmt_j
                where_j = rest[0] if rest and isinstance(rest[0], list) and len(rest[0]) == 3 else [None] * 3
                hour_b, db_b, user_b = (None if x is None else str(x).encode("latin-1") for x in where_j)
                stmt = (str(fp_s).encode("latin-1"), str(q_s).encode(), (str(src), int(off), int(i)),
                        (hour_b, (db_b, user_b)))
            out[str(pid_s).encode("latin-1")] = (stmt, unp)
        except (TypeError, ValueError, UnicodeError):
            continue
    # (their statements were counted untimed by the run before: not taken back here)
    gone: dict[bytes, Forgotten | None] = {str(x).encode("latin-1"): None for x in data["gone"]
                                       if isinstance(x, str) and x.isascii()} if isinstance(data.get("gone"), list) else {}
    return OpenState(out, waits, gone)


def speculation(options: Mapping[str, Any], target: Mapping[str, Any]) -> tuple[Any, bytes, list[Any]] | None:
    """The scan of a ``logs.postgres`` run of this format, for a helper that reads ahead (see
    :func:`upkeeper.logs.pgplan.speculation`)."""
    from upkeeper.logs import pgplan

    return pgplan.speculation(__name__, options, target)


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
                     "checkpoint_distance_kb", "checkpoint_warnings", "autovacuum", "autoanalyze", "connections",
                     "translated", "translated_lines", "syslog_skipped"):
            setattr(out, name, getattr(out, name) + getattr(p, name))
        for name in ("durations", "by_hour", "by_db", "by_user", "untimed_by_hour", "untimed_by_db",
                     "untimed_by_user", "errors", "errors_by_hour", "raised", "lock_types",
                     "lock_queries", "lock_failure_queries", "temp_queries", "temp_query_bytes", "checkpoint_reasons",
                     "syslog_idents"):
            getattr(out, name).update(getattr(p, name))
        for fp, st in p.queries.items():
            mine = out.queries.get(fp)
            if mine is None:
                out.queries[fp] = st
            else:
                mine[0] += st[0]
                mine[1] += st[1]
                if st[2] > mine[2] or (st[2] == mine[2] and st[6] < mine[6]):
                    mine[2], mine[4], mine[6] = st[2], st[4], st[6]
                if st[5] < mine[5]:
                    mine[3], mine[5] = st[3], st[5]
        for fp, ust in p.untimed.items():
            _add_untimed(out.untimed, fp, ust[1], ust[2], ust[0])
        for k, ex in p.error_examples.items():
            mine_ex = out.error_examples.setdefault(k, [])
            for pos, text in ex:
                _add_example(mine_ex, pos, text)
        out.lock_wait_ms += p.lock_wait_ms
        out.orphans.update(p.orphans)
        out.orphan_slowest = sorted([*out.orphan_slowest, *p.orphan_slowest], key=_slowest_key)[:max(out.samples, p.samples)]
        out.segments += p.segments
        out.samples = max(out.samples, p.samples)
        kept = _earliest([*zip(out.unparsed_pos, out.unparsed_samples, strict=True),
                          *zip(p.unparsed_pos, p.unparsed_samples, strict=True)], out.samples)
        out.unparsed_pos, out.unparsed_samples = [k[0] for k in kept], [k[1] for k in kept]
        kept = _earliest([*zip(out.deadlock_pos, out.deadlock_details, strict=True),
                          *zip(p.deadlock_pos, p.deadlock_details, strict=True)], out.samples)
        out.deadlock_pos, out.deadlock_details = [k[0] for k in kept], [k[1] for k in kept]
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


#: the SQLSTATE of a PL/pgSQL RAISE that names no condition, by level (ERROR and above: raise_exception; a
#: WARNING's: warning, elog's default): a class it raised without %e is unknown, this one likely
RAISE_DEFAULT_SQLSTATE = {"WARNING": "01000"}


def summarize(p: PgPartial, *, top_n: int = 20) -> dict[str, Any]:
    """The report as plain JSON-able data. Examples (statements as logged, samples, deadlock details) are
    redacted: ``ALTER ROLE … PASSWORD '…'`` and conninfo passwords never reach a report or a finding."""
    from upkeeper.logs.stats import percentiles, top

    if p.segments:  # not resolved by the caller (one file, or pieces of one): in order of offsets, and nothing
        resolve(p, final=True)  # carried to a next run
    hist: Counter[float] = Counter()
    for txt, c in p.durations.items():
        hist[float(txt)] += c
    total_n = sum(st[0] for st in p.queries.values())
    total_ms = sum(st[1] for st in p.queries.values())
    kinds: Counter[str] = Counter()
    for fp, st in p.queries.items():
        kinds[statement_kind(fp)] += st[0]
    untimed_kinds: Counter[str] = Counter()
    for fp, ust in p.untimed.items():
        untimed_kinds[statement_kind(fp)] += ust[0]

    def qrow(fp: bytes, st: list[Any]) -> dict[str, Any]:
        return {"fingerprint": _s(fp), "count": st[0], "total_ms": round(st[1], 3), "mean_ms": round(st[1] / st[0], 3),
                "max_ms": st[2], "example": redact(_s(st[3])), "slowest": redact(_s(st[4])),
                "share_pct": round(100.0 * st[1] / total_ms, 2) if total_ms else 0.0}

    by_total = sorted(p.queries.items(), key=lambda kv: (-kv[1][1], kv[0]))[:top_n]
    by_count = sorted(p.queries.items(), key=lambda kv: (-kv[1][0], kv[0]))[:top_n]
    by_max = sorted(p.queries.items(), key=lambda kv: (-kv[1][2], kv[0]))[:top_n]
    errors: list[dict[str, Any]] = []
    by_code: Counter[str] = Counter()
    for (level, code, msg), c in sorted(p.errors.items(), key=lambda kv: (-kv[1], kv[0])):
        by_code[code] += c
        if len(errors) < top_n * 2:
            errors.append({"level": level, "sqlstate": code, "message": redact(_s(msg)), "count": c,
                           "statements": [redact(_s(x)) for _, x in p.error_examples.get((level, code, msg), [])]})
            if p.raised.get((level, code, msg)):  # (its SQLSTATE: P0001 unless the RAISE named another)
                errors[-1]["raised_by_plpgsql"] = p.raised[(level, code, msg)]
                errors[-1]["likely_sqlstate"] = RAISE_DEFAULT_SQLSTATE.get(level, "P0001")
    waits = sorted(p.lock_wait_ms)
    return {
        "lines": p.lines, "entries": p.entries, "unparsed": p.unparsed,
        "unparsed_pct": round(100.0 * p.unparsed / p.lines, 4) if p.lines else 0.0,
        "unparsed_samples": [redact(x) for x in p.unparsed_samples], "bytes_read": p.bytes_read,
        "translated_durations": p.translated, "translated_lines": p.translated_lines,
        "first": _s(p.first) or None, "last": _s(p.last) or None,
        "statements": {"count": total_n, "total_ms": round(total_ms, 3), "fingerprints": len(p.queries),
                       "percentiles": percentiles(hist.items(), (50, 90, 95, 99)),
                       "by_kind": dict(top(kinds, len(kinds))), "prepare_bind": {"count": p.prepare_count,
                                                                              "total_ms": round(p.prepare_ms, 3)},
                       "unpaired": {"count": sum(p.orphans.values()),
                                    **{why: p.orphans.get(why, 0) for why in ORPHAN_REASONS},
                                    "counted_as": _s(UNPAIRED_FP),
                                    "slowest": [{"ms": ms, "pid": _s(pid), "time": _s(ts) or None}
                                                for ms, ts, pid in p.orphan_slowest]},
                       # statements logged (log_statement) whose duration was not: counted apart, their time unknown
                       # (None, never 0) — in none of the figures above
                       "untimed": {"count": sum(u[0] for u in p.untimed.values()), "fingerprints": len(p.untimed),
                                   "by_kind": dict(top(untimed_kinds, len(untimed_kinds))),
                                   # by their "statement:" line's hour, database and user (as by_hour, by_database,
                                   # by_user are the timed statements')
                                   "by_hour": {_s(k) + ":00": v for k, v in sorted(p.untimed_by_hour.items())},
                                   "by_database": {_s(k) or "(none)": v for k, v in top(p.untimed_by_db, top_n)},
                                   "by_user": {_s(k) or "(none)": v for k, v in top(p.untimed_by_user, top_n)},
                                   "most_frequent": [
                                       {"fingerprint": _s(fp), "count": u[0], "total_ms": None, "mean_ms": None,
                                        "max_ms": None, "example": redact(_s(u[1]))}
                                       for fp, u in sorted(p.untimed.items(), key=lambda kv: (-kv[1][0], kv[0]))[:top_n]]}},
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
                  "failures": p.lock_failures,
                  "failed_queries": [{"fingerprint": _s(k), "count": v}
                                     for k, v in top(p.lock_failure_queries, top_n)]},
        "deadlocks": {"count": p.deadlocks, "details": [redact(x) for x in p.deadlock_details]},
        "temp_files": {"count": p.temp_files, "total_bytes": p.temp_bytes, "max_bytes": p.temp_max,
                       "queries": [{"fingerprint": _s(k), "count": v, "bytes": p.temp_query_bytes[k]}
                                   for k, v in top(p.temp_queries, top_n)]},
        "checkpoints": {"count": p.checkpoints, "restartpoints": p.restartpoints, "reasons": {_s(k): v for k, v in top(p.checkpoint_reasons, 10**6)},
                        "buffers": p.checkpoint_buffers, "write_s": round(p.checkpoint_write_s, 3),
                        "sync_s": round(p.checkpoint_sync_s, 3), "total_s": round(p.checkpoint_total_s, 3),
                        "max_s": p.checkpoint_max_s, "distance_kb": p.checkpoint_distance_kb,
                        "too_frequent_warnings": p.checkpoint_warnings,
                        "min_seconds_apart": p.checkpoint_min_apart_s or None},
        "autovacuum": {"vacuums": p.autovacuum, "analyzes": p.autoanalyze},
        "connections": p.connections,
        **({"syslog_other": {"lines": p.syslog_skipped, "idents": dict(p.syslog_idents.most_common(10))}}
           if p.syslog_skipped else {}),
    }
