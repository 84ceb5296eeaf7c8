"""A tiny authoritative DNS server (dnspython) on a free loopback UDP port, for tests and the demo.

It serves a zone held in memory; ``set()`` changes a record while it runs (to watch a
change propagate across several such servers).
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from upkeeper.sandbox._util import free_port


class DnsServer:
    def __init__(self, records: dict[tuple[str, str], list[str]] | None = None, port: int | None = None,
                 ttl: int = 60) -> None:
        self.port = port or free_port()
        self.ttl = ttl
        self._records: dict[tuple[str, str], list[str]] = {}
        self._lock = threading.Lock()
        for (name, rtype), values in (records or {}).items():
            self.set(name, rtype, values)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.queries = 0

    @staticmethod
    def _key(name: str, rtype: str) -> tuple[str, str]:
        return (dns.name.from_text(name).to_text().lower(), rtype.upper())

    def set(self, name: str, rtype: str, values: list[str]) -> None:
        with self._lock:
            self._records[self._key(name, rtype)] = list(values)

    def delete(self, name: str, rtype: str) -> None:
        with self._lock:
            self._records.pop(self._key(name, rtype), None)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> DnsServer:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, daemon=True, name=f"dns-{self.port}")
        self._thread.start()
        return self

    def _answer(self, wire: bytes) -> bytes | None:
        try:
            q = dns.message.from_wire(wire)
        except Exception:
            return None
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA
        for question in q.question:
            name = question.name.to_text().lower()
            rtype = dns.rdatatype.to_text(question.rdtype)
            with self._lock:
                values = self._records.get((name, rtype))
                known = any(n == name for n, _ in self._records)
            if values:
                r.answer.append(dns.rrset.from_text_list(question.name, self.ttl, dns.rdataclass.IN, rtype, values))
            elif not known:
                r.set_rcode(dns.rcode.NXDOMAIN)
        return r.to_wire()

    def _serve(self) -> None:
        sock = self._sock
        while sock is not None and self._sock is not None:
            try:
                data, addr = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.queries += 1
            reply = self._answer(data)
            if reply is not None:
                try:
                    sock.sendto(reply, addr)
                except OSError:
                    return

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
