"""Storage keys: whatever text comes in, an accepted key never escapes the storage root."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from upkeeper.errors import StorageError
from upkeeper.storage.base import check_key

segments = st.sampled_from(["", ".", "..", "a", "b.c", "..x", "x..", " ", "ü", "set-1", "\\", "~"])
keys = st.one_of(st.text(max_size=40), st.lists(segments, max_size=6).map("/".join))


@given(keys)
def test_accepted_keys_stay_under_the_root(key: str) -> None:
    try:
        check_key(key)
    except StorageError as exc:
        assert exc.permanent
        return
    joined = posixpath.normpath(posixpath.join("/root/store", key))
    assert joined.startswith("/root/store/")
    assert posixpath.relpath(joined, "/root/store") == key  # nothing was collapsed away


@pytest.mark.parametrize("key", ["a", "a/b/c", "db/2024-01-01T00:00:00Z/dump.zst.age", ".hidden", "a..b"])
def test_ordinary_keys_are_accepted(key: str) -> None:
    assert check_key(key) == key
