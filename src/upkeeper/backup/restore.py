"""Getting a set back: fetch objects (checked, decrypted, decompressed) and restore them with pg_restore."""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import pwd
import queue
import re
import shutil
import stat
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from upkeeper import lazy
from upkeeper.backup import pg
from upkeeper.backup.crypto import decrypt_argv, identity_listed
from upkeeper.backup.files import archived_xattr, member_xattrs
from upkeeper.backup.manifest import MANIFEST, Manifest, on_storage, read_manifest, set_prefix
from upkeeper.backup.pipeline import ChecksumMismatch, KeyRejected, ObjectRecord, fault_pause, read_object
from upkeeper.backup.workdir import work_dir
from upkeeper.config.backup import BackupSettings
from upkeeper.config.targets import PostgresTarget
from upkeeper.core import proc
from upkeeper.errors import BackupError, SetupError, StorageError, UpkeeperError
from upkeeper.storage import Storage

if TYPE_CHECKING:
    import psycopg
else:
    psycopg = lazy.module("psycopg")

__all__ = ["work_dir"]  # re-exported: the CLI's restore uses it from here

log = logging.getLogger(__name__)

#: written into a files restore's destination while entries are moved into it, removed once all are there:
#: a restore killed half-way leaves it, naming the backup (:meth:`FilesRestore.move_into_place`)
INCOMPLETE = ".upkeeper-restore-incomplete"


@dataclass
class Located:
    """A complete set and the storage we read it from."""

    manifest: Manifest
    storage: Storage


def locate(storages: Sequence[Storage], target: str, database: str, backup_id: str,
           prefer: str | None = None) -> Located:
    """Read a set's manifest from the first storage that has it (``prefer`` first)."""
    ordered = sorted(storages, key=lambda s: s.name != prefer)
    errors = []
    transient = True  # every storage failed for a passing reason (network): nothing is known of the set
    found = False  # a manifest is there but could not be read
    for s in ordered:
        if prefer and s.name != prefer:
            continue
        try:
            if s.stat(set_prefix(target, database, backup_id) + MANIFEST) is None:
                errors.append(f"{s.name}: no manifest")
                transient = False
                continue
            found = True
            return Located(read_manifest(s, set_prefix(target, database, backup_id)), s)
        except UpkeeperError as exc:
            errors.append(on_storage(s.name, exc.message))
            transient = transient and isinstance(exc, StorageError) and not exc.permanent
    detail = "; ".join(errors) or "no storage"
    if found:
        raise SetUnreadable(f"{MANIFEST} of backup {backup_id} cannot be read ({detail})",
                            "Try: verify or restore a copy on another storage, or an older backup",
                            transient=transient)
    raise SetUnreadable(f"backup {backup_id} not found ({detail})",
                        "Try: 'upkeeper backups sync' then 'upkeeper backups list'", transient=transient and bool(errors))


class SetUnreadable(BackupError):
    """No storage gave a readable manifest for the set; ``transient`` when they all failed for a passing
    reason (unreachable), which says nothing about the set itself."""

    object_name = MANIFEST

    def __init__(self, message: str, hint: str | None = None, *, transient: bool = False) -> None:
        super().__init__(message, hint)
        self.transient = transient


#: what says that one storage's copy of a set is bad or out of reach (an object corrupt or missing there, the
#: storage down, its manifest.json unreadable or changed), not the backup itself: another copy may be good
COPY_FAULTS: tuple[type[UpkeeperError], ...] = (ChecksumMismatch, StorageError)


class Fetcher:
    """Reads objects of one set with the configured decryption key.

    With ``fallback`` storages (a restore that may read any copy), an object that cannot be read from the copy
    in use (:data:`COPY_FAULTS`) is read from the next of them whose manifest.json is the same, byte for byte;
    the copies given up on are in ``copy_faults``.  Only the methods that can start over do so (``to_file``,
    ``to_bytes``, ``check_only``); ``write_to`` streams into its consumer, whose caller starts over with
    :meth:`next_copy`.  Verification reads one copy, without fallback: it judges that copy.
    """

    def __init__(self, located: Located, settings: BackupSettings, fallback: Sequence[Storage] = (),
                 copy_faults: Sequence[str] = ()) -> None:
        self.located = located
        self.settings = settings
        #: is our identity among the set's recipients (None: not known, or not looked at yet)
        self._identity_listed: bool | None = None
        self._identity_checked = False
        self._fallback = [s for s in fallback if s.name != located.storage.name]
        #: the copies given up on, "storage: why"
        self.copy_faults: list[str] = list(copy_faults)
        #: the copy fault that stopped the last :meth:`write_to`
        self.stream_fault: UpkeeperError | None = None

    @property
    def can_fall_back(self) -> bool:
        """Is there a storage left to read a copy from when the one in use fails?"""
        return bool(self._fallback)

    def next_copy(self, exc: UpkeeperError) -> bool:
        """Give up on the copy in use because of ``exc``, for the next fallback storage whose copy has the same
        manifest.json.  False when none is left."""
        self.copy_faults.append(on_storage(self.located.storage.name, exc.message))
        m = self.located.manifest
        while self._fallback:
            other = self._fallback.pop(0)
            try:
                found = locate([other], m.target, m.database, m.id)
            except UpkeeperError as err:
                self.copy_faults.append(on_storage(other.name, err.message))
                continue
            if found.manifest.sha256 != m.sha256:
                self.copy_faults.append(f"{other.name}: its {MANIFEST} is not the one of "
                                        f"{self.located.storage.name} (SHA-256 differs)")
                continue
            log.warning("backup %s: %s; reading from storage %s instead", m.id, self.copy_faults[-1], other.name)
            self.located = found
            return True
        return False

    def _any_copy(self, rec: ObjectRecord, read: Any) -> Any:
        """``read()``, from the next copy while the one in use fails it with a copy fault (when there are
        fallbacks); the error names every copy tried when none was good."""
        while True:
            try:
                return read()
            except COPY_FAULTS as exc:
                if not self._fallback and not self.copy_faults:
                    raise  # one copy only: its own error, as it was
                if not self.next_copy(exc):
                    raise BackupError(f"object {rec.name} of backup {self.located.manifest.id}: no storage has a "
                                      "good copy: " + "; ".join(self.copy_faults),
                                      "Try: restore an older backup ('upkeeper backups list')") from None

    def _decrypt(self, rec: ObjectRecord) -> tuple[list[str] | None, str | None]:
        if rec.encryption == "none":
            return None, None
        enc = self.settings.encryption_settings()
        argv = decrypt_argv(enc, rec.encryption)
        if rec.encryption == "age-x25519" and not self._identity_checked:
            # before reading a byte: a key that is not among the recipients cannot check the set at all
            self._identity_listed = identity_listed(enc, self.located.manifest.encryption, self.located.manifest.id)
            self._identity_checked = True
        return argv

    def _read(self, rec: ObjectRecord, out: Any, argv: list[str] | None, pw: str | None) -> int:
        """read_object, with age rejecting the key judged: the object's bytes matched their SHA-256, so a
        passphrase that does not open them, or an identity not known to be a recipient, is this host's setup
        (:class:`SetupError`); an identity that is a recipient but cannot open the header means the header
        is corrupt (a verdict on the backup)."""
        try:
            return read_object(self.located.storage, self.key(rec), rec, out, decrypt_argv=argv, passphrase=pw)
        except KeyRejected as exc:
            enc = self.settings.encryption_settings()
            if rec.encryption == "age-scrypt":
                where = f"passphrase_file {enc.passphrase_file}" if enc and enc.passphrase_file else "passphrase"
                raise SetupError(
                    f"object {rec.name}: the configured passphrase ({where}) does not decrypt it, and its bytes "
                    "match the manifest's SHA-256: the backup was made with another passphrase",
                    "Try: set backup -> encryption -> passphrase_file to the passphrase in use when the backup "
                    "was made") from None
            if self._identity_listed:
                raise BackupError(f"{exc.message} — identity_file holds one of the backup's recipients, so the "
                                  "object's age header is corrupt") from None
            ident = ", ".join(enc.identity_files) if enc else None
            raise SetupError(f"{exc.message} — identity_file {ident} does not open this backup's age header",
                             "Try: set backup -> encryption -> identity_file to the private key of one of the "
                             "recipients in the backup's manifest.json") from None
        except BackupError as exc:
            # age could not read an identity file (not a key, a mangled one): before it looked at the object,
            # whose bytes matched their SHA-256 — this host's setup, not the backup
            enc = self.settings.encryption_settings()
            for ident in enc.identity_files if enc and argv is not None and pw is None else []:
                said = f'reading "{Path(ident).expanduser()}": '
                if isinstance(exc, ChecksumMismatch) or said not in exc.message:
                    continue
                detail = exc.message.split(said, 1)[1].split(" age: report ", 1)[0]
                raise SetupError(f"identity_file {ident}: age cannot read it ({detail}), so it cannot decrypt "
                                 f"object {rec.name} — which says nothing about the backup",
                                 "Try: set backup -> encryption -> identity_file to an age identity file (the "
                                 "private key age-keygen wrote, 'AGE-SECRET-KEY-1…') of one of the recipients in "
                                 "the backup's manifest.json") from None
            raise

    def key(self, rec: ObjectRecord) -> str:
        return self.located.manifest.prefix + rec.name

    def to_file(self, rec: ObjectRecord, path: Path, *, durable: bool = True) -> int:
        """The object's plaintext at ``path``, which appears only once size and SHA-256 checked out.

        It is written under a temporary name beside ``path`` and renamed at the end, so a corrupt
        object or a failed decryption never leaves a half-written file there, nor destroys one
        that was there before (``backups restore … --to FILE --force``).  ``durable``: flushed to disk
        (fsync) before the rename; not for a work file read once and deleted (the archive a restore or
        verify reads: its fsync only made the restore wait for the disk).
        """
        argv, pw = self._decrypt(rec)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.upkeeper-partial-{os.getpid()}")

        def read() -> int:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                n = self._read(rec, fh, argv, pw)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            return n

        try:
            n: int = self._any_copy(rec, read)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return n

    def to_bytes(self, rec: ObjectRecord) -> bytes:
        argv, pw = self._decrypt(rec)

        def read() -> bytes:
            buf = bytearray()
            self._read(rec, buf.extend, argv, pw)
            return bytes(buf)

        data: bytes = self._any_copy(rec, read)
        return data

    def write_to(self, rec: ObjectRecord, out: Any) -> int:
        """Stream the object into ``out``; no fallback (``out`` has the bytes read so far), but a copy fault is
        kept in ``stream_fault`` for the caller to start over with :meth:`next_copy`."""
        argv, pw = self._decrypt(rec)
        try:
            return self._read(rec, out, argv, pw)
        except COPY_FAULTS as exc:
            self.stream_fault = exc
            raise

    def check_only(self, rec: ObjectRecord) -> int:
        """Size, SHA-256, decryption and decompression, discarding the plaintext."""
        argv, pw = self._decrypt(rec)
        n: int = self._any_copy(rec, lambda: self._read(rec, lambda b: None, argv, pw))
        return n


