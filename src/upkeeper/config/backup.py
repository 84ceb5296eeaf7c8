"""The ``backup:`` section: encryption, default storages, compression and retention for every backup job."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    SecretStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from upkeeper.config.types import Duration, FileSecrets, StrictModel

if TYPE_CHECKING:
    from upkeeper.config.models import Config

AGE_RECIPIENT = re.compile(r"^age1[02-9ac-hj-np-z]{58}$")
_SPAN_PART = re.compile(r"\s*(\d+)\s*([a-z])\s*")
_SPAN_UNITS = {"y": "years", "m": "months", "w": "weeks", "d": "days", "h": "hours"}
KEEP_WITHIN_HINT = ("Try: restic's form, e.g. '14d', '6m' (six months), '1y6m' or '1y2m3d4h' — units y, m (months), "
                    "w, d, h")


@dataclass(frozen=True)
class CalendarSpan:
    """restic's ``--keep-within`` duration: years, months, days and hours, counted back on the calendar
    (``1m`` before 31 March is 3 March, as Go's ``AddDate`` normalises 31 February), hours as elapsed time."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    def __bool__(self) -> bool:
        return any((self.years, self.months, self.days, self.hours))

    def __str__(self) -> str:
        parts = zip((self.years, self.months, self.days, self.hours), "ymdh", strict=True)
        return "".join(f"{n}{u}" for n, u in parts if n) or "0h"

    def before(self, t: datetime, tz: tzinfo) -> datetime | None:
        """``t`` minus this span, the calendar part in ``tz``; None when that is before year 1."""
        local = t.astimezone(tz)
        month0 = local.month - 1 - self.months
        year = local.year - self.years + month0 // 12
        try:
            day = date(year, month0 % 12 + 1, 1) + timedelta(days=local.day - 1 - self.days)
            shifted = local.replace(year=day.year, month=day.month, day=day.day)
            return shifted.astimezone(UTC) - timedelta(hours=self.hours)
        except (ValueError, OverflowError):
            return None


def parse_keep_within(value: Any) -> CalendarSpan:
    """``1y2m3d4h`` as restic reads it (``m`` is months), plus ``w`` for weeks; whole numbers, each unit once."""
    if isinstance(value, CalendarSpan):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a duration such as '30d' or '1y6m', got {value!r}. {KEEP_WITHIN_HINT}")
    text, pos, found = value.strip().lower(), 0, dict.fromkeys(_SPAN_UNITS.values(), 0)
    seen: list[str] = []
    while pos < len(text):
        m = _SPAN_PART.match(text, pos)
        if m is None or m.group(2) not in _SPAN_UNITS:
            raise ValueError(f"cannot read {value!r} as restic's keep-within duration "
                             f"(at {text[pos:].strip()!r}). {KEEP_WITHIN_HINT}")
        unit = _SPAN_UNITS[m.group(2)]
        if unit in seen:
            raise ValueError(f"unit {m.group(2)!r} appears twice in {value!r}. {KEEP_WITHIN_HINT}")
        seen.append(unit)
        found[unit] = int(m.group(1))
        pos = m.end()
    if found["years"] > 9999:
        raise ValueError(f"{value!r} is too long (at most 9999 years)")
    return CalendarSpan(found["years"], found["months"], found["weeks"] * 7 + found["days"], found["hours"])


KeepWithin = Annotated[
    CalendarSpan,
    BeforeValidator(parse_keep_within),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\s*(\d+\s*[ymwdhYMWDH]\s*)+$",
                    "description": "restic duration: '14d', '6m' (months), '1y2m3d4h'; units y, m, w, d, h"}),
]


