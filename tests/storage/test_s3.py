"""S3-specific behaviour against a real SeaweedFS: credentials, clear errors, the server dying mid-upload."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services import TlsS3, s3_storage_config, start_tls_proxy
from upkeeper.config.storage import S3StorageConfig
from upkeeper.errors import StorageError
from upkeeper.sandbox.s3 import SeaweedS3
from upkeeper.sandbox.tls import self_signed
from upkeeper.storage import open_storage
from upkeeper.storage.base import get_bytes, put_bytes
from upkeeper.storage.s3 import PARTS_PER_SIZE_STEP, PartBody, S3Storage, part_size_for

MiB = 1024 * 1024


def test_open_storage_dispatches_to_s3(s3_server: SeaweedS3, s3_bucket: str) -> None:
    storage = open_storage("offsite", s3_storage_config(s3_server, s3_bucket))
    assert isinstance(storage, S3Storage) and storage.kind == "s3"
    assert s3_bucket in storage.describe() and s3_server.endpoint in storage.describe()


def test_secret_from_file(s3_server: SeaweedS3, s3_bucket: str, tmp_path: Path) -> None:
    secret_file = tmp_path / "s3.secret"
    secret_file.write_text(s3_server.secret_key + "\n")
    cfg = s3_server.storage_config(s3_bucket)
    del cfg["secret_access_key"]
    config = S3StorageConfig.model_validate({**cfg, "secret_access_key_file": str(secret_file)})
    assert s3_server.secret_key not in repr(config)
    storage = open_storage("s", config)
    put_bytes(storage, "k", b"via file")
    assert get_bytes(storage, "k") == b"via file"


def test_credentials_from_the_environment(s3_server: SeaweedS3, s3_bucket: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = s3_server.storage_config(s3_bucket)
    del cfg["access_key_id"], cfg["secret_access_key"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    storage = open_storage("s", S3StorageConfig.model_validate(cfg))
    put_bytes(storage, "k", b"via env")
    assert get_bytes(storage, "k") == b"via env"


def test_secret_only_from_the_environment(s3_server: SeaweedS3, s3_bucket: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """access_key_id in the config, the secret in AWS_SECRET_ACCESS_KEY."""
    cfg = s3_server.storage_config(s3_bucket)
    del cfg["secret_access_key"]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    storage = open_storage("s", S3StorageConfig.model_validate(cfg))
    put_bytes(storage, "k", b"x")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match="no secret access key") as exc:
        open_storage("s", S3StorageConfig.model_validate(cfg))
    assert exc.value.permanent and "secret_access_key_file" in (exc.value.hint or "")


@pytest.mark.parametrize("field", ["secret_access_key", "access_key_id"])
def test_wrong_credentials_give_a_clear_permanent_error_without_the_secret(
        s3_server: SeaweedS3, s3_bucket: str, field: str) -> None:
    wrong = "Wr0ngSecretValue-d0-not-leak-1234567890"
    storage = open_storage("s", s3_storage_config(s3_server, s3_bucket, **{field: wrong}))
    for op in (lambda: put_bytes(storage, "set/k", b"data"), lambda: list(storage.list()),
               lambda: storage.stat("set/k"), lambda: get_bytes(storage, "set/k")):
        with pytest.raises(StorageError) as exc:
            op()
        err = exc.value
        text = f"{err} {err.hint}"
        assert err.permanent, text
        assert "access denied" in str(err) and s3_bucket in str(err) and s3_server.endpoint in str(err)
        assert "secret" in (err.hint or "")
        assert wrong not in text and s3_server.secret_key not in text
    assert list(open_storage("ok", s3_storage_config(s3_server, s3_bucket)).list()) == []  # nothing was written


def test_access_denied_names_where_the_wrong_credentials_came_from(
        s3_server: SeaweedS3, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hint named secret_access_key_file whatever the storage used: a user whose secret comes from
    AWS_SECRET_ACCESS_KEY (or whose config has no credentials at all) was sent to a setting they do not use."""
    wrong = "Wr0ngSecretValue-d0-not-leak-1234567890"
    key_file = tmp_path / "s3.secret"
    key_file.write_text(wrong + "\n")
    base = s3_server.storage_config(s3_bucket)
    del base["secret_access_key"]
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    cases = [
        ({**base, "secret_access_key_file": str(key_file)}, {}, f"secret_access_key_file {key_file}"),
        ({**base, "secret_access_key": wrong}, {}, "secret_access_key in the storage config"),
        (base, {"AWS_SECRET_ACCESS_KEY": wrong}, "the secret key in AWS_SECRET_ACCESS_KEY"),
        ({k: v for k, v in base.items() if k != "access_key_id"},
         {"AWS_ACCESS_KEY_ID": base["access_key_id"], "AWS_SECRET_ACCESS_KEY": wrong}, "the AWS SDK found"),
    ]
    for cfg, env, source in cases:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        storage = open_storage("s", S3StorageConfig.model_validate(cfg))
        with pytest.raises(StorageError, match="access denied") as exc:
            list(storage.list())
        hint = exc.value.hint or ""
        assert source in hint, (source, hint)
        assert ("secret_access_key_file" in hint) == ("secret_access_key_file" in cfg), hint
        assert wrong not in f"{exc.value} {hint}"


