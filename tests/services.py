"""Real services for the test suite, started by the suite itself.

Session-scoped fixtures start one server of each kind (per xdist worker) on free
loopback ports; function-scoped fixtures hand each test a clean database or key
space.  Nothing here is a mock: these are the real PostgreSQL, Redis and nginx.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from upkeeper.sandbox.nginx import NginxServer
from upkeeper.sandbox.postgres import PostgresCluster
from upkeeper.sandbox.redis import RedisServer


@pytest.fixture(scope="session")
def services_dir() -> Iterator[Path]:
    """A directory the service users (postgres, nobody) can reach; pytest's own tmp is 0700."""
    d = Path(tempfile.mkdtemp(prefix="upk-test-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def pg(services_dir: Path) -> Iterator[PostgresCluster]:
    """A real PostgreSQL 15 cluster for the whole session."""
    cluster = PostgresCluster(services_dir / "pg")
    cluster.start()
    yield cluster
    cluster.stop()


_db_counter = 0


@pytest.fixture
def pg_db(pg: PostgresCluster) -> Iterator[str]:
    """A fresh, empty database in the session cluster; dropped afterwards."""
    global _db_counter
    _db_counter += 1
    name = f"t{_db_counter}_{os_pid()}"
    pg.create_database(name)
    yield name
    with pg.connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def os_pid() -> int:
    import os

    return os.getpid()


@pytest.fixture(scope="session")
def redis_server(services_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(services_dir / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_clean(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session Redis with an empty key space."""
    redis_server.client().flushall()
    yield redis_server
    redis_server.client().flushall()


@pytest.fixture(scope="session")
def nginx(services_dir: Path) -> Iterator[NginxServer]:
    server = NginxServer(services_dir / "nginx")
    server.start()
    yield server
    server.stop()


# --- PostgreSQL streaming replication (postgres.maintenance replication checks) ---------------------


@pytest.fixture(scope="session")
def pg_primary_replica(services_dir: Path) -> Iterator[tuple[PostgresCluster, PostgresCluster]]:
    """A primary of its own and a streaming replica of it (pg_basebackup -R -X stream, slot 'replica1')."""
    primary = PostgresCluster(services_dir / "pg-primary")
    primary.start()
    replica = primary.create_replica(services_dir / "pg-replica", slot="replica1")
    yield primary, replica
    replica.stop()
    primary.stop()


# -- notification receivers (issue 5) -------------------------------------------------------
# A real SMTP server (aiosmtpd) and HTTP receivers for Slack-format webhooks and PagerDuty
# Events API v2.  Session-scoped servers; the function-scoped fixtures hand each test an
# empty inbox.

from upkeeper.sandbox.receivers import HttpReceiver, PagerDutyReceiver  # noqa: E402
from upkeeper.sandbox.smtp import SmtpServer  # noqa: E402


@pytest.fixture(scope="session")
def smtp_session() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def smtp_server(smtp_session: SmtpServer) -> Iterator[SmtpServer]:
    """The session SMTP server with an empty inbox."""
    smtp_session.clear()
    yield smtp_session
    smtp_session.clear()


@pytest.fixture
def webhook_receiver() -> Iterator[HttpReceiver]:
    """A fresh HTTP receiver (its own port, so a test may stop and restart it)."""
    r = HttpReceiver().start()
    yield r
    r.stop()


@pytest.fixture
def pagerduty() -> Iterator[PagerDutyReceiver]:
    r = PagerDutyReceiver().start()
    yield r
    r.stop()