class RetentionPolicy(StrictModel):
    """Grandfather-father-son retention with restic's semantics.

    Each ``keep_*`` rule keeps the newest backup of each of the newest N hours/days/ISO weeks/months/years
    that have a backup (counts overlap: one backup can satisfy several rules); ``-1`` means unlimited,
    ``0`` switches the rule off.  A rule with counts to spare also keeps the oldest backup, as restic 0.17+
    does.  Only complete backups count; the newest complete backup is never deleted.  With every rule off
    (all ``0`` and no ``keep_within``) nothing is deleted at all (restic refuses such a policy).
    """

    keep_last: int = Field(0, ge=-1, description="keep the N newest backups. Source: restic --keep-last")
    keep_hourly: int = Field(0, ge=-1, description="newest backup of each of the last N hours. Source: restic")
    keep_daily: int = Field(14, ge=-1, description="newest backup of each of the last N days. "
                            "Source: upkeeper default (GFS: two weeks of dailies)")
    keep_weekly: int = Field(4, ge=-1, description="newest backup of each of the last N ISO weeks. "
                             "Source: upkeeper default (GFS: a month of weeklies)")
    keep_monthly: int = Field(12, ge=-1, description="newest backup of each of the last N months. "
                              "Source: upkeeper default (GFS: a year of monthlies)")
    keep_yearly: int = Field(0, ge=-1, description="newest backup of each of the last N years. Source: restic")
    keep_within: KeepWithin | None = Field(
        None, description="keep every backup younger than this, measured back on the calendar from the newest "
        "backup not dated in the future, in restic's form: '14d', '6m' (m is months, as in restic), '1y2m3d4h'; "
        "units y, m, w, d, h. Source: restic --keep-within")
    timezone: str | None = Field(None, description="timezone that decides where days, weeks … begin "
                                 "(default: the config's timezone). Source: upkeeper (not set by default)")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str | None) -> str | None:
        # checked here, not after a backup was stored: a bad name would fail retention of every run
        if v is not None:
            from upkeeper.core.schedule import ScheduleError, validate_timezone

            try:
                validate_timezone(v)
            except ScheduleError as exc:
                raise ValueError(f"{exc.args[0]}" + (f" ({exc.hint})" if exc.hint else "")) from None
        return v

    def is_empty(self) -> bool:
        return not any((self.keep_last, self.keep_hourly, self.keep_daily, self.keep_weekly, self.keep_monthly,
                        self.keep_yearly)) and not self.keep_within


#: redis.backup's default: a week of dailies (Redis data is usually rebuildable; RDBs are big).
REDIS_RETENTION = RetentionPolicy(keep_daily=7, keep_weekly=0, keep_monthly=0)


class EncryptionSettings(FileSecrets):
    """age encryption: to X25519 recipients (``age1…`` public keys) or with a passphrase."""

    secret_fields = ("passphrase",)

    recipients: list[str] = Field(default_factory=list, description="age X25519 public keys (age1…) that can "
                                  "decrypt the backups; give several so that losing one key loses nothing. "
                                  "Source: upkeeper (not set by default)")
    recipients_file: str | None = Field(None, description="file with one age public key per line "
                                        "(as 'age -R' reads it). Source: upkeeper (not set by default)")
    passphrase: SecretStr | None = Field(None, description="encrypt with this passphrase instead of keys "
                                         "(age scrypt mode; slower, one secret to keep). "
                                         "Source: upkeeper (not set by default)")
    passphrase_file: str | None = Field(None, description="file whose content is the passphrase. "
            "Source: upkeeper (not set by default)")
    identity_file: str | list[str] | None = Field(
        None, description="age identity (private key) file used by verify and restore, or a list of them (after "
        "a key rotation: the new key and the old ones that still open older backups; one file may also hold "
        "several keys, as 'age -i' reads it); keep it off the backup host if you can, and give it only where "
        "test restores run. Source: upkeeper (not set by default)")

    @field_validator("recipients")
    @classmethod
    def _valid_recipients(cls, v: list[str]) -> list[str]:
        for r in v:
            if r.strip().upper().startswith("AGE-SECRET-KEY-"):
                raise ValueError("an age secret key (AGE-SECRET-KEY-1…) is given where its public key belongs: "
                                 "put its public key here ('age-keygen -y KEYFILE' prints it), and keep the secret "
                                 "key out of the config (identity_file, on the hosts that restore)")
            if not AGE_RECIPIENT.match(r.strip()):
                raise ValueError(f"{r!r} is not an age X25519 public key (age1… , 62 characters); "
                                 "create one with 'age-keygen'")
        return [r.strip() for r in v]

    @model_validator(mode="after")
    def _one_mode(self) -> EncryptionSettings:
        has_keys = bool(self.recipients or self.recipients_file)
        if has_keys and self.passphrase is not None:
            raise ValueError("give recipients (age public keys) or a passphrase, not both")
        if not has_keys and self.passphrase is None:
            raise ValueError("encryption needs 'recipients' (age public keys), 'recipients_file' or "
                             "'passphrase_file'; write 'encryption: none' to store backups unencrypted")
        if self.passphrase is not None and not self.passphrase.get_secret_value():
            # age would make up a passphrase of its own, show it on its terminal and encrypt with it
            raise ValueError("the passphrase is empty" + (f" (passphrase_file {self.passphrase_file} holds "
                             "nothing)" if self.passphrase_file else "") + "; put the passphrase in it, or use "
                             "'recipients' (age public keys)")
        return self

    @property
    def identity_files(self) -> list[str]:
        """Every configured identity file (``identity_file`` may be one path or a list)."""
        if self.identity_file is None:
            return []
        return [self.identity_file] if isinstance(self.identity_file, str) else list(self.identity_file)

    @property
    def mode(self) -> Literal["x25519", "passphrase"]:
        return "passphrase" if self.passphrase is not None else "x25519"


