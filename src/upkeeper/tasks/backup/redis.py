"""redis.backup: an RDB snapshot (over the network like ``redis-cli --rdb``, or BGSAVE + copy when local),
checked with ``redis-check-rdb``, then zstd → age → storage."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from pydantic import Field

from upkeeper import lazy
from upkeeper.backup.source import (
    MANIFEST_KEY,
    MAX_REPLICA_LAG_DESCRIPTION,
    SourceState,
    stale_source_finding,
    unchecked_source_finding,
)
from upkeeper.backup.workdir import work_dir
from upkeeper.config.backup import REDIS_RETENTION, RetentionPolicy
from upkeeper.config.targets import RedisTarget
from upkeeper.config.types import Duration
from upkeeper.core import proc
from upkeeper.core.task import Result, Task, TaskContext, TaskOptions, task
from upkeeper.errors import BackupError, TaskError
from upkeeper.fmt import human_bytes
from upkeeper.tasks.backup._common import (
    Outcome,
    apply_retention,
    env_for,
    object_name,
    write_storage_problems,
)
from upkeeper.tasks.redis._conn import cli_args, client_for, connection_error, tls_relay

if TYPE_CHECKING:
    import redis

    from upkeeper.backup import pipeline, rdb, sets
    from upkeeper.backup.pipeline import ObjectUpload
    from upkeeper.backup.rdb import RdbCheck
else:
    redis = lazy.module("redis")
    # The snapshot's upload (the pipeline, the storages, redis-check-rdb) is the worker's: 'upkeeper run' imports
    # this module in the CLI for the job's options, and these modules would add ~15 ms to its start before the run
    # is sent (the worker loads them while it waits for the run: lazy.load_all)
    pipeline = lazy.module("upkeeper.backup.pipeline")
    rdb = lazy.module("upkeeper.backup.rdb")
    sets = lazy.module("upkeeper.backup.sets")

SET_NAME = "rdb"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
#: seconds a fresh RDB file's mtime (and rdb_last_save_time, whole seconds) may seem older than the BGSAVE start
CLOCK_SLACK = 2.0


class NotThisSave(Exception):
    """The RDB file at dir/dbfilename cannot be shown to be this server's BGSAVE just made."""


class BgsaveRefused(Exception):
    """The server refuses a command the BGSAVE method needs (BGSAVE, LASTSAVE, INFO): renamed or disabled
    with ``rename-command``, or not granted to the ACL user."""


def _refused(exc: BaseException) -> bool:
    import redis

    return isinstance(exc, redis.exceptions.NoPermissionError) or (
        isinstance(exc, redis.exceptions.ResponseError) and str(exc).lower().startswith("unknown command"))


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """Turn a refused command into :class:`BgsaveRefused`."""
    try:
        yield
    except Exception as exc:
        if _refused(exc):
            raise BgsaveRefused(str(exc).strip()) from None
        raise


def _key_total(keyspace: dict[str, Any]) -> int:
    return sum(int(v.get("keys", 0)) for db, v in keyspace.items() if db.startswith("db") and isinstance(v, dict))


