"""The files of secrets a configuration names (``password_file``, an age ``identity_file``, an SFTP ``key_file``…)
and whether other users can read them.

libpq ignores a ``.pgpass`` with group or world access and OpenSSH refuses such a private key; upkeeper reads
them all the same (Kubernetes and Docker mount secrets 0644/0444), but says so: ``config check`` notes each one,
and ``security.permissions`` reports it like any other exposed secret.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from upkeeper.config.types import FileSecrets

#: files that hold a private key, per model (beside the ``<secret>_file`` fields of :class:`FileSecrets`)
KEY_FILE_FIELDS = ("identity_file", "key_file", "tls_key_file", "tls_key_password_file")


@dataclass(frozen=True)
class SecretFile:
    path: str
    where: tuple[str | int, ...]  # the field that names it: ("storages", "offsite", "key_file")


def secret_files(obj: Any, where: tuple[str | int, ...] = ()) -> Iterator[SecretFile]:
    """Every secret file named in ``obj`` (a config or any model, dict or list in it), with its field's path."""
    if isinstance(obj, BaseModel):
        names = type(obj).model_fields
        secret = {f"{s}_file" for s in obj.secret_fields} if isinstance(obj, FileSecrets) else set()
        for name in names:
            value = getattr(obj, name, None)
            if value is None:
                continue
            if name in secret or (name in KEY_FILE_FIELDS and isinstance(obj, FileSecrets)):
                for i, p in enumerate(value if isinstance(value, list) else [value]):
                    yield SecretFile(str(p), (*where, name, i) if isinstance(value, list) else (*where, name))
            elif isinstance(value, BaseModel | dict | list):
                yield from secret_files(value, (*where, name))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from secret_files(v, (*where, str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from secret_files(v, (*where, i))


def exposure(path: str) -> tuple[int, str] | None:
    """``(mode, words)`` when users other than the owner may read or write ``path`` (the file a link points to);
    None when only its owner can, or it cannot be looked at."""
    try:
        mode = stat.S_IMODE(os.stat(os.path.expanduser(path)).st_mode)
    except OSError:
        return None
    words = []
    for verb, everyone, group in (("readable", stat.S_IROTH, stat.S_IRGRP), ("writable", stat.S_IWOTH, stat.S_IWGRP)):
        if mode & everyone:
            words.append(f"{verb} by every user")
        elif mode & group:
            words.append(f"{verb} by its group")
    return (mode, " and ".join(words)) if words else None
