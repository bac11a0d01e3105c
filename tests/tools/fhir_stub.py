"""A recorded-response FHIR server in a thread: canned replies, delays, request log.

Replies are keyed by ``path?query`` (tried first) or ``path``; a list of replies is
served in order (the last one repeats). ``{base}`` in a reply body is replaced by the
server's base URL, so recorded paging links point back at it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, Any]


@dataclass
class Seen:
    """One request the stub received."""

    method: str
    path: str
    headers: dict[str, str]


@dataclass
class StubFhir:
    """Serve canned FHIR replies on 127.0.0.1 and record every request."""

    replies: Mapping[str, Reply | list[Reply]] = field(default_factory=dict)
    delay: float = 0.0
    prefix: str = "/fhir"
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._served: dict[str, int] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self.base = f"http://127.0.0.1:{self._server.server_port}{self.prefix}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> StubFhir:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def _reply_for(self, path: str) -> Reply:
        key = path if path in self.replies else path.split("?", 1)[0]
        options = self.replies.get(key)
        if options is None:
            return 404, {"resourceType": "OperationOutcome", "issue": [{"code": "not-found"}]}
        if isinstance(options, tuple):
            return options
        with self._lock:
            n = self._served.get(key, 0)
            self._served[key] = n + 1
        return options[min(n, len(options) - 1)]

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.seen.append(Seen("GET", req.path, {k: v for k, v in req.headers.items()}))
        if self.delay and self._stop.wait(self.delay):
            return
        path = req.path.removeprefix(self.prefix)
        path = path if path.startswith("/") else "/" + path
        status, body = self._reply_for(path)
        text = body if isinstance(body, str) else json.dumps(body)
        data = text.replace("{base}", self.base).encode()
        try:
            req.send_response(status)
            req.send_header("Content-Type", "application/fhir+json")
            req.send_header("Content-Length", str(len(data)))
            req.end_headers()
            req.wfile.write(data)
        except OSError:
            return
