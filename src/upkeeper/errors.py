"""One exception tree for everything upkeeper expects to go wrong.

Each error carries a human message and, where useful, a ``hint`` telling the
user how to fix it.  The CLI prints ``Error: <message>`` and ``Try: <hint>``;
tracebacks appear only with ``--debug``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


def normalize_hint(hint: str | None) -> str | None:
    """Every hint reads ``Try: …``."""
    if not hint:
        return None
    hint = hint.strip()
    return hint if hint.startswith("Try:") else f"Try: {hint}"


class UpkeeperError(Exception):
    """Base of every expected error.  ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = normalize_hint(hint)

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a config file: where it is, what is wrong, how to fix it."""

    message: str
    path: tuple[str | int, ...] = ()
    file: str | None = None
    line: int | None = None
    hint: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "hint", normalize_hint(self.hint))

    @property
    def path_text(self) -> str:
        return " -> ".join(str(p) for p in self.path)

    def render(self, mask: Callable[[str], str] | None = None) -> str:
        """``file:line: path: message``.  ``mask`` (the redactor) is applied to the location and to the message
        apart: joined, a problem of a field named like a credential read as that field's value
        ('password: environment variable PGPASS is not set' printed as 'password: *** variable …')."""
        where = self.file or "<config>"
        if self.line is not None:
            where += f":{self.line}"
        text = f"{where}: "
        if self.path:
            text += f"{self.path_text}: "
        return text + self.message if mask is None else mask(text) + mask(self.message)


class ConfigError(UpkeeperError):
    """The configuration is invalid.  Carries one or more located problems."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        problems: list[ConfigProblem] | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.problems: list[ConfigProblem] = problems or []

    @classmethod
    def from_problems(cls, problems: list[ConfigProblem]) -> ConfigError:
        n = len(problems)
        msg = problems[0].render() if n == 1 else f"{n} problems in the configuration"
        return cls(msg, problems[0].hint if n == 1 else None, problems)

    def message_text(self, mask: Callable[[str], str]) -> str:
        """The message through ``mask``; a single problem's message redacted as :meth:`ConfigProblem.render`
        does it."""
        if len(self.problems) == 1 and self.message == self.problems[0].render():
            return self.problems[0].render(mask)
        return mask(self.message)


class UsageError(UpkeeperError):
    """The command line asked for something impossible (unknown job, bad flag combination)."""

    exit_code = 2


class UnknownTaskError(ConfigError):
    """A task name is not registered."""


class DuplicateTaskError(UpkeeperError):
    """Two task classes claim the same name."""


class TaskError(UpkeeperError):
    """A task could not do its work; becomes a run with status ``error`` or ``fail``."""

    def __init__(self, message: str, hint: str | None = None, *, permanent: bool = False) -> None:
        super().__init__(message, hint)
        self.permanent = permanent


class ProcessError(TaskError):
    """A subprocess exited non-zero, was killed, or timed out."""

    def __init__(
        self,
        argv0: str,
        message: str,
        *,
        returncode: int | None = None,
        stderr: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.argv0 = argv0
        self.returncode = returncode
        self.stderr = stderr


class StorageError(UpkeeperError):
    """A storage backend failed (network, permissions, space)."""

    def __init__(self, message: str, hint: str | None = None, *, permanent: bool = False) -> None:
        super().__init__(message, hint)
        self.permanent = permanent


class BackupError(UpkeeperError):
    """A backup, verification or restore failed."""


class SetupError(BackupError):
    """A backup could not be read or checked because of this host's setup — a missing key, tool or
    passphrase — not because of the backup itself.  Verification records no verdict for it."""


class ToolKilled(BackupError):
    """A tool of the pipeline (pg_restore, pg_dump, age, zstd) was killed by a signal sent from outside — SIGKILL
    (most often the OOM killer), SIGTERM, SIGINT — while it read the data: nothing is known of the data.  A backup
    fails with it; a verification records no verdict for it."""


#: the signals that stop a tool from outside, whatever the data it reads (a crash of its own, SIGSEGV or SIGABRT,
#: may be the data's doing)
KILLED_FROM_OUTSIDE = (9, 15, 2)  # SIGKILL, SIGTERM, SIGINT


class HistoryError(UpkeeperError):
    """The history database is unreachable or inconsistent."""


class LockHeld(UpkeeperError):
    """A job or target lock is held by someone else."""

    def __init__(self, name: str, holder: str) -> None:
        super().__init__(f"lock {name!r} is held by {holder}")
        self.name = name
        self.holder = holder


class NotifyError(UpkeeperError):
    """A notification could not be delivered."""

    def __init__(self, message: str, hint: str | None = None, *, permanent: bool = False) -> None:
        super().__init__(message, hint)
        self.permanent = permanent


@dataclass
class ErrorList:
    """Accumulates problems so a validator can report all of them at once."""

    problems: list[ConfigProblem] = field(default_factory=list)

    def add(self, problem: ConfigProblem) -> None:
        self.problems.append(problem)

    def raise_if_any(self) -> None:
        if self.problems:
            raise ConfigError.from_problems(self.problems)