@dataclass
class PgArchive:
    """A fetched PostgreSQL set: the path pg_restore reads (file or directory) and the globals SQL."""

    path: Path
    format: str
    globals_sql: bytes | None


def fetch_pg_archive(fetcher: Fetcher, into: Path) -> PgArchive:
    """The set's archive fetched into the work directory ``into`` (not flushed to disk: read once, then deleted)."""
    m = fetcher.located.manifest
    fmt = str(m.details.get("format", "custom"))
    globals_sql = None
    path = into / "dump"
    for rec in m.objects:
        if rec.role == "globals":
            globals_sql = fetcher.to_bytes(rec)
        elif rec.role == "database":
            fetcher.to_file(rec, path, durable=False)
        elif rec.role == "database-dir":
            # "<db>.dir/<file>.zst[.age]" → dump/<file>
            inner = rec.name.split("/", 1)[1]
            inner = re.sub(r"(\.zst)?(\.age)?$", "", inner)
            fetcher.to_file(rec, path / inner, durable=False)
        else:
            fetcher.check_only(rec)
    if not path.exists():
        raise BackupError(f"backup {m.id} has no database dump object")
    return PgArchive(path, fmt, globals_sql)


def check_restore_version(target: PostgresTarget, manifest: Manifest) -> None:
    """pg_restore reads no archive of a newer pg_dump (major) than itself ("unsupported version (1.15) in file
    header"): refuse up front, naming both versions — a problem of this host, not of the backup."""
    made_by = str(manifest.details.get("pg_dump_version") or "")
    major = re.match(r"(\d+)", made_by)
    if not major:
        return
    path = pg.tool(target, "pg_restore")
    ver, num = pg.tool_version(path)
    if num // 10000 < int(major.group(1)):
        raise SetupError(
            f"backup {manifest.id} was made by pg_dump {made_by}; this host's pg_restore {ver} ({path}) is older "
            "and cannot read its archive",
            f"Try: install the PostgreSQL {major.group(1)} (or newer) client tools and point bin_dir of the "
            f"target restored into ({target.display()}) at them, or verify/restore on a host that has them")


