"""MLLP framing (0x0B message 0x1C 0x0D) over a byte stream: partial reads, coalesced frames."""

from __future__ import annotations

from dataclasses import dataclass

START = b"\x0b"
END = b"\x1c\r"


@dataclass(frozen=True)
class TooLarge:
    """A frame grew beyond the size limit; ``head`` is its first bytes (for the MSH)."""

    head: bytes


def frame(payload: bytes) -> bytes:
    """Wrap one message in MLLP start and end bytes."""
    return START + payload + END


class FrameReader:
    """Feed bytes as they arrive; get back every complete message.

    Bytes outside a frame (noise, keep-alives, a sender's stray newline) are skipped and
    counted; a start byte inside an unfinished frame restarts the frame (the partial
    one was never going to be completed).
    """

    def __init__(self, max_bytes: int) -> None:
        """Frames longer than ``max_bytes`` are reported as ``TooLarge``."""
        self.max_bytes = max_bytes
        self.buffer = bytearray()
        self.in_frame = False
        self.skipped = 0

    def feed(self, data: bytes) -> list[bytes | TooLarge]:
        """Add bytes; return the complete frames (payload only) found so far, in order."""
        self.buffer += data
        out: list[bytes | TooLarge] = []
        while True:
            if not self.in_frame:
                start = self.buffer.find(START)
                if start < 0:
                    self.skipped += len(self.buffer)
                    self.buffer.clear()
                    return out
                self.skipped += start
                del self.buffer[: start + 1]
                self.in_frame = True
            end = self.buffer.find(END)
            restart = self.buffer.find(START)
            if restart >= 0 and (end < 0 or restart < end):
                self.skipped += restart
                del self.buffer[: restart + 1]
                continue
            if end < 0:
                if len(self.buffer) > self.max_bytes:
                    out.append(TooLarge(bytes(self.buffer[:4096])))
                    self.buffer.clear()
                    self.in_frame = False
                return out
            payload = bytes(self.buffer[:end])
            del self.buffer[: end + len(END)]
            self.in_frame = False
            out.append(payload if len(payload) <= self.max_bytes else TooLarge(payload[:4096]))
