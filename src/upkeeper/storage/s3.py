"""S3 (and any S3-compatible store) via boto3: multipart streaming upload.

Atomicity comes from S3 itself: an object appears under its key only when
``PutObject`` or ``CompleteMultipartUpload`` succeeds.  The writer buffers one
part at a time (``part_size``) and uploads each part in the background as it fills
(``upload_concurrency`` in flight), so memory stays bounded whatever the object's size.  A crash leaves at most an
*incomplete multipart upload* — invisible to ``list``/``stat``/``GET``, removed by
``abort()``, by :meth:`S3Storage.abort_stale_uploads` or by a bucket lifecycle rule.

Errors become :class:`StorageError` naming bucket, key and endpoint — never the
secret key.  Requests retry with botocore's ``standard`` mode.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import ssl
import threading
import warnings
import weakref
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import boto3
import botocore.session
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from botocore.exceptions import (
    SSLError as BotoSSLError,
)
from urllib3.exceptions import InsecureRequestWarning

from upkeeper.config.storage import MAX_PART_SIZE, S3StorageConfig
from upkeeper.errors import StorageError
from upkeeper.shield import shielded
from upkeeper.storage.base import ObjectInfo, check_key

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

log = logging.getLogger(__name__)

#: The part size doubles after this many parts (S3 allows 10,000 parts per upload).
PARTS_PER_SIZE_STEP = 1000
READ_CHUNK = 1024 * 1024

_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken",
               "AuthorizationHeaderMalformed", "InvalidSecurity", "AllAccessDisabled", "403"}
_MISSING_CODES = {"NoSuchKey", "NotFound", "404"}
#: a conditional write (``If-None-Match: *``) refused: the key exists, or another conditional write to it is under
#: way (AWS answers 409 to the loser of two at once)
_EXISTS_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_PERMANENT_CODES = _AUTH_CODES | _MISSING_CODES | {
    "NoSuchBucket", "InvalidBucketName", "InvalidArgument", "InvalidRequest", "EntityTooLarge", "EntityTooSmall",
    "InvalidPart", "InvalidPartOrder", "InvalidStorageClass", "KeyTooLongError", "MethodNotAllowed",
    "NotImplemented", "400", "405", "411", "501",
}


def part_size_for(part_number: int, base: int) -> int:
    """Size of part ``part_number`` (1-based): ``base``, doubling every 1000 parts, capped at 5GiB."""
    return min(base << ((part_number - 1) // PARTS_PER_SIZE_STEP), MAX_PART_SIZE)


class PartBody(io.RawIOBase):
    """A part's buffer as a seekable file that is read without copying the buffer.

    Given bytes or a bytearray over HTTPS, botocore wraps it in ``io.BytesIO`` to stream
    the aws-chunked trailer checksum — a copy of every part in flight (measured: the
    contract test's 32 MiB upload peaked at 29 MiB; through this reader, 19).  A file is
    read in small blocks instead; ``seek`` lets botocore rewind it for a retry.
    """

    def __init__(self, data: bytes | bytearray) -> None:
        super().__init__()
        self._view = memoryview(data)
        self._pos = 0

    def __len__(self) -> int:
        return len(self._view)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        n = max(0, min(len(out), len(self._view) - self._pos))
        out[:n] = self._view[self._pos:self._pos + n]
        self._pos += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        start = min(self._pos, end)
        self._pos = max(self._pos, end)
        return bytes(self._view[start:end])


class S3Writer:
    """A streaming upload: parts upload in the background while the next one fills.

    At most ``upload_concurrency`` parts are in flight; ``write`` waits for the oldest when
    that many are, so memory stays at about ``(upload_concurrency + 1) × part_size``.
    Everything that fits in one part goes up with a single ``put_object`` at commit.
    """

    def __init__(self, storage: S3Storage, key: str) -> None:
        self.storage = storage
        self.key = key
        self.object_key = storage.object_key(key)
        self.buffer = bytearray()
        self.size = 0
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.next_number = 1
        self.pending: deque[Future[dict[str, Any]]] = deque()
        self.pool: ThreadPoolExecutor | None = None
        self.done = False
        storage._opened(self)

    def _next_part_size(self) -> int:
        return part_size_for(self.next_number, self.storage.config.part_size)

    def write(self, data: bytes) -> int:
        if self.done:
            raise StorageError(f"{self.storage.where(self.key)}: write after commit/abort", permanent=True)
        self.buffer += data
        self.size += len(data)
        try:
            while self.pending and self.pending[0].done():  # surface a failed part as early as possible
                self._collect()
            while len(self.buffer) >= self._next_part_size():
                n = self._next_part_size()
                # hand the filled buffer itself to the upload (no copy); only its small tail moves on
                chunk, self.buffer = self.buffer, self.buffer[n:]
                del chunk[n:]
                self._submit(chunk)
                del chunk
        except BaseException:
            self.abort()
            raise
        return len(data)

    def _submit(self, chunk: bytes | bytearray) -> None:
        s = self.storage
        self._check_open()
        if self.upload_id is None:
            with s.errors("cannot start the multipart upload of", self.key):
                resp = s.client.create_multipart_upload(Bucket=s.bucket, Key=self.object_key, **s.put_args())
            self.upload_id = resp["UploadId"]
        number = self.next_number
        self.next_number += 1
        concurrency = s.config.upload_concurrency
        if concurrency <= 1:
            self.parts.append(self._upload_part(self.upload_id, number, chunk))
            return
        while len(self.pending) >= concurrency:  # wait for a free slot: memory stays bounded
            self._collect()
        self._check_open()
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="upkeeper-s3")
        self.pending.append(self.pool.submit(self._upload_part, self.upload_id, number, chunk))

    def _check_open(self) -> None:
        """Aborted by another thread (a task giving up on a stalled upload, the storage closed) while this one
        waited: start no new multipart upload and no new pool, which nothing would end."""
        if self.done:
            raise StorageError(f"{self.storage.where(self.key)}: the upload was aborted", permanent=True)

    def _collect(self) -> None:
        """Wait for the oldest part in flight; its StorageError is raised here."""
        self.parts.append(self.pending.popleft().result())

    def _upload_part(self, upload_id: str, number: int, chunk: bytes | bytearray) -> dict[str, Any]:
        s = self.storage
        with s.errors(f"cannot upload part {number} of", self.key):
            resp = s.client.upload_part(Bucket=s.bucket, Key=self.object_key, UploadId=upload_id,
                                        PartNumber=number, Body=cast(BinaryIO, PartBody(chunk)))
        part: dict[str, Any] = {"PartNumber": number, "ETag": resp["ETag"]}
        for field in ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1", "ChecksumSHA256"):
            if resp.get(field):
                part[field] = resp[field]
        return part

    def commit(self) -> ObjectInfo:
        if self.done:
            raise StorageError(f"{self.storage.where(self.key)}: commit after commit/abort", permanent=True)
        s = self.storage
        try:
            if self.upload_id is None:
                with s.errors("cannot upload", self.key):
                    s.client.put_object(Bucket=s.bucket, Key=self.object_key,
                                        Body=cast(BinaryIO, PartBody(self.buffer)), **s.put_args())
            else:
                if self.buffer:
                    tail, self.buffer = self.buffer, bytearray()
                    self._submit(tail)
                while self.pending:
                    self._collect()
                with s.errors("cannot complete the multipart upload of", self.key):
                    s.client.complete_multipart_upload(
                        Bucket=s.bucket, Key=self.object_key, UploadId=self.upload_id,
                        MultipartUpload={"Parts": self.parts},  # type: ignore[typeddict-item]
                    )
                self.upload_id = None
        except BaseException:
            self.abort()
            raise
        self._stop_pool()
        self.buffer = bytearray()
        self.done = True
        s._finished(self)
        return ObjectInfo(self.key, self.size, datetime.now(UTC))

    def _stop_pool(self) -> None:
        for fut in self.pending:
            fut.cancel()
        for fut in self.pending:
            if not fut.cancelled():
                with contextlib.suppress(BaseException):
                    fut.result()
        self.pending.clear()
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None

    @shielded()  # a stop arriving meanwhile waits for it (upkeeper.shield)
    def abort(self) -> None:
        """Drop the buffer and the pending multipart upload (best effort: the store may be down)."""
        self.done = True
        self.buffer = bytearray()
        s = self.storage
        s._finished(self)
        self._stop_pool()
        if self.upload_id is None:
            return
        upload_id, self.upload_id = self.upload_id, None
        try:
            s.client.abort_multipart_upload(Bucket=s.bucket, Key=self.object_key, UploadId=upload_id)
        except (BotoCoreError, ClientError) as exc:
            log.warning("%s: could not abort multipart upload %s (it stays invisible; abort_stale_uploads or a "
                        "lifecycle rule removes it): %s", s.where(self.key), upload_id, s.redact(str(exc)))


class _S3Reader(io.RawIOBase):
    """The body of a GET as a raw stream whose network errors become StorageError."""

    def __init__(self, storage: S3Storage, key: str, body: Any) -> None:
        self.storage = storage
        self.key = key
        self.body = body

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        with self.storage.errors("cannot read", self.key):
            data = self.body.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self.body.close()
            finally:
                super().close()


_LOADER: Any = None


def _botocore_session() -> Any:
    """A fresh botocore session (its own credential chain) sharing one model loader.

    Loading the S3 service model costs about half a second of CPU; every storage
    object would otherwise pay it again.
    """
    global _LOADER
    session = botocore.session.get_session()
    if _LOADER is None:
        _LOADER = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _LOADER)
    return session


class S3Storage:
    kind = "s3"

    def __init__(self, name: str, config: S3StorageConfig) -> None:
        self.name = name
        self.config = config
        self.bucket = config.bucket
        p = config.prefix.strip("/")
        self.prefix = f"{p}/" if p else ""
        self.endpoint = config.endpoint_url or "AWS"
        self._secret = self._credentials()[1]
        self._client: S3Client | None = None
        self._bucket_ok = False
        self._writers: weakref.WeakSet[S3Writer] = weakref.WeakSet()  # neither committed nor aborted yet
        self._writers_lock = threading.Lock()

    # --- plumbing -------------------------------------------------------------------------------

    def _credentials(self) -> tuple[str | None, str | None]:
        key_id = self.config.access_key_id
        secret = self.config.secret("secret_access_key")
        if key_id and not secret:
            secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
            if not secret:
                raise StorageError(
                    f"storage {self.name!r}: access_key_id is set but no secret access key was given",
                    "Try: set secret_access_key_file (or secret_access_key, or AWS_SECRET_ACCESS_KEY)",
                    permanent=True)
        if secret and not key_id:
            raise StorageError(f"storage {self.name!r}: a secret access key is set but access_key_id is not",
                               "Try: set access_key_id next to the secret", permanent=True)
        return key_id, secret

    def credential_source(self) -> str:
        """Where the credentials in use come from, for a hint (never the secret itself)."""
        c = self.config
        if not c.access_key_id:
            return ("the credentials the AWS SDK found (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                    "~/.aws/credentials or AWS_PROFILE, an instance role): none are in the storage config")
        if c.secret_access_key_file:
            secret = f"the secret key in secret_access_key_file {c.secret_access_key_file}"
        elif c.secret_access_key is not None:
            secret = "secret_access_key in the storage config"
        else:
            secret = "the secret key in AWS_SECRET_ACCESS_KEY"
        return f"access_key_id in the storage config and {secret}"

    @property
    def client(self) -> S3Client:
        if self._client is None:
            key_id, secret = self._credentials()
            cfg = BotoConfig(
                s3={"addressing_style": self.config.addressing_style},
                retries={"mode": "standard", "max_attempts": self.config.max_attempts},
                connect_timeout=self.config.timeout, read_timeout=self.config.timeout,
                request_checksum_calculation=self.config.checksums,
                response_checksum_validation=self.config.checksums,
                user_agent_extra="upkeeper",
            )
            region = self.config.region
            if region is None and self.config.endpoint_url and not os.environ.get("AWS_DEFAULT_REGION"):
                region = "us-east-1"  # self-hosted stores ignore it, but SigV4 needs one
            verify: bool | str = self.config.verify_tls
            if self.config.ca_file is not None:
                verify = self._ca_file()
            elif not verify:
                # said once here, instead of urllib3's InsecureRequestWarning on every request
                log.warning("%s: the endpoint's TLS certificate is not checked (verify_tls: false)", self.describe())
                warnings.filterwarnings("ignore", category=InsecureRequestWarning)
            try:
                session = boto3.session.Session(botocore_session=_botocore_session())
                self._client = session.client(
                    "s3", endpoint_url=self.config.endpoint_url, region_name=region,
                    aws_access_key_id=key_id, aws_secret_access_key=secret,
                    verify=verify, config=cfg,
                )
            except (BotoCoreError, ValueError) as exc:
                raise StorageError(f"{self.describe()}: cannot create the S3 client: {self.redact(str(exc))}",
                                   "Try: check endpoint_url and region", permanent=True) from None
        return self._client

    def _ca_file(self) -> str:
        """The configured CA bundle, checked readable now: a typo must not read as an unreachable endpoint."""
        assert self.config.ca_file is not None
        path = os.path.expanduser(self.config.ca_file)
        try:
            with open(path, "rb") as fh:
                head = fh.read(4096)
        except OSError as exc:
            raise StorageError(f"{self.describe()}: cannot read ca_file {path}: {exc.strerror or exc}",
                               "Try: point ca_file at the PEM file of the CA that signed the endpoint's "
                               "certificate", permanent=True) from None
        if b"-----BEGIN CERTIFICATE-----" not in head:
            raise StorageError(f"{self.describe()}: ca_file {path} holds no PEM certificate",
                               "Try: point ca_file at a PEM file ('-----BEGIN CERTIFICATE-----')", permanent=True)
        return path

    def redact(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "***")
        return text

    def object_key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def where(self, key: str | None = None) -> str:
        path = f"s3://{self.bucket}/{self.prefix}{key or ''}"
        return f"{path} at {self.endpoint}"

    def put_args(self) -> dict[str, Any]:
        return {"StorageClass": self.config.storage_class} if self.config.storage_class else {}

    def errors(self, action: str, key: str | None = None) -> _ErrorMap:
        return _ErrorMap(self, action, key)

    # --- the Storage interface ------------------------------------------------------------------

    def open_write(self, key: str) -> S3Writer:
        self.object_key(key)
        return S3Writer(self, key)

    def open_read(self, key: str) -> BinaryIO:
        okey = self.object_key(key)
        with self.errors("cannot read", key):
            resp = self.client.get_object(Bucket=self.bucket, Key=okey)
        return io.BufferedReader(_S3Reader(self, key, resp["Body"]), buffer_size=READ_CHUNK)

    def stat(self, key: str) -> ObjectInfo | None:
        okey = self.object_key(key)
        try:
            with self.errors("cannot stat", key):
                resp = self.client.head_object(Bucket=self.bucket, Key=okey)
        except _Missing:
            self._check_bucket()  # HEAD cannot tell a missing key from a missing bucket
            return None
        return ObjectInfo(key, int(resp["ContentLength"]), _utc(resp.get("LastModified")))

    def _check_bucket(self) -> None:
        if self._bucket_ok:
            return
        try:
            with self.errors("cannot access", None):
                self.client.head_bucket(Bucket=self.bucket)
        except _Missing:
            raise StorageError(f"{self.describe()}: bucket {self.bucket!r} does not exist",
                               "Try: create the bucket, or fix 'bucket' in the storage config",
                               permanent=True) from None
        self._bucket_ok = True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full = self.prefix + prefix
        paginator = self.client.get_paginator("list_objects_v2")
        with self.errors("cannot list", prefix or None):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    okey = obj["Key"]
                    if not okey.startswith(self.prefix):
                        continue
                    yield ObjectInfo(okey[len(self.prefix):], int(obj["Size"]), _utc(obj.get("LastModified")))

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """See ``base.Storage.create_exclusive``: ``PutObject`` with ``If-None-Match: *`` (AWS S3 since 2024,
        SeaweedFS, MinIO), which the store refuses (412, or 409 for a conditional write racing another) when the
        key exists.  The object is read back: a store that ignores the condition shows the later of two writes,
        so its loser, reading back at least, still finds out (two writes that are each read back before the
        other lands are not caught: a window of one round trip, on such a store only)."""
        okey = self.object_key(key)
        with self.errors("cannot create", key):
            try:
                self.client.put_object(Bucket=self.bucket, Key=okey, Body=data, IfNoneMatch="*",
                                       **self.put_args())
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if _code(exc) in _EXISTS_CODES or status in (409, 412):
                    return False
                if _code(exc) not in ("NotImplemented", "501") and status != 501:
                    raise
                # a store that refuses the condition itself: look, then write (two writers at the same instant
                # may both get here; the read-back below finds the earlier one out when the later one lands first)
                log.info("%s: the store does not support conditional writes (If-None-Match); looking before "
                         "writing instead", self.describe())
                if self.stat(key) is not None:
                    return False
                self.client.put_object(Bucket=self.bucket, Key=okey, Body=data, **self.put_args())
        with self.errors("cannot read back", key):
            resp = self.client.get_object(Bucket=self.bucket, Key=okey)
            there = resp["Body"].read()
        return bool(there == data)

    def _etag_if(self, key: str, current: bytes) -> str | None:
        """The ETag of ``key`` when it holds exactly ``current`` (None: it is gone or holds something else), for
        a write or delete conditional on it (:meth:`replace_if`, :meth:`delete_if`)."""
        try:
            with self.errors("cannot read", key):
                resp = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
                there = resp["Body"].read()
        except _Missing:
            return None
        return str(resp["ETag"]) if there == current else None

    def replace_if(self, key: str, data: bytes, current: bytes) -> bool:
        """See ``base.Storage.replace_if``: the object read (its ETag), then ``PutObject`` with ``If-Match`` that
        ETag (AWS S3 since 2024, SeaweedFS, MinIO), which the store refuses (412; 409 racing another conditional
        write; 404 once deleted) when another write came between.  A store that answers the condition with
        501 NotImplemented is written to without it (a write in between is replaced unseen, as on local)."""
        okey = self.object_key(key)
        etag = self._etag_if(key, current)
        if etag is None:
            return False
        with self.errors("cannot replace", key):
            try:
                self.client.put_object(Bucket=self.bucket, Key=okey, Body=data, IfMatch=etag, **self.put_args())
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if _condition_failed(exc):
                    return False
                if _code(exc) not in ("NotImplemented", "501") and status != 501:
                    raise
                log.info("%s: the store does not support conditional writes (If-Match); replacing without",
                         self.describe())
                self.client.put_object(Bucket=self.bucket, Key=okey, Body=data, **self.put_args())
        return True

    def delete_if(self, key: str, current: bytes) -> bool:
        """See ``base.Storage.delete_if``: the object read (its ETag), then ``DeleteObject`` with ``If-Match`` that
        ETag (AWS S3 since 2024, SeaweedFS), which the store refuses (412; 409 racing another write; 404 once
        deleted) when another write came between.  A store that refuses the condition itself (501 NotImplemented,
        400 InvalidArgument) is deleted from without it."""
        okey = self.object_key(key)
        etag = self._etag_if(key, current)
        if etag is None:
            return False
        with self.errors("cannot delete", key):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=okey, IfMatch=etag)
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if _condition_failed(exc):
                    return False
                if _code(exc) not in ("NotImplemented", "501", "InvalidArgument", "InvalidRequest") \
                        and status not in (400, 501):
                    raise
                # a store that refuses the condition itself (501, or 400 naming the header): deleting without it
                # is how a release worked before (a takeover in between is deleted unseen); never a lease left for
                # good, which would keep a deleted set's remains on such a store
                log.info("%s: the store does not support conditional deletes (If-Match); deleting without",
                         self.describe())
                self.client.delete_object(Bucket=self.bucket, Key=okey)
        return True

    def delete(self, key: str) -> None:
        okey = self.object_key(key)
        try:
            with self.errors("cannot delete", key):
                self.client.delete_object(Bucket=self.bucket, Key=okey)
        except _Missing:
            return

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix} at {self.endpoint}"

    def _opened(self, writer: S3Writer) -> None:
        with self._writers_lock:
            self._writers.add(writer)

    def _finished(self, writer: S3Writer) -> None:
        with self._writers_lock:
            self._writers.discard(writer)

    def close(self) -> None:
        """End the writers still open (aborted: their upload pools and multipart uploads go), then the client.

        Every path closes its storages when done; a writer it left open (an error path that missed its abort)
        would otherwise keep its pool's threads, and the invisible multipart upload, for the rest of a
        long-lived process."""
        with self._writers_lock:
            left = list(self._writers)
        for w in left:
            log.warning("%s: closing the storage aborts an upload still open", self.where(w.key))
            with contextlib.suppress(Exception):
                w.abort()
        if self._client is not None:
            self._client.close()
            self._client = None

    # --- S3 specifics ---------------------------------------------------------------------------

    def abort_stale_uploads(self, older_than: timedelta = timedelta(hours=24), prefix: str = "") -> int:
        """Abort incomplete multipart uploads under our prefix (and ``prefix`` in it) idle for more than
        ``older_than``.

        They are what a crash mid-upload leaves behind: invisible, but billed.  An upload
        counts as idle from its newest part (or its start), so a long upload still in
        progress in another process is left alone.  Returns how many were aborted.
        """
        cutoff = datetime.now(UTC) - older_than
        n = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        with self.errors("cannot clean incomplete uploads under", None):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for up in page.get("Uploads", []):
                    try:
                        if self._last_activity(up) > cutoff:
                            continue
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"],
                                                           UploadId=up["UploadId"])
                    except ClientError as exc:
                        if _code(exc) == "NoSuchUpload":
                            continue  # completed or aborted by its writer since it was listed: not ours to count
                        raise
                    n += 1
        return n

    def partial_activity(self, prefix: str) -> datetime | None:
        """The newest part (or start) of an incomplete multipart upload under ``prefix`` (see
        ``base.SeesPartials``)."""
        latest: datetime | None = None
        paginator = self.client.get_paginator("list_multipart_uploads")
        with self.errors("cannot list the uploads in progress under", None):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for up in page.get("Uploads", []):
                    try:
                        t = self._last_activity(up)
                    except ClientError as exc:
                        if _code(exc) == "NoSuchUpload":
                            continue  # completed or aborted since it was listed
                        raise
                    latest = t if latest is None else max(latest, t)
        return latest

    def _last_activity(self, upload: Any) -> datetime:
        """The upload's start or its newest part, whichever is later.  Every page of parts is read: a store
        lists at most 1000 parts a page, and a long upload's newest parts are on its last page."""
        latest: datetime = _utc(upload.get("Initiated")) or datetime.now(UTC)
        paginator = self.client.get_paginator("list_parts")
        for page in paginator.paginate(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]):
            for part in page.get("Parts", []):
                modified = _utc(part.get("LastModified"))
                if modified is not None and modified > latest:
                    latest = modified
        return latest

    def clean_partials(self, older_than: timedelta = timedelta(hours=24), prefix: str = "") -> int:
        """The storage-wide name for :meth:`abort_stale_uploads` (see ``base.clean_partials``)."""
        return self.abort_stale_uploads(older_than, prefix)