def test_missing_bucket_is_a_clear_permanent_error(s3_server: SeaweedS3) -> None:
    storage = open_storage("s", s3_storage_config(s3_server, "no-such-bucket-here"))
    for op in (lambda: put_bytes(storage, "k", b"x"), lambda: list(storage.list()), lambda: storage.stat("k")):
        with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist") as exc:
            op()
        assert exc.value.permanent and "create the bucket" in (exc.value.hint or "")


def test_unreachable_endpoint_is_a_transient_error() -> None:
    from upkeeper.sandbox._util import free_port

    port = free_port()  # nothing listens there
    storage = open_storage("s", S3StorageConfig(bucket="b", endpoint_url=f"http://127.0.0.1:{port}",
                                                access_key_id="k", secret_access_key="s", max_attempts=1,
                                                timeout=2))
    with pytest.raises(StorageError) as exc:
        put_bytes(storage, "k", b"x")
    assert not exc.value.permanent
    assert f"127.0.0.1:{port}" in str(exc.value) and "cannot reach" in str(exc.value)


def test_config_prefix_isolates_keys(s3_server: SeaweedS3, s3_bucket: str) -> None:
    a = open_storage("a", s3_storage_config(s3_server, s3_bucket, prefix="/team-a/"))
    b = open_storage("b", s3_storage_config(s3_server, s3_bucket, prefix="team-b"))
    put_bytes(a, "x", b"a")
    put_bytes(b, "x", b"b")
    assert [o.key for o in a.list()] == ["x"] and get_bytes(b, "x") == b"b"
    keys = sorted(o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert keys == ["team-a/x", "team-b/x"]


def test_storage_class_is_sent(s3_server: SeaweedS3, s3_bucket: str) -> None:
    storage = open_storage("s", s3_storage_config(s3_server, s3_bucket, storage_class="STANDARD_IA"))
    put_bytes(storage, "k", b"x")
    head = s3_server.client().head_object(Bucket=s3_bucket, Key="k")
    assert head.get("StorageClass", "STANDARD") == "STANDARD_IA"


def test_part_size_limits_are_validated() -> None:
    with pytest.raises(ValidationError, match="5MiB"):
        S3StorageConfig(bucket="b", part_size="1MiB")  # type: ignore[arg-type]
    assert S3StorageConfig(bucket="b", part_size="5MiB").part_size == 5 * MiB  # type: ignore[arg-type]


def test_part_size_grows_so_any_stream_fits_10000_parts() -> None:
    base = 5 * MiB
    assert part_size_for(1, base) == base and part_size_for(PARTS_PER_SIZE_STEP, base) == base
    assert part_size_for(PARTS_PER_SIZE_STEP + 1, base) == 2 * base
    sizes = [part_size_for(n, base) for n in range(1, 10_001)]
    assert sizes == sorted(sizes) and max(sizes) <= 5 * 1024**3
    assert sum(sizes) > 4 * 1024**4  # ~4.9 TiB even at the minimum part size (S3's object limit is 5 TiB)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_multipart_upload_in_order_at_any_concurrency(s3_server: SeaweedS3, s3_bucket: str,
                                                      concurrency: int) -> None:
    storage = open_storage("s", s3_storage_config(s3_server, s3_bucket, part_size="5MiB",
                                                  upload_concurrency=concurrency))
    data = b"".join(bytes([i]) * (MiB + 17) for i in range(23))  # ~23 MiB: five parts
    w = storage.open_write("k")
    for i in range(0, len(data), 300_001):
        w.write(data[i:i + 300_001])
    w.commit()
    assert get_bytes(storage, "k") == data
    head = s3_server.client().head_object(Bucket=s3_bucket, Key="k")
    assert head["ETag"].strip('"').endswith("-5")  # a multipart object of five parts


