"""Read an SSH server's banner and its KEXINIT algorithm lists (RFC 4253 §4.2, §7.1).

paramiko does not expose the lists a server *offers* (only what it negotiated), so the
probe speaks the first two protocol steps itself: exchange identification strings, then
read the server's unencrypted SSH_MSG_KEXINIT packet and its ten name-lists.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

MSG_KEXINIT = 20
CLIENT_BANNER = b"SSH-2.0-upkeeper_audit\r\n"
LIST_NAMES = ("kex", "hostkey", "enc_c2s", "enc_s2c", "mac_c2s", "mac_s2c", "comp_c2s", "comp_s2c")


class ProbeError(Exception):
    pass


@dataclass
class KexInit:
    banner: str
    lists: dict[str, list[str]] = field(default_factory=dict)

    @property
    def software(self) -> str:
        parts = self.banner.split("-", 2)
        return parts[2] if len(parts) == 3 else self.banner


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProbeError("connection closed by the server")
        buf.extend(chunk)
    return bytes(buf)


def parse_kexinit(payload: bytes) -> dict[str, list[str]]:
    if not payload or payload[0] != MSG_KEXINIT:
        raise ProbeError(f"expected KEXINIT (20), got message {payload[:1].hex() or 'nothing'}")
    pos = 17  # message id + 16-byte cookie
    out: dict[str, list[str]] = {}
    for name in (*LIST_NAMES, "lang_c2s", "lang_s2c"):
        if pos + 4 > len(payload):
            raise ProbeError("truncated KEXINIT")
        (n,) = struct.unpack(">I", payload[pos:pos + 4])
        pos += 4
        if pos + n > len(payload):
            raise ProbeError("truncated KEXINIT name-list")
        text = payload[pos:pos + n].decode("ascii", errors="replace")
        pos += n
        out[name] = [x for x in text.split(",") if x]
    return out


def probe(host: str, port: int, timeout: float = 10.0) -> KexInit:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(CLIENT_BANNER)
        banner = ""
        data = b""
        for _ in range(50):  # servers may send lines before the identification string
            while b"\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ProbeError("connection closed before the SSH banner")
                data += chunk
                if len(data) > 65536:
                    raise ProbeError("no SSH banner in the first 64 KiB")
            line, _, data = data.partition(b"\n")
            text = line.rstrip(b"\r").decode("utf-8", errors="replace")
            if text.startswith("SSH-"):
                banner = text
                break
        if not banner:
            raise ProbeError("no SSH identification string")
        while len(data) < 5:
            data += _recv_exact(sock, 5 - len(data))
        length, padding = struct.unpack(">IB", data[:5])
        if length > 256 * 1024 or length < padding + 1:
            raise ProbeError(f"implausible packet length {length}")
        rest = data[5:]
        need = length - 1 - len(rest)
        if need > 0:
            rest += _recv_exact(sock, need)
        payload = rest[: length - 1 - padding]
        return KexInit(banner=banner, lists=parse_kexinit(payload))
