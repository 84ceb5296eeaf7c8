"""HTTP receivers for notifications: a webhook/Slack endpoint that records requests, and a stand-in
for PagerDuty's Events API v2 speaking its wire format.

Both run ``http.server`` in a thread on a loopback port; ``stop()`` then
``start()`` again on the same port simulates an endpoint that is down (the
connection is refused) and comes back.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from upkeeper.sandbox._util import free_port, wait_for_port


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


class HttpReceiver:
    """Records every request; answers 200 (or what ``respond`` returns)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.requests: list[Request] = []
        self.fail_with: list[int] = []  # statuses to answer the next requests with
        self.delay = 0.0  # seconds to wait before answering: a slow endpoint
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def respond(self, req: Request) -> Answer:
        return Answer(200, {"ok": True})

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                req = Request("POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                              self.rfile.read(length))
                with receiver._cond:
                    forced = receiver.fail_with.pop(0) if receiver.fail_with else None
                    if forced is None:
                        receiver.requests.append(req)
                        receiver._cond.notify_all()
                if receiver.delay:
                    time.sleep(receiver.delay)
                answer = Answer(forced, {"error": "forced failure"}) if forced else receiver.respond(req)
                data = json.dumps(answer.body).encode() if answer.body is not None else b""
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name=f"receiver-{self.port}")
        self._thread.start()
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.requests)

    def clear(self) -> None:
        with self._cond:
            self.requests.clear()


PD_ACTIONS = ("trigger", "acknowledge", "resolve")
PD_SEVERITIES = ("critical", "error", "warning", "info")


#: Events API v2 size limit (https://developer.pagerduty.com/docs/events-api-v2/overview/#size-limits)
PD_MAX_BYTES = 512 * 1024


class PagerDutyReceiver(HttpReceiver):
    """Events API v2: ``POST /v2/enqueue`` → 202 ``{"status": "success", "dedup_key": …}``, or 400
    ``{"status": "invalid event", "errors": [...]}``.  Keeps each incident's state by dedup_key."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)
        self.incidents: dict[str, str] = {}

    @property
    def events_url(self) -> str:
        return f"{self.url}/v2/enqueue"

    def respond(self, req: Request) -> Answer:
        if req.path != "/v2/enqueue":
            return Answer(404, {"status": "not found"})
        if len(req.body) > PD_MAX_BYTES:  # documented limit; the wording of the rejection is ours
            return Answer(400, {"status": "invalid event", "message": "Event object is invalid",
                                "errors": ["Event payload exceeds the 512 KB size limit"]})
        try:
            ev = req.json()
        except ValueError:
            return Answer(400, {"status": "invalid event", "message": "Event object is invalid",
                                "errors": ["Malformed JSON"]})
        errors = []
        if not isinstance(ev.get("routing_key"), str) or len(ev["routing_key"]) != 32:
            errors.append("'routing_key' must be a 32-character integration key")
        action = ev.get("event_action")
        if action not in PD_ACTIONS:
            errors.append("'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")
        key = ev.get("dedup_key")
        if action in ("acknowledge", "resolve") and not key:
            errors.append("'dedup_key' is required for acknowledge and resolve")
        if action == "trigger":
            p = ev.get("payload") or {}
            for f in ("summary", "source", "severity"):
                if not p.get(f):
                    errors.append(f"'payload.{f}' is missing or blank")
            if p.get("severity") and p["severity"] not in PD_SEVERITIES:
                errors.append("'payload.severity' is invalid (must be one of: critical, error, warning, info)")
            if key is not None and len(str(key)) > 255:
                errors.append("'dedup_key' is longer than 255 characters")
            if len(str(p.get("summary", ""))) > 1024:
                errors.append("'payload.summary' is longer than 1024 characters")
        if errors:
            return Answer(400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors})
        key = key or f"generated-{len(self.incidents) + 1}"
        self.incidents[key] = {"trigger": "triggered", "acknowledge": "acknowledged", "resolve": "resolved"}[action]
        return Answer(202, {"status": "success", "message": "Event processed", "dedup_key": key})
