"""Storage backends behind one small interface (see ``base.py``): local, s3, sftp."""

from __future__ import annotations

from upkeeper.config.storage import LocalStorageConfig, S3StorageConfig, SftpStorageConfig
from upkeeper.errors import StorageError
from upkeeper.storage.base import ObjectInfo, Storage, Writer

__all__ = ["ObjectInfo", "Storage", "Writer", "open_storage"]


def open_storage(name: str, config: LocalStorageConfig | S3StorageConfig | SftpStorageConfig) -> Storage:
    """Instantiate the backend for a ``storages:`` entry."""
    if isinstance(config, LocalStorageConfig):
        from upkeeper.storage.local import LocalStorage

        return LocalStorage(name, config)
    if isinstance(config, S3StorageConfig):
        from upkeeper.storage.s3 import S3Storage

        return S3Storage(name, config)
    if isinstance(config, SftpStorageConfig):
        from upkeeper.storage.sftp import SftpStorage

        return SftpStorage(name, config)
    raise StorageError(f"unknown storage kind for {name!r}")
