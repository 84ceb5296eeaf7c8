"""security.postgres and security.redis against the real session servers with planted faults."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from upkeeper.config.targets import PostgresTarget, RedisTarget
from upkeeper.core.task import Severity
from upkeeper.sandbox.postgres import PostgresCluster
from upkeeper.sandbox.redis import RedisServer
from upkeeper.tasks.security.postgres import PostgresSecurityOptions, access_review, check_postgres
from upkeeper.tasks.security.redis import RedisSecurityOptions, check_redis

TRUST_RULE = "host all all 0.0.0.0/0 trust  # planted by test_datastores\n"


@pytest.fixture
def planted_pg(pg: PostgresCluster, pg_db: str) -> Iterator[tuple[PostgresCluster, str]]:
    hba = pg.data / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(original + TRUST_RULE)
    pg.execute("SELECT pg_reload_conf()")
    pg.execute("CREATE ROLE upk_intruder LOGIN SUPERUSER")
    pg.execute("SET password_encryption = 'md5'; CREATE ROLE upk_legacy LOGIN PASSWORD 'legacy-pw'")
    pg.execute("GRANT CREATE ON SCHEMA public TO PUBLIC", dbname=pg_db)
    try:
        yield pg, pg_db
    finally:
        hba.write_text(original)
        pg.execute("SELECT pg_reload_conf()")
        pg.execute("DROP ROLE IF EXISTS upk_intruder")
        pg.execute("DROP ROLE IF EXISTS upk_legacy")


def test_postgres_trust_rule_and_extra_superuser(planted_pg: tuple[PostgresCluster, str]) -> None:
    pg, db = planted_pg
    target = PostgresTarget.model_validate(pg.target())
    out = check_postgres(target, PostgresSecurityOptions(latest_minor={}), "db")
    trust = [f for f in out.findings if f.check == "security.postgres.hba_trust"]
    critical = [f for f in trust if f.severity is Severity.CRITICAL]
    assert len(critical) == 1 and "0.0.0.0" in critical[0].message
    # the sandbox's own loopback trust rules are warnings, its local-socket rule info
    assert {f.severity for f in trust} == {Severity.CRITICAL, Severity.WARNING, Severity.INFO}
    supers = [f for f in out.findings if f.check == "security.postgres.extra_superuser"]
    assert [f.value for f in supers] == ["upk_intruder"]  # the bootstrap role postgres is not reported
    assert [f.subject for f in out.findings if f.check == "security.postgres.md5_password"] == ["db role upk_legacy"]
    assert [f.subject for f in out.findings if f.check == "security.postgres.public_create"] == [f"db database {db}"]
    assert not [f for f in out.findings if f.check.endswith("check_failed")]
    allowed = check_postgres(target, PostgresSecurityOptions(allowed_superusers=["upk_intruder"]), "db")
    assert not [f for f in allowed.findings if f.check == "security.postgres.extra_superuser"]


def test_postgres_clean_rules_after_reload(pg: PostgresCluster) -> None:
    out = check_postgres(PostgresTarget.model_validate(pg.target()), PostgresSecurityOptions(), "db")
    assert not [f for f in out.findings if f.severity is Severity.CRITICAL]


def test_postgres_minor_version_lag(pg: PostgresCluster) -> None:
    target = PostgresTarget.model_validate(pg.target())
    major, minor = divmod(int(pg.execute("SHOW server_version_num")[0][0]), 10000)
    behind = check_postgres(target, PostgresSecurityOptions(latest_minor={major: minor + 2}), "db")
    lag = [f for f in behind.findings if f.check == "security.postgres.outdated_minor"]
    assert len(lag) == 1 and f"{major}.{minor + 2}" in lag[0].message
    one = check_postgres(target, PostgresSecurityOptions(latest_minor={major: minor + 1}), "db")
    assert not [f for f in one.findings if f.check == "security.postgres.outdated_minor"]


def test_access_review_lists_roles(planted_pg: tuple[PostgresCluster, str]) -> None:
    pg, _ = planted_pg
    roles = {r["role"]: r for r in access_review(PostgresTarget.model_validate(pg.target()))}
    assert roles["upk_intruder"]["superuser"] and roles["upk_intruder"]["login"]
    assert roles["postgres"]["superuser"]


def test_redis_without_password(redis_server: RedisServer) -> None:
    out = check_redis(RedisTarget.model_validate(redis_server.target()), RedisSecurityOptions(), "cache")
    by = {f.check: f for f in out.findings}
    assert by["security.redis.no_password"].severity is Severity.WARNING  # loopback only: warning
    assert "security.redis.bind_public" not in by
    assert set(by["security.redis.dangerous_commands"].data["commands"]) >= {"FLUSHALL", "CONFIG", "KEYS"}


def test_redis_with_password_and_renamed_commands(services_dir) -> None:
    server = RedisServer(services_dir / "redis-hard", password="s3cret-pw",
                         extra_args=["--rename-command", "FLUSHALL", "", "--rename-command", "KEYS", ""]).start()
    try:
        out = check_redis(RedisTarget.model_validate(server.target()),
                          RedisSecurityOptions(dangerous_commands=["FLUSHALL", "KEYS"]), "cache")
    finally:
        server.stop()
    assert out.findings == []
    assert "s3cret-pw" not in repr(out)


def test_redis_dangerous_commands_clear_once_denied_to_every_user_but_the_admins(services_dir) -> None:
    """The finding's own advice (ACL SETUSER app -@dangerous) never cleared it: it looked only at whether the
    commands exist. Now it names the users that may run them (ACL DRYRUN), the admin_users excepted."""
    server = RedisServer(services_dir / "redis-dangerous", password="admin-pw").start()
    try:
        admin = server.client()
        admin.acl_setuser("app", enabled=True, passwords=["+app-pw"], commands=["+@all"], keys=["~*"])
        admin.acl_setuser("retired", enabled=False, passwords=["+old-pw"], commands=["+@all"], keys=["~*"])
        target = RedisTarget.model_validate(server.target())
        opts = RedisSecurityOptions(dangerous_commands=["FLUSHALL", "CONFIG", "KEYS", "EVAL"])
        f = {x.check: x for x in check_redis(target, opts, "cache").findings}["security.redis.dangerous_commands"]
        assert f.data["users"] == {"default": ["FLUSHALL", "CONFIG", "KEYS", "EVAL"],
                                   "app": ["FLUSHALL", "CONFIG", "KEYS", "EVAL"]}  # 'retired' cannot log in
        assert "user app: FLUSHALL, CONFIG, KEYS, EVAL" in f.message
        # the advice followed for the application's user, but KEYS allowed to it again by name; EVAL is not in
        # Redis's @dangerous category
        admin.acl_setuser("app", enabled=True, commands=["-@dangerous", "+keys"])
        f = {x.check: x for x in check_redis(target, opts, "cache").findings}["security.redis.dangerous_commands"]
        assert f.data["users"] == {"default": ["FLUSHALL", "CONFIG", "KEYS", "EVAL"], "app": ["KEYS", "EVAL"]}
        admin.acl_setuser("app", enabled=True, commands=["-keys", "-eval"])
        cleared = check_redis(target, RedisSecurityOptions(dangerous_commands=opts.dangerous_commands,
                                                           admin_users=["default"]), "cache")
        assert "security.redis.dangerous_commands" not in {x.check for x in cleared.findings}, cleared.findings
        # upkeeper's user without ACL rights: which users may run them is not known, and said so
        admin.acl_setuser("auditor", enabled=True, passwords=["+auditor-pw"], commands=["+@all", "-acl"],
                          keys=["~*"])
        auditor = RedisTarget.model_validate({**server.target(), "username": "auditor", "password": "auditor-pw"})
        f = {x.check: x for x in check_redis(auditor, opts, "cache").findings}["security.redis.dangerous_commands"]
        assert f.data["users"] is None and "was not checked" in f.message
    finally:
        server.stop()


def test_redis_settings_a_restricted_user_cannot_read_are_not_guessed(services_dir) -> None:
    """upkeeper's own ACL user without +config and +acl (a least-privilege monitoring user) read neither the bind
    address nor the default user: a server with a password, bound to 127.0.0.1, was 'security.redis.no_password'
    CRITICAL, 'the default user needs no password and Redis listens on *'.  Now the default user is tried without
    credentials, and what cannot be read is said."""
    server = RedisServer(services_dir / "redis-acl", password="admin-pw").start()
    try:
        server.client().acl_setuser("auditor", enabled=True, passwords=["+auditor-pw"],
                                    commands=["+@all", "-config", "-acl"], keys=["~*"])
        restricted = RedisTarget.model_validate({**server.target(), "username": "auditor", "password": "auditor-pw"})
        opts = RedisSecurityOptions(dangerous_commands=[])
        out = check_redis(restricted, opts, "cache")
        by = {f.check: f for f in out.findings}
        assert set(by) == {"security.redis.config_unreadable"}, out.findings
        assert by["security.redis.config_unreadable"].data["unknown"] == ["bind", "protected-mode"]
        assert "auditor-pw" not in repr(out) and "admin-pw" not in repr(out)
        # the same restricted user on a server whose default user is open: found by trying it
        server.client().config_set("requirepass", "")
        by = {f.check: f for f in check_redis(restricted, opts, "cache").findings}
        assert by["security.redis.no_password"].severity is Severity.WARNING
        assert "could not be read" in by["security.redis.no_password"].message
    finally:
        server.stop()


def test_postgres_listening_everywhere_without_ssl(services_dir) -> None:
    cluster = PostgresCluster(services_dir / "pg-open", extra_conf="listen_addresses = '0.0.0.0'\nssl = off\n")
    cluster.start()
    try:
        out = check_postgres(PostgresTarget.model_validate(cluster.target()), PostgresSecurityOptions(), "open")
    finally:
        cluster.stop()
    f = [f for f in out.findings if f.check == "security.postgres.listen_without_ssl"]
    assert len(f) == 1 and f[0].severity is Severity.CRITICAL and f[0].value == "0.0.0.0"


def test_redis_open_to_the_network(services_dir) -> None:
    server = RedisServer(services_dir / "redis-open", extra_args=["--bind", "0.0.0.0", "--protected-mode", "no"])
    server.start()
    try:
        out = check_redis(RedisTarget.model_validate(server.target()), RedisSecurityOptions(dangerous_commands=[]),
                          "open")
    finally:
        server.stop()
    sev = {f.check: f.severity for f in out.findings}
    assert sev == {"security.redis.no_password": Severity.CRITICAL, "security.redis.bind_public": Severity.WARNING,
                   "security.redis.protected_mode_off": Severity.CRITICAL}
