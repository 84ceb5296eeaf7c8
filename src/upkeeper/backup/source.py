"""Where a backup's data came from: a primary, or a replica and how far behind its primary it was.

A replica that has lost its primary still answers and still backs up, but what it holds is its data as of the
moment the link went down: such a backup is stored (stale data beats none when the primary is gone), and the run
says so — a ``backup.stale_source`` warning — and the manifest records it (``source``), so that ``backups show``
and verify reports tell a stale backup from a current one.

A backup role may not be allowed to read what tells (PostgreSQL: pg_stat_wal_receiver's status needs
pg_read_all_stats; Redis: INFO replication needs +info): the backup is stored all the same, the manifest records
what was not visible (``unchecked``) and the statement that grants it (``grant``), never a guessed state, and
the run warns (``backup.source_unchecked``) with that statement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from upkeeper.core.task import Finding, Severity
from upkeeper.fmt import human_bytes, human_duration

STALE_SOURCE = "backup.stale_source"
SOURCE_UNCHECKED = "backup.source_unchecked"
MANIFEST_KEY = "source"  # in a manifest's details (postgres / redis)

#: the description of both backup tasks' max_replica_lag option
MAX_REPLICA_LAG_DESCRIPTION = (
    "a backup taken from a replica (a Redis replica, a PostgreSQL standby) warns (backup.stale_source) when the "
    "replica's data is more than this behind its primary — Redis: master_last_io_seconds_ago; PostgreSQL: "
    "now() - pg_last_xact_replay_timestamp() while WAL it received is not replayed yet, 0 when all received WAL is "
    "replayed (so an idle primary is no lag) — and always when it is not connected to its primary (Redis "
    "master_link_status not up, PostgreSQL pg_stat_wal_receiver not streaming): its data is then as old as the "
    "lost link, however fresh it looks.  The backup is stored either way, and its manifest records the replica's "
    "role, link and lag (source).  Source: postgres_exporter's alert PostgresReplicationLaggingMore1Hour "
    "(pg_replication_lag > 1 h, computed so: its queries.yaml) for the lag; Netdata's redis_master_link_down "
    "(any time down) for the link.  A backup role that may not read this (PostgreSQL: pg_read_all_stats; Redis: "
    "+info) warns backup.source_unchecked with the GRANT / ACL rule to add")


@dataclass
class SourceState:
    """The backed-up server's replication role and, for a replica, its link to its primary and its lag.
    ``unknown`` (a role, a link): the backup's user may not read it — ``unchecked`` says what, ``grant`` how to
    allow it."""

    role: Literal["primary", "replica", "unknown"]
    primary: str | None = None  # host:port of the primary, when known
    link: Literal["up", "down", "unknown"] | None = None  # a replica's link to its primary
    link_status: str | None = None  # as the server says it: master_link_status, pg_stat_wal_receiver.status
    link_down_seconds: float | None = None  # Redis: master_link_down_since_seconds
    lag_seconds: float | None = None  # how far behind its primary, while linked
    lag_bytes: float | None = None  # PostgreSQL: WAL received and not yet replayed
    last_replay_seconds: float | None = None  # PostgreSQL: age of the newest transaction replayed
    unchecked: str | None = None  # what the backup's user may not read, and so was not checked
    grant: str | None = None  # the statement (GRANT, ACL SETUSER) that lets it

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": self.role}
        if self.unchecked:
            d.update(unchecked=self.unchecked, grant=self.grant)
        if self.role == "replica":
            d.update(primary=self.primary, link=self.link, link_status=self.link_status,
                     link_down_seconds=self.link_down_seconds, lag_seconds=_round(self.lag_seconds),
                     lag_bytes=self.lag_bytes, last_replay_seconds=_round(self.last_replay_seconds))
            d = {k: v for k, v in d.items() if v is not None}
        return d

    @classmethod
    def from_dict(cls, d: Any) -> SourceState | None:
        """The record of a manifest; None when there is none (an older upkeeper) or it is not one."""
        if not isinstance(d, dict) or d.get("role") not in ("primary", "replica", "unknown"):
            return None
        def num(k: str) -> float | None:
            v = d.get(k)
            return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

        def text(k: str) -> str | None:
            v = d.get(k)
            return v if isinstance(v, str) else None

        link = d.get("link") if d.get("link") in ("up", "down", "unknown") else None
        if d["role"] == "replica" and link is None:
            link = "down"  # as an older upkeeper meant it: anything but up
        return cls(role=d["role"], primary=text("primary"), link=link, link_status=text("link_status"),
                   link_down_seconds=num("link_down_seconds"), lag_seconds=num("lag_seconds"),
                   lag_bytes=num("lag_bytes"), last_replay_seconds=num("last_replay_seconds"),
                   unchecked=text("unchecked"), grant=text("grant"))

    def stale(self, max_lag: float) -> bool:
        """A replica seen cut off from its primary, or seen more than ``max_lag`` seconds behind it."""
        return self.role == "replica" and (
            self.link == "down" or (self.lag_seconds is not None and self.lag_seconds > max_lag))

    def describe(self) -> str:
        """One line: "the primary", or the replica, its primary, its link and lag; what could not be read."""
        if self.role == "primary":
            return "a primary"
        if self.role == "unknown":
            return f"a server whose replication role could not be read ({self.unchecked or 'not visible'})"
        of = f"a replica of {self.primary}" if self.primary else "a replica (its primary unknown)"
        if self.link == "unknown":
            text = f"{of}, its link to it NOT CHECKED ({self.unchecked or 'not visible'})"
            if self.lag_seconds is not None:
                text += f", {human_duration(self.lag_seconds)} behind"
        elif self.link != "up":
            status = f" ({self.link_status})" if self.link_status and self.link_status != "down" else ""
            since = (f" for {human_duration(self.link_down_seconds)}" if self.link_down_seconds is not None
                     and self.link_down_seconds >= 0 else "")
            text = f"{of}, NOT connected to it{status}{since}"
        else:
            text = f"{of}, connected"
            if self.lag_seconds is not None:
                text += f", {human_duration(self.lag_seconds)} behind"
        if self.lag_bytes:
            text += f", {human_bytes(self.lag_bytes)} of WAL received and not replayed"
        if self.last_replay_seconds is not None and self.link != "up":
            text += (f"; the newest transaction it holds was committed {human_duration(self.last_replay_seconds)} "
                     "before the backup")
        return text


def _round(v: float | None) -> float | None:
    return round(v, 1) if v is not None else None


def unchecked_source_finding(subject: str, state: SourceState, kind: str) -> Finding | None:
    """A warning when the backup's user could not read whether the server is a replica, or a replica's link to
    its primary, so that the stale-source check did not run in full; None when it did."""
    if not state.unchecked:
        return None
    what = ("whether it is a replica cut off from its primary" if state.role == "unknown"
            else "whether this replica is still connected to its primary")
    lag = (" (its lag was checked)" if state.role == "replica" and state.lag_seconds is not None else "")
    return Finding(SOURCE_UNCHECKED, Severity.WARNING, subject,
                   f"backed up from {kind} {subject}; could not check {what}{lag}: {state.unchecked}. The backup "
                   "is stored; a backup of a replica that lost its primary would not be told from a current one",
                   f"Try: {state.grant}" if state.grant else "Try: let the backup's user read the replication state",
                   value=state.unchecked, data=state.to_dict())


def stale_source_finding(subject: str, state: SourceState, max_lag: float, kind: str) -> Finding | None:
    """A warning when a backup was taken from a replica cut off from its primary or more than ``max_lag``
    seconds behind it; None otherwise.  ``kind``: "Redis" or "PostgreSQL"."""
    if not state.stale(max_lag):
        return None
    if state.link == "down":
        why = "has lost its primary: the backup holds the data it had when the link went down, not the primary's"
        fix = (f"bring the link back (is the primary {state.primary or ''} up and reachable? read the replica's "
               "log), or back up the primary; if the primary is gone for good, promote this replica "
               + ("(REPLICAOF NO ONE)" if kind == "Redis" else "(pg_promote())"))
    else:
        why = f"is more than max_replica_lag ({human_duration(max_lag)}) behind its primary"
        fix = ("check the replica's load and the network, and whether replay is paused or delayed "
               "(recovery_min_apply_delay, pg_wal_replay_pause); or back up the primary")
    value: float | str = (state.lag_seconds if state.link != "down" and state.lag_seconds is not None
                          else state.link_down_seconds if state.link_down_seconds is not None
                          else state.link_status or "down")
    return Finding(STALE_SOURCE, Severity.WARNING, subject,
                   f"backed up from {kind} {subject}, {state.describe()}: it {why}",
                   fix, value=value, threshold=max_lag, data=state.to_dict())