def _close(in_file: int, on_server: int) -> bool:
    """Key counts of the RDB and of the server agree, allowing for keys written or expired meanwhile: a
    gross mismatch (1 against 1000) means the file is another server's."""
    return abs(in_file - on_server) <= max(10, max(in_file, on_server) // 4)


class RedisBackupOptions(TaskOptions):
    method: Literal["auto", "network", "bgsave"] = Field(
        "auto", description="'network': download a fresh RDB over the replication protocol (redis-cli --rdb); "
        "'bgsave': BGSAVE and copy the RDB file (server on this host); 'auto': bgsave when the RDB file is "
        "readable here and the server lets it run BGSAVE, LASTSAVE and INFO, else network. Source: upkeeper default")
    bgsave_timeout: float = Field(600, gt=0, description="seconds to wait for BGSAVE to finish, including a save "
            "already running (a replica's sync) that must end first. "
            "Source: upkeeper default")
    stall_timeout: float = Field(120, gt=0, description="seconds the network download may receive nothing while "
            "the server does not answer INFO or runs no save (it prepares the snapshot); then it fails instead of "
            "hanging (a frozen server, a network that drops everything). Source: upkeeper default")
    max_replica_lag: Duration = Field(default=timedelta(hours=1), description=MAX_REPLICA_LAG_DESCRIPTION)
    storages: list[str] | None = Field(None, description="storages to write to (default: backup.storages). "
            "Source: upkeeper (not set by default)")
    retention: RetentionPolicy = Field(
        default_factory=lambda: REDIS_RETENTION.model_copy(),
        description="retention (default: a week of dailies — Redis data is usually rebuildable. Source: the "
        "maintenance procedures' 7-day Redis retention)")


def _cli_argv(t: RedisTarget, relay: str | None = None) -> tuple[list[str], dict[str, str]]:
    cli = shutil.which("redis-cli")
    if not cli:
        raise TaskError("redis-cli not found", "Try: apt-get install redis-tools", permanent=True)
    env = {"REDISCLI_AUTH": t.password.get_secret_value()} if t.password else {}
    return [cli, "--no-auth-warning", *cli_args(t, relay=relay)], env


#: redis-cli --rdb's errors that the server's setup causes: how to fix each
_SYNC_HINTS = (
    ("NOPERM", "Try: let the ACL user {user} run the replication commands: ACL SETUSER {user} +sync +replconf "
               "— or method: bgsave on the server's host"),
    ("unknown command 'SYNC'", "Try: SYNC is renamed or disabled on the server (rename-command): method: "
                               "bgsave on the server's host"),
    ("NOMASTERLINK", "Try: this replica has lost its primary: back up the primary, or method: bgsave on this "
                     "replica's host"),
    ("BGSAVE failed", "Try: the server could not fork for the snapshot, most often for lack of memory (its log: "
                      "\"Can't save in background: fork: Cannot allocate memory\"): set vm.overcommit_memory = 1 "
                      "on its host (sysctl), or give it more memory"),
)
#: redis-cli --rdb's errors when the server ended the connection before the whole RDB arrived
_CUT = ("Error reading bulk length", "I/O Error reading RDB payload", "Unexpected EOF", "I/O error")
_CUT_HINT = ("Try: see the server's log for why it dropped the connection: a Redis before 7.0 counts this "
             "download against client-output-buffer-limit replica (the writes made during the snapshot) and "
             "disconnects it at that limit: raise it (CONFIG SET client-output-buffer-limit \"replica 0 0 0\" "
             "removes it), or method: bgsave on the server's host; otherwise its snapshot failed (BGSAVE to a "
             "dir it cannot write), repl-timeout, a CLIENT KILL or a restart")


#: the INFO sections the backup reads, one by one when the ACL user may not run INFO whole
INFO_SECTIONS = ("server", "memory", "replication", "keyspace")


def read_info(client: Any) -> tuple[dict[str, Any], list[str]]:
    """INFO, and the sections of it the ACL user may not read: when INFO is refused (NOPERM: no +info, or only
    some sections allowed, +info|keyspace), each section the backup uses is asked for on its own.  Any other
    error is raised (the first round trip: a connection error)."""
    try:
        return client.info(), []
    except redis.exceptions.NoPermissionError:
        pass
    info: dict[str, Any] = {}
    refused: list[str] = []
    for section in INFO_SECTIONS:
        try:
            info.update(client.info(section))
        except redis.exceptions.NoPermissionError:
            refused.append(section)
    return info, refused


def source_state(info: dict[str, Any], refused: list[str] | None = None, user: str = "default") -> SourceState:
    """The server's role from INFO (replication): a replica's primary, link (master_link_status), how long it
    has been down (master_link_down_since_seconds: -1 when it never linked since it started) and, linked, its
    lag (master_last_io_seconds_ago: the primary pings its replicas every repl-ping-replica-period, 10 s).
    ``refused`` holding "replication" (the ACL user ``user`` may not read it): role unknown, with the ACL rule."""
    if refused and "replication" in refused:
        return SourceState(
            "unknown", unchecked=f"ACL user {user} may not run INFO replication",
            grant=(f"ACL SETUSER {user} +info — on this server (ACL rules are not replicated), and ACL SAVE or "
                   "the config file so that it outlives a restart"))
    if info.get("role") != "slave":
        return SourceState("primary")
    host, port = info.get("master_host"), info.get("master_port")
    status = str(info.get("master_link_status") or "down")
    up = status == "up"
    down = info.get("master_link_down_since_seconds")
    io = info.get("master_last_io_seconds_ago")
    return SourceState(
        "replica", primary=f"{host}:{port}" if host else None, link="up" if up else "down", link_status=status,
        link_down_seconds=float(down) if not up and isinstance(down, int) and down >= 0 else None,
        lag_seconds=float(io) if up and isinstance(io, int) and io >= 0 else None)


def _saving(client: Any) -> bool:
    """The server answers INFO and runs a save (RDB to disk or to replicas, or an AOF rewrite)."""
    try:
        p = client.info("persistence")
    except Exception:
        return False
    return bool(p.get("rdb_bgsave_in_progress") or p.get("aof_rewrite_in_progress"))


def _download_failed(code: int, output: str, target: RedisTarget, made_by: str | None = None,
                     failed_save: bool = False) -> BackupError:
    """redis-cli --rdb failed: its error lines (not its "sending REPLCONF ..." progress), with a hint.  A
    connection the server ended mid-transfer is said so, with the likely cause: its snapshot failed
    (``failed_save``: the server's rdb_last_bgsave_status is err), or, on a Redis before 7.0 (``made_by``: the
    server's version), client-output-buffer-limit replica."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip() and not ln.startswith("sending ")]
    errors = [ln for ln in lines if "error" in ln.lower() or "fail" in ln.lower()] or lines
    text = "; ".join(dict.fromkeys(errors[-3:]))[-500:] or "no output"
    hint = next((h.format(user=target.username or "default") for key, h in _SYNC_HINTS if key in output), None)
    if hint is None and any(cut in output for cut in _CUT):
        major = made_by.split(".")[0] if made_by else ""
        why = (f" (Redis {made_by} disconnects this download at client-output-buffer-limit replica)"
               if major.isdigit() and int(major) < 7 else "")
        if failed_save:
            why = ("; its last background save failed (rdb_last_bgsave_status: err): with repl-diskless-sync no "
                   "it writes the snapshot to its dir first")
        text += f" — the server closed the connection before the whole RDB arrived{why}"
        hint = _CUT_HINT
    return BackupError(f"downloading the RDB (redis-cli --rdb) {proc.describe_exit(code)}: {text}", hint)


#: bytes of the RDB file fed to the upload between two looks at the download (stall, exit)
FOLLOW_BUDGET = 32 << 20
#: the EOF mark that ends an RDB sent by a diskless sync (repl-diskless-sync yes): redis-cli writes it into its
#: file, then truncates the file to the payload when the mark is whole
RDB_EOF_MARK_SIZE = 40


class _Follower:
    """Feeds a file that redis-cli is still writing into an upload, as it grows: the RDB is compressed and
    encrypted while the rest is still arriving, not read again once the download has ended."""

    def __init__(self, path: Path, upload: ObjectUpload) -> None:
        self.path = path
        self.upload = upload
        self.fh: BinaryIO | None = None
        self.pos = 0

    def known_size(self) -> int:
        if self.fh is None:
            try:
                self.fh = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
            except FileNotFoundError:
                return 0
        return os.fstat(self.fh.fileno()).st_size

    def pump(self, upto: int, budget: int | None = None) -> int:
        """Feed the file up to byte ``upto`` (at most ``budget`` bytes of it); the number of bytes fed."""
        if self.known_size() == 0 or self.fh is None:
            return 0
        fed = 0
        while self.pos < upto and (budget is None or fed < budget):
            chunk = os.pread(self.fh.fileno(), min(pipeline.CHUNK, upto - self.pos), self.pos)
            if not chunk:
                if budget is None:  # the end, and the file is shorter than it was
                    raise BackupError(f"the downloaded RDB shrank to {self.pos} bytes while being stored")
                break
            self.upload.write(chunk)
            self.pos += len(chunk)
            fed += len(chunk)
        return fed

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


@task
class RedisBackup(Task[RedisBackupOptions]):
    """Take an RDB snapshot, check it with redis-check-rdb and store it through zstd and age, with a manifest
    (Redis version, key counts, RDB size)."""

    name = "redis.backup"
    summary = "RDB snapshot (network or BGSAVE) → redis-check-rdb → zstd → age → storage"
    target_kinds = ("redis",)
    Options = RedisBackupOptions
    category = "backup"
    exclusive = True

    @classmethod
    def config_problems(cls, options: Any, config: Any) -> list[tuple[str, str, str]]:
        return write_storage_problems(options.storages, config) if isinstance(options, RedisBackupOptions) else []

    def run(self, ctx: TaskContext, options: RedisBackupOptions) -> Result:
        target = ctx.require_target()
        assert isinstance(target, RedisTarget)
        t0 = time.monotonic()
        rdb.require_checker()  # every snapshot is checked with it: without it, taking one would only load the server
        client = client_for(target, retries=True)
        try:
            info, refused = read_info(client)
        except Exception as exc:
            client.close()
            raise connection_error(target, exc) from None
        if refused:
            ctx.log.warning("ACL user %s may not run INFO %s: not recorded", target.username or "default",
                            ", ".join(refused))
        made_by = str(info.get("redis_version") or "") or None
        keys: dict[str, int] | None = (
            None if "keyspace" in refused  # not known: not an empty server
            else {db: int(v.get("keys", 0)) for db, v in info.items() if db.startswith("db") and isinstance(v, dict)})
        source = source_state(info, refused, target.username or "default")
        env = env_for(ctx, options.storages)
        out = Outcome("redis")
        work = contextlib.ExitStack()
        try:
            tmp = work.enter_context(work_dir(env.settings, "upkeeper-redis-"))
            method = options.method
            rdb_path: Path | None = None
            fallback: str | None = None  # why method auto downloads over the network
            if method in ("auto", "bgsave"):
                try:
                    with _refusals():
                        rdb_path = self._local_rdb(client, target)
                except BgsaveRefused as exc:
                    if method == "bgsave":
                        raise TaskError(
                            f"method 'bgsave' needs CONFIG GET dir and dbfilename (where the RDB file is), which "
                            f"the server refuses: {exc}",
                            f"Try: let the ACL user run it (ACL SETUSER {target.username or 'default'} "
                            "+config|get), or method: network (the only way when CONFIG is renamed with "
                            "rename-command)", permanent=True) from None
                    fallback = f"the server refuses CONFIG GET: {exc}"
                    ctx.log.warning("%s; downloading over the network instead", fallback)
                if rdb_path is None and method == "bgsave":
                    raise TaskError("method 'bgsave' needs the server's RDB file readable on this host",
                                    "Try: method: network", permanent=True)
                method = "bgsave" if rdb_path is not None else "network"
            writer = sets.SetWriter(env, "redis", ctx.target_name or "redis", SET_NAME)
            try:
                with contextlib.ExitStack() as stack:
                    checked: RdbCheck | None = None
                    if method == "bgsave":
                        assert rdb_path is not None
                        ctx.progress("BGSAVE", None)
                        try:
                            with _refusals():
                                fh, check_path, checked = self._bgsave_copy(client, rdb_path,
                                                                             options.bgsave_timeout, made_by)
                        except BgsaveRefused as exc:
                            if options.method == "bgsave":
                                raise BackupError(f"the server refuses a command method 'bgsave' needs: {exc}",
                                                  "Try: method: network, or let the ACL user run BGSAVE, "
                                                  "LASTSAVE and INFO (+bgsave +lastsave +info)") from None
                            fallback = f"the server refuses a command of BGSAVE + copy: {exc}"
                            ctx.log.warning("%s; downloading over the network instead", fallback)
                            method = "network"
                        except NotThisSave as exc:
                            if options.method == "bgsave":
                                raise BackupError(
                                    f"the RDB file {rdb_path} is not this server's fresh BGSAVE: {exc}",
                                    "Try: method: network (the file at CONFIG GET dir/dbfilename on this "
                                    "host belongs to another server or is stale)") from None
                            fallback = f"the RDB file {rdb_path} is not this server's fresh BGSAVE: {exc}"
                            ctx.log.warning("%s; downloading over the network instead", fallback)
                            method = "network"
                        else:
                            stack.enter_context(fh)
                    if method == "network":
                        ctx.progress("downloading RDB (redis-cli --rdb)", None)
                        dest = tmp / "dump.rdb"
                        # redis-cli cannot take a key passphrase: it then talks to a relay whose TLS
                        # connection this process makes (tls_context decrypts the key in memory)
                        with (tls_relay(target) if target.tls_key_password_file
                              else contextlib.nullcontext()) as relay:
                            argv, cenv = _cli_argv(target, relay.path if relay else None)
                            upload = writer.upload(object_name("dump.rdb", env), role="rdb")
                            follow = _Follower(dest, upload)
                            stack.callback(follow.close)
                            try:
                                self._download([*argv, "--rdb", str(dest)], cenv, dest, target,
                                               options.stall_timeout, made_by, follow)
                            except BackupError as exc:
                                upload.abort()
                                err = relay.explain(exc) if relay else exc
                                if fallback is not None:  # auto tried BGSAVE + copy first: say why not
                                    err = BackupError(f"{err.message} (method auto downloads because {fallback})",
                                                      err.hint)
                                raise err from None
                            except BaseException:
                                upload.abort()
                                raise
                        size = follow.pos
                        try:
                            if size == 0:
                                raise BackupError("the RDB snapshot is empty")
                            # stored only once redis-check-rdb has read it whole
                            checked = rdb.check_rdb(str(dest), "the snapshot", made_by)
                        except BaseException:
                            upload.abort()
                            raise
                        rec = upload.finish()
                    else:
                        size = os.fstat(fh.fileno()).st_size
                        if size == 0:
                            raise BackupError("the RDB snapshot is empty")
                        assert checked is not None
                        rec = pipeline.upload_stream(writer.upload(object_name("dump.rdb", env), role="rdb"), fh)
                writer.add(rec)
                details = {"redis_version": info.get("redis_version"), "method": method, "keys": keys,
                           "used_memory": info.get("used_memory"),
                           "rdb_size": size, "rdb_version": checked.rdb_version, "rdb_keys": checked.keys,
                           "rdb_db_keys": checked.db_keys, "check": "redis-check-rdb: RDB looks OK",
                           MANIFEST_KEY: source.to_dict()}
                manifest = writer.commit(details)
            except Exception as exc:
                writer.abort()
                out.fail(SET_NAME, exc, "backup.failed")
            except BaseException:  # a stop (SIGTERM, Ctrl-C): the objects already stored go now, not at a prune
                writer.abort()
                raise
            else:
                out.manifests.append(manifest)
                ctx.log.info("backup %s: RDB %s (%s), %s stored", manifest.id, human_bytes(size), method,
                             human_bytes(manifest.size))
                stale = stale_source_finding(target.display(), source, options.max_replica_lag.total_seconds(),
                                             "Redis")
                if stale is not None:  # stored all the same: a replica's data beats none when the primary is gone
                    ctx.log.warning("%s", stale.message)
                    out.findings.append(stale)
                unchecked = unchecked_source_finding(target.display(), source, "Redis")
                if unchecked is not None:
                    ctx.log.warning("%s", unchecked.message)
                    out.findings.append(unchecked)
                report = apply_retention(ctx, env, manifest, options.retention, out.findings)
                if report is not None:
                    out.pruned += len(report.deleted)
        finally:
            work.close()
            env.close()
            client.close()
        return out.result(time.monotonic() - t0)

    @staticmethod
    def _download(argv: list[str], env: dict[str, str], dest: Path, target: RedisTarget, stall: float,
                  made_by: str | None = None, follow: _Follower | None = None) -> None:
        """``redis-cli --rdb DEST``, watched: it has no read timeout, so a server that freezes or a network
        that drops everything mid-transfer would block it for ever.  The download is alive while DEST grows,
        or while the server answers INFO with a save running (it prepares the snapshot, or waits for a save
        or an AOF rewrite to end); ``stall`` seconds of neither kill it.  ``follow`` is fed DEST as it grows
        (compressed and encrypted while the rest is still arriving), then up to its final size."""
        probe = client_for(target)
        with contextlib.closing(probe), proc.spawn(argv, stdout=subprocess.DEVNULL, extra_env=env) as p:
            size, alive, looked = -1, time.monotonic(), 0.0
            while p.popen.poll() is None:
                # a diskless sync ends with an EOF mark that redis-cli cuts off once it is whole: never fed
                fed = follow.pump(follow.known_size() - RDB_EOF_MARK_SIZE, FOLLOW_BUDGET) if follow else 0
                if fed == 0:
                    time.sleep(0.1 if follow else 0.5)
                if time.monotonic() - looked < 0.5:
                    continue
                looked = time.monotonic()
                now_size = dest.stat().st_size if dest.exists() else 0
                if now_size != size or _saving(probe):
                    size, alive = now_size, time.monotonic()
                elif time.monotonic() - alive > stall:
                    p.kill()
                    raise BackupError(
                        f"the RDB download from {target.display()} stalled: nothing received for {stall:g}s "
                        f"(after {human_bytes(max(size, 0))}) and the server answers no INFO or runs no save",
                        "Try: check the server (frozen? restarted?) and the network; a larger stall_timeout")
            res = p.wait(check=False)
            failed_save = False
            if res.returncode != 0 or not dest.exists():
                with contextlib.suppress(Exception):
                    failed_save = probe.info("persistence").get("rdb_last_bgsave_status") == "err"
        if res.returncode != 0 or not dest.exists():
            raise _download_failed(res.returncode, res.stderr, target, made_by, failed_save)
        if follow is not None:
            final = dest.stat().st_size
            follow.pump(final)
            if follow.pos != final:  # bytes fed that redis-cli cut off since: the upload is not the file checked
                raise BackupError(
                    f"the downloaded RDB ends at {final} bytes, but {follow.pos} were already stored: redis-cli cut "
                    f"off more than the {RDB_EOF_MARK_SIZE}-byte EOF mark held back; nothing stored",
                    "Try: method: bgsave on the server's host, and report this (the redis-cli version)")

    @staticmethod
    def _local_rdb(client: Any, target: RedisTarget) -> Path | None:
        if not (target.unix_socket or target.host in LOCAL_HOSTS):
            return None
        try:
            d = client.config_get("dir").get("dir")
            f = client.config_get("dbfilename").get("dbfilename")
        except Exception as exc:
            if _refused(exc):
                raise  # CONFIG renamed/disabled or not granted: the caller says so
            return None
        if not d or not f:
            return None
        p = Path(d) / f
        return p if os.access(p.parent, os.R_OK | os.X_OK) and (not p.exists() or os.access(p, os.R_OK)) else None

    def _bgsave_copy(self, client: Any, rdb_path: Path, timeout: float,
                     made_by: str | None) -> tuple[BinaryIO, str, RdbCheck]:
        """BGSAVE, then open the RDB file and prove it is this server's save, just made: its mtime and the
        server's ``rdb_last_save_time`` are not older than the BGSAVE, and its key count is near the server's
        (a file of another server or a stale one raises :class:`NotThisSave`).  Checked with redis-check-rdb
        (``made_by``: the server's Redis version)."""
        keys_before = _key_total(client.info("keyspace"))
        start = self._bgsave(client, timeout, rdb_path)
        keys_after = _key_total(client.info("keyspace"))
        last = client.info("persistence").get("rdb_last_save_time")
        try:
            fh = open(rdb_path, "rb")  # noqa: SIM115 - the caller closes it; this inode, even if renamed over
        except FileNotFoundError:
            raise NotThisSave("there is no such file after BGSAVE") from None
        try:
            mtime = os.fstat(fh.fileno()).st_mtime
            if mtime < start - CLOCK_SLACK:
                raise NotThisSave(f"it was last written {start - mtime:.0f}s before the BGSAVE started")
            if isinstance(last, int) and last < start - CLOCK_SLACK:
                raise NotThisSave(f"the server's rdb_last_save_time is {start - last:.0f}s before the BGSAVE")
            check_path = f"/proc/{os.getpid()}/fd/{fh.fileno()}"
            check_path = check_path if Path(check_path).exists() else str(rdb_path)
            checked = rdb.check_rdb(check_path, "the snapshot", made_by)
            in_file = checked.keys
            if in_file is not None and not any(_close(in_file, n) for n in (keys_before, keys_after)):
                raise NotThisSave(f"it holds {in_file} key(s), the server {keys_after}")
        except BaseException:
            fh.close()
            raise
        return fh, check_path, checked

    @staticmethod
    def _bgsave(client: Any, timeout: float, rdb_path: Path | None = None) -> float:
        """BGSAVE and wait for it; the wall-clock time just before it started.

        Another save in progress — a diskless replication sync or ``redis-cli --rdb`` (saves to a socket,
        which never raise ``rdb_saves``), another BGSAVE, an AOF rewrite — is waited for (within
        ``timeout``), then BGSAVE is issued again: only a save this run started is waited for and copied."""
        deadline = time.monotonic() + timeout
        while True:
            start = time.time()
            before_saves = client.info("persistence").get("rdb_saves")
            before = client.lastsave()
            try:
                client.bgsave()
                break
            except Exception as exc:
                if _refused(exc):
                    raise
                if "in progress" not in str(exc) and "child process is active" not in str(exc):
                    if str(exc).strip():
                        raise BackupError(f"BGSAVE failed: {exc}") from None
                    # a bare "-ERR": rdbSaveBackground could not fork (its log: "Can't save in background: fork:
                    # Cannot allocate memory"), the usual cause a large dataset without memory overcommit
                    raise BackupError(
                        "BGSAVE failed: the server could not start the background save (it could not fork, "
                        "most often for lack of memory: its log says \"Can't save in background: fork: ...\")",
                        "Try: set vm.overcommit_memory = 1 on the server's host (sysctl), as Redis advises, or "
                        "give it more memory; see the Redis log") from None
            while True:
                p = client.info("persistence")
                if not p.get("rdb_bgsave_in_progress") and not p.get("aof_rewrite_in_progress"):
                    break
                if time.monotonic() >= deadline:
                    raise BackupError(f"another save (a replica's sync, redis-cli --rdb, BGSAVE or an AOF "
                                      f"rewrite) was still running after {timeout:g}s; BGSAVE not started",
                                      "Try: a larger bgsave_timeout, or method: network")
                time.sleep(0.05)
        while time.monotonic() < deadline:
            p = client.info("persistence")
            done = (p.get("rdb_saves", 0) > before_saves) if before_saves is not None else \
                client.lastsave() != before
            if not p.get("rdb_bgsave_in_progress") and done:
                if p.get("rdb_last_bgsave_status") != "ok":
                    where = f" {rdb_path}" if rdb_path is not None else ""
                    raise BackupError(
                        f"BGSAVE failed: the server could not write its RDB file{where} "
                        f"(rdb_last_bgsave_status: {p.get('rdb_last_bgsave_status')})",
                        "Try: see the Redis log (\"Failed opening the temp RDB file\", \"No space left on "
                        "device\", a fork or child error); the Redis user must be able to write "
                        f"{f'{rdb_path.parent} (CONFIG GET dir)' if rdb_path is not None else 'its dir'}, "
                        "with room for a whole snapshot")
                return start
            time.sleep(0.05)
        raise BackupError(f"BGSAVE did not finish within {timeout:g}s")