def _condition_failed(exc: ClientError) -> bool:
    """A conditional write or delete the store refused because the object changed or went meanwhile (412; 409
    racing another conditional request; 404 once deleted)."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _code(exc) in _EXISTS_CODES or _code(exc) in _MISSING_CODES or status in (404, 409, 412)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "")


def _utc(ts: datetime | None) -> datetime | None:
    return ts.astimezone(UTC) if ts is not None else None


class _Missing(StorageError):
    """The object (not the bucket) does not exist."""


class _ErrorMap:
    """``with storage.errors(action, key):`` turns boto errors into StorageError."""

    def __init__(self, storage: S3Storage, action: str, key: str | None) -> None:
        self.storage = storage
        self.action = action
        self.key = key

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, StorageError):
            return
        err = translate(self.storage, self.action, self.key, exc)
        if err is not None:
            raise err from None


#: what OpenSSL and urllib3 say when the certificate itself does not check out (unknown CA,
#: expired, another host's name) — as opposed to a handshake cut short, which a retry may cure.
#: Only a fallback: :func:`_certificate_rejected` goes by the exceptions' types first.
_TLS_VERIFY_FAILED = re.compile(r"certificate|doesn't match|hostname", re.IGNORECASE)


def _certificate_rejected(exc: BaseException) -> bool:
    """Whether a TLS failure is the certificate not checking out, not a handshake cut short.

    botocore's SSLError wraps urllib3's, which wraps what the ssl module raised: an
    ``ssl.SSLCertVerificationError`` (unknown CA, expired, another host's name as OpenSSL
    checks it) or urllib3's own ``CertificateError`` (its host-name match).  The chain is
    walked by type (the ``error`` botocore keeps, ``args``, causes); the message text is
    consulted only when no such type is found.
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError) or type(e).__name__ == "CertificateError":
            return True
        nested = [getattr(e, "kwargs", {}).get("error"), e.__cause__, e.__context__, *e.args]
        todo.extend(n for n in nested if isinstance(n, BaseException))
    return _TLS_VERIFY_FAILED.search(str(exc)) is not None


