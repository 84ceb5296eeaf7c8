"""Targets: the things upkeeper maintains.  One model per ``kind``."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from upkeeper.config.types import Duration, FileSecrets, StrictModel


class PostgresTarget(FileSecrets):
    """A PostgreSQL server.  Credentials follow libpq: unset fields fall back to PG* variables."""

    secret_fields = ("password",)

    kind: Literal["postgres"] = Field("postgres", description="the kind of this entry. Source: none (fixed value)")
    host: str | None = Field(None, description="host name, IP or socket directory (default: libpq's PGHOST). "
            "Source: libpq's defaults when not set")
    port: int | None = Field(None, ge=1, le=65535, description="port (default: libpq's PGPORT or 5432). "
            "Source: libpq's defaults when not set")
    user: str | None = Field(None, description="role to connect as (default: libpq's PGUSER). "
            "Source: libpq's defaults when not set")
    password: SecretStr | None = Field(None, description="password; prefer password_file or ${ENV}. "
            "Source: upkeeper (not set by default)")
    password_file: str | None = Field(None, description="file whose content is the password. "
            "Source: upkeeper (not set by default)")
    dbname: str = Field("postgres", description="database to connect to for server-wide work. "
            "Source: PostgreSQL (the 'postgres' database every cluster has)")
    sslmode: str | None = Field(None, description="libpq sslmode (disable, prefer, require, verify-full …). "
            "Source: libpq's defaults (PGSSLMODE, else prefer) when not set")
    connect_timeout: int = Field(10, ge=1, description="seconds to wait for a connection. "
            "Source: upkeeper default")
    bin_dir: str | None = Field(
        None, description="directory holding pg_dump/pg_restore; when set, the client programs come from there only "
                "(default: newest /usr/lib/postgresql/*/bin, then PATH). "
                "Source: upkeeper (not set by default)"
    )
    description: str | None = Field(None, description="free text for people. Source: upkeeper (not set by default)")

    def libpq_params(self, dbname: str | None = None) -> dict[str, str]:
        """Connection keywords for psycopg / libpq (password included)."""
        p: dict[str, str] = {"dbname": dbname or self.dbname, "application_name": "upkeeper"}
        if self.host:
            p["host"] = self.host
        if self.port:
            p["port"] = str(self.port)
        if self.user:
            p["user"] = self.user
        if self.password is not None:
            p["password"] = self.password.get_secret_value()
        if self.sslmode:
            p["sslmode"] = self.sslmode
        p["connect_timeout"] = str(self.connect_timeout)
        return p

    def libpq_env(self, dbname: str | None = None) -> dict[str, str]:
        """Environment for CLI tools (pg_dump, psql): the password travels in PGPASSWORD, never argv."""
        keys = {
            "dbname": "PGDATABASE", "host": "PGHOST", "port": "PGPORT", "user": "PGUSER",
            "password": "PGPASSWORD", "sslmode": "PGSSLMODE", "connect_timeout": "PGCONNECT_TIMEOUT",
            "application_name": "PGAPPNAME",
        }  # fmt: skip
        return {keys[k]: v for k, v in self.libpq_params(dbname).items()}

    def display(self) -> str:
        host = self.host or "(PGHOST/socket)"
        return f"postgres://{self.user + '@' if self.user else ''}{host}:{self.port or 5432}/{self.dbname}"


class RedisTarget(FileSecrets):
    """A Redis server."""

    secret_fields = ("password",)

    kind: Literal["redis"] = Field("redis", description="the kind of this entry. Source: none (fixed value)")
    host: str = Field("127.0.0.1", description="host name or IP. Source: upkeeper default")
    port: int = Field(6379, ge=1, le=65535, description="TCP port. Source: Redis (its default port)")
    unix_socket: str | None = Field(None, description="path of a unix socket (instead of host/port). "
            "Source: upkeeper (not set by default)")
    username: str | None = Field(None, description="ACL user (Redis 6+). "
            "Source: upkeeper (not set by default)")
    password: SecretStr | None = Field(None, description="password; prefer password_file or ${ENV}. "
            "Source: upkeeper (not set by default)")
    password_file: str | None = Field(None,
        description="file whose content is `password` (instead of giving it inline). Source: upkeeper (not set by default)")
    db: int = Field(0, ge=0, description="database number. Source: Redis (database 0 is selected by default)")
    tls: bool = Field(False, description="connect with TLS (the server's tls-port). Source: upkeeper default")
    tls_ca_file: str | None = Field(
        None, description="PEM file of the CA that signed the server's certificate, for a server behind a private "
        "CA such as most managed Redis services (default: the system's CA bundle, unless tls_ca_dir is set). "
        "Source: redis-cli --cacert")
    tls_ca_dir: str | None = Field(
        None, description="directory of trusted CA certificates under OpenSSL's hashed names (<hash>.0, as "
        "`openssl rehash` or c_rehash make them, e.g. /etc/ssl/certs), alone or beside tls_ca_file (both are "
        "then trusted; default: the system's CA bundle). Source: redis-cli --cacertdir")
    tls_cert_file: str | None = Field(
        None, description="PEM client certificate, for a server that checks clients (tls-auth-clients yes, "
        "mutual TLS); needs tls_key_file. Source: redis-cli --cert")
    tls_key_file: str | None = Field(
        None, description="PEM file of the private key of tls_cert_file, unencrypted unless "
        "tls_key_password_file is set (keep it mode 0600: only the path is configured; upkeeper never reads the "
        "key into its logs or history). Source: redis-cli --key")
    tls_key_password_file: str | None = Field(
        None, description="file holding the passphrase of an encrypted tls_key_file (its content without the "
        "trailing newline; mode 0600). Read when connecting, never shown or passed on a command line; redis-cli "
        "cannot take a key passphrase, so redis.backup's network download then goes through a TLS connection "
        "upkeeper makes itself. Source: upkeeper (not set by default; redis-cli has no such option)")
    tls_server_name: str | None = Field(
        None, description="name sent in SNI and matched against the server's certificate (default: host), for a "
        "server reached by IP address or through a tunnel. Source: redis-cli --sni")
    tls_verify: bool = Field(
        True, description="check the server's certificate: signed by a trusted CA (as redis-cli --tls does) and "
        "naming host or tls_server_name (which redis-cli does not check; libpq's verify-full does). Never turn "
        "off in production. Source: redis-cli --tls (verifies unless --insecure)")
    socket_timeout: Duration = Field(default="5s", validate_default=True,
        description="timeout of each socket operation. Source: upkeeper default")
    description: str | None = Field(None, description="free text for people. Source: upkeeper (not set by default)")

    @model_validator(mode="after")
    def _tls_settings_agree(self) -> RedisTarget:
        tls_fields = ("tls_ca_file", "tls_ca_dir", "tls_cert_file", "tls_key_file", "tls_key_password_file",
                      "tls_server_name")
        if not self.tls:
            given = [f for f in tls_fields if getattr(self, f) is not None] + ([] if self.tls_verify else ["tls_verify"])
            if given:
                raise ValueError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} set but tls is false: "
                                 "set tls: true (the server's tls-port), or remove them")
            return self
        if self.unix_socket:
            raise ValueError("tls is true but unix_socket is set: Redis speaks TLS only on its TCP tls-port; give "
                             "host and port, or set tls: false")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            one, other = ("tls_cert_file", "tls_key_file") if self.tls_key_file is None else \
                ("tls_key_file", "tls_cert_file")
            raise ValueError(f"{one} is set without {other}: mutual TLS needs the client certificate "
                             "(tls_cert_file) and its private key (tls_key_file)")
        if self.tls_key_password_file is not None and self.tls_key_file is None:
            raise ValueError("tls_key_password_file is set without tls_key_file: it is the passphrase of the "
                             "client certificate's encrypted key; give tls_cert_file and tls_key_file, or remove it")
        for field in ("tls_ca_file", "tls_ca_dir"):
            if getattr(self, field) is not None and not self.tls_verify:
                raise ValueError(f"{field} is set but tls_verify is false: the certificate would not be checked "
                                 "at all; remove one of them")
        return self

    def url(self, with_password: bool = False) -> str:
        scheme = "rediss" if self.tls else "redis"
        auth = ""
        if self.username or self.password:
            pw = self.password.get_secret_value() if (self.password and with_password) else "***"
            auth = f"{quote(self.username or '')}:{quote(pw) if self.password else ''}@"
        if self.unix_socket:
            return f"unix://{auth}{self.unix_socket}?db={self.db}"
        return f"{scheme}://{auth}{self.host}:{self.port}/{self.db}"

    def display(self) -> str:
        return self.url(with_password=False)


class NginxTarget(StrictModel):
    """An nginx server: its config, its logs and the sites it serves."""

    kind: Literal["nginx"] = Field("nginx", description="the kind of this entry. Source: none (fixed value)")
    url: str | None = Field(None, description="base URL of the site, e.g. https://example.com. "
            "Source: upkeeper (not set by default)")
    config: str = Field("/etc/nginx/nginx.conf", description="main configuration file. "
            "Source: nginx's Debian package")
    access_log: str = Field("/var/log/nginx/access.log", description="access log path, or a glob of several "
            "(/var/log/nginx/*.access.log). "
            "Source: nginx's Debian package")
    error_log: str = Field("/var/log/nginx/error.log", description="error log path. "
            "Source: nginx's Debian package")
    binary: str = Field("nginx", description="nginx executable. Source: upkeeper default")
    description: str | None = Field(None, description="free text for people. Source: upkeeper (not set by default)")

    def display(self) -> str:
        return self.url or self.config


class HostTarget(StrictModel):
    """The machine upkeeper runs on."""

    kind: Literal["host"] = Field("host", description="the kind of this entry. Source: none (fixed value)")
    description: str | None = Field(None, description="free text for people. Source: upkeeper (not set by default)")

    def display(self) -> str:
        return "localhost"


#: the signals programs take to reopen their logs: USR1 (nginx, Apache's graceful restart, Unicorn, Dovecot), HUP
#: (syslog daemons, Gunicorn, many daemons), USR2 (some Node apps)
REOPEN_SIGNALS = ("USR1", "HUP", "USR2")


class AppTarget(StrictModel):
    """An application deployed on this host: where its logs, caches, temp files and releases live, and how to
    reopen its logs and restart it.  Relative paths are inside ``root``."""

    kind: Literal["app"] = Field("app", description="the kind of this entry. Source: none (fixed value)")
    root: str = Field(..., description="application directory. Source: none (required)")
    health_url: str | None = Field(None, description="http:// or https:// URL that answers 2xx when the app is healthy (checked when the configuration is loaded). "
            "Source: upkeeper (not set by default)")
    service: str | None = Field(None, description="systemd unit or PM2 process name. "
            "Source: upkeeper (not set by default)")
    user: str | None = Field(None, description="OS user the app runs as (configured commands run as this user). "
            "Source: upkeeper (not set by default)")
    logs: list[str] = Field(
        default_factory=lambda: ["logs/*.log"], description="log files to rotate (globs, relative to root). "
                "Source: upkeeper default"
    )
    caches: list[str] = Field(
        default_factory=lambda: [".next/cache"], description="build cache directories pruned by age (relative to root). "
                "Source: upkeeper default"
    )
    temp_dirs: list[str] = Field(default_factory=lambda: ["tmp"], description="temp directories pruned by age. "
            "Source: upkeeper default")
    releases_dir: str | None = Field(
        None, description="directory of release directories (Capistrano style), e.g. releases; none: no pruning. "
                "Source: upkeeper (not set by default)"
    )
    current_link: str = Field("current", description="symlink to the live release (never pruned; when it is missing, no release is). "
            "Source: upkeeper default")
    reopen_signal: str | None = Field(
        None, description="signal that makes the app reopen its logs after a rename: USR1, HUP or USR2 (sent to "
        "pid_file's process, else to the processes writing the log). Source: upkeeper (not set by default)",
    )
    pid_file: str | None = Field(None, description="pid file of the process that gets reopen_signal (relative to "
            "root, or absolute); read before any log is renamed. Source: upkeeper (not set by default)")
    reopen_command: list[str] | None = Field(
        None, description="command that makes the app reopen its logs, e.g. [pm2, reloadLogs] or [nginx, -s, reopen]. "
                "Source: upkeeper (not set by default)"
    )
    restart_command: list[str] | None = Field(
        None, description="command that restarts the app, e.g. [systemctl, restart, myapp] or [pm2, restart, myapp]. "
                "Source: upkeeper (not set by default)"
    )
    description: str | None = Field(None, description="free text for people. Source: upkeeper (not set by default)")

    @field_validator("reopen_signal")
    @classmethod
    def _signal(cls, v: str | None) -> str | None:
        if v is None:
            return v
        name = v.upper().removeprefix("SIG")
        if not hasattr(signal.Signals, f"SIG{name}"):
            raise ValueError(f"unknown signal {v!r}: use a name like USR1, HUP")
        if name not in REOPEN_SIGNALS:
            # sent to the processes writing the log at every rotation: TERM, INT or KILL ends the app, STOP
            # freezes it, QUIT dumps core
            raise ValueError(f"{name} does not make a program reopen its logs (it would stop the app at every "
                             f"rotation): use one of {', '.join(REOPEN_SIGNALS)}, or reopen_command")
        return name

    @field_validator("health_url")
    @classmethod
    def _health_url(cls, v: str | None) -> str | None:
        # a URL no client can fetch failed every health check, and each failure restarted the app
        if v is None:
            return v
        try:
            u = urlsplit(v)
            u.port  # noqa: B018 - raises ValueError for a port that is not a number in range
        except ValueError as exc:
            raise ValueError(f"health_url {v!r} is not a valid URL: {exc}") from None
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"health_url {v!r} must be an http:// or https:// URL with a host, "
                             "e.g. http://127.0.0.1:3000/health")
        return v

    @field_validator("reopen_command", "restart_command")
    @classmethod
    def _argv(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or not v[0].strip()):
            raise ValueError("a command is a non-empty list: program first, then its arguments")
        return v

    def path(self, rel: str) -> Path:
        """A configured path: absolute as given, relative ones inside root."""
        p = Path(rel).expanduser()
        return p if p.is_absolute() else Path(self.root) / p

    def display(self) -> str:
        return self.root


class HttpTarget(StrictModel):
    """A web endpoint (site, API) checked over HTTP(S)."""

    kind: Literal["http"] = Field("http", description="the kind of this entry. Source: none (fixed value)")
    url: str = Field(..., description="URL, e.g. https://example.com/. Source: none (required)")
    description: str | None = Field(None, description="free text for people. Source: upkeeper (not set by default)")

    def display(self) -> str:
        return self.url


TargetConfig = Annotated[
    PostgresTarget | RedisTarget | NginxTarget | HostTarget | AppTarget | HttpTarget,
    Field(discriminator="kind"),
]

TARGET_KINDS: tuple[str, ...] = ("postgres", "redis", "nginx", "host", "app", "http")

