"""age encryption and decryption as streaming subprocesses.

We measured pyrage 1.4 here: ``encrypt_io`` streams, but at ~110 MB/s (its
ChaCha20 runs without SIMD and it pulls 8 KiB reads through Python), while the
``age`` CLI encrypts at ~850 MB/s of one core — and as its own process it runs
beside zstd and pg_dump instead of competing for our GIL.  So the pipeline
pipes through ``age`` (the very tool a restore uses); pyrage is used only to
generate keys and in tests.

Passphrase mode: ``age`` reads passphrases only from a terminal, so it gets a
pseudo-terminal of its own (:mod:`pty`) on which we type the passphrase.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from upkeeper.config.backup import AGE_RECIPIENT, BackupSettings, EncryptionSettings
from upkeeper.core.proc import _StderrCollector, describe_exit, die_with_parent, widen_pipe
from upkeeper.errors import BackupError, ProcessError, SetupError


def age_binary() -> str:
    found = shutil.which("age")
    if not found:
        raise SetupError("the 'age' command is not installed", "Try: apt-get install age")
    return found


@dataclass(frozen=True)
class Encryption:
    """How objects are encrypted; ``None`` mode means stored as compressed plaintext."""

    mode: str  # "x25519" | "passphrase"
    recipients: tuple[str, ...] = ()
    passphrase: str | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return "age-x25519" if self.mode == "x25519" else "age-scrypt"

    def argv(self) -> list[str]:
        if self.mode == "passphrase":
            return [age_binary(), "--encrypt", "--passphrase"]
        argv = [age_binary(), "--encrypt"]
        for r in self.recipients:
            argv += ["-r", r]
        return argv


def load_recipients_file(path: str) -> list[str]:
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise BackupError(f"cannot read recipients_file {path}: {exc.strerror or exc}",
                          "Try: check the path under 'backup -> encryption -> recipients_file'") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("AGE-SECRET-KEY-"):
            raise BackupError(f"{path}:{n}: an age secret key (AGE-SECRET-KEY-1…), not a public key",
                              "Try: replace it with its public key, as 'age-keygen -y KEYFILE' prints it, and keep "
                              "the secret key off the backup host")
        if not AGE_RECIPIENT.match(line):
            raise BackupError(f"{path}:{n}: {line[:20]!r}… is not an age X25519 public key",
                              "Try: one 'age1…' key per line, as 'age-keygen -y' prints it")
        out.append(line)
    if not out:
        raise BackupError(f"recipients_file {path} holds no age public key", "Try: add 'age1…' lines")
    return out


def encryption_from(settings: BackupSettings) -> Encryption | None:
    enc = settings.encryption_settings()
    if enc is None:
        return None
    if enc.mode == "passphrase":
        return Encryption("passphrase", passphrase=enc.secret("passphrase"))
    recipients = list(enc.recipients)
    if enc.recipients_file:
        recipients += load_recipients_file(enc.recipients_file)
    return Encryption("x25519", tuple(dict.fromkeys(recipients)))


def decrypt_argv(enc: EncryptionSettings | None, mode: str) -> tuple[list[str], str | None]:
    """argv for ``age --decrypt`` and the passphrase to type (passphrase mode)."""
    if enc is None:
        raise SetupError("this backup is encrypted but no 'backup -> encryption' is configured",
                          "Try: configure backup.encryption with identity_file (or passphrase_file)")
    if mode == "age-scrypt":
        pw = enc.secret("passphrase")
        if not pw:
            raise SetupError("this backup is passphrase-encrypted but no passphrase is configured",
                              "Try: set backup -> encryption -> passphrase_file")
        return [age_binary(), "--decrypt"], pw
    if not enc.identity_files:
        raise SetupError("cannot decrypt: no age identity (private key) configured",
                          "Try: set backup -> encryption -> identity_file to the key made by age-keygen")
    argv = [age_binary(), "--decrypt"]
    for ident in enc.identity_files:
        if not Path(ident).expanduser().is_file():
            raise SetupError(f"identity_file {ident} does not exist",
                              "Try: check backup -> encryption -> identity_file")
        argv += ["-i", str(Path(ident).expanduser())]
    return argv, None


AGE_SECRET_KEY = re.compile(r"^AGE-SECRET-KEY-1[0-9A-Z]+$")


def identity_public_keys(path: str) -> list[str] | None:
    """The ``age1…`` public keys of the X25519 identities in an age identity file, or None when it cannot be
    told: unreadable, or holding identities of other kinds (SSH keys, plugins) that age also accepts."""
    import pyrage

    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not AGE_SECRET_KEY.match(line):
            return None
        try:
            keys.append(str(pyrage.x25519.Identity.from_str(line).to_public()))
        except Exception:
            return None
    return keys or None


def _short(key: str) -> str:
    return f"{key[:12]}…{key[-6:]}"


def identity_listed(enc: EncryptionSettings | None, recorded: dict[str, Any], backup_id: str) -> bool | None:
    """Is the configured identity among the X25519 recipients the backup's manifest records?

    True: yes (so a header age cannot open is the backup's fault); None: cannot be told (no recipients
    recorded, an identity file with SSH or plugin keys).  When it is not, raises :class:`SetupError` naming
    the identity file, its key and the backup's recipients: this host cannot check the backup, which says
    nothing about the backup itself.
    """
    recipients = [str(r) for r in recorded.get("recipients") or []]
    if enc is None or not enc.identity_files or not recipients:
        return None
    ours: list[str] = []
    for ident in enc.identity_files:
        keys = identity_public_keys(ident)
        if keys is None:
            return None
        ours += keys
    if set(ours) & set(recipients):
        return True
    files = ", ".join(enc.identity_files)
    raise SetupError(
        f"backup {backup_id} is encrypted to {', '.join(recipients)}; identity_file {files} holds "
        f"the key{'s' if len(ours) > 1 else ''} of {', '.join(ours)}, which {'are' if len(ours) > 1 else 'is'} "
        "not among them, so it cannot decrypt the backup",
        f"Try: set backup -> encryption -> identity_file to the private key of one of "
        f"{', '.join(_short(r) for r in recipients)} (age-keygen -y KEYFILE prints a key's public key)")


class AgeProcess:
    """A running ``age`` with piped stdin/stdout (and a pseudo-terminal for passphrases)."""

    def __init__(self, argv: list[str], passphrase: str | None = None, *, confirm: bool = False,
                 stdin: int | IO[bytes] | None = subprocess.PIPE, stdout: int | IO[bytes] | None = subprocess.PIPE) -> None:
        self.argv = argv
        self._pty_master: int | None = None
        self._typist: threading.Thread | None = None
        if passphrase is None:
            self.popen = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                                          preexec_fn=die_with_parent())
        else:
            master, slave = os.openpty()
            self._pty_master = master

            def become_tty_owner() -> None:  # runs in the child after setsid()
                fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

            self.popen = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                                          start_new_session=True, preexec_fn=die_with_parent(become_tty_owner),
                                          pass_fds=(slave,))
            os.close(slave)
            self._typist = threading.Thread(target=self._type, args=(master, passphrase, 2 if confirm else 1),
                                            daemon=True, name="age-passphrase")
            self._typist.start()
        for f in (self.popen.stdin, self.popen.stdout):  # the data's pipes: see widen_pipe
            widen_pipe(f)
        assert self.popen.stderr is not None
        self.collector = _StderrCollector(self.popen.stderr)
        self.collector.start()

    @staticmethod
    def _type(master: int, passphrase: str, times: int) -> None:
        """Answer age's prompts on the pseudo-terminal."""
        buf = b""
        typed = 0
        deadline = time.monotonic() + 60
        while typed < times and time.monotonic() < deadline:
            try:
                chunk = os.read(master, 1024)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            if b"passphrase" in buf.lower() and b":" in buf.split(b"passphrase")[-1]:
                os.write(master, passphrase.encode() + b"\r")
                typed += 1
                buf = b""
        # keep draining so age never blocks writing to the terminal
        with contextlib.suppress(OSError):
            while os.read(master, 1024):
                pass

    @property
    def stdin(self) -> IO[bytes]:
        assert self.popen.stdin is not None
        return self.popen.stdin

    @property
    def stdout(self) -> IO[bytes]:
        assert self.popen.stdout is not None
        return self.popen.stdout

    def kill(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()

    def wait(self) -> None:
        rc = self.popen.wait()
        self.collector.join(timeout=5)
        if self._pty_master is not None:
            with contextlib.suppress(OSError):
                os.close(self._pty_master)
            self._pty_master = None
        if rc != 0:
            tail = self.collector.text.strip().splitlines()[-3:]
            raise ProcessError(self.argv[0], f"age {describe_exit(rc)}" + (f": {' '.join(tail)}" if tail else ""),
                               returncode=rc, stderr=self.collector.text)

    def close(self) -> None:
        self.kill()
        with contextlib.suppress(Exception):
            self.popen.wait(timeout=5)
        for s in (self.popen.stdin, self.popen.stdout):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
        if self._pty_master is not None:
            with contextlib.suppress(OSError):
                os.close(self._pty_master)
            self._pty_master = None


@contextlib.contextmanager
def decrypting(argv: list[str], passphrase: str | None, stdout: IO[bytes] | int) -> Iterator[AgeProcess]:
    proc = AgeProcess(argv, passphrase, stdout=stdout)
    try:
        yield proc
    finally:
        proc.close()
