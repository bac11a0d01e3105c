"""The MLLP listener (``cds-service mllp``): asyncio, persistent connections, graceful stop.

Each connection reads frames and handles them one at a time in a worker thread (the
database work is synchronous), so messages of one connection are acknowledged in the
order sent while the event loop keeps serving other connections. SIGTERM/SIGINT stop
accepting, let every message already received be processed and acknowledged, then exit.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from cds_service.config import Settings
from cds_service.events.mllp_frames import FrameReader, TooLarge, frame

if TYPE_CHECKING:  # the CLI imports this module: keep its start-up light
    from cds_service.events.ingest import Ingestor, Outcome

log = logging.getLogger("cds_service.events.mllp")
IDLE_TIMEOUT = 300.0  # seconds without a byte before an idle connection is closed
SHUTDOWN_GRACE = 30.0  # seconds to finish in-flight messages on stop
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def allowed(peer: str, networks: list[Network]) -> bool:
    """Whether a peer address is inside one of the allowed networks."""
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in networks)


class MllpServer:
    """Serves one Ingestor over MLLP."""

    def __init__(
        self,
        ingestor: Ingestor,
        allow: tuple[str, ...],
        *,
        max_bytes: int,
        idle_timeout: float = IDLE_TIMEOUT,
        workers: int = 4,
        on_advice: Callable[[], None] | None = None,
    ) -> None:
        """Accept connections from ``allow`` (CIDR list) only; ``on_advice`` after new advice."""
        self.ingestor, self.max_bytes, self.idle_timeout = ingestor, max_bytes, idle_timeout
        self.on_advice = on_advice
        self.networks: list[Network] = [ipaddress.ip_network(a, strict=False) for a in allow]
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mllp")
        self.server: asyncio.Server | None = None
        self.busy: dict[asyncio.Task[None], bool] = {}
        self.stopping = False

    async def start(self, host: str, port: int) -> int:
        """Listen; the port actually bound (``port`` 0 picks a free one)."""
        self.server = await asyncio.start_server(self._client, host, port, limit=2**20)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, payload: bytes | TooLarge) -> Outcome:
        loop = asyncio.get_running_loop()
        if isinstance(payload, TooLarge):
            return await loop.run_in_executor(
                self.executor, lambda: self.ingestor.handle(payload.head, "mllp", truncated=True)
            )
        outcome = await loop.run_in_executor(self.executor, self.ingestor.handle, payload, "mllp")
        if outcome.advice and self.on_advice is not None:
            self.on_advice()
        return outcome

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not allowed(host, self.networks):
            log.warning("mllp connection refused: peer not in CDS_MLLP_ALLOW")
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self.busy[task] = False
        frames = FrameReader(self.max_bytes)
        try:
            while not self.stopping:
                try:
                    data = await asyncio.wait_for(reader.read(65536), self.idle_timeout)
                except TimeoutError:
                    log.info("mllp connection idle: closed")
                    break
                if not data:
                    break
                self.busy[task] = True
                closing = await self._answer(frames.feed(data), writer)
                self.busy[task] = False
                if closing:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            log.info("mllp connection lost")
        except asyncio.CancelledError:  # stop() closes idle connections: end the task normally
            log.info("mllp idle connection closed on stop")
        finally:
            self.busy.pop(task, None)
            writer.close()

    async def _answer(self, payloads: list[bytes | TooLarge], writer: asyncio.StreamWriter) -> bool:
        """Handle frames in order and write their ACKs; True when the connection must close."""
        for payload in payloads:
            outcome = await self._handle(payload)
            if outcome.send:
                writer.write(frame(outcome.ack_bytes))
                await writer.drain()
            if isinstance(payload, TooLarge):
                return True
        return False

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop accepting, let busy connections finish their messages, close the rest."""
        self.stopping = True
        if self.server is not None:
            self.server.close()
        for task, busy in list(self.busy.items()):
            if not busy:
                task.cancel()
        pending = list(self.busy)
        if pending:
            await asyncio.wait(pending, timeout=grace)
        self.executor.shutdown(wait=True)


async def serve_mllp(
    settings: Settings,
    *,
    ready: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the listener of ``settings`` until SIGTERM/SIGINT (or ``stop`` is set)."""
    from cds_service.events.outbound import start_delivery
    from cds_service.events.service import build_ingestor

    ingestor = build_ingestor(settings)
    delivery = start_delivery(ingestor.engine, settings)
    server = MllpServer(
        ingestor,
        settings.mllp_allow,
        max_bytes=settings.max_body_bytes,
        on_advice=delivery.kick if delivery is not None else None,
    )
    port = await server.start(settings.mllp_host, settings.mllp_port)
    log.info("mllp listening on %s:%d", settings.mllp_host, port)
    if ready is not None:
        ready(port)
    done = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, done.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    from cds_service.store.retention import retention_loop

    housekeeping = asyncio.create_task(retention_loop(settings, done))
    await done.wait()
    log.info("mllp stopping: finishing in-flight messages")
    await housekeeping
    await server.stop()
    if delivery is not None:
        delivery.stop()


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``mllp`` on the ``cds-service`` parser."""
    ml = sub.add_parser("mllp", help="run the HL7 v2 MLLP listener (CDS_MLLP_HOST:CDS_MLLP_PORT)")
    ml.set_defaults(func=lambda _args: main())


def main(settings: Settings | None = None) -> int:
    """Entry point of ``cds-service mllp``: log to stderr, print the bound port, serve."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    cfg = settings or Settings.from_env()

    def announce(port: int) -> None:
        print(f"mllp listening on {cfg.mllp_host}:{port}", flush=True)

    try:
        asyncio.run(serve_mllp(cfg, ready=announce))
    except OSError as exc:  # the port is taken, or the address is not ours
        print(f"error: mllp cannot listen on {cfg.mllp_host}:{cfg.mllp_port}: {exc.strerror}",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
