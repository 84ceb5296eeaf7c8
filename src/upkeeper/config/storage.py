"""Storage configuration: where backups go.  One model per ``kind``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr

from upkeeper.config.types import ByteSize, FileSecrets, StrictModel


class LocalStorageConfig(StrictModel):
    """A directory on this machine (or a mounted volume)."""

    kind: Literal["local"] = "local"
    path: str = Field(..., description="directory holding the backup sets")
    prefix: str = Field("", description="key prefix inside the directory")
    fsync: bool = Field(True, description="fsync files and directories before a write counts as done")


class S3StorageConfig(FileSecrets):
    """Any S3-compatible object store (AWS, MinIO, SeaweedFS, Ceph, Wasabi, R2 …)."""

    secret_fields = ("secret_access_key",)

    kind: Literal["s3"] = "s3"
    bucket: str = Field(..., description="bucket name")
    prefix: str = Field("", description="key prefix inside the bucket")
    endpoint_url: str | None = Field(None, description="endpoint for non-AWS stores, e.g. http://127.0.0.1:8333")
    region: str | None = Field(None, description="region (default: the SDK's)")
    access_key_id: str | None = Field(None, description="access key (default: AWS_ACCESS_KEY_ID / SDK chain)")
    secret_access_key: SecretStr | None = Field(None, description="secret key (default: AWS_SECRET_ACCESS_KEY)")
    secret_access_key_file: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="'path' for most self-hosted stores (SeaweedFS, MinIO)"
    )
    part_size: ByteSize = Field(default=16 * 1024 * 1024, description="multipart upload part size",
                                validate_default=True)
    storage_class: str | None = Field(None, description="e.g. STANDARD_IA, GLACIER_IR")
    verify_tls: bool = True


class SftpStorageConfig(FileSecrets):
    """A directory on an SSH server, over SFTP, with key authentication."""

    secret_fields = ("key_passphrase",)

    kind: Literal["sftp"] = "sftp"
    host: str = Field(..., description="server host name or IP")
    port: int = Field(22, ge=1, le=65535)
    user: str = Field(..., description="SSH user")
    key_file: str = Field(..., description="private key file (Ed25519, ECDSA or RSA)")
    key_passphrase: SecretStr | None = Field(None, description="passphrase of the key, if any")
    key_passphrase_file: str | None = None
    path: str = Field(..., description="directory on the server holding the backup sets")
    known_hosts: str | None = Field(
        None, description="known_hosts file to check the host key against (default: ~/.ssh/known_hosts)"
    )
    host_key_check: bool = Field(True, description="refuse unknown host keys (never turn off in production)")
    timeout: float = Field(30, gt=0, description="connect timeout (seconds)")


StorageConfig = Annotated[
    LocalStorageConfig | S3StorageConfig | SftpStorageConfig,
    Field(discriminator="kind"),
]