class BackupSettings(StrictModel):
    """Settings shared by every backup job (postgres.backup, files.backup, redis.backup, backup.verify)."""

    encryption: EncryptionSettings | Literal["none"] | None = Field(
        None, description="age encryption for every backup object; 'none' stores them unencrypted, which is "
        "refused for remote (s3, sftp) storages unless written explicitly. Default: unencrypted, local only. "
        "Source: upkeeper (not set by default)")
    storages: list[str] | None = Field(
        None, description="names of entries under 'storages' every backup goes to (default: all of them). "
                "Source: upkeeper (not set by default)")
    compression_level: int = Field(3, ge=1, le=19, description="zstd level. Source: zstd's default level 3")
    compression_threads: int = Field(
        0, ge=0, le=256, description="zstd worker threads; 0 = all cores. Source: zstd -T0")
    retention: RetentionPolicy = Field(default_factory=RetentionPolicy,
                                       description="default retention (see 'backup -> retention'). "
                                               "Source: see its own options")
    incomplete_after: Duration = Field(
        default=timedelta(hours=24),
        description="a backup set without a manifest, untouched for this long and without a fresh lease of its "
        "writer (refreshed every 10 minutes while the run is alive), is a leftover of a crashed run and is "
        "deleted. Source: upkeeper default (no backup runs 24 h)")
    work_dir: str | None = Field(
        None, description="directory for the temporary files of directory-format dumps, Redis RDB checks, "
        "files.backup's SQLite snapshots, verification and `backups restore` (default: the system temp dir, $TMPDIR "
        "else /tmp). Source: upkeeper (not set by default)")

    @property
    def unencrypted_explicit(self) -> bool:
        return self.encryption == "none"

    def encryption_settings(self) -> EncryptionSettings | None:
        return self.encryption if isinstance(self.encryption, EncryptionSettings) else None


UNENCRYPTED_REMOTE_HINT = ("Try: set backup -> encryption -> recipients (age public keys from 'age-keygen'), "
                           "or write 'encryption: none' under 'backup' to accept unencrypted copies")


def unencrypted_remote(config: Config, names: Sequence[str]) -> list[str]:
    """The remote (non-local) storages among ``names`` that backups would reach unencrypted because
    ``backup.encryption`` is not configured at all (``encryption: none`` written out accepts that)."""
    if config.backup.encryption is not None:
        return []
    return [n for n in names if n in config.storages and config.storages[n].kind != "local"]


def safe_component(name: str) -> str:
    """A database or set name as one key component of a backup's storage path (no slashes, no dot-only names).

    Here, not in :mod:`upkeeper.backup.manifest` (which re-exports it), because validating a files.backup job's
    ``set`` needs it and the CLI validates every job without importing the backup modules."""
    out = re.sub(r"[^A-Za-z0-9_.@+=-]", "_", name)
    return out if out.strip(".") else "_" + out