def translate(storage: S3Storage, action: str, key: str | None, exc: BaseException) -> StorageError | None:
    where = storage.where(key)
    head = f"{action} {where}"
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        text = storage.redact(str(err.get("Message") or code))
        if code in _MISSING_CODES:
            return _Missing(f"{storage.describe()}: no object {key!r}", permanent=True)
        if code == "NoSuchBucket":
            return StorageError(f"{head}: bucket {storage.bucket!r} does not exist",
                                "Try: create the bucket, or fix 'bucket' in the storage config", permanent=True)
        if code in _AUTH_CODES:
            return StorageError(
                f"{head}: access denied ({code}: {text})",
                f"Try: check {storage.credential_source()}, and that the key may "
                "s3:GetObject, s3:PutObject, s3:DeleteObject, s3:ListBucket and s3:AbortMultipartUpload on the "
                "bucket — see docs/storage.md",
                permanent=True)
        return StorageError(f"{head}: {code}: {text}", permanent=code in _PERMANENT_CODES)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return StorageError(f"{head}: no S3 credentials found",
                            "Try: set access_key_id and secret_access_key_file in the storage config, or "
                            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY", permanent=True)
    if isinstance(exc, ParamValidationError):
        return StorageError(f"{head}: {storage.redact(str(exc))}", permanent=True)
    if isinstance(exc, BotoSSLError) and _certificate_rejected(exc):  # not a handshake cut short
        ca = f"ca_file {storage.config.ca_file}" if storage.config.ca_file else "the system's CA bundle"
        return StorageError(f"{head}: TLS check of the endpoint failed against {ca}: {storage.redact(str(exc))}",
                            "Try: set ca_file to the PEM file of the CA that signed the endpoint's certificate, "
                            "and check that the certificate names the endpoint's host", permanent=True)
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):  # botocore's text names no URL mid-stream
        return StorageError(f"{head}: no answer from the endpoint within timeout ({storage.config.timeout:g} s)",
                            "Try: check the network and that the S3 endpoint is up; the next run retries (raise "
                            "'timeout' of the storage for a store that is slow but alive)", permanent=False)
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return StorageError(f"{head}: cannot reach the endpoint: {storage.redact(str(exc))}",
                            "Try: check that the S3 endpoint is up and reachable; the next run retries",
                            permanent=False)
    if isinstance(exc, BotoCoreError):
        return StorageError(f"{head}: {storage.redact(str(exc))}", permanent=False)
    if isinstance(exc, OSError):
        return StorageError(f"{head}: {exc.strerror or exc}", permanent=False)
    return None
