"""A real SMTP server (aiosmtpd, in-process) that keeps the messages it receives.

Used by the tests (email through apprise's ``mailto://``); aiosmtpd is a dev
dependency, imported only when a server starts.
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from upkeeper.sandbox._util import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    @property
    def body(self) -> str:
        part = self.message.get_body(preferencelist=("plain", "html"))
        return part.get_content() if part is not None else ""


class SmtpServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.messages: list[Received] = []
        #: when set, the reply to every message's DATA instead of accepting it (e.g. "550 5.7.1 rejected" or
        #: "451 4.3.0 try again later"): a server refusing mail, permanently or for now
        self.reject: str | None = None
        self._cond = threading.Condition()
        self._controller: Any = None

    def start(self) -> SmtpServer:
        from aiosmtpd.controller import Controller

        server = self

        class Handler:
            async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:
                if server.reject is not None:
                    return server.reject
                msg = email.message_from_bytes(envelope.original_content or envelope.content,
                                               policy=email.policy.default)
                with server._cond:
                    server.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), msg))
                    server._cond.notify_all()
                return "250 Message accepted for delivery"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def url(self, to: str = "ops@example.com", sender: str = "upkeeper@example.com") -> str:
        """An apprise URL that sends to this server (plain SMTP, no auth)."""
        return f"mailto://127.0.0.1:{self.port}?from={sender}&to={to}&mode=insecure"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.messages)

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()
        self.reject = None

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