def source_server_major(manifest: Manifest) -> tuple[str, int] | None:
    """The version of the server the backup was taken from, as its manifest records it ("16.4", 16), or None
    (an old manifest that does not record it)."""
    num = manifest.details.get("server_version_num")
    ver = str(manifest.details.get("server_version") or "")
    if isinstance(num, int) and num > 0:
        return ver or str(num // 10000), num // 10000
    major = re.match(r"(\d+)", ver)
    return (ver, int(major.group(1))) if major else None


def older_server(manifest: Manifest, server_num: int) -> tuple[str, int] | None:
    """The source server's (version, major) when the server restored into (``server_num``, as
    ``server_version_num``) runs an older major version than the one the backup was taken from, else None.
    PostgreSQL does not support loading a dump into an older major version: it may use syntax or features
    that one lacks."""
    source = source_server_major(manifest)
    if source is None or server_num // 10000 >= source[1]:
        return None
    return source


def pg_restore_list(target: PostgresTarget, archive: PgArchive, *, empty_ok: bool = False) -> int:
    """``pg_restore --list``: the archive's table of contents must be readable, and hold entries unless
    ``empty_ok`` (the dump of a database without any object, such as a fresh ``postgres``).  Returns its entry
    count."""
    res = proc.run([pg.tool(target, "pg_restore"), "--list", str(archive.path)], check=False, timeout=600)
    pg.check_stage(res, "reading the archive's table of contents")
    entries = [ln for ln in res.text.splitlines() if ln and not ln.startswith(";")]
    if not entries and not empty_ok:
        raise BackupError("pg_restore --list shows an empty archive")
    return len(entries)


def pg_restore(target: PostgresTarget, archive: PgArchive, dbname: str, *, jobs: int = 2,
               no_owner: bool = True, options: str | None = None) -> float:
    """Restore into an existing empty database, stopping on the first error; ``options``: the sessions' libpq
    options (:func:`pg.scratch_restore_options`).  Returns seconds taken."""
    argv = [pg.tool(target, "pg_restore"), "--exit-on-error", f"--jobs={max(1, jobs)}", "--no-password",
            "--dbname", dbname]
    if no_owner:
        argv += ["--no-owner", "--no-privileges"]
    argv.append(str(archive.path))
    t0 = time.monotonic()
    res = proc.run(argv, extra_env=pg.with_options(target.libpq_env(dbname), options), check=False, timeout=None)
    check_restore(res, target, dbname)
    return time.monotonic() - t0


# The database's own entries, which pg_restore emits only with --create (that is, into the database's original
# name): its owner (in the DATABASE entry, after CREATE DATABASE), COMMENT, ACL (GRANT/REVOKE CONNECT …) and
# properties (ALTER DATABASE … SET, ALTER ROLE … IN DATABASE … SET).
_DATABASE_ENTRY = re.compile(r"^\d+; \d+ \d+ (DATABASE|COMMENT - DATABASE|ACL - DATABASE|DATABASE PROPERTIES) ")


# SQL as pg_dump writes it, token by token: what lies in a string literal (a comment's text, a setting's value) or
# a quoted identifier is never taken for a keyword or a name.
_SQL_TOKEN = re.compile(r"""
   (?P<space>\s+)
  |(?P<comment>--[^\n]*|/\*.*?\*/)
  |(?P<literal>[eE]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|\$(?P<tag>[A-Za-z_\x80-\U0010ffff][\w\x80-\U0010ffff]*)?\$.*?\$(?P=tag)\$)
  |(?P<ident>"(?:[^"]|"")*")
  |(?P<word>[\w\x80-\U0010ffff][\w$\x80-\U0010ffff]*)
  |(?P<end>;)
  |(?P<other>[^'"])
""", re.S | re.X)


@dataclass(frozen=True)
class SqlToken:
    kind: str  # word (a keyword or a name as written), ident (a quoted name), literal, other
    text: str
    at: int  # where it starts in its statement's text


@dataclass(frozen=True)
class SqlStatement:
    """One statement of a script (with its ending ``;``), or one psql meta-command line (``\\connect``)."""

    text: str
    tokens: tuple[SqlToken, ...]

    @property
    def meta(self) -> bool:
        return self.text.startswith("\\")

    def words(self, n: int) -> tuple[str, ...]:
        """The first ``n`` tokens' texts."""
        return tuple(t.text for t in self.tokens[:n])


def sql_statements(script: str) -> list[SqlStatement]:
    """``script`` (what pg_restore writes) split into statements, each with its tokens; comments left out.
    Raises :class:`~upkeeper.errors.BackupError` on a string or quoted name left open."""
    out: list[SqlStatement] = []
    tokens: list[SqlToken] = []
    begin = None  # where the statement's first token starts
    pos = 0
    while pos < len(script):
        if begin is None and script.startswith("\\", pos):  # a psql meta-command: the rest of its line
            eol = script.find("\n", pos)
            eol = len(script) if eol < 0 else eol
            out.append(SqlStatement(script[pos:eol], ()))
            pos = eol
            continue
        m = _SQL_TOKEN.match(script, pos)
        if m is None:
            raise BackupError(f"cannot read the archive's SQL: a string or quoted name left open: "
                              f"{script[pos:pos + 100]!r}")
        kind = m.lastgroup
        pos = m.end()
        if kind in ("space", "comment"):
            continue
        if begin is None:
            begin = m.start()
        if kind == "end":
            out.append(SqlStatement(script[begin:pos], tuple(tokens)))
            tokens, begin = [], None
            continue
        assert kind is not None
        tokens.append(SqlToken(kind, m.group(), m.start() - begin))
    if begin is not None:
        out.append(SqlStatement(script[begin:], tuple(tokens)))
    return out


def sql_name(token: SqlToken) -> str:
    """The name a word or quoted identifier token stands for (an unquoted one as written: pg_dump writes names
    that need no quotes in lower case)."""
    return token.text[1:-1].replace('""', '"') if token.kind == "ident" else token.text


def _named_database(stmt: SqlStatement, ident: str) -> list[int]:
    """The indexes of the tokens of ``stmt`` that name database ``ident`` (as written): the name after the
    keyword DATABASE, never a literal's text."""
    return [i for i in range(1, len(stmt.tokens))
            if stmt.tokens[i].text == ident and stmt.tokens[i - 1].kind == "word" and stmt.tokens[i - 1].text == "DATABASE"]


def _renamed(stmt: SqlStatement, at: list[int], quoted: str) -> SqlStatement:
    """``stmt`` with the tokens at ``at`` (names) replaced by ``quoted``, its literals untouched."""
    text, pos, tokens, shift = [], 0, [], 0
    for i, tok in enumerate(stmt.tokens):
        if i in at:
            text.append(stmt.text[pos:tok.at] + quoted)
            pos = tok.at + len(tok.text)
            tokens.append(SqlToken("ident", quoted, tok.at + shift))
            shift += len(quoted) - len(tok.text)
        else:
            tokens.append(SqlToken(tok.kind, tok.text, tok.at + shift))
    text.append(stmt.text[pos:])
    return SqlStatement("".join(text), tuple(tokens))


@dataclass
class DatabaseEntries:
    """The dump's entries for the database itself, written for the name it is restored under."""

    #: its CREATE DATABASE (encoding, locale provider, collation and ctype, ICU locale, tablespace, as backed up),
    #: or None for a dump without it
    create: str | None
    #: the statements that give it the backed-up database's owner, comment, privileges and settings, for the name
    #: restored into
    statements: list[SqlStatement] = field(default_factory=list)
    #: the session settings the script runs first (standard_conforming_strings …), for those statements' literals
    prologue: list[SqlStatement] = field(default_factory=list)

    @property
    def settings(self) -> str:
        """The SQL of :attr:`statements` ("" when none)."""
        if not self.statements:
            return ""
        return "\n".join(s.text for s in self.prologue + self.statements) + "\n"

    def session_settings(self, role: str) -> tuple[list[SqlStatement], list[str]]:
        """What a session of ``role`` in the database gets: the database's own settings (``ALTER DATABASE … SET``)
        and ``role``'s in it (``ALTER ROLE role IN DATABASE … SET``) — not its owner, comment, privileges, connection
        limit or template flag.  Returns (those statements, the other roles that have settings in it)."""
        mine: list[SqlStatement] = []
        others: list[str] = []
        for stmt in self.statements:
            w = stmt.tokens
            if stmt.words(2) == ("ALTER", "DATABASE") and len(w) > 3 and w[3].text in ("SET", "RESET"):
                mine.append(stmt)
            elif (stmt.words(2) == ("ALTER", "ROLE") and len(w) > 6 and stmt.words(5)[3:] == ("IN", "DATABASE")
                  and w[6].text in ("SET", "RESET")):
                if sql_name(w[2]) == role:
                    mine.append(stmt)
                elif sql_name(w[2]) not in others:
                    others.append(sql_name(w[2]))
        return mine, others

    @staticmethod
    def setting_name(stmt: SqlStatement) -> str:
        """"search_path" or "statement_timeout of role app" for a :meth:`session_settings` statement."""
        w = stmt.tokens
        if stmt.words(2) == ("ALTER", "ROLE"):
            return f"{sql_name(w[7]) if len(w) > 7 else '?'} of role {sql_name(w[2])}"
        return sql_name(w[4]) if len(w) > 4 else "?"


def _globals_role(stmt: SqlStatement) -> str | None:
    """The role a statement of ``pg_dumpall --globals-only`` sets up: ``CREATE ROLE r``, ``ALTER ROLE r …`` (its
    attributes, password, settings), ``COMMENT ON ROLE r``, ``SECURITY LABEL … ON ROLE r``, and a membership
    ``GRANT g TO r``; None for the others (tablespaces, a tablespace's or parameter's privileges, SET)."""
    w = stmt.tokens
    if stmt.words(2) in (("CREATE", "ROLE"), ("ALTER", "ROLE")) and len(w) > 2:
        return sql_name(w[2])
    words = [t.text if t.kind == "word" else None for t in w]
    if stmt.words(1) in (("COMMENT",), ("SECURITY",)):
        at = next((i for i in range(1, len(w) - 1) if words[i - 1] == "ON" and words[i] == "ROLE"), None)
        return sql_name(w[at + 1]) if at is not None else None
    if stmt.words(1) == ("GRANT",) and "ON" not in words and "TO" in words:
        at = words.index("TO")
        return sql_name(w[at + 1]) if at + 1 < len(w) else None
    return None


def globals_for(script: str, existing: set[str]) -> tuple[str, list[str]]:
    """``script`` (``pg_dumpall --globals-only``) without its statements about the roles in ``existing``, which are
    left as they are (their password, attributes, settings, comment and memberships); returns that SQL and those
    roles, in the script's order."""
    kept: list[str] = []
    skipped: list[str] = []
    for stmt in sql_statements(script):
        role = None if stmt.meta else _globals_role(stmt)
        if role is None or role not in existing:
            kept.append(stmt.text)
        elif role not in skipped:
            skipped.append(role)
    return "\n".join(kept) + "\n", skipped


# The dump's CREATE DATABASE as pg_restore --create writes it: the database's name as an identifier (quoted
# when it must be), then its settings.
_CREATE_DATABASE = re.compile(r'^CREATE DATABASE ("(?:[^"]|"")*"|[^ ";]+)(?= WITH |;)')


def create_database_sql(script: str, dbname: str) -> tuple[str, str] | None:
    """The first CREATE DATABASE of ``script`` (what ``pg_restore --create`` writes) rewritten to create
    ``dbname`` with the dump's settings (encoding, locale provider, collation and ctype, ICU locale, tablespace),
    and the backed-up database's name as the script writes it (an identifier, quoted when it must be); None for a
    script without one.  The dump's own CREATE DATABASE is never run: it would create the backed-up name."""
    for line in script.splitlines():
        if line.startswith("CREATE DATABASE "):
            m = _CREATE_DATABASE.match(line)
            if m is None:
                raise BackupError(f"cannot read the archive's CREATE DATABASE statement: {line[:200]}")
            quoted = '"' + dbname.replace('"', '""') + '"'
            return f"CREATE DATABASE {quoted}{line[m.end():]}", m.group(1)
    return None


def create_settings(create: str) -> str:
    """The settings of a :func:`create_database_sql` statement, for a message: "TEMPLATE = template0 ENCODING =
    'LATIN1' LOCALE_PROVIDER = libc LOCALE = 'de_DE'"."""
    return create.split(" WITH ", 1)[-1].rstrip(";")


# The comment pg_restore writes before each entry of the archive: "-- Name: app; Type: DATABASE PROPERTIES; Schema: -;
# Owner: app"; a comment's or privileges' entry names its object: "Name: DATABASE app; Type: COMMENT".
_ENTRY_HEADER = re.compile(r"^-- (?:Data for )?Name: (.*?); Type: (.*?); Schema: ", re.M)


def _database_entries_text(script: str) -> str:
    """The part of ``script`` that holds the database's own entries (its CREATE DATABASE, owner, settings,
    comment, privileges), each up to the next entry's header: the rest (a whole schema) is never parsed."""
    heads = list(_ENTRY_HEADER.finditer(script))
    if not heads:
        return script
    parts = [script[:heads[0].start()]]
    for i, head in enumerate(heads):
        name, kind = head.group(1), head.group(2)
        if kind in ("DATABASE", "DATABASE PROPERTIES") or (kind in ("COMMENT", "ACL", "SECURITY LABEL")
                                                           and name.startswith("DATABASE ")):
            parts.append(script[head.start():heads[i + 1].start() if i + 1 < len(heads) else len(script)])
    return "".join(parts)


def database_level(script: str, dbname: str, *, no_owner: bool) -> DatabaseEntries:
    """The database's own entries in ``script`` (what ``pg_restore --create`` writes: only those entries, or the
    whole schema), written for ``dbname``: its CREATE DATABASE (:func:`create_database_sql`) and every statement
    about the database itself — ``ALTER DATABASE`` (owner, settings, connection limit), ``ALTER ROLE … IN
    DATABASE … SET``, ``COMMENT ON``/``GRANT``/``REVOKE``/``SECURITY LABEL`` … ``ON DATABASE`` — with the
    backed-up name, where it names the database, replaced by ``dbname`` (never inside a literal: a comment's text
    stays as it was).  With ``no_owner`` per-role settings (roles the server may lack) are left out."""
    found = create_database_sql(script, dbname)
    if found is None:
        return DatabaseEntries(None)
    create, ident = found
    quoted = '"' + dbname.replace('"', '""') + '"'
    entries = DatabaseEntries(create)
    seen_create = False
    for stmt in sql_statements(_database_entries_text(script)):
        if stmt.meta:
            continue  # psql meta-commands (\connect, \restrict)
        if not seen_create:
            if stmt.words(2) == ("CREATE", "DATABASE"):
                seen_create = True
            elif stmt.words(1) == ("SET",) or stmt.words(3) == ("SELECT", "pg_catalog", "."):
                entries.prologue.append(stmt)
            continue
        at = _named_database(stmt, ident)
        if not at or (no_owner and stmt.words(2) == ("ALTER", "ROLE")):
            continue
        entries.statements.append(_renamed(stmt, at, quoted))
    return entries


def database_entries(target: PostgresTarget, archive: PgArchive, dbname: str, *, no_owner: bool) -> DatabaseEntries:
    """The dump's CREATE DATABASE and the SQL giving ``dbname`` (restored from ``archive``) the backed-up
    database's owner, comment, privileges and settings, written for ``dbname`` (:func:`database_level`).
    pg_restore emits them only with --create, under the dump's own name (which the manifest may not hold as is:
    it names the set with :func:`manifest.safe_component`).  With ``no_owner`` the owner, the privileges and
    per-role settings (roles the server may lack) are left out."""
    tool = pg.tool(target, "pg_restore")
    res = proc.run([tool, "--create", "--list", str(archive.path)], check=False, timeout=600)
    pg.check_stage(res, "reading the archive's table of contents")
    entries = [ln for ln in res.text.splitlines() if _DATABASE_ENTRY.match(ln)]
    if not entries:
        return DatabaseEntries(None)
    listing = archive.path.parent / "database-entries.list"
    listing.write_text("\n".join(entries) + "\n", encoding="utf-8")
    argv = [tool, "--create", "--schema-only", "--use-list", str(listing), "--file", "-"]
    if no_owner:
        argv += ["--no-owner", "--no-privileges"]
    res = proc.run([*argv, str(archive.path)], check=False, timeout=600)
    pg.check_stage(res, "reading the database's own settings from the archive")
    return database_level(res.text, dbname, no_owner=no_owner)


def apply_database_level(target: PostgresTarget, sql: str, dbname: str) -> None:
    """Run :func:`database_entries`' settings SQL in ``dbname``, stopping on the first error."""
    res = proc.run([pg.tool(target, "psql"), "--no-password", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"],
                   input=sql.encode(), extra_env=target.libpq_env(dbname), check=False, timeout=600)
    check_restore(res, target, dbname)


# What the server restored into, or its role, lacks — not what the archive holds: the same dump restores where
# the role may create what it holds and the extensions, roles and tablespaces of the backed-up server exist.
_RESTORE_SETUP_ERRORS = re.compile(
    r"ERROR:\s+(permission denied|must be superuser|must be owner of|must be member of"
    r"|could not open extension control file"
    r"|extension \"[^\"]*\" is not available|could not access file|role \"[^\"]*\" does not exist"
    r"|tablespace \"[^\"]*\" does not exist|invalid value for parameter \"default_tablespace\")")


def _lock_table_full(target: PostgresTarget, dbname: str, what: str) -> SetupError:
    """The server restored into ran out of its lock table: its setting, not the backup."""
    try:
        with pg.connect(target, dbname) as conn:
            row = conn.execute(pg.LOCK_TABLE_SQL).fetchone()
        now = f" (now {row[0]}, with max_connections {row[1]})" if row else ""
    except Exception:  # the message below is the one to give
        now = ""
    return SetupError(
        f"{what} in {dbname} on {target.display()}: the server's lock table is full (out of shared memory), "
        "which says nothing about the backup",
        f"Try: raise max_locks_per_transaction{now} on {target.display()} and restart it (the setting takes effect "
        "only at a restart), or restore where fewer sessions hold locks at the same time (for backup.verify: its "
        "scratch_target)")


def check_restore(res: proc.ProcResult, target: PostgresTarget, dbname: str) -> None:
    """pg_restore's exit code and stderr (:func:`pg.check_stage`); an error of the server restored into — a
    privilege its role lacks, an extension, role or tablespace it does not have — is this host's setup
    (:class:`SetupError`), not a fault of the backup."""
    try:
        pg.check_stage(res, f"restoring into {dbname}")
    except BackupError as exc:
        if pg.out_of_locks(res.stderr):
            raise _lock_table_full(target, dbname, "pg_restore") from exc
        limit_hint = pg.too_many_connections_hint(res.stderr)
        if limit_hint is not None:
            refused = next(ln for ln in res.stderr.splitlines() if pg.too_many_connections_hint(ln))
            raise SetupError(
                f"pg_restore could not connect to {dbname} on {target.display()}, which says nothing about the "
                f"backup: {refused[refused.find('FATAL:'):] if 'FATAL:' in refused else refused}",
                f"{limit_hint}; pg_restore opens a connection per job (the verify job's 'jobs', backups restore "
                "--jobs) besides upkeeper's own session") from exc
        setup = next((ln for ln in res.stderr.splitlines() if _RESTORE_SETUP_ERRORS.search(ln)), None)
        if setup is None:
            raise
        error = setup[setup.index("ERROR:"):]
        raise SetupError(
            f"pg_restore could not restore into {dbname} on {target.display()}, which lacks what the dump needs: "
            f"{error}",
            "Try: restore as a role that may create what the backup holds (a superuser), on a server with the "
            "backed-up server's extensions, roles (globals.sql) and tablespaces (for backup.verify: its "
            "scratch_target)") from exc


def compare_row_counts(target: PostgresTarget, dbname: str, expected: dict[str, Any], *,
                       quoted_keys: bool = True) -> list[str]:
    """Problems found comparing every table's row count with the manifest's.  Counted in one transaction,
    rolled back, in which row-level security cannot hide rows (:func:`pg.lift_forced_row_security`, batch by
    batch with the counts).
    ``quoted_keys``: the manifest's keys are :func:`pg.qualified` names; else (a manifest of an older upkeeper)
    "schema.table" unquoted."""
    problems = []
    with pg.connect(target, dbname, autocommit=False, options=pg.OWN_SESSION_OPTIONS) as conn:
        try:
            # matched with the restored tables' names made into keys the manifest's way, never split at a dot (a
            # schema or table name may hold one)
            restored = {(pg.qualified(schema, table) if quoted_keys else f"{schema}.{table}"): (schema, table, idx)
                        for schema, table, idx in pg.list_tables(conn)}
            tables = [restored[key] for key in expected if key in restored]
            counted = pg.count_rows(conn, tables, pg.lift_forced_row_security(conn, tables), parallel=True)
            got = {key: counted.get(pg.qualified(*restored[key][:2])) for key in expected if key in restored}
        except Exception as exc:
            if pg.out_of_locks(pg.pg_error(exc)):
                raise _lock_table_full(target, dbname, "counting the restored rows") from None
            return [f"counting rows: {pg.pg_error(exc)}"]
        finally:
            with contextlib.suppress(Exception):  # a lost connection: the failure above is the one to report
                conn.rollback()
    for key, n in expected.items():
        if key not in restored:
            problems.append(f"table {key}: missing from the restore, manifest says {n} rows")
        elif got.get(key) != int(n):
            problems.append(f"table {key}: {got.get(key)} rows restored, manifest says {n}")
    return problems


def compare_sequences(target: PostgresTarget, dbname: str, expected: dict[str, Any]) -> list[str]:
    """Problems found comparing the restored sequences with the states the manifest recorded (the values the dump
    holds; in older manifests, read before pg_dump read them: see postgres.backup): each must be there and not behind
    (:meth:`pg.SequenceState.behind`) — a sequence behind hands out ids the restored rows already hold."""
    with pg.connect(target, dbname, options=pg.OWN_SESSION_OPTIONS) as conn:
        try:
            got = pg.sequence_states(conn)
        except psycopg.Error as exc:
            if pg.out_of_locks(pg.pg_error(exc)):
                raise _lock_table_full(target, dbname, "reading the restored sequences") from None
            return [f"reading the restored sequences: {pg.pg_error(exc)}"]
    problems = []
    for key, d in expected.items():
        want = pg.SequenceState.from_dict(d)
        have = got.get(key)
        if have is None:
            problems.append(f"sequence {key}: missing from the restore")
        elif have.behind(want):
            problems.append(
                f"sequence {key}: restored with last_value {have.last_value} (is_called {have.is_called}), behind "
                f"the {want.last_value} (is_called {want.is_called}) the backup recorded: new rows would take ids "
                "that restored rows hold (duplicate key)")
    return problems


def count_large_objects(target: PostgresTarget, dbname: str) -> int:
    with pg.connect(target, dbname, options=pg.OWN_SESSION_OPTIONS) as conn:
        try:
            return pg.large_objects(conn)
        except psycopg.Error as exc:
            raise BackupError(f"counting the restored large objects: {pg.pg_error(exc)}") from None


def scratch_name(backup_id: str) -> str:
    return "upkeeper_verify_" + re.sub(r"[^a-z0-9]", "_", backup_id.lower())[:47]


def stream_restore(fetcher: Fetcher, rec: ObjectRecord, target: PostgresTarget, dbname: str,
                   create: Callable[[DatabaseEntries], None], *, empty_ok: bool = False,
                   options: str | None = None) -> tuple[float, int]:
    """One pass from storage into the database: SHA-256 → age → zstd → ``pg_restore`` (one job,
    ``--exit-on-error``), with ``pg_restore --list`` reading the same stream's table of contents (which must
    hold entries unless ``empty_ok``).

    The database is created by ``create``, given the dump's entries for the database itself, written for
    ``dbname`` (:func:`database_level`: its CREATE DATABASE, None for an archive without one, and its owner,
    comment, privileges and settings), once ``pg_restore --create --schema-only`` has read them from the start of
    the stream (the archive's table of contents: it reads no further); the
    stream up to there is held in memory, then restored.

    No plaintext file is written and decryption overlaps the restore.  ``options``: the restore session's libpq
    options (:func:`pg.scratch_restore_options`).  Returns (seconds, TOC entries).
    The object's checksum is verified before the restore's own result is looked at.
    """
    restore_tool = pg.tool(target, "pg_restore")
    t0 = time.monotonic()
    # the order of the finally below: a process left running is killed
    head = proc.spawn([restore_tool, "--create", "--schema-only", "--file", "-"], stdin=proc.PIPE)
    lister = proc.spawn([restore_tool, "--list"], stdin=proc.PIPE)
    restorer: proc.Spawned | None = None
    sinks: dict[str, Any] = {"head": head.stdin, "list": lister.stdin}
    script: list[bytes] = []
    listing: list[bytes] = []
    readers = [threading.Thread(target=lambda: script.append(head.stdout.read()), daemon=True),
               threading.Thread(target=lambda: listing.append(lister.stdout.read()), daemon=True)]
    for t in readers:
        t.start()
    held: list[bytes] | None = []  # the stream until the database is created
    failed: list[Exception] = []  # judged after the stream's checksum: a corrupt object is the verdict

    def feed(chunk: bytes, names: Iterable[str]) -> None:
        for name in names:
            try:
                sinks[name].write(chunk)
            except (BrokenPipeError, OSError, ValueError):
                sinks.pop(name)  # --list and the head stop after the TOC; a failed restore is judged below

    def start_restore() -> None:
        nonlocal restorer, held
        assert held is not None
        chunks, held = held, None
        if "head" in sinks:
            with contextlib.suppress(OSError):
                sinks.pop("head").close()
        res_head = head.wait(check=False)
        readers[0].join()
        pg.check_stage(res_head, "reading the database's settings from the archive")
        create(database_level(b"".join(script).decode("utf-8", "replace"), dbname, no_owner=False))
        restorer = proc.spawn([restore_tool, "--exit-on-error", "--no-password", "--no-owner", "--no-privileges",
                               "--dbname", dbname], stdin=proc.PIPE, stdout=proc.DEVNULL,
                              extra_env=pg.with_options(target.libpq_env(dbname), options))
        sinks["restore"] = proc.PacedPipe(restorer.stdin)  # (it reads 4 KiB at a time: see PacedPipe)
        for chunk in chunks:
            feed(chunk, [n for n in ("restore",) if n in sinks])

    def out(chunk: bytes) -> None:
        if failed:
            return  # read on to the end: the checksum is checked
        if held is not None:
            held.append(chunk)
        feed(chunk, list(sinks))
        if held is not None and "head" not in sinks:
            try:
                start_restore()
            except Exception as exc:
                failed.append(exc)

    try:
        fetcher.write_to(rec, out)
        if held is not None and not failed:  # the whole stream was shorter than what the head read
            try:
                start_restore()
            except Exception as exc:
                failed.append(exc)
        for fh in sinks.values():
            with contextlib.suppress(OSError):
                fh.close()
        res_list = lister.wait(check=False)
        readers[1].join()
        res_restore = restorer.wait(check=False) if restorer is not None else None
    finally:
        for sp in (head, lister, restorer):
            if sp is not None:
                sp.__exit__(None, None, None)
    pg.check_stage(res_list, "reading the archive's table of contents")
    entries = [ln for ln in b"".join(listing).decode("utf-8", "replace").splitlines()
               if ln and not ln.startswith(";")]
    if not entries and not empty_ok:
        raise BackupError("pg_restore --list shows an empty archive")
    if failed:
        raise failed[0]
    assert res_restore is not None
    check_restore(res_restore, target, dbname)
    return time.monotonic() - t0, len(entries)


def member_name(name: str) -> str:
    """A tar member's name as the manifest lists it: without leading ``./`` and a trailing ``/`` (``""`` for
    the directory ``/`` of a backup of ``/``, ``./`` or ``/`` in the archive)."""
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    return "" if name == "." else name


def listed_files(manifest: Manifest, rec: ObjectRecord) -> Iterable[dict[str, Any]]:
    """The manifest's entries (files, directories, symlinks) for the tar object ``rec`` of a files set, in the
    archive's order (a :class:`~upkeeper.backup.files.FileList`, decoded anew each time it is iterated)."""
    listed: Iterable[dict[str, Any]] = rec.extra.get("files") or manifest.details.get("archives", {}).get(
        rec.name, {}).get("files", [])
    return listed


_KINDS = {k: k for k in ("file", "dir", "symlink")}


def _member_kind(ti: tarfile.TarInfo) -> str | None:
    return ("file" if ti.isfile() else "symlink" if ti.issym() else "dir" if ti.isdir() else
            "hard link" if ti.islnk() else None)


@dataclass
class SkippedXattrs:
    """Extended attributes a restore did not set, by why: the entries (counted), the attributes' names, and
    the first entry named."""

    #: why → [entries, names, first entry]
    by_reason: dict[str, tuple[int, set[str], str]] = field(default_factory=dict)

    def note(self, entry: str, names: Iterable[str], why: str) -> None:
        n, seen, first = self.by_reason.get(why, (0, set(), entry))
        seen.update(names)
        self.by_reason[why] = (n + 1, seen, first)

    def summary(self) -> str | None:
        """One sentence a reason, for the restore's warning; None when every attribute was set."""
        if not self.by_reason:
            return None
        return "; ".join(
            f"extended attributes not restored on {n} file(s) or directories ({', '.join(sorted(names))}; e.g. "
            f"{first}): {why}" for why, (n, names, first) in self.by_reason.items())

    def to_dict(self) -> list[dict[str, Any]]:
        return [{"reason": why, "entries": n, "attributes": sorted(names), "example": first}
                for why, (n, names, first) in self.by_reason.items()]


_NOT_ROOT = ("as a user other than root only user.* attributes can be set: restore as root to keep file "
             "capabilities and ACLs")


def set_xattrs(path: str | int, attrs: dict[str, bytes], entry: str, skipped: SkippedXattrs) -> None:
    """Set ``attrs`` (as archived) on ``path`` (never through a symlink); what cannot be set is noted in
    ``skipped``.  File capabilities last (writing to the file or changing its owner clears them).  Not as root,
    only ``user.*``; a read-only file or directory of ours is made writable for the moment it takes (also as root
    without CAP_DAC_OVERRIDE)."""
    root = os.geteuid() == 0
    follow = isinstance(path, int)
    bad = [k for k in attrs if not archived_xattr(k)]
    if bad:  # (not written by files.backup)
        skipped.note(entry, bad, "files.backup does not archive these; not set")
    if not root:
        others = [k for k in attrs if archived_xattr(k) and not k.startswith("user.")]
        if others:
            skipped.note(entry, others, _NOT_ROOT)
    failed: dict[str, list[str]] = {}
    for key in sorted((k for k in attrs if archived_xattr(k) and (root or k.startswith("user."))),
                      key=lambda k: k == "security.capability"):
        try:
            try:
                os.setxattr(path, key, attrs[key], follow_symlinks=follow)
            except PermissionError:
                # not as root (or root without CAP_DAC_OVERRIDE): a read-only file or directory the restore made,
                # never a symlink (attributes are set on no symlink)
                mode = stat.S_IMODE(os.stat(path).st_mode)
                os.chmod(path, mode | stat.S_IWUSR)
                try:
                    os.setxattr(path, key, attrs[key], follow_symlinks=follow)
                finally:
                    os.chmod(path, mode)
        except OSError as exc:
            why = ("the file system here does not support them" if exc.errno == errno.ENOTSUP
                   else exc.strerror or str(exc))
            failed.setdefault(why, []).append(key)
    for why, keys in failed.items():
        skipped.note(entry, keys, why)


def restored_mode(ti: tarfile.TarInfo, *, owned: bool) -> int:
    """The mode an entry is given: as archived, without setuid/setgid when root could not set its owner (as GNU
    tar does: the entry is root's).  Not as root, setuid/setgid are kept on the user's own entries, as ``tar
    -xpf`` keeps them (a setgid directory's new files take its group); the system clears setgid where the user
    is not in the entry's group (:meth:`Owners.chmod` notes it)."""
    return ti.mode if owned else ti.mode & ~(stat.S_ISUID | stat.S_ISGID)


@dataclass
class Owners:
    """Owners and groups of a restore as root (by name where this host has the name, else by id, each name
    looked up once: tarfile reads /etc/passwd and /etc/group anew for every member), and the entries whose owner
    could not be set.  Not as root, entries are the user's own, as GNU tar makes them (--no-same-owner)."""

    ids: dict[tuple[str, str], int | None] = field(default_factory=dict)
    #: entries whose owner could not be set: count, the first one, why
    skipped: int = 0
    example: str = ""
    reasons: set[str] = field(default_factory=set)
    #: entries the system took setgid off (its user not in their group): count, the first one
    setgid_lost: int = 0
    setgid_example: str = ""

    def chmod(self, path: str | bytes | os.PathLike[str] | os.PathLike[bytes], ti: tarfile.TarInfo, *,
              owned: bool) -> None:
        """``path`` given ``ti``'s mode (:func:`restored_mode`); a setgid the system cleared (chmod does so in
        silence when the user is not in the entry's group and lacks CAP_FSETID) is noted."""
        mode = restored_mode(ti, owned=owned)
        os.chmod(path, mode)
        if mode & stat.S_ISGID and not os.lstat(path).st_mode & stat.S_ISGID:
            if not self.setgid_lost:
                self.setgid_example = ti.name
            self.setgid_lost += 1

    def setgid_summary(self) -> str | None:
        if not self.setgid_lost:
            return None
        return (f"setgid not restored on {self.setgid_lost} file(s) or directories (e.g. {self.setgid_example}): "
                "the system clears it when the user restoring is not in the entry's group; restore as root or "
                "as a member of that group, or set it again (chmod g+s)")

    def restore(self, path: str, ti: tarfile.TarInfo) -> bool:
        """``path`` (never through a symlink) given ``ti``'s owner and group; False when that is not allowed (root
        without CAP_CHOWN, an id a user namespace does not map): noted, the restore goes on."""
        if os.geteuid() != 0:
            return True
        ids = [ti.uid, ti.gid]
        for i, (kind, name) in enumerate((("u", ti.uname), ("g", ti.gname))):
            if not name:
                continue
            if (kind, name) not in self.ids:
                try:
                    self.ids[kind, name] = (pwd.getpwnam(name).pw_uid if kind == "u" else grp.getgrnam(name).gr_gid)
                except KeyError:
                    self.ids[kind, name] = None
            found = self.ids[kind, name]
            if found is not None:
                ids[i] = found
        uid, gid = ids
        try:
            os.chown(path, uid, gid, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EINVAL):
                raise
            if not self.skipped:
                self.example = ti.name
            self.skipped += 1
            self.reasons.add(exc.strerror or str(exc))
            return False
        return True

    def summary(self) -> str | None:
        if not self.skipped:
            return None
        return (f"owners and groups not restored on {self.skipped} file(s) or directories (e.g. {self.example}: "
                f"{'; '.join(sorted(self.reasons))}): they are root's, without setuid/setgid; restore as root with "
                "CAP_CHOWN (not in a user namespace that lacks their ids) to keep them")

    def to_dict(self) -> dict[str, Any]:
        return {"entries": self.skipped, "example": self.example, "reasons": sorted(self.reasons)}


class _SafeExtract:
    """The ``filter`` of :meth:`tarfile.TarFile.extractall` for a files set: only what the manifest lists, and
    nothing written outside the destination, whatever the archive holds.

    Members are extracted into ``root`` (the restore's staging directory); ``dest`` is where they are moved
    afterwards (:class:`FilesRestore`), and what it already holds (``--force``) is checked here, before anything
    is moved.  files.backup writes relative names, never ``..``, never a member under a symlink member, and only
    files, directories, symlinks and hard links (another name of a file extracted before it from the same
    archive, as the manifest's ``link`` says); anything else is refused naming the member.  This does not rest on
    tarfile's own filters (whose path checks some Python releases let be bypassed): a member is refused when a
    directory above it is a symlink in the archive, or is one in ``dest`` which the backup does not replace by a
    directory, and when ``dest`` has a directory where the member is a file or link.  Modes are kept as archived,
    setuid/setgid too (:func:`restored_mode`).
    """

    def __init__(self, object_name: str, root: Path, dest: Path, listed: Iterable[dict[str, Any]],
                 dirs: dict[str, tarfile.TarInfo], xattrs: dict[str, dict[str, bytes]] | None = None) -> None:
        self.object_name = object_name
        self.root = root
        self.dest = dest
        #: what the manifest lists and is not extracted yet, name → kind (one pass over the list; an entry
        #: leaves as its member is extracted, so the table shrinks as the restore goes)
        self.kinds: dict[str, str] = {}
        #: the files that shrank while archived, name → zero bytes to cut off (:meth:`_HoleTarFile.makefile`)
        self.padded: dict[str, int] = {}
        #: the hard links listed, name → the name they link to (a file earlier in the archive)
        self.link_to: dict[str, str] = {}
        for f in listed:
            name = member_name(str(f["path"]))
            kind = str(f.get("type", "file"))
            if f.get("link") is not None:
                kind = "hard link"
                self.link_to[name] = member_name(str(f["link"]))
            self.kinds[name] = _KINDS.get(kind, kind)  # one str for each kind, not one an entry
            if f.get("padded"):
                self.padded[name] = int(f["padded"])
        #: the files hard links are listed to, and those of them extracted so far
        self.link_targets = set(self.link_to.values())
        self.linkable: set[str] = set()
        #: the directory members of every archive of the restore so far, as extracted (shared): their owners,
        #: modes and mtimes are set once every archive is extracted (:meth:`FilesRestore.set_directory_attributes`)
        self.dirs = dirs
        #: the first components of the names extracted
        self.tops: set[str] = set()
        self.links: set[str] = set()
        #: directories above members, found to be real directories in the staging directory
        self.real_dirs: set[str] = set()
        #: symlinks' mtimes, which tarfile does not set (GNU tar does)
        self.link_mtimes: dict[str, float] = {}
        #: the extended attributes of the files and directories extracted, set once they are (shared)
        self.xattrs: dict[str, dict[str, bytes]] = {} if xattrs is None else xattrs

    def refuse(self, ti: tarfile.TarInfo, why: str, *, in_dest: bool = False) -> BackupError:
        """``in_dest``: refused for what the directory restored into holds, not for the backup."""
        hint = ("Try: move it out of the way, or restore into a new directory" if in_dest else
                "Try: verify the backup ('upkeeper backups verify ID'); restore an older one")
        return BackupError(f"object {self.object_name}: refusing member {ti.name!r}: {why}", hint)

    def __call__(self, ti: tarfile.TarInfo, _path: str) -> tarfile.TarInfo | None:
        name = member_name(ti.name)
        if not name and ti.isdir() and self.kinds.get("") == "dir":
            # the directory "/" of a backup of "/": the one restored into, which keeps its own owner and mode
            del self.kinds[""]
            return None
        parts = name.split("/")
        if not name or ti.name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise self.refuse(ti, "an absolute name or one with '..' would be written outside the directory")
        kind = _member_kind(ti)
        if kind is None:
            raise self.refuse(ti, "files backups hold only files, directories, symlinks and hard links")
        if self.kinds.pop(name, None) != kind:
            raise self.refuse(ti, f"the manifest does not list this {kind}, or the archive holds it twice")
        linkname = ti.linkname
        if kind == "hard link":
            linkname = member_name(ti.linkname)
            if self.link_to.get(name) != linkname:
                raise self.refuse(ti, f"it links to {ti.linkname!r}, the manifest says {self.link_to.get(name)!r}")
            if linkname not in self.linkable:  # (made in the private staging directory, by us: a file)
                raise self.refuse(ti, f"it links to {ti.linkname!r}, not a file extracted before it")
        self.tops.add(parts[0])
        for i in range(1, len(parts)):
            above = "/".join(parts[:i])
            if above in self.real_dirs:
                continue
            if above in self.links or (self.root / above).is_symlink():
                raise self.refuse(ti, f"{above} is a symlink: it would be written through it")
            # the staging directory is private, and a directory in it is never replaced (a member that would
            # is refused just below): checked once, not for each member below it
            self.real_dirs.add(above)
        self._check_dest(ti, parts, kind)
        target = self.root / name
        try:
            tst: os.stat_result | None = os.lstat(target)
        except FileNotFoundError:
            tst = None
        if tst is not None and not stat.S_ISDIR(tst.st_mode):
            target.unlink()  # an earlier archive's file or link: replaced, as GNU tar does, never written through
        elif tst is not None and kind != "dir":
            raise self.refuse(ti, f"{name} is a directory in another archive of the backup")
        if kind == "symlink":
            self.links.add(name)
            self.link_mtimes[name] = ti.mtime
        if kind == "file" and name in self.link_targets:
            self.linkable.add(name)
        if kind != "symlink" and ti.pax_headers:
            attrs = member_xattrs(ti)
            if attrs:
                self.xattrs[name] = attrs
            else:
                self.xattrs.pop(name, None)  # an earlier archive's, replaced
        out = ti.replace(name=name, linkname=linkname, deep=False)
        if kind == "dir":
            self.dirs[name] = out  # (a later archive's directory replaces an earlier one's attributes)
        return out

    def _check_dest(self, ti: tarfile.TarInfo, parts: list[str], kind: str) -> None:
        """What ``dest`` already holds along the member's name, looked at without following links: a link or
        file where the backup has a directory is replaced by it; a link above the member where the backup has
        no directory would be written through, and a directory where the member is a file or link cannot be
        replaced by it: both are refused."""
        for i in range(1, len(parts) + 1):
            rel = "/".join(parts[:i])
            try:
                st = os.lstat(self.dest / rel)
            except FileNotFoundError:
                return  # nothing there, nor below
            except PermissionError:  # the directory above may not be searched (an earlier restore's 0000)
                above = self.dest.joinpath(*parts[:i - 1])
                ast = os.lstat(above)
                fd = os.open(above, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    mine = _mine(f"/proc/self/fd/{fd}", ast)  # (no fchmod on O_PATH)
                finally:
                    os.close(fd)
                raise closed_dir_error(above, ast, mine=mine) from None
            if i == len(parts):
                if stat.S_ISDIR(st.st_mode) and kind != "dir":
                    raise self.refuse(ti, f"{self.dest / rel} is a directory", in_dest=True)
                return
            if stat.S_ISDIR(st.st_mode):
                continue
            if rel in self.dirs or self.kinds.get(rel) == "dir":
                return  # replaced as a whole by the backup's directory
            if stat.S_ISLNK(st.st_mode):
                raise self.refuse(ti, f"{self.dest / rel} is a symlink: it would be written through it", in_dest=True)
            raise self.refuse(ti, f"{self.dest / rel} is not a directory", in_dest=True)

    def set_xattrs(self, skipped: SkippedXattrs) -> None:
        """The extended attributes of what was extracted (after tarfile set the files' owners, modes and mtimes:
        a change of owner clears file capabilities), while directories are still ours and writable."""
        for name, attrs in self.xattrs.items():
            set_xattrs(str(self.root / name), attrs, name, skipped)

    def set_link_mtimes(self) -> None:
        """Each extracted symlink's own mtime (never its target's), as GNU tar restores it."""
        for name, mtime in self.link_mtimes.items():
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.root / name, (mtime, mtime), follow_symlinks=False)


_BLOCK = 1 << 16
_ZEROS = bytes(_BLOCK)


class _HoleTarFile(tarfile.TarFile):
    """Writes each all-zero 64 KiB block of a file as a hole: a sparse file (a VM image, /var/log/lastlog with
    large UIDs), archived with its zeros, comes back sparse instead of filling the disk."""

    #: set before extracting (:meth:`FilesRestore.extract`): the archive's filter, which knows the padded files,
    #: and the restore's owners
    guard: _SafeExtract
    owners: Owners
    #: the member whose owner could not be set just now (its mode is then set without setuid/setgid)
    _unowned: str | None = None

    # Owners, modes and mtimes: tarfile's own methods skip the mode and mtime when the owner cannot be set (root
    # without CAP_CHOWN, in a user namespace) and let any failure pass in silence; here the owner is noted and
    # skipped, the rest set or the extraction fails naming the file.  Directories get theirs once every archive
    # is extracted (FilesRestore.set_directory_attributes): one made read-only (0555, 0000) could not take
    # another archive's members, a link's mtime, an attribute or a padded file's end before.

    def chown(self, tarinfo: tarfile.TarInfo, targetpath: str | bytes | os.PathLike[str] | os.PathLike[bytes],
              numeric_owner: bool) -> None:
        if tarinfo.isdir():
            return
        self._unowned = None if self.owners.restore(os.fsdecode(targetpath), tarinfo) else tarinfo.name

    def chmod(self, tarinfo: tarfile.TarInfo, targetpath: str | bytes | os.PathLike[str] | os.PathLike[bytes]
              ) -> None:
        if tarinfo.isdir():
            return
        self.owners.chmod(targetpath, tarinfo, owned=self._unowned != tarinfo.name)

    def utime(self, tarinfo: tarfile.TarInfo, targetpath: str | bytes | os.PathLike[str] | os.PathLike[bytes]
              ) -> None:
        if tarinfo.isdir():
            return
        os.utime(targetpath, (tarinfo.mtime, tarinfo.mtime))

    def makelink(self, tarinfo: tarfile.TarInfo, targetpath: str | bytes | os.PathLike[str] | os.PathLike[bytes]
                 ) -> None:
        if not tarinfo.islnk():
            super().makelink(tarinfo, targetpath)
            return
        self._hard_link(tarinfo, targetpath)

    def makelink_with_filter(self, tarinfo: tarfile.TarInfo, targetpath: Any, *args: Any) -> None:
        """(Python releases with tarfile's 2025 link fixes call this instead of :meth:`makelink`.)"""
        if not tarinfo.islnk():
            super().makelink_with_filter(tarinfo, targetpath, *args)
            return
        self._hard_link(tarinfo, targetpath)

    @staticmethod
    def _hard_link(tarinfo: tarfile.TarInfo, targetpath: Any) -> None:
        """Another name of a file already extracted (the filter checked it is one, extracted from this archive):
        a link to it, never a copy read again from the stream (which cannot seek back).  A file that has as
        many names as its file system allows (EMLINK) gets a copy instead."""
        source = tarinfo._link_target  # type: ignore[attr-defined]
        try:
            os.link(source, targetpath, follow_symlinks=False)
        except OSError as exc:
            if exc.errno != errno.EMLINK:
                raise
            log.warning("%s: a copy of %s, which has as many hard links as its file system allows",
                        tarinfo.name, tarinfo.linkname)
            shutil.copyfile(source, targetpath, follow_symlinks=False)

    def makefile(self, tarinfo: tarfile.TarInfo, targetpath: str | bytes | os.PathLike[str] | os.PathLike[bytes]
                 ) -> None:
        """(A file that shrank while it was archived is stored padded with zeros, its manifest line says how many
        bytes: they are not written, so the restored file is what was read.)"""
        source = self.fileobj
        assert source is not None
        source.seek(tarinfo.offset_data)
        pad = self.guard.padded.get(tarinfo.name, 0)
        with open(targetpath, "wb") as target:
            left = max(0, tarinfo.size - pad)
            hole = False
            while left:
                buf = source.read(min(_BLOCK, left))
                if not buf:
                    raise tarfile.ReadError("unexpected end of data")
                hole = buf == _ZEROS[:len(buf)]
                if hole:
                    target.seek(len(buf), os.SEEK_CUR)
                else:
                    target.write(buf)
                left -= len(buf)
            if hole or pad:
                target.truncate()  # the file's size, as it ends in a hole


class _Cancelled(Exception):
    """The reader of a :class:`_Pipe` gave up: its writer stops."""


class _Pipe:
    """Chunks written by one thread (the object's plaintext, as :func:`read_object` produces it), read as a
    file by another (:mod:`tarfile` in stream mode); at most ``depth`` chunks are in flight."""

    def __init__(self, depth: int = 8) -> None:
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._cancelled = threading.Event()
        self._buf = memoryview(b"")
        self._eof = False

    def _put(self, item: bytes | None) -> None:
        while not self._cancelled.is_set():
            try:
                self._q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise _Cancelled()

    def write(self, chunk: bytes) -> None:
        if chunk:
            self._put(bytes(chunk))

    def close(self) -> None:
        """The end of the stream (the writer is done, or failed)."""
        with contextlib.suppress(_Cancelled):
            self._put(None)

    def cancel(self) -> None:
        self._cancelled.set()

    def read(self, n: int = -1) -> bytes:
        while not self._buf:
            if self._eof:
                return b""
            try:
                item = self._q.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is None:
                self._eof = True
                return b""
            self._buf = memoryview(item)
        size = len(self._buf) if n < 0 else min(n, len(self._buf))
        out = bytes(self._buf[:size])
        self._buf = self._buf[size:]
        return out


def _owner_name(uid: int, *, mine: bool = True) -> str:
    """``uid`` as 'name (uid N)'; ``mine=False`` for one this process was found not to have power over, though
    it has its uid: an id its user namespace does not map (shown as the overflow uid, as this process is)."""
    if not mine and uid == os.geteuid():
        return f"another user (shown as uid {uid}, as this user is: an id this user namespace does not map)"
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _mine(fd: int | str, st: os.stat_result) -> bool:
    """Whether this process may change the mode of the directory ``fd`` (its owner, or root with
    CAP_FOWNER).  Tried, not guessed from ``st_uid``: in a user namespace that does not map the ids, another
    user's directory has the same (overflow) uid as this process.  The mode is set to what it is: nothing
    changes but the ctime."""
    if st.st_uid != os.geteuid() and os.geteuid() != 0:
        return False
    try:
        os.chmod(fd, stat.S_IMODE(st.st_mode))
    except OSError:
        return False
    return True


def _entry_mine(dst: int, name: str, st: os.stat_result) -> bool:
    """Whether this process owns the entry ``name`` of the directory ``dst`` (or has CAP_FOWNER), as a sticky
    directory asks before it lets the entry be replaced: tried by setting its times to what they are (a file or a
    link alike, never followed), which only they may; nothing changes but the ctime."""
    if st.st_uid != os.geteuid() and os.geteuid() != 0:
        return False
    try:
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst, follow_symlinks=False)
    except OSError:
        return False
    return True


def os_error_hint(exc: BaseException, dest: Path) -> str:
    """The hint for an OSError of a files restore, fitting its cause."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"Try: free space (or quota) on the file system of {dest}: the restored files need it once"
    if code in (errno.EACCES, errno.EPERM):
        return f"Try: restore as a user who may write where the error says, or into a new directory (not {dest})"
    if code == errno.EROFS:
        return "Try: remount it read-write, or restore into a new directory elsewhere"
    if code == errno.EXDEV:
        return "Try: restore into a new directory, then copy what you need into place"
    return f"Try: check that {dest} is writable and has free space for the restored files"


def closed_dir_error(path: Path, st: os.stat_result, *, mine: bool) -> BackupError:
    """A directory already in the restored-into one that this user may not look into (an earlier restore's
    0000 directory): what is wrong, and what to do."""
    mode = stat.S_IMODE(st.st_mode)
    owner = _owner_name(st.st_uid, mine=mine)
    if mine:
        hint = f"Try: chmod u+rwx {path} (or move it away), or restore into a new directory"
    else:
        hint = (f"Try: restore as {owner} or root, or into a new directory (a user other than its owner cannot "
                "make it readable)")
    return BackupError(f"{path} is a directory of mode {mode:04o} owned by {owner}: the restore cannot look into "
                       "it (it needs read and search permission there)", hint)


def _staged_and_present(src: int, dst: int, name: str) -> tuple[os.stat_result, os.stat_result | None]:
    """``name`` as staged in directory ``src``, and as present in ``dst`` (None: not there); links not followed."""
    st = os.stat(name, dir_fd=src, follow_symlinks=False)
    try:
        return st, os.stat(name, dir_fd=dst, follow_symlinks=False)
    except FileNotFoundError:
        return st, None


def mount_of(fd: int) -> int | None:
    """The mount id of what ``fd`` is open on (/proc/self/fdinfo), or None where not known."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as fh:
            for line in fh:
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _rename_entry(name: str, src: int, dst: int, st: os.stat_result) -> None:
    """``name`` renamed from the directory ``src`` into ``dst``.  A directory moved to another one has its '..'
    changed, which takes write permission on it, not as root: one extracted read-only (0555, 0000) is made
    writable for the moment it takes (it is ours: the restore made it)."""
    try:
        os.rename(name, name, src_dir_fd=src, dst_dir_fd=dst)
        return
    except PermissionError:
        if not stat.S_ISDIR(st.st_mode) or st.st_mode & stat.S_IWUSR:
            raise
    mode = stat.S_IMODE(st.st_mode)
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_PATH, dir_fd=src)
    try:
        inode = f"/proc/self/fd/{fd}"  # (chmod of the directory itself, whatever its name: no fchmod on O_PATH)
        os.chmod(inode, mode | stat.S_IWUSR)
        try:
            os.rename(name, name, src_dir_fd=src, dst_dir_fd=dst)
        finally:
            os.chmod(inode, mode)
    finally:
        os.close(fd)


