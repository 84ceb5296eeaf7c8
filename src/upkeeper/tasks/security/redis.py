"""security.redis: authentication, bind address, protected mode and dangerous commands."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from upkeeper import lazy
from upkeeper.config.targets import RedisTarget
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.tasks.redis._conn import client_for, connection_error
from upkeeper.tasks.security._common import CheckOutput, is_loopback

if TYPE_CHECKING:
    import redis
else:
    redis = lazy.module("redis")

#: commands an attacker with access uses to wipe data or take over the host (Redis security docs)
DANGEROUS_COMMANDS = ("FLUSHALL", "FLUSHDB", "CONFIG", "DEBUG", "KEYS", "MODULE", "SHUTDOWN", "SLAVEOF",
                      "REPLICAOF", "MIGRATE", "SCRIPT", "EVAL")


#: a call of each that ACL DRYRUN accepts (the right number of arguments; a subcommand for containers)
DRYRUN_ARGV: dict[str, tuple[str, ...]] = {
    "CONFIG": ("CONFIG", "SET", "maxmemory", "0"), "DEBUG": ("DEBUG", "SLEEP", "0"), "KEYS": ("KEYS", "*"),
    "MODULE": ("MODULE", "LOAD", "/nonexistent.so"), "SLAVEOF": ("SLAVEOF", "NO", "ONE"),
    "REPLICAOF": ("REPLICAOF", "NO", "ONE"), "MIGRATE": ("MIGRATE", "localhost", "6379", "k", "0", "1000"),
    "SCRIPT": ("SCRIPT", "FLUSH"), "EVAL": ("EVAL", "return 1", "0"),
}


class RedisSecurityOptions(TaskOptions):
    dangerous_commands: list[str] = Field(
        list(DANGEROUS_COMMANDS), description="commands that should be renamed or denied by ACL. Source: Redis "
        "security documentation (rename-command / ACL -@dangerous)")
    admin_users: list[str] = Field(
        default_factory=list, description="ACL users that may run the dangerous commands (the administrators'; "
        "upkeeper's own if it has them): every other user that can log in and may run one is a finding (Redis 7+: "
        "checked with ACL DRYRUN; on Redis 6, or when upkeeper's user may not run ACL USERS, GETUSER and DRYRUN, "
        "only renamed commands count). Source: upkeeper (not set by default)")


def _who_may_run(c: redis.Redis, commands: list[str], admin_users: list[str]) -> dict[str, list[str]] | None:
    """User → the ``commands`` it may run, for every user that can log in (on, with a password or nopass) and is
    not an admin; None when that cannot be asked (ACL refused to upkeeper's user, Redis < 7 without DRYRUN)."""
    def text(v: Any) -> str:
        return v.decode(errors="replace") if isinstance(v, bytes) else str(v)

    try:
        users = [text(u) for u in c.acl_users()]
        out: dict[str, list[str]] = {}
        for user in users:
            if user in admin_users:
                continue
            info: Any = c.acl_getuser(user)
            if isinstance(info, list):  # RESP2 without redis-py's parsing: [k, v, k, v …]
                info = dict(zip(info[::2], info[1::2], strict=False))
            info = {text(k): v for k, v in (info or {}).items()}
            flags = {text(f) for f in info.get("flags") or []}
            if "on" not in flags or ("nopass" not in flags and not info.get("passwords")):
                continue  # cannot log in
            allowed = []
            for cmd in commands:
                argv = DRYRUN_ARGV.get(cmd.upper(), (cmd,))
                try:
                    answer = text(c.acl_dryrun(user, *argv))
                except redis.ResponseError as exc:
                    if "dryrun" in str(exc).lower():
                        return None  # Redis < 7 has no ACL DRYRUN ("unknown subcommand 'DRYRUN'"), or NOPERM
                    answer = ""  # the call's own arguments refused (a command of the user's list): not proven denied
                if answer == "OK" or not answer:
                    allowed.append(cmd)
            if allowed:
                out[user] = allowed
        return out
    except redis.ResponseError:  # NOPERM, or ACL unknown (Redis < 6)
        return None


def _config(c: redis.Redis, name: str) -> str | None:
    try:
        v = c.config_get(name)
    except redis.ResponseError:
        return None
    val = v.get(name) if isinstance(v, dict) else None
    return val.decode() if isinstance(val, bytes) else (str(val) if val is not None else None)


def _default_user_open(target: RedisTarget) -> bool | None:
    """Whether the default user needs no password, tried the way an attacker would: a connection without
    credentials.  None when the answer says neither (the server refused the connection for another reason)."""
    anon = client_for(target.model_copy(update={"username": None, "password": None}))
    try:
        anon.ping()
        return True
    except redis.AuthenticationError:
        return False
    except redis.ResponseError as exc:  # NOPERM: in as the default user, only PING denied to it
        text = str(exc).upper()
        return True if "NOPERM" in text else False if "NOAUTH" in text or "WRONGPASS" in text else None
    except redis.RedisError:
        return None
    finally:
        anon.close()


def check_redis(target: RedisTarget, options: RedisSecurityOptions, subject: str | None = None) -> CheckOutput:
    subject = subject or target.display()
    out = CheckOutput()
    c = client_for(target)
    try:
        c.ping()
    except redis.RedisError as exc:
        c.close()
        raise connection_error(target, exc) from None
    try:
        bind = _config(c, "bind")
        protected = _config(c, "protected-mode")
        nopass: bool | None = False
        try:
            acl: Any = c.acl_getuser("default")
            if isinstance(acl, list):  # RESP2 without redis-py's parsing: [k, v, k, v …]
                acl = dict(zip(acl[::2], acl[1::2], strict=False))
            raw: Any = (acl.get(b"flags") or acl.get("flags") or []) if isinstance(acl, dict) else []
            flags = [f.decode() if isinstance(f, bytes) else str(f) for f in raw]
            nopass = "nopass" in flags and "on" in flags
        except redis.ResponseError:  # ACL refused (or Redis < 6): requirepass, else a try without credentials
            requirepass = _config(c, "requirepass")
            nopass = not requirepass if requirepass is not None else _default_user_open(target)
        unknown = [name for name, v in (("bind", bind), ("protected-mode", protected)) if v is None]
        if nopass is None:
            unknown.append("whether the default user needs a password")
        if unknown:  # refused to upkeeper's user (ACL without +config|get +acl|getuser, a managed Redis)
            out.findings.append(Finding(
                "security.redis.config_unreadable", Severity.WARNING, subject,
                f"not checked: {', '.join(unknown)} (CONFIG GET / ACL GETUSER refused to upkeeper's user)",
                "allow upkeeper's Redis user +config|get and +acl|getuser, or check these settings by hand",
                data={"unknown": unknown}))
        addresses = (bind or "").split() or ["*"]
        public = [a.lstrip("-") for a in addresses if not is_loopback(a.lstrip("-"))] if bind is not None else []
        if nopass:
            out.findings.append(Finding(
                "security.redis.no_password", Severity.CRITICAL if public else Severity.WARNING, subject,
                "the default user needs no password (nopass)" + (
                    f" and Redis listens on {', '.join(public)}: anyone who can reach it owns the data"
                    if public else ": any local process can read, change or wipe the data" if bind is not None
                    else " (its bind address could not be read: anyone who can reach the port owns the data)"),
                "set requirepass (or an ACL user with a password and 'ACL SETUSER default off')",
                value="nopass", data={"bind": bind}))
        if public:
            out.findings.append(Finding(
                "security.redis.bind_public", Severity.WARNING, subject,
                f"bound to {', '.join(public)} (beyond loopback)", "bind 127.0.0.1 -::1, or firewall the port",
                value=bind))
        if protected == "no":
            out.findings.append(Finding(
                "security.redis.protected_mode_off", Severity.WARNING if not nopass else Severity.CRITICAL, subject,
                "protected-mode is off", "protected-mode yes (the default)", value="no", threshold="yes"))
        try:  # Redis 7+: the names of every command this server accepts (renamed ones under their new name)
            names = {(n.decode() if isinstance(n, bytes) else str(n)).upper()
                     for n in (c.command_list() or [])}
        except redis.ResponseError:
            names = {(n.decode() if isinstance(n, bytes) else str(n)).upper() for n in c.command()}
        present = [cmd for cmd in options.dangerous_commands if cmd.upper() in names]  # not renamed away
        users = _who_may_run(c, present, options.admin_users) if present else {}
        enabled = present if users is None else [cmd for cmd in present if any(cmd in v for v in users.values())]
        if enabled:
            who = ("; ".join(f"user {u}: {', '.join(cmds)}" for u, cmds in users.items()) if users is not None
                   else "which users may run them was not checked (ACL USERS / GETUSER / DRYRUN refused to "
                   "upkeeper's user, or Redis < 7)")
            out.findings.append(Finding(
                "security.redis.dangerous_commands", Severity.WARNING, subject,
                f"dangerous commands enabled: {', '.join(enabled)} ({who})",
                "deny them to every user but the administrators' (ACL SETUSER app -@dangerous -eval; ACL SETUSER "
                "default off) and list those in admin_users, or rename-command them in redis.conf; leave out of "
                "dangerous_commands what your application needs (job queues such as Sidekiq and BullMQ run EVAL)",
                value=len(enabled), data={"commands": enabled, "users": users}))
        out.metrics.update({"nopass": 1.0 if nopass else 0.0, "public_bind": 1.0 if public else 0.0,
                            "dangerous_enabled": float(len(enabled))})
    finally:
        c.close()
    out.summary = f"Redis {subject}: {len(out.findings)} finding(s)"
    return out


@task
class SecurityRedis(Task[RedisSecurityOptions]):
    """The default user without a password (nopass), binding beyond loopback, protected-mode off,
    and dangerous commands (FLUSHALL, CONFIG, DEBUG, KEYS …) still enabled."""

    name = "security.redis"
    summary = "Redis: no password, public bind, protected-mode off, dangerous commands"
    target_kinds = ("redis",)
    Options = RedisSecurityOptions
    category = "security"
    default_timeout = 60

    def run(self, ctx: TaskContext, options: RedisSecurityOptions) -> Result:
        target = ctx.require_target()
        assert isinstance(target, RedisTarget)
        out = check_redis(target, options, ctx.target_name)
        return Result(summary=out.summary, findings=out.findings, metrics=out.metrics)
