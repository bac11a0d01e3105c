"""An advisory sink for the replay: an MLLP receiver that ACKs every advisory ORU^R01 (AA).

It stands for the EHR interface engine that ``CDS_HL7_OUTBOUND`` points at, and counts what
arrives by lead rule (the ``MG-AKI-RULE`` OBX of each advisory).
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections import Counter

from cds_service.events.mllp_frames import FrameReader, frame


def _rule(text: str) -> tuple[str, bool]:
    """The lead rule of an advisory, and whether it withdraws advice (OBX-11 D)."""
    rule, withdrawn = "?", False
    for seg in text.split("\r"):
        fields = seg.split("|")
        if fields[0] == "OBX" and len(fields) > 11:
            withdrawn = withdrawn or fields[11] == "D"
            if fields[3].startswith("MG-AKI-RULE^"):
                rule = fields[5]
    return rule, withdrawn


class AdvisorySink:
    """A threaded MLLP receiver on 127.0.0.1 (a free port): ``received`` counts by lead rule."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.withdrawals = 0
        lock = threading.Lock()
        sink = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                reader = FrameReader(1 << 22)
                conn: socket.socket = self.request
                while data := conn.recv(65536):
                    for message in reader.feed(data):
                        if not isinstance(message, bytes):
                            return
                        text = message.decode("utf-8", errors="replace")
                        control = text.split("\r", 1)[0].split("|")[9]
                        rule, withdrawn = _rule(text)
                        with lock:
                            if withdrawn:
                                sink.withdrawals += 1
                            else:
                                sink.received[rule] += 1
                        ack = (f"MSH|^~\\&|SINK|EHR|MG-AKI-CDS|CDS|20260101||ACK^R01^ACK|A{control}|P|"
                               f"2.5.1\rMSA|AA|{control}\r")  # fmt: skip
                        conn.sendall(frame(ack.encode()))

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop listening."""
        self.server.shutdown()
        self.server.server_close()
