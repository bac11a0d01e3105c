"""Is a whole HTTP/1.1 request in this buffer? (incremental; the serving worker's read-ahead)."""

from __future__ import annotations

from enum import Enum

MAX_HEAD = 64 * 1024  # bytes of request line and headers; gunicorn's own limits are smaller
MAX_CHUNK_LINE = 1024  # a chunk-size line longer than this is malformed


class Scan(Enum):
    """What the buffer holds so far."""

    MORE = "more"  # an incomplete request: keep reading
    READY = "ready"  # a whole request, or one gunicorn's parser will reject (malformed)
    TOO_LARGE = "too-large"  # the body exceeds the limit: answer without reading the rest


class RequestScan:
    """Follows one request's bytes: the head, then a Content-Length or chunked body.

    Only framing is checked (where the request ends and how large its body is); gunicorn's
    parser reads the request afterwards, from the buffer, and rejects what is malformed.
    """

    def __init__(self, max_body: int) -> None:
        """Scan a request whose body may hold at most ``max_body`` bytes."""
        self.max_body = max_body
        self.head_end = -1
        self.length: int | None = None  # Content-Length; None while unknown or chunked
        self.chunked = False
        self.pos = 0  # chunked: offset of the next chunk-size line
        self.body = 0  # chunked: body bytes announced so far

    def feed(self, buf: bytes | bytearray) -> Scan:
        """The state of ``buf`` (the same, growing buffer on every call)."""
        if self.head_end < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return Scan.READY if len(buf) > MAX_HEAD else Scan.MORE
            self.head_end = end + 4
            verdict = self._head(bytes(buf[:end]))
            if verdict is not None:
                return verdict
        if not self.chunked:
            assert self.length is not None
            return Scan.READY if len(buf) >= self.head_end + self.length else Scan.MORE
        return self._chunks(buf)

    def _head(self, head: bytes) -> Scan | None:
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    return Scan.READY  # the parser answers 400
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self.chunked = True
        if self.chunked:
            self.pos = self.head_end
            return None
        self.length = length or 0
        if self.length < 0:
            return Scan.READY
        return Scan.TOO_LARGE if self.length > self.max_body else None

    def _chunks(self, buf: bytes | bytearray) -> Scan:
        while True:
            nl = buf.find(b"\r\n", self.pos)
            if nl < 0:
                return Scan.READY if len(buf) - self.pos > MAX_CHUNK_LINE else Scan.MORE
            size_text = bytes(buf[self.pos : nl]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                return Scan.READY
            if size < 0:
                return Scan.READY
            if size == 0:  # last chunk: optional trailer fields, then an empty line
                return Scan.READY if buf.find(b"\r\n\r\n", nl) >= 0 else Scan.MORE
            if self.body + size > self.max_body:
                return Scan.TOO_LARGE
            following = nl + 2 + size + 2
            if len(buf) < following:
                return Scan.MORE
            self.body += size
            self.pos = following