class FilesRestore:
    """A files set restored into ``dest`` through ``staging``, a private directory (:func:`staging_dir`) on the
    same file system: beside ``dest`` when ``dest`` is new or empty, else inside it.

    Each tar object streams from storage through SHA-256, age and zstd into :mod:`tarfile`'s stream mode,
    which extracts it into ``staging/tree`` (nothing else is written: no plaintext temp file, no second copy).
    Only once every object was read to its end, its size and SHA-256 matched the manifest and every member
    passed the checks (:class:`_SafeExtract`), the entries are put in place: :meth:`rename_into_place` makes
    ``staging/tree`` ``dest`` in one rename (all or nothing, whatever kills the process); :meth:`move_into_place`
    renames the entries into an existing ``dest`` — a file or link already there is replaced (never written
    through), a directory there gets the backup's entries — once :meth:`_preflight` found nothing that would
    stop it half-way, with :data:`INCOMPLETE` in ``dest`` until the last one is moved, so a restore killed half-way is plain to see and the next restore of the backup completes it.
    Until then ``dest`` is not touched; ``touched`` says whether the move began.
    """

    def __init__(self, fetcher: Fetcher, staging: Path, dest: Path) -> None:
        self.fetcher = fetcher
        self.staging = staging
        #: where the archives are extracted: a directory of its own in the staging one, which keeps its lock and
        #: marker (so a restore killed just after the rename into place leaves no '.upkeeper-work-dir' in dest)
        self.tree = staging / "tree"
        self.tree.mkdir(mode=0o700)
        self.dest = dest
        #: the directory members extracted, name → as extracted (their owners, modes and mtimes set at the end)
        self.dirs: dict[str, tarfile.TarInfo] = {}
        self._dirs_set = False
        self.tops: set[str] = set()
        self.touched = False
        #: the extended attributes that could not be set (not restoring as root, a file system without them)
        self.skipped_xattrs = SkippedXattrs()
        #: as root, the owners that could not be set (no CAP_CHOWN, ids a user namespace does not map)
        self.owners = Owners()

    def extract(self, rec: ObjectRecord) -> int:
        """Stream the tar object ``rec`` into the staging directory.  Returns its member count."""
        if not hasattr(tarfile, "data_filter"):  # (Python 3.11.4, 3.10.12…: extractall(filter=))
            raise SetupError(f"this Python ({sys.version.split()[0]}, {sys.executable}) has no tarfile extraction "
                             "filters, which a files restore needs",
                             "Try: run upkeeper with Python 3.11.4 or newer")
        xattrs: dict[str, dict[str, bytes]] = {}
        guard = _SafeExtract(rec.name, self.tree, self.dest, listed_files(self.fetcher.located.manifest, rec),
                             self.dirs, xattrs)
        pipe = _Pipe()
        failed: list[BaseException] = []

        def fetch() -> None:
            try:
                self.fetcher.write_to(rec, pipe.write)
            except BaseException as exc:
                failed.append(exc)
            finally:
                pipe.close()

        t = threading.Thread(target=fetch, daemon=True, name="restore-fetch")
        t.start()
        try:
            try:
                with _HoleTarFile.open(fileobj=pipe, mode="r|", bufsize=_BLOCK) as tf:  # type: ignore[call-overload]
                    tf.guard, tf.owners = guard, self.owners
                    tf.extractall(self.tree, filter=guard)
                    n = len(tf.getmembers())
                while pipe.read(_BLOCK):
                    pass  # the end of the stream, where its size and SHA-256 are checked
            except (tarfile.TarError, EOFError):
                # likely a stream cut short by a failed fetch (a corrupt object, a wrong key): read on to its
                # end, where that is known, and report it first
                while pipe.read(_BLOCK):
                    pass
                t.join()
                if failed:
                    raise failed[0] from None
                raise
            except BaseException:
                pipe.cancel()  # a refused member, a full disk, Ctrl-C: the fetch stops
                t.join(timeout=10)
                raise
            t.join()
            if failed:
                raise failed[0]
            guard.set_link_mtimes()
            guard.set_xattrs(self.skipped_xattrs)
        except (OSError, tarfile.TarError, EOFError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
            raise BackupError(f"extracting {rec.name} failed: {detail}{where}", os_error_hint(exc, self.dest)) from None
        self.tops.update(guard.tops)
        return n

    def set_directory_attributes(self) -> None:
        """Once every archive is extracted (and links' mtimes and attributes are set): each directory's owner
        (as root), mtime and mode, the deepest first, as tar sets them at the end of an extraction — a read-only
        one (0555, 0000) is never written into after it gets its mode, which as a user other than root (or root
        without CAP_DAC_OVERRIDE) would fail."""
        if self._dirs_set:
            return
        self._dirs_set = True
        for name in sorted(self.dirs, reverse=True):  # 'a/b' before 'a'
            ti = self.dirs[name]
            path = os.path.join(self.tree, name)
            owned = self.owners.restore(path, ti)
            os.utime(path, (ti.mtime, ti.mtime))
            self.owners.chmod(path, ti, owned=owned)

    def rename_into_place(self) -> bool:
        """``staging/tree`` (beside ``dest``) becomes ``dest``, a new or empty directory, in one rename,
        with the mode (as root, the owner) ``dest`` has or a new directory would get.  False when the rename is
        not allowed (``dest`` is a mount point, or in a sticky directory and not ours): the entries are then
        moved into ``dest`` one by one (:meth:`move_into_place`)."""
        self.set_directory_attributes()
        try:
            old: os.stat_result | None = os.lstat(self.dest)
        except FileNotFoundError:
            old = None
        if old is not None:
            os.chmod(self.tree, stat.S_IMODE(old.st_mode))
            if os.geteuid() == 0:
                os.chown(self.tree, old.st_uid, old.st_gid)
        else:
            umask = os.umask(0o022)
            os.umask(umask)
            os.chmod(self.tree, 0o777 & ~umask)
        try:
            os.rename(self.tree, self.dest)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise BackupError(f"{self.dest} is no longer empty: something was written there during the restore",
                                  "Try: restore again (with --force to extract into what it holds)") from None
            if old is None or exc.errno not in (errno.EBUSY, errno.EPERM, errno.EACCES, errno.EXDEV):
                raise
            if os.geteuid() == 0:  # ours again first: chmod needs the owner (or CAP_FOWNER)
                os.chown(self.tree, os.geteuid(), os.getegid())
            os.chmod(self.tree, 0o700)  # its entries are moved out of it
            return False
        self.touched = True
        fault_pause("restore-renamed")  # (the crash tests: in place, the staging directory not yet removed)
        return True

    def move_into_place(self) -> None:
        """Rename what was extracted into the existing ``dest`` (see the class), between writing
        :data:`INCOMPLETE` there and removing it."""
        self.set_directory_attributes()
        src = os.open(self.tree, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            dst = os.open(self.dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                self._preflight(src, dst, sorted(self.tops), "", mount_of(src), os.fstat(src).st_dev)
                self._mark_incomplete(dst)
                try:
                    self._merge(src, dst, sorted(self.tops), "")
                except BaseException:
                    if not self.touched:
                        os.unlink(INCOMPLETE, dir_fd=dst)
                    raise
                os.unlink(INCOMPLETE, dir_fd=dst)
                os.fsync(dst)
            finally:
                os.close(dst)
        finally:
            os.close(src)

    def _preflight(self, src: int, dst: int, names: Sequence[str], prefix: str, mount: int | None,
                   dev: int) -> None:
        """What :meth:`_merge` is about to do, checked before it moves anything, in its order (so the error names
        the path it would have stopped at, and ``dest`` is as it was): every directory of ``dest`` that receives
        an entry, or loses one the backup replaces, may be written and searched by this user (or is ours and made
        so, as :meth:`_merge` does for an earlier restore's 0555 directory), is on the staging directory's mount
        (entries are renamed, never copied, so no more free space is needed), and in a sticky one the entry
        replaced is ours; a directory the backup also has can be looked into, and given the backup's mode and
        mtime (ours, or root's power).  What changes after this check (another process at work in ``dest``)
        can still stop the move half-way: :data:`INCOMPLETE` then says so."""
        here = self.dest / prefix.rstrip("/") if prefix else self.dest
        here_st = os.fstat(dst)
        checked = False
        dir_mine: bool | None = None  # (a sticky directory's: tried once, where needed)
        for name in names:
            rel = prefix + name
            st, old = _staged_and_present(src, dst, name)
            if old is not None and stat.S_ISDIR(old.st_mode) and stat.S_ISDIR(st.st_mode):
                self._preflight_dir(src, dst, name, rel, st, old, mount, dev)
                continue
            if not checked:
                checked = True
                self._check_receiving(dst, here, here_st, top=not prefix, mount=mount, dev=dev)
            if old is not None and here_st.st_mode & stat.S_ISVTX:
                # in a sticky directory an entry may be replaced by its owner, the directory's, or with
                # CAP_FOWNER: tried (its mode, its times set to what they are), not guessed from the uids, which a
                # user namespace that does not map them shows all alike
                if dir_mine is None:
                    dir_mine = _mine(dst, here_st)
                if not dir_mine and not _entry_mine(dst, name, old):
                    raise BackupError(f"{self.dest / rel} is owned by {_owner_name(old.st_uid, mine=False)}, in "
                                      f"the sticky directory {here} (owned by {_owner_name(here_st.st_uid, mine=False)}"
                                      "): this user may "
                                      "not replace it", "Try: restore as its owner or root, or into a new directory")

    def _preflight_dir(self, src: int, dst: int, name: str, rel: str, st: os.stat_result, old: os.stat_result,
                       mount: int | None, dev: int) -> None:
        """:meth:`_preflight` of the directory ``name`` that both the backup and ``dest`` have."""
        path = self.dest / rel
        try:
            sub_dst = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dst)
        except PermissionError:  # (no read permission: an earlier restore's 0000 directory)
            fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dst)
            try:
                closed_mine = _mine(f"/proc/self/fd/{fd}", old)  # (no fchmod on O_PATH)
            finally:
                os.close(fd)
            raise closed_dir_error(path, old, mine=closed_mine) from None
        try:
            mine: bool | None = None  # (tried only where needed: the try changes its ctime)
            if not os.access(".", os.X_OK, dir_fd=sub_dst):
                mine = _mine(sub_dst, old)
                if not (mine and old.st_uid == os.geteuid()):  # (_merge makes only ours searchable)
                    raise closed_dir_error(path, old, mine=mine)
            sub_src = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
            try:
                os.chmod(sub_src, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)  # (the staging's: listed, as _merge does)
                try:
                    self._preflight(sub_src, sub_dst, sorted(os.listdir(sub_src)), rel + "/", mount, dev)
                finally:
                    os.chmod(sub_src, stat.S_IMODE(st.st_mode))
            finally:
                os.close(sub_src)
            if rel in self.dirs and not (_mine(sub_dst, old) if mine is None else mine):
                owner = _owner_name(old.st_uid, mine=False)
                raise BackupError(f"{path} is owned by {owner}: this user may not give it the backup's mode and "
                                  "modification time", f"Try: restore as {owner} or root, or into a new directory")
        finally:
            os.close(sub_dst)

    def _check_receiving(self, dst: int, here: Path, st: os.stat_result, *, top: bool, mount: int | None,
                         dev: int) -> None:
        """``here`` (open as ``dst``) is about to receive entries renamed from the staging directory, and lose those
        they replace."""
        there = mount_of(dst)
        if st.st_dev != dev or (mount is not None and there is not None and there != mount):
            raise BackupError(f"{here} is on another file system (mount) than the staging directory in "
                              f"{self.staging.parent}: the restored entries are renamed into place, never copied",
                              "Try: restore into a new directory, then copy what you need into place")
        if os.access(".", os.W_OK | os.X_OK, dir_fd=dst):
            return
        if os.fstatvfs(dst).f_flag & os.ST_RDONLY:
            raise BackupError(f"{here} is on a read-only file system", "Try: remount it read-write, or restore "
                              "into a new directory elsewhere")
        if not top and st.st_mode & 0o300 != 0o300 and st.st_uid == os.geteuid() and _mine(dst, st):
            return  # an earlier restore's read-only directory: made writable while entries move in (_merge)
        mode = stat.S_IMODE(st.st_mode)
        mine = st.st_uid == os.geteuid() and _mine(dst, st)
        owner = _owner_name(st.st_uid, mine=mine)
        if mine:
            hint = f"Try: chmod u+rwx {here}, or restore into a new directory"
        else:
            hint = f"Try: restore as {owner} or root, let this user write there, or restore into a new directory"
        raise BackupError(f"{here} is not writable by this user ({_owner_name(os.geteuid())}): it is owned by "
                          f"{owner}, mode {mode:04o}", hint)

    def _copy_xattrs(self, src: int, dst: int, rel: str) -> None:
        """The backup's directory's extended attributes (as extracted into the staging directory) set on the one
        that ``dest`` already has."""
        try:
            names = [n for n in os.listxattr(src) if archived_xattr(n)]
        except OSError:
            return
        attrs = {}
        for n in names:
            with contextlib.suppress(OSError):
                attrs[n] = os.getxattr(src, n)
        if attrs:
            set_xattrs(dst, attrs, rel, self.skipped_xattrs)

    def _mark_incomplete(self, dst: int) -> None:
        """:data:`INCOMPLETE` in ``dest``, on disk before anything is moved: which backup, and how to finish."""
        m = self.fetcher.located.manifest
        text = (f"backup: {m.id}\n"
                f"An 'upkeeper backups restore' of backup {m.id} ({m.kind} {m.target}/{m.database}) into this "
                f"directory stopped while moving the restored entries into place (pid {os.getpid()}, "
                f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}): the directory holds only part of the backup.\n"
                f"Run 'upkeeper backups restore {m.id} --to {self.dest}' again to complete it; this file is "
                "removed once every entry is in place.\n")
        fd = os.open(INCOMPLETE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                     dir_fd=dst)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.fsync(dst)

    def _merge(self, src: int, dst: int, names: Sequence[str], prefix: str) -> None:
        for name in names:
            rel = prefix + name
            st, old = _staged_and_present(src, dst, name)
            if old is not None and stat.S_ISDIR(old.st_mode):
                if not stat.S_ISDIR(st.st_mode):
                    raise BackupError(f"{self.dest / rel} became a directory during the restore; the backup has a "
                                      "file or link there")
                sub_src = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
                try:
                    sub_dst = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dst)
                    try:
                        os.chmod(sub_src, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)  # its entries move out
                        opened = old.st_mode & 0o300 != 0o300 and old.st_uid == os.geteuid()
                        if opened:
                            # ours, read-only (an earlier restore's 0555): entries move in; its mode comes back
                            # (the backup's, or if the backup has no such directory, its own, even when stopped)
                            os.chmod(sub_dst, stat.S_IMODE(old.st_mode) | 0o300)
                            if rel not in self.dirs:
                                self.touched = True
                        try:
                            self._merge(sub_src, sub_dst, sorted(os.listdir(sub_src)), rel + "/")
                        except BaseException:
                            if opened and rel not in self.dirs:
                                with contextlib.suppress(OSError):
                                    os.chmod(sub_dst, stat.S_IMODE(old.st_mode))
                            raise
                        if opened and rel not in self.dirs:
                            os.chmod(sub_dst, stat.S_IMODE(old.st_mode))
                        if rel in self.dirs:  # the backup's directory: its owner, mode and mtime, as tar sets them
                            self.touched = True
                            if os.geteuid() == 0:
                                os.chown(sub_dst, st.st_uid, st.st_gid)
                            os.chmod(sub_dst, stat.S_IMODE(st.st_mode))
                            self._copy_xattrs(sub_src, sub_dst, rel)
                            os.utime(sub_dst, ns=(st.st_atime_ns, st.st_mtime_ns))
                    finally:
                        os.close(sub_dst)
                finally:
                    os.close(sub_src)
                continue
            try:
                if old is not None and stat.S_ISDIR(st.st_mode):
                    self.touched = True
                    os.unlink(name, dir_fd=dst)  # a file or link where the backup has a directory
                _rename_entry(name, src, dst, st)  # a file or link there is replaced at once
            except OSError as exc:  # (changed since _preflight): named in full, not by its last component
                raise OSError(exc.errno, exc.strerror, str(self.dest / rel)) from None
            if not self.touched:
                self.touched = True
                fault_pause("restore-moving")  # (the crash tests: one entry moved, the others not yet)
