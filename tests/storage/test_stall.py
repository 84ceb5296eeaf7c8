"""A network that stalls instead of refusing: no RST, no data (a NAT or firewall that dropped its state, a hung
server, a half-open connection).  A TCP proxy of our own (tests/stall_proxy.py) sits between upkeeper and the
real SeaweedFS / sshd and stops forwarding mid-way.  Every operation must fail clearly within a bound set by
the storage's ``timeout`` (short here), leave nothing listed, keep no thread alive that blocks the exit, and
work again once the network is back; a slow but live link must not be cut."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from services import s3_storage_config, sftp_storage_config
from stall_proxy import StallProxy
from upkeeper.errors import StorageError
from upkeeper.sandbox.s3 import SeaweedS3
from upkeeper.sandbox.sshd import SshServer
from upkeeper.storage import open_storage
from upkeeper.storage.base import Storage, clean_partials, get_bytes, put_bytes

pytestmark = pytest.mark.timeout(90)  # the old code hung here for paramiko's one-hour channel timeout

MiB = 1024 * 1024
TIMEOUT = 2  # the storages' `timeout` in these tests
DATA = bytes(range(256)) * (64 * 1024)  # 16 MiB


def fails_within(op: Callable[[], object], bound: float) -> StorageError:
    start = time.monotonic()
    with pytest.raises(StorageError) as exc:
        op()
    elapsed = time.monotonic() - start
    assert elapsed < bound, f"took {elapsed:.1f} s: {exc.value}"
    assert not exc.value.permanent  # the next run retries
    return exc.value


#: the threads alive when this module's tests start: earlier tests of the same process may leave some
_EARLIER: set[threading.Thread] = set()


@pytest.fixture(autouse=True)
def _threads_before() -> None:
    _EARLIER.clear()
    _EARLIER.update(threading.enumerate())


def blocking_threads() -> list[str]:
    """Threads started since the test began that would keep the process from exiting (non-daemon)."""
    return [t.name for t in threading.enumerate()
            if not t.daemon and t is not threading.main_thread() and t not in _EARLIER]


def read_all_then_stall(storage: Storage, key: str, proxy: StallProxy) -> None:
    with storage.open_read(key) as fh:
        fh.read(MiB)
        proxy.freeze()
        fh.read()


# --- SFTP through the proxy to the real sshd ---------------------------------------------------------------


@pytest.fixture
def sftp_proxy(sftp_server: SshServer) -> Iterator[StallProxy]:
    proxy = StallProxy(sftp_server.port)
    yield proxy
    proxy.close()


@pytest.fixture
def sftp_stalling(sftp_server: SshServer, sftp_proxy: StallProxy, tmp_path: Path) -> Iterator[Storage]:
    known_hosts = tmp_path / "known_hosts"
    key = " ".join((sftp_server.base / "host_ed25519.pub").read_text().split()[:2])
    known_hosts.write_text(f"[127.0.0.1]:{sftp_proxy.port} {key}\n")
    storage = open_storage("nas", sftp_storage_config(sftp_server, port=sftp_proxy.port, timeout=TIMEOUT,
                                                      known_hosts=str(known_hosts)))
    yield storage
    storage.close()


def test_sftp_write_stalled_mid_way_fails_in_time_and_the_next_run_succeeds(
        sftp_stalling: Storage, sftp_proxy: StallProxy) -> None:
    put_bytes(sftp_stalling, "db/set0/dump", b"older")  # the connection is up and in use
    sftp_proxy.freeze_after(3 * MiB)
    err = fails_within(lambda: put_bytes(sftp_stalling, "db/set1/dump", DATA), 12 * TIMEOUT)
    assert "set1/" in str(err) and f"timeout ({TIMEOUT} s)" in str(err)
    assert blocking_threads() == []

    sftp_proxy.thaw()  # the network is back
    assert [o.key for o in sftp_stalling.list()] == ["db/set0/dump"]  # nothing partial is listed
    put_bytes(sftp_stalling, "db/set1/dump", DATA)
    assert get_bytes(sftp_stalling, "db/set1/dump") == DATA
    clean_partials(sftp_stalling, older_than=timedelta(0))
    assert sorted(o.key for o in sftp_stalling.list()) == ["db/set0/dump", "db/set1/dump"]


@pytest.mark.parametrize("op", ["list", "stat", "delete", "open_read", "open_write"])
def test_sftp_operations_on_a_stalled_connection_fail_in_time(sftp_stalling: Storage, sftp_proxy: StallProxy,
                                                              op: str) -> None:
    put_bytes(sftp_stalling, "db/set0/dump", b"x" * 1000)  # connected; then the link stalls, the socket stays
    sftp_proxy.freeze()
    ops: dict[str, Callable[[], object]] = {
        "list": lambda: list(sftp_stalling.list()),
        "stat": lambda: sftp_stalling.stat("db/set0/dump"),
        "delete": lambda: sftp_stalling.delete("db/set0/dump"),
        "open_read": lambda: sftp_stalling.open_read("db/set0/dump"),
        "open_write": lambda: sftp_stalling.open_write("db/set1/dump"),
    }
    err = fails_within(ops[op], 8 * TIMEOUT)
    assert "127.0.0.1" in str(err) and "timeout" in str(err)
    sftp_proxy.thaw()  # and it works again (a delete held by the proxy may reach the server now, as TCP would)
    assert [o.key for o in sftp_stalling.list()] in ([[], ["db/set0/dump"]] if op == "delete" else [["db/set0/dump"]])


def test_sftp_read_stalled_mid_way_fails_in_time(sftp_stalling: Storage, sftp_proxy: StallProxy) -> None:
    put_bytes(sftp_stalling, "db/set0/dump", DATA)
    err = fails_within(lambda: read_all_then_stall(sftp_stalling, "db/set0/dump", sftp_proxy), 6 * TIMEOUT)
    assert "cannot read" in str(err) and "set0/dump" in str(err)
    sftp_proxy.thaw()
    assert get_bytes(sftp_stalling, "db/set0/dump") == DATA


def test_sftp_server_that_never_answers_the_banner(sftp_stalling: Storage, sftp_proxy: StallProxy) -> None:
    sftp_proxy.freeze()  # TCP connects, the SSH banner never comes
    err = fails_within(lambda: list(sftp_stalling.list()), 4 * TIMEOUT)
    assert f"no SSH handshake from the server within timeout ({TIMEOUT} s)" in str(err)
    assert f"127.0.0.1:{sftp_proxy.port}" in str(err)


def test_sftp_slow_but_live_link_is_not_cut(sftp_stalling: Storage, sftp_proxy: StallProxy) -> None:
    """A transfer lasting several times `timeout` over a throttled link, with silences of a fraction of it."""
    data = DATA[: 5 * MiB]
    sftp_proxy.throttle(MiB)  # bytes a second, each way
    start = time.monotonic()
    put_bytes(sftp_stalling, "db/slow/dump", data)
    assert get_bytes(sftp_stalling, "db/slow/dump") == data
    assert time.monotonic() - start > 2 * TIMEOUT  # it really was slower than the timeout


def test_sftp_idle_connection_survives_longer_than_timeout(sftp_stalling: Storage) -> None:
    """The watchdog probes an idle connection instead of closing it: a writer waiting for pg_dump is fine."""
    w = sftp_stalling.open_write("db/idle/dump")
    w.write(b"first")
    time.sleep(2.5 * TIMEOUT)
    w.write(b" second")
    w.commit()
    assert get_bytes(sftp_stalling, "db/idle/dump") == b"first second"


# --- S3 through the proxy to the real SeaweedFS ------------------------------------------------------------


@pytest.fixture
def s3_proxy(s3_server: SeaweedS3) -> Iterator[StallProxy]:
    proxy = StallProxy(s3_server.port)
    yield proxy
    proxy.close()


@pytest.fixture
def s3_stalling(s3_server: SeaweedS3, s3_bucket: str, s3_proxy: StallProxy) -> Iterator[Storage]:
    storage = open_storage("offsite", s3_storage_config(
        s3_server, s3_bucket, endpoint_url=f"http://127.0.0.1:{s3_proxy.port}", part_size="5MiB",
        timeout=TIMEOUT, max_attempts=2))
    yield storage
    storage.close()


def test_s3_multipart_upload_stalled_mid_way_fails_in_time_and_the_next_run_succeeds(
        s3_server: SeaweedS3, s3_bucket: str, s3_stalling: Storage, s3_proxy: StallProxy) -> None:
    s3_proxy.freeze_after(7 * MiB)  # the second part stalls
    err = fails_within(lambda: put_bytes(s3_stalling, "db/set1/dump", DATA), 15 * TIMEOUT)
    assert s3_bucket in str(err) and "db/set1/dump" in str(err)
    assert blocking_threads() == []

    s3_proxy.thaw()
    assert list(s3_stalling.list()) == []  # nothing partial is listed
    # the abort could not get through either: the incomplete upload is what clean_partials removes
    assert clean_partials(s3_stalling, older_than=timedelta(0)) <= 1
    assert s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    put_bytes(s3_stalling, "db/set1/dump", DATA)
    assert get_bytes(s3_stalling, "db/set1/dump") == DATA


@pytest.mark.parametrize("op", ["list", "stat", "delete", "read", "read_mid_way"])
def test_s3_operations_on_a_stalled_link_fail_in_time(s3_stalling: Storage, s3_proxy: StallProxy,
                                                      op: str) -> None:
    put_bytes(s3_stalling, "db/set0/dump", DATA)
    if op != "read_mid_way":
        s3_proxy.freeze()  # the endpoint accepts connections but never answers
    ops: dict[str, Callable[[], object]] = {
        "list": lambda: list(s3_stalling.list()),
        "stat": lambda: s3_stalling.stat("db/set0/dump"),
        "delete": lambda: s3_stalling.delete("db/set0/dump"),
        "read": lambda: get_bytes(s3_stalling, "db/set0/dump"),
        "read_mid_way": lambda: read_all_then_stall(s3_stalling, "db/set0/dump", s3_proxy),
    }
    err = fails_within(ops[op], 6 * TIMEOUT)
    assert f"no answer from the endpoint within timeout ({TIMEOUT} s)" in str(err)
    s3_proxy.thaw()  # and it works again (a delete held by the proxy may reach the server now, as TCP would)
    assert [o.key for o in s3_stalling.list()] in ([[], ["db/set0/dump"]] if op == "delete" else [["db/set0/dump"]])


def test_s3_slow_but_live_link_is_not_cut(s3_stalling: Storage, s3_proxy: StallProxy) -> None:
    """`timeout` bounds each wait for the endpoint, not a whole transfer (the rate leaves the few MiB a kernel
    buffers on loopback draining within it)."""
    data = DATA
    s3_proxy.throttle(3 * MiB)
    start = time.monotonic()
    put_bytes(s3_stalling, "db/slow/dump", data)
    assert get_bytes(s3_stalling, "db/slow/dump") == data
    assert time.monotonic() - start > 2 * TIMEOUT
