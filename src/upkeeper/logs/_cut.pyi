from collections.abc import Sequence
from typing import Any

def cut(buf: bytes, prog: bytes, anchors: Sequence[tuple[int, int, int, int]], /) -> tuple[
    int, bytes, int, list[bytes], bytes, tuple[tuple[bytes, bytes], ...]]: ...

def endpoints(offsets: Any, data: Any, start: int, n: int, endpoint_max: int, /) -> tuple[
    list[bytes], list[tuple[int, bytes]], bytes, bytes]: ...

def request_keys(lines: list[bytes], /) -> tuple[list[bytes | None], list[int], bytes, bytes]: ...
