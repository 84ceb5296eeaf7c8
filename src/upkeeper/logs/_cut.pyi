from collections.abc import Sequence

def cut(buf: bytes, prog: bytes, anchors: Sequence[tuple[int, int, int, int]], /) -> tuple[
    int, bytes, int, list[bytes], bytes, tuple[tuple[bytes, bytes], ...]]: ...
