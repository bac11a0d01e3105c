"""The serving worker's connection and the reader it hands to gunicorn's parser."""

from __future__ import annotations

import json
import socket
from typing import Any

from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import TConn

from cds_service.web.request_scan import RequestScan

__all__ = ["BufferedConn", "ReadAhead", "RequestScan", "canned"]


def canned(status: str, code: str, text: str) -> bytes:
    """A complete HTTP response carrying one OperationOutcome issue; the connection closes."""
    body = json.dumps(
        {"resourceType": "OperationOutcome",
         "issue": [{"severity": "error", "code": code, "details": {"text": text}}]}
    ).encode()  # fmt: skip
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class ReadAhead(SocketUnreader):  # type: ignore[misc]
    """gunicorn's socket reader, served first from the bytes the main loop read ahead.

    Handed out in socket-sized pieces: gunicorn's body readers push back what they do not
    consume, so one large piece would be copied again on every small read.
    """

    def __init__(self, sock: socket.socket, max_chunk: int = 8192) -> None:
        """Read from ``sock`` once the bytes fed are used up."""
        super().__init__(sock, max_chunk)
        self.ahead = b""
        self.pos = 0

    def feed(self, data: bytes) -> None:
        """Bytes read ahead of the parser (after any not yet handed out)."""
        self.ahead = self.ahead[self.pos :] + data if self.pos < len(self.ahead) else data
        self.pos = 0

    def chunk(self) -> bytes:
        """The next piece: read-ahead bytes first, then the socket."""
        if self.pos < len(self.ahead):
            piece = self.ahead[self.pos : self.pos + self.mxchunk]
            self.pos += len(piece)
            return piece
        data: bytes = self.sock.recv(self.mxchunk)
        return data


class BufferedConn(TConn):  # type: ignore[misc]
    """A connection with the bytes of its unfinished request."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any) -> None:
        """Wrap an accepted socket (non-blocking until a thread takes it)."""
        super().__init__(cfg, sock, client, server)
        self.buf = bytearray()
        self.scan: RequestScan | None = None
        self.started = 0.0  # monotonic time of the unfinished request's first byte
