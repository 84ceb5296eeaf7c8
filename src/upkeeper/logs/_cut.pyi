from collections.abc import Sequence

def cut(buf: bytes, prog: bytes, fields: Sequence[tuple[int, int]], /) -> tuple[
    int, bytes, int, list[bytes], bytes, tuple[tuple[bytes, bytes], ...]]: ...
