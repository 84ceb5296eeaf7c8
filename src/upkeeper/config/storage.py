"""Storage configuration: where backups go.  One model per ``kind``."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from upkeeper.config.types import ByteSize, FileSecrets, StrictModel


class LocalStorageConfig(StrictModel):
    """A directory on this machine (or a mounted volume)."""

    kind: Literal["local"] = Field("local", description="the kind of this entry. Source: none (fixed value)")
    path: str = Field(..., description="directory holding the backup sets; it must exist: upkeeper never creates "
            "it, so an unmounted volume gets no backups (mkdir -p -m 700 it once). Source: none (required)")
    prefix: str = Field("", description="key prefix inside the directory (created as needed). "
            "Source: upkeeper (not set by default)")
    fsync: bool = Field(True, description="fsync files and directories before a write counts as done. "
            "Source: upkeeper default")


MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_SIZE = 5 * 1024**3


class S3StorageConfig(FileSecrets):
    """Any S3-compatible object store (AWS, MinIO, SeaweedFS, Ceph, Wasabi, R2 …)."""

    secret_fields = ("secret_access_key",)

    kind: Literal["s3"] = Field("s3", description="the kind of this entry. Source: none (fixed value)")
    bucket: str = Field(..., description="bucket name. Source: none (required)")
    prefix: str = Field("", description="key prefix inside the bucket. Source: upkeeper (not set by default)")
    endpoint_url: str | None = Field(None, description="endpoint for non-AWS stores, e.g. http://127.0.0.1:8333. "
            "Source: upkeeper (not set by default)")
    region: str | None = Field(None, description="region (default: the SDK's). "
            "Source: the AWS SDK (botocore) when not set")
    access_key_id: str | None = Field(None, description="access key (default: AWS_ACCESS_KEY_ID / SDK chain). "
            "Source: the AWS SDK (botocore) when not set")
    secret_access_key: SecretStr | None = Field(None, description="secret key (default: AWS_SECRET_ACCESS_KEY). "
            "Source: the AWS SDK (botocore) when not set")
    secret_access_key_file: str | None = Field(None,
        description="file whose content is `secret_access_key` (instead of giving it inline). Source: upkeeper (not set by default)")
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="'path' for most self-hosted stores (SeaweedFS, MinIO). "
        "Source: botocore's default"
    )
    part_size: ByteSize = Field(
        default="16MiB", validate_default=True,
        description="multipart upload part size, buffered in memory one part at a time; at least 5MiB (S3's "
                    "minimum). It doubles every 1000 parts, so a stream of unknown length fits S3's 10,000-part "
                    "limit. Source: AWS CLI uses 8MiB; twice that halves the requests",
    )
    upload_concurrency: int = Field(
        4, ge=1, le=32,
        description="parts uploaded at the same time while the next one fills; memory is about "
                    "(upload_concurrency + 1) × part_size. Source: s3transfer (the AWS CLI) uses 10 threads of "
                    "8MiB; 4 of 16MiB keep memory near 80MiB",
    )
    storage_class: str | None = Field(None, description="e.g. STANDARD_IA, GLACIER_IR. "
            "Source: upkeeper (not set by default)")
    verify_tls: bool = Field(True, description="check the endpoint's TLS certificate. "
            "Source: upkeeper default")
    ca_file: str | None = Field(
        None,
        description="PEM file of the CA that signed the endpoint's certificate, for a self-hosted store behind a "
                    "private CA (default: the system's CA bundle, or AWS_CA_BUNDLE). Source: the AWS CLI's "
                    "ca_bundle setting",
    )
    max_attempts: int = Field(
        5, ge=1, le=20,
        description="attempts per request, with botocore's 'standard' retry mode (exponential backoff with "
                    "jitter on throttling, 5xx and connection errors). Source: AWS SDK retry guide (default 3; "
                    "5 rides out a store's restart)",
    )
    timeout: float = Field(
        60, gt=0,
        description="seconds to wait for the endpoint to accept a connection, to take more of an upload, or to send "
                    "more of an answer; a stalled request is retried (max_attempts), so a stalled store fails an "
                    "operation after about max_attempts × timeout, while a slow but moving transfer is never cut. "
                    "Source: botocore (connect_timeout and read_timeout, 60 s each)")
    checksums: Literal["when_supported", "when_required"] = Field(
        "when_supported",
        description="send CRC checksums with uploads ('when_supported', botocore's default); 'when_required' for "
                    "older S3-compatible stores that reject them. Source: botocore's default",
    )

    @model_validator(mode="after")
    def _ca_file_needs_verification(self) -> S3StorageConfig:
        if self.ca_file is not None and not self.verify_tls:
            raise ValueError("ca_file is set but verify_tls is false: the certificate would not be checked at "
                             "all; remove one of them")
        return self

    @field_validator("part_size")
    @classmethod
    def _part_size_in_s3_limits(cls, value: int) -> int:
        if not MIN_PART_SIZE <= value <= MAX_PART_SIZE:
            raise ValueError("part_size must be between 5MiB and 5GiB (S3's limits for a multipart part)")
        return value


class SftpStorageConfig(FileSecrets):
    """A directory on an SSH server, over SFTP, with key authentication."""

    secret_fields = ("key_passphrase",)

    kind: Literal["sftp"] = Field("sftp", description="the kind of this entry. Source: none (fixed value)")
    host: str = Field(..., description="server host name or IP. Source: none (required)")
    port: int = Field(22, ge=1, le=65535, description="SSH port. Source: OpenSSH (its default port)")
    user: str = Field(..., description="SSH user. Source: none (required)")
    key_file: str = Field(..., description="private key file (Ed25519, ECDSA or RSA). "
            "Source: none (required)")
    key_passphrase: SecretStr | None = Field(None, description="passphrase of the key, if any. "
            "Source: upkeeper (not set by default)")
    key_passphrase_file: str | None = Field(None,
        description="file whose content is `key_passphrase` (instead of giving it inline). Source: upkeeper (not set by default)")
    path: str = Field(..., description="directory on the server holding the backup sets; it must exist: upkeeper "
            "never creates it, so an unmounted volume on the server gets no backups (ssh HOST mkdir -p -m 700 it "
            "once). Source: none (required)")
    known_hosts: str | None = Field(
        None, description="known_hosts file to check the host key against (default: ~/.ssh/known_hosts). "
                "Source: OpenSSH (~/.ssh/known_hosts) when not set"
    )
    host_key_check: bool = Field(True, description="refuse unknown host keys (never turn off in production). "
            "Source: upkeeper default")
    timeout: float = Field(
        30, gt=0,
        description="seconds to wait for the TCP connection, the SSH handshake and the answer to each SFTP "
                    "request, and the longest silence of a connected server: it is probed with keepalives after "
                    "a third of it (at most 30 s) and the connection is dropped as stalled when nothing at all came back for this long, so a hung "
                    "server or a stalled network fails the operation instead of hanging it; a slow but live link "
                    "is never cut. Source: OpenSSH's ServerAliveInterval with its ServerAliveCountMax (3 unanswered "
                    "probes, ssh_config); 30 s is upkeeper's default")
    fsync: bool = Field(True, description="ask the server to fsync each file before it is renamed into place "
                                          "(OpenSSH's fsync@openssh.com; skipped when the server lacks it). "
                                          "Source: upkeeper default")


StorageConfig = Annotated[
    LocalStorageConfig | S3StorageConfig | SftpStorageConfig,
    Field(discriminator="kind"),
]


def unknown_storages(names: Iterable[str] | None, known: Iterable[str]) -> list[tuple[int, str, str]]:
    """``(index, message, hint)`` for each of ``names`` that is not an entry under ``storages:`` (``known``)."""
    known = list(known)
    problems: list[tuple[int, str, str]] = []
    for i, name in enumerate(names or []):
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"Try: {close[0]!r}" if close else (
            f"Try: one of the storages ({', '.join(known)})" if known else "Try: define it under 'storages'")
        problems.append((i, f"unknown storage {name!r}", hint))
    return problems
