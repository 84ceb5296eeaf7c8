"""A TCP proxy for network faults that are not refusals: a stalled link, and a slow one.

``freeze()`` stops forwarding in both directions without closing a socket — what a NAT or
firewall that dropped its state, a hung server or a half-open connection look like from the
client: no RST, no data.  New connections are accepted but get no answer either (the server
never sends its SSH banner or HTTP response).  ``freeze_after(n)`` freezes once ``n`` bytes
went from the client to the server, so a transfer stalls half-way.  ``throttle(bps)`` keeps
the link alive but slow.  The proxy's sockets have small buffers, so a stalled sender blocks
after a few hundred KiB instead of filling the kernel's megabytes first.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

BUFFER = 64 * 1024


class StallProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port: int = self.listener.getsockname()[1]
        self.running = threading.Event()
        self.running.set()  # set = forwarding; cleared = frozen
        self.closed = False
        self.lock = threading.Lock()
        self.sent_up = 0  # bytes forwarded client → server
        self.freeze_at: int | None = None
        self.rate: float | None = None  # bytes per second and direction, None = unlimited
        self.connections = 0
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True, name="stall-proxy")
        self.thread.start()

    # --- control ------------------------------------------------------------------------------

    def freeze(self) -> None:
        self.running.clear()

    def thaw(self) -> None:
        with self.lock:
            self.freeze_at = None
        self.running.set()

    def freeze_after(self, n: int) -> None:
        """Freeze once ``n`` more bytes went from the client to the server."""
        with self.lock:
            self.freeze_at = self.sent_up + n

    def throttle(self, bytes_per_second: float | None) -> None:
        self.rate = bytes_per_second

    def close(self) -> None:
        self.closed = True
        self.running.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()

    # --- plumbing -----------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self.sockets.append(client)
        self._wait()  # frozen: the connection is accepted, but nothing reaches the server
        if self.closed:
            return
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
        self.sockets.append(server)
        threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _wait(self) -> None:
        while not self.running.wait(0.2):
            if self.closed:
                return

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while not self.closed:
                self._wait()
                data = src.recv(16 * 1024)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                self._wait()  # frozen while we held the data: it is not delivered
                if self.closed:
                    return
                if self.rate:
                    time.sleep(len(data) / self.rate)
                dst.sendall(data)
                if up:
                    self._count_up(len(data))
        except OSError:
            with contextlib.suppress(OSError):
                dst.close()

    def _count_up(self, n: int) -> None:
        with self.lock:
            self.sent_up += n
            if self.freeze_at is not None and self.sent_up >= self.freeze_at:
                self.freeze_at = None
                self.running.clear()