def test_abort_stale_uploads(s3_server: SeaweedS3, s3_bucket: str) -> None:
    storage = open_storage("s", s3_storage_config(s3_server, s3_bucket, part_size="5MiB"))
    assert isinstance(storage, S3Storage)
    try:
        w = storage.open_write("left/over")
        w.write(b"x" * (5 * MiB + 1))  # starts a multipart upload, as a run killed here would leave it
        assert w.upload_id is not None
        assert storage.abort_stale_uploads(older_than=timedelta(hours=1)) == 0  # too young
        assert storage.abort_stale_uploads(older_than=timedelta(0)) == 1
        assert s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    finally:
        storage.close()  # this process lives on: the writer's upload thread must not (a killed run's dies with it)


def test_closing_the_storage_ends_an_upload_left_open(s3_server: SeaweedS3, s3_bucket: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A writer neither committed nor aborted (an error path that misses its abort) must not keep its upload
    threads, nor its invisible multipart upload, for the rest of a long-lived process (the daemon's workers, a CLI
    run over many backups): every path closes its storages, and closing ends such an upload."""
    before = set(threading.enumerate())
    storage = open_storage("s", s3_storage_config(s3_server, s3_bucket, part_size="5MiB", upload_concurrency=2))
    w = storage.open_write("left/open")
    w.write(b"x" * (10 * MiB + 1))  # two parts in flight on the writer's pool
    pool = [t for t in threading.enumerate() if t not in before and t.name.startswith("upkeeper-s3")]
    assert pool
    storage.close()
    assert [t.name for t in pool if t.is_alive()] == []
    assert s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert "closing the storage aborts an upload still open" in caplog.text and "left/open" in caplog.text
    with pytest.raises(StorageError, match="after commit/abort"):
        w.commit()  # ended for good: nothing of it ever becomes visible
    assert list(storage.list()) == []
    storage.close()


def test_an_upload_aborted_from_another_thread_starts_nothing_more(s3_server: SeaweedS3, s3_bucket: str) -> None:
    """An encrypted backup writes from its age-drain thread; a task giving up on it (ObjectUpload.abort after its
    join timeout, the storage closed) aborts the writer from another thread meanwhile.  The writer must then start
    no multipart upload and no upload pool, which nothing would ever end."""
    storage = open_storage("s", s3_storage_config(s3_server, s3_bucket, part_size="5MiB", upload_concurrency=2))
    assert isinstance(storage, S3Storage)
    before = set(threading.enumerate())
    w = storage.open_write("aborted/meanwhile")

    def abort_meanwhile(**_: Any) -> None:  # the other thread's abort lands while this one waits on the store
        w.abort()

    storage.client.meta.events.register("before-call.s3.CreateMultipartUpload", abort_meanwhile)
    try:
        with pytest.raises(StorageError, match="aborted"):
            w.write(b"x" * (5 * MiB + 1))
        assert [t.name for t in threading.enumerate() if t not in before and t.name.startswith("upkeeper-s3")] == []
        assert s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    finally:
        storage.close()


def test_stale_upload_cleanup_reads_every_page_of_parts(s3_server: SeaweedS3, s3_bucket: str) -> None:
    """A store lists at most 1000 parts a page (AWS's default) and an upload's newest parts come last: judged by
    its first page only, a long upload still running would be aborted.  SeaweedFS answers with every part unless
    asked for fewer, so the client asks for 2 a page (the same cap, smaller): the cleanup must page through."""
    storage = open_storage("s", s3_storage_config(s3_server, s3_bucket, part_size="5MiB"))
    assert isinstance(storage, S3Storage)
    client = s3_server.client()
    key = "db/app/1/dump"
    upload = client.create_multipart_upload(Bucket=s3_bucket, Key=key)["UploadId"]
    for n in (1, 2, 3):
        client.upload_part(Bucket=s3_bucket, Key=key, UploadId=upload, PartNumber=n, Body=b"old")
    time.sleep(4.2)
    client.upload_part(Bucket=s3_bucket, Key=key, UploadId=upload, PartNumber=4, Body=b"new")  # still running

    pages: list[int] = []

    def two_parts_a_page(params: dict[str, Any], **_: Any) -> None:
        params.setdefault("MaxParts", 2)
        pages.append(params.get("PartNumberMarker", 0))

    storage.client.meta.events.register("provide-client-params.s3.ListParts", two_parts_a_page)
    assert storage.abort_stale_uploads(older_than=timedelta(seconds=3)) == 0  # part 4 is recent: left alone
    assert pages == [0, 2]
    assert [u["UploadId"] for u in client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])] == [upload]
    assert storage.abort_stale_uploads(older_than=timedelta(0)) == 1
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_stale_upload_cleanup_skips_an_upload_completed_meanwhile(s3_server: SeaweedS3, s3_bucket: str) -> None:
    """A backup completing its upload between the cleanup's listing and its look at the parts (prune running
    next to a backup) is not an error: that upload is simply no longer there."""
    storage = open_storage("s", s3_storage_config(s3_server, s3_bucket, part_size="5MiB"))
    assert isinstance(storage, S3Storage)
    client = s3_server.client()
    key = "db/app/1/dump"
    upload = client.create_multipart_upload(Bucket=s3_bucket, Key=key)["UploadId"]
    etag = client.upload_part(Bucket=s3_bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"done")["ETag"]

    def writer_completes(**_: Any) -> None:
        if client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads"):
            client.complete_multipart_upload(Bucket=s3_bucket, Key=key, UploadId=upload,
                                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})

    storage.client.meta.events.register("provide-client-params.s3.ListParts", writer_completes)
    assert storage.abort_stale_uploads(older_than=timedelta(0)) == 0
    assert get_bytes(storage, key) == b"done"


# --- fault: the server dies mid-upload ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def fault_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A server of its own, so killing it disturbs no other test."""
    server = SeaweedS3(tmp_path_factory.mktemp("fault-s3"))
    server.start()
    yield server
    server.stop()


def test_server_killed_mid_upload_then_retry_succeeds(fault_s3: SeaweedS3,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    bucket = fault_s3.create_bucket("fault-bucket")
    storage = open_storage("s", s3_storage_config(fault_s3, bucket, part_size="5MiB", max_attempts=2, timeout=5))
    data = bytes(range(256)) * (64 * 1024)  # 16 MiB: three full parts and a tail
    digest = hashlib.sha256(data).hexdigest()

    w = storage.open_write("db/set1/dump.zst")
    w.write(data[: 6 * MiB])  # the first part is on its way
    fault_s3.kill()
    with caplog.at_level(logging.WARNING), pytest.raises(StorageError) as exc:
        w.write(data[6 * MiB:])  # the next parts cannot reach the server
        w.commit()
    err = exc.value
    assert not err.permanent
    assert "cannot upload part" in str(err) and bucket in str(err) and fault_s3.endpoint in str(err)
    assert "cannot reach the endpoint" in str(err)
    assert fault_s3.secret_key not in f"{err} {err.hint}"
    assert "could not abort multipart upload" in caplog.text  # the server was down for the abort too

    fault_s3.start()  # same ports, same data directory
    assert storage.stat("db/set1/dump.zst") is None  # the failed upload left no object
    assert list(storage.list()) == []

    put_bytes(storage, "db/set1/dump.zst", data)  # the retry (the next run) succeeds
    assert hashlib.sha256(get_bytes(storage, "db/set1/dump.zst")).hexdigest() == digest
    assert isinstance(storage, S3Storage)
    assert storage.abort_stale_uploads(older_than=timedelta(0)) == 1  # the orphan of the killed run


def test_server_restarted_between_operations(fault_s3: SeaweedS3) -> None:
    """A restart of the store between two operations is invisible (the client reconnects)."""
    bucket = fault_s3.create_bucket("restart-bucket")
    storage = open_storage("s", s3_storage_config(fault_s3, bucket))
    put_bytes(storage, "a", b"1")
    fault_s3.restart()
    put_bytes(storage, "b", b"2")
    assert [o.key for o in storage.list()] == ["a", "b"]


# --- TLS with a private CA: SeaweedFS behind nginx terminating TLS (the s3_tls fixture) ----------------------


def test_private_ca_without_ca_file_is_a_clear_permanent_error(s3_tls: TlsS3, s3_bucket: str) -> None:
    cfg = s3_tls.storage_config(s3_bucket, max_attempts=1)
    del cfg["ca_file"]
    storage = open_storage("offsite", S3StorageConfig.model_validate(cfg))
    with pytest.raises(StorageError) as err:
        put_bytes(storage, "k", b"x")
    assert err.value.permanent
    assert "TLS check of the endpoint failed against the system's CA bundle" in err.value.message
    assert "certificate verify failed" in err.value.message
    assert "ca_file" in (err.value.hint or "")
    assert s3_tls.server.secret_key not in str(err.value.message) + str(err.value.hint)


def test_ca_file_of_another_ca_is_refused(s3_tls: TlsS3, s3_bucket: str, tmp_path: Path) -> None:
    other = self_signed(tmp_path / "other", "localhost", stem="other-ca")
    cfg = s3_tls.storage_config(s3_bucket, max_attempts=1, ca_file=str(other.cert))
    storage = open_storage("offsite", S3StorageConfig.model_validate(cfg))
    with pytest.raises(StorageError) as err:
        list(storage.list())
    assert err.value.permanent and f"ca_file {other.cert}" in err.value.message


def test_ca_file_that_is_missing_or_not_pem_is_named(s3_tls: TlsS3, s3_bucket: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    storage = open_storage("s", S3StorageConfig.model_validate(s3_tls.storage_config(s3_bucket, ca_file=str(missing))))
    with pytest.raises(StorageError) as err:
        put_bytes(storage, "k", b"x")
    assert err.value.permanent and f"cannot read ca_file {missing}" in err.value.message
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    storage = open_storage("s", S3StorageConfig.model_validate(s3_tls.storage_config(s3_bucket, ca_file=str(garbage))))
    with pytest.raises(StorageError) as err:
        put_bytes(storage, "k", b"x")
    assert f"ca_file {garbage} holds no PEM certificate" in err.value.message


def test_verify_tls_false_skips_the_check_and_contradicts_ca_file(s3_tls: TlsS3, s3_bucket: str) -> None:
    cfg = s3_tls.storage_config(s3_bucket)
    del cfg["ca_file"]
    storage = open_storage("s", S3StorageConfig.model_validate({**cfg, "verify_tls": False}))
    put_bytes(storage, "k", b"unverified")
    assert get_bytes(storage, "k") == b"unverified"
    with pytest.raises(ValidationError, match="ca_file is set but verify_tls is false"):
        S3StorageConfig.model_validate({**s3_tls.storage_config(s3_bucket), "verify_tls": False})


def test_part_body_reads_like_a_file_and_rewinds_for_a_retry() -> None:
    data = bytearray(os.urandom(100_000))
    body = PartBody(data)
    assert len(body) == 100_000 and body.seekable() and body.tell() == 0
    first = b"".join(iter(lambda: body.read(8192), b""))
    assert first == data and body.read() == b""
    assert body.seek(0) == 0  # botocore rewinds the body before a retry
    buf = bytearray(70_000)
    assert body.readinto(buf) == 70_000 and buf == data[:70_000]
    assert body.read() == data[70_000:]
    assert body.seek(-10, io.SEEK_END) == 99_990 and body.read(100) == data[-10:]
    assert body.seek(5, io.SEEK_SET) == 5 and body.seek(5, io.SEEK_CUR) == 10 and body.read(3) == data[10:13]
    with pytest.raises(ValueError):
        body.seek(-1)


def test_certificate_for_another_host_is_refused(s3_tls: TlsS3, s3_bucket: str, services_dir: Path) -> None:
    """The right CA, but a certificate that names another host: refused as permanent, like an unknown CA."""
    proxy, ca = start_tls_proxy(services_dir / f"s3-tls-other-{s3_bucket}", s3_tls.server.port, "other.example",
                                ["other.example"])
    try:
        cfg = s3_tls.storage_config(s3_bucket, endpoint_url=f"https://127.0.0.1:{proxy.port}", ca_file=str(ca),
                                    max_attempts=1)
        storage = open_storage("offsite", S3StorageConfig.model_validate(cfg))
        with pytest.raises(StorageError) as err:
            put_bytes(storage, "k", b"x")
        assert err.value.permanent and "TLS check of the endpoint failed" in err.value.message
        assert "127.0.0.1" in err.value.message and "names the endpoint's host" in (err.value.hint or "")
    finally:
        proxy.stop()


def test_handshake_cut_short_stays_retryable(s3_tls: TlsS3, s3_bucket: str) -> None:
    """A server that hangs up during the TLS handshake is a passing fault, not a bad certificate."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def hang_up() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(4096)  # the ClientHello
            conn.sendall(bytes([0x16, 3, 3, 0, 80]) + bytes(10))  # the start of a ServerHello, then hang up
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        cfg = s3_tls.storage_config(s3_bucket, endpoint_url=f"https://127.0.0.1:{listener.getsockname()[1]}",
                                    max_attempts=1)
        storage = open_storage("offsite", S3StorageConfig.model_validate(cfg))
        with pytest.raises(StorageError) as err:
            put_bytes(storage, "k", b"x")
        assert not err.value.permanent, err.value.message
        assert "cannot reach the endpoint" in err.value.message, err.value.message
    finally:
        stop.set()
        listener.close()


def test_create_exclusive_on_stores_without_conditional_writes(s3_server: SeaweedS3, s3_bucket: str) -> None:
    """SeaweedFS honours ``If-None-Match: *``; other stores ignore it (the header dropped on the way here) or refuse
    it (501 NotImplemented, answered here for the store).  One that refuses it gets a look before the write (an
    existing object is never overwritten); one that ignores it overwrites — ``storages check`` says so."""
    from botocore.awsrequest import AWSResponse

    from upkeeper.cli.storages import check_storage

    class _Raw:
        def stream(self, **_kw: Any) -> Iterator[bytes]:
            yield (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code><Message>A header '
                   b'you provided implies functionality that is not implemented</Message></Error>')

    def refuse(request: Any, **_kw: Any) -> AWSResponse | None:
        if request.headers.get("If-None-Match"):
            return AWSResponse(request.url, 501, {}, _Raw())
        return None

    def ignore(request: Any, **_kw: Any) -> None:
        if "If-None-Match" in request.headers:
            del request.headers["If-None-Match"]

    honouring = open_storage("s", s3_storage_config(s3_server, s3_bucket))
    assert check_storage("s", honouring)["exclusive"] is True

    refusing = open_storage("s", s3_storage_config(s3_server, s3_bucket))
    refusing.client.meta.events.register("before-send.s3.PutObject", refuse)  # type: ignore[attr-defined]
    assert refusing.create_exclusive("set/.writing", b"one") is True
    assert refusing.create_exclusive("set/.writing", b"two") is False
    assert get_bytes(refusing, "set/.writing") == b"one"
    assert check_storage("s", refusing)["exclusive"] is True

    ignoring = open_storage("s", s3_storage_config(s3_server, s3_bucket))
    ignoring.client.meta.events.register("before-sign.s3.PutObject", ignore)  # type: ignore[attr-defined]
    result = check_storage("s", ignoring)
    assert result["ok"] and result["exclusive"] is False, result


@pytest.mark.parametrize("status,code", [(400, "InvalidArgument"), (501, "NotImplemented")])
def test_delete_if_on_stores_refusing_conditional_deletes(s3_server: SeaweedS3, s3_bucket: str, status: int,
                                                          code: str) -> None:
    """SeaweedFS and AWS honour ``If-Match`` on DeleteObject; a store that refuses the header itself (answered here
    for the store: 400 InvalidArgument, 501 NotImplemented) gets the plain delete a lease's release made before —
    an error there failed every release, and a set deleted by retention kept its lease for good.  Bytes other than
    those read are still never deleted (compared first)."""
    from botocore.awsrequest import AWSResponse

    class _Raw:
        def stream(self, **_kw: Any) -> Iterator[bytes]:
            yield (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>If-Match is not '
                   'supported here</Message></Error>').encode()

    def refuse(request: Any, **_kw: Any) -> AWSResponse | None:
        if request.headers.get("If-Match"):
            return AWSResponse(request.url, status, {}, _Raw())
        return None

    refusing = open_storage("s", s3_storage_config(s3_server, s3_bucket))
    refusing.client.meta.events.register("before-send.s3.DeleteObject", refuse)  # type: ignore[attr-defined]
    put_bytes(refusing, "set/.writing", b"mine")
    assert refusing.delete_if("set/.writing", b"another writer's") is False
    assert get_bytes(refusing, "set/.writing") == b"mine"
    assert refusing.delete_if("set/.writing", b"mine") is True
    assert refusing.stat("set/.writing") is None


def test_a_port_taken_before_weed_binds_it_starts_it_again_on_others(tmp_path: Path) -> None:
    """weed mini opens ten ports picked free beforehand; one taken by another process meanwhile made it exit at
    once, and the start waited the whole minute for a port nothing would listen on (a CI run lost a worker's S3
    tests to it under load).  Now its exit ends the wait at once, with its log, and it starts on other ports."""
    import socket
    import subprocess

    from upkeeper.sandbox._util import ServerExited, wait_for_port

    server = SeaweedS3(tmp_path / "s3")
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", server._aux_ports[0]))  # the master's port, taken by someone else
    taken.listen(1)
    first = server.port
    try:
        t0 = time.monotonic()
        server.start(timeout=60)
        assert time.monotonic() - t0 < 30
        assert server.port != first  # started again, on other ports
        assert server.client().list_buckets()["Buckets"] == []
    finally:
        server.stop()
        taken.close()
    # a server that exits before it listens: said at once, with its log
    proc = subprocess.Popen(["sh", "-c", "echo bind: address already in use; exit 3"], stdout=subprocess.PIPE)
    t0 = time.monotonic()
    with pytest.raises(ServerExited, match="sh exited with 3 before it listened on 127.0.0.1:1: its log"):
        wait_for_port(1, timeout=30, proc=proc, log=lambda: "its log")
    assert time.monotonic() - t0 < 5
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()
