"""A local asyncio MLLP receiver for outbound tests: records messages, answers scripted ACKs."""

from __future__ import annotations

import asyncio
import threading


class Receiver:
    """A local asyncio MLLP receiver in a thread that answers with the scripted ACK codes."""

    def __init__(self, codes: list[str]) -> None:
        self.codes, self.messages, self.port = codes, [], 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()
        server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readuntil(b"\x1c\r")
        text = data.strip(b"\x0b\x1c\r").decode()
        self.messages.append(text)
        control = text.split("\r", 1)[0].split("|")[9]
        code = self.codes.pop(0) if self.codes else "AA"
        ack = f"MSH|^~\\&|RCV|FAC|MG-AKI-CDS|CDS|20240510||ACK^R01^ACK|A{control}|P|2.5.1\rMSA|{code}|{control}\r"
        writer.write(b"\x0b" + ack.encode() + b"\x1c\r")
        await writer.drain()
        writer.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
