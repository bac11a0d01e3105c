"""The MLLP listener over a real socket, with python-hl7's asyncio client and raw writes."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import hl7
import pytest
from hl7.mllp import open_hl7_connection

from cds_service.events.ingest import Ingestor, Outcome
from cds_service.events.mllp import MllpServer, allowed
from cds_service.events.mllp_frames import FrameReader, TooLarge, frame
from cds_service.store import dispose_engine
from cds_service.store.events_models import AdviceIssued, Hl7Message, LabResultRow, OutboxRow
from tests.hl7support import CORPUS, count, fixture, make_ingestor, msa, rows

pytestmark = pytest.mark.integration
Scenario = Callable[[int], Awaitable[None]]


def serve(ingestor: Ingestor, scenario: Scenario, **kw: object) -> MllpServer:
    """Run ``scenario(port)`` against a listener on a free port, then stop the listener."""
    server = MllpServer(
        ingestor,
        tuple(kw.pop("allow", ("127.0.0.0/8",))),
        max_bytes=int(kw.pop("max_bytes", 1 << 20)),
        **kw,
    )  # type: ignore[arg-type]

    async def main() -> None:
        port = await server.start("127.0.0.1", 0)
        try:
            await asyncio.wait_for(scenario(port), 60)
        finally:
            await server.stop(grace=5)

    asyncio.run(main())
    return server


async def read_acks(reader: asyncio.StreamReader, n: int, timeout: float = 10) -> list[str]:
    """Read ``n`` MLLP frames as text."""
    frames = FrameReader(1 << 20)
    out: list[str] = []
    while len(out) < n:
        data = await asyncio.wait_for(reader.read(65536), timeout)
        if not data:
            break
        out += [f.decode("utf-8") for f in frames.feed(data) if not isinstance(f, TooLarge)]
    return out


async def closed(reader: asyncio.StreamReader, timeout: float = 5) -> bool:
    """Whether the server closed the connection (EOF or reset) without sending anything."""
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except ConnectionResetError:
        return True


def numbered(n: int, mrn: str = "MRN9000") -> bytes:
    """The Mg fixture with its own control id and patient."""
    raw = fixture("oru_mg_low_icu.hl7").replace(b"MSG-MG-LOW-1", f"MSG-MANY-{n}".encode())
    return raw.replace(b"MRN1001", f"{mrn}{n}".encode())


@pytest.fixture
def ing(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'mllp.db'}"
    yield make_ingestor(url)
    dispose_engine(url)


def test_many_messages_on_one_connection_with_the_hl7_client(ing: Ingestor) -> None:
    async def scenario(port: int) -> None:
        reader, writer = await open_hl7_connection("127.0.0.1", port, encoding="utf-8")
        for n in range(25):
            writer.writemessage(hl7.parse(numbered(n).decode()))
            ack = await asyncio.wait_for(reader.readmessage(), 10)
            assert (
                str(ack.segment("MSA")[1]) == "AA" and str(ack.segment("MSA")[2]) == f"MSG-MANY-{n}"
            )
        writer.close()

    serve(ing, scenario)
    assert count(ing, Hl7Message) == 25 and count(ing, LabResultRow) == 50


def test_split_and_coalesced_frames_and_garbage(ing: Ingestor) -> None:
    async def scenario(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        data = frame(numbered(1))
        for part in (data[:1], data[1:40], data[40:-1], data[-1:]):  # split, even the end marker
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.05)
        assert msa((await read_acks(reader, 1))[0])[1:3] == ["AA", "MSG-MANY-1"]
        writer.write(
            b"\r\n"
            + frame(numbered(2))
            + b"garbage\x00\xff"
            + frame(numbered(3))
            + b"\n"
            + frame(numbered(4))
        )
        acks = await read_acks(reader, 3)
        assert [msa(a)[2] for a in acks] == ["MSG-MANY-2", "MSG-MANY-3", "MSG-MANY-4"]  # in order
        writer.close()

    serve(ing, scenario)


def test_non_hl7_bad_obx_duplicate_and_enhanced_mode(ing: Ingestor) -> None:
    async def scenario(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for payload in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", fixture("oru_bad_obx.hl7"),
                        fixture("oru_mg_low_icu.hl7"), fixture("oru_mg_low_icu.hl7"),
                        fixture("oru_enhanced_al.hl7")):  # fmt: skip
            writer.write(frame(payload))
        non_hl7, bad, first, dup, enhanced = await read_acks(reader, 5)
        assert msa(non_hl7)[1:3] == ["AR", ""]
        assert msa(bad)[1] == "AE" and "ERR|" in bad
        assert dup == first and msa(first)[1] == "AA"
        assert msa(enhanced)[1] == "CA"
        writer.close()

    serve(ing, scenario)
    mrn1001 = rows(ing, Hl7Message, Hl7Message.control_id == "MSG-MG-LOW-1")
    assert len(mrn1001) == 1
    assert count(ing, AdviceIssued, AdviceIssued.message_id == mrn1001[0].id) == 1


@pytest.mark.parametrize("sep", [b"\r", b"\n", b"\r\n"])
def test_corpus_all_acknowledged(ing: Ingestor, sep: bytes) -> None:
    corpus = sorted(CORPUS.glob("*.hl7"))
    messages = [p.read_bytes().replace(b"\r\n", b"\r").replace(b"\r", sep) for p in corpus]
    silent = [
        b"|NE|" in m.split(sep)[0] and m.split(sep)[0].split(b"|")[14] == b"NE" for m in messages
    ]

    async def scenario(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for message in messages:
            writer.write(frame(message))
        acks = await read_acks(reader, len(messages) - sum(silent))
        assert all(msa(a)[1] in ("AA", "CA") for a in acks)
        writer.close()

    serve(ing, scenario)
    assert count(ing, Hl7Message) == len(corpus)  # the MSH-15 NE message is stored, not answered
    assert count(ing, Hl7Message, Hl7Message.status != "AA") == 0


def test_training_sends_nothing_and_delete_retracts(ing: Ingestor) -> None:
    async def scenario(port: int) -> None:
        reader, writer = await open_hl7_connection("127.0.0.1", port)
        for name in ("oru_training_T.hl7", "oru_mg_low_icu.hl7", "oru_delete_d.hl7"):
            writer.writemessage(hl7.parse(fixture(name).decode()))
            assert str((await asyncio.wait_for(reader.readmessage(), 10)).segment("MSA")[1]) == "AA"
        writer.close()

    serve(ing, scenario)
    test_advice = rows(ing, AdviceIssued, AdviceIssued.test.is_(True))
    assert (
        test_advice
        and count(ing, OutboxRow, OutboxRow.advice_id.in_([a.id for a in test_advice])) == 0
    )
    assert rows(ing, LabResultRow, LabResultRow.retracted.is_(True))
    assert count(ing, OutboxRow, OutboxRow.kind == "withdrawal") == 1


def test_allowlist_refuses_other_networks(ing: Ingestor) -> None:
    assert allowed("10.1.2.3", [ipaddress.ip_network("10.0.0.0/8")])
    assert allowed("::ffff:127.0.0.1", [ipaddress.ip_network("127.0.0.0/8")])
    assert not allowed("not-an-ip", [ipaddress.ip_network("0.0.0.0/0")])

    async def scenario(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame(numbered(1)))
        assert await closed(reader)  # no ACK
        writer.close()

    serve(ing, scenario, allow=("10.0.0.0/8",))
    assert count(ing, Hl7Message) == 0


def test_too_large_gets_ar_and_the_connection_closes(ing: Ingestor) -> None:
    async def scenario(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame(numbered(1) + b"\rNTE|1||" + b"x" * 5000))
        acks = await read_acks(reader, 1)
        assert msa(acks[0])[1:3] == ["AR", "MSG-MANY-1"]
        assert await closed(reader)
        writer.close()

    serve(ing, scenario, max_bytes=2000)


def test_idle_connection_is_closed(ing: Ingestor) -> None:
    async def scenario(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        assert await closed(reader)
        assert time.monotonic() - started < 3
        writer.close()

    serve(ing, scenario, idle_timeout=0.3)


class SlowIngestor:
    """Delays each message, to catch the listener with a message in flight."""

    def __init__(self, inner: Ingestor) -> None:
        self.inner = inner

    def handle(self, raw: bytes, channel: str = "mllp", **kw: object) -> Outcome:
        time.sleep(0.5)
        return self.inner.handle(raw, channel, **kw)  # type: ignore[arg-type]


def test_graceful_stop_finishes_in_flight_messages(ing: Ingestor) -> None:
    got: list[str] = []

    async def main() -> None:
        server = MllpServer(SlowIngestor(ing), ("127.0.0.0/8",), max_bytes=1 << 20)  # type: ignore[arg-type]
        port = await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame(numbered(1)) + frame(numbered(2)))
        await asyncio.sleep(0.2)  # the first message is being processed
        await server.stop(grace=10)
        got.extend(await read_acks(reader, 2, timeout=5))
        assert await closed(idle_reader)
        assert await closed(reader)
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        idle_writer.close()

    asyncio.run(main())
    assert [msa(a)[1:3] for a in got] == [["AA", "MSG-MANY-1"], ["AA", "MSG-MANY-2"]]
