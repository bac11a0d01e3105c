"""The serving design under slow and oversized clients: ``cds-service serve`` over real sockets.

One worker with two threads, so that two clients blocking a thread each would be enough to
starve every other request under plain gthread. Every wait is bounded; none is a timing
assertion: a request answered at all while slow clients hold more connections than the
server has threads is the property (it used to wait until the slow clients finished).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from cds_service.store import migrate
from cds_service.store.events_models import Hl7Message
from tests.conftest import COLLECTOR
from tests.hardening.support import PATIENT_VIEW, oru
from tests.hardening_ids import SECRET

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
WAIT = 20.0  # seconds any single answer may take before the test gives up


@dataclass
class Served:
    port: int
    url: str  # database
    master: int  # gunicorn master pid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``cds-service serve --workers 1 --threads 2`` on a migrated SQLite file."""
    yield from serve(tmp_path_factory, workers=1)


def serve(tmp_path_factory: pytest.TempPathFactory, workers: int) -> Iterator[Served]:
    """``cds-service serve --workers N --threads 2`` until the generator is closed."""
    tmp = tmp_path_factory.mktemp("serving")
    url = f"sqlite:///{tmp / 'cds.db'}"
    migrate(url)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(CDS_DATABASE_URL=url, CDS_AUTH="off", CDS_SECRET=SECRET, CDS_HTTP_PORT=str(port),
               PROMETHEUS_MULTIPROC_DIR=str(tmp / "metrics"))  # fmt: skip
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cds_service.cli", "serve", "--workers", str(workers), "--threads", "2"],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                if b" 200 " in exchange(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"):
                    break
            except OSError:
                time.sleep(0.2)
        while time.monotonic() < deadline and log.read_text("utf-8", "replace").count("ready") < workers:
            time.sleep(0.2)  # every worker has loaded the app ("worker N ready")
        yield Served(port, url, proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        COLLECTOR.scan_file(log)
    text = log.read_text("utf-8", "replace")
    assert "Traceback" not in text, text[-3000:]


def exchange(port: int, data: bytes, timeout: float = WAIT) -> bytes:
    """Send ``data`` on a new connection (closed after) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        if b"Connection:" not in data:
            data = data.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def post(path: str, body: bytes, kind: str = "application/json") -> bytes:
    """A POST with a Content-Length."""
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def chunked(path: str, body: bytes, kind: str, size: int = 256 * 1024) -> bytes:
    """A POST with a chunked body."""
    out = [f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {kind}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()]
    for i in range(0, len(body), size):
        part = body[i : i + size]
        out.append(b"%x\r\n" % len(part) + part + b"\r\n")
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def slow_clients(port: int, count: int, head_done: bool) -> list[socket.socket]:
    """Connections that sent part of a request (the head, or the head and a little body)."""
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        if head_done:
            s.sendall(f"POST {PATIENT_VIEW} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                      "Content-Length: 5000\r\n\r\n{\"hook\":".encode())  # fmt: skip
        else:
            s.sendall(f"POST {PATIENT_VIEW} HTTP/1.1\r\nHost: t\r\nX-Slow: 1\r\n".encode())
        socks.append(s)
    return socks


@pytest.mark.parametrize("head_done", [False, True], ids=["slow-headers", "slow-body"])
def test_requests_are_served_while_slow_clients_hold_connections(served: Served, head_done: bool) -> None:
    holders = slow_clients(served.port, 12, head_done)
    try:
        for _ in range(3):
            answer = exchange(served.port, post(PATIENT_VIEW, b'{"hook": "patient-view"}'))
            assert answer.startswith(b"HTTP/1.1 400"), answer[:200]  # answered (a 400: no context)
            assert b" 200 " in exchange(served.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    finally:
        for s in holders:
            s.close()


def read_response(sock: socket.socket) -> bytes:
    """One response (head and Content-Length body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_keep_alive_connection_serves_several_requests(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=WAIT) as sock:
        for i in range(3):
            sock.sendall(post(PATIENT_VIEW, b'{"hook": "patient-view"}') if i == 1
                         else b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")  # fmt: skip
            answer = read_response(sock)
            assert answer.startswith(b"HTTP/1.1 400" if i == 1 else b"HTTP/1.1 200")
            assert b"connection: keep-alive" in answer.lower()


def test_chunked_json_over_the_limit_is_413(served: Served) -> None:
    body = b'{"a": "' + b"x" * (6 * 1024 * 1024) + b'"}'
    answer = exchange(served.port, chunked(PATIENT_VIEW, body, "application/json"))
    assert answer.startswith(b"HTTP/1.1 413") and b"OperationOutcome" in answer


def test_chunked_hl7_over_the_limit_is_refused_not_cut(served: Served) -> None:
    message = oru("BIG-CHUNKED-1") + b"NTE|1||" + b"x" * (6 * 1024 * 1024) + b"\r"
    answer = exchange(served.port, chunked("/hl7v2", message, "application/hl7-v2"))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    with Session(create_engine(served.url)) as session:
        query = select(Hl7Message).where(Hl7Message.control_id == "BIG-CHUNKED-1")
        assert session.scalars(query).first() is None  # nothing acknowledged, nothing stored


def test_chunked_hl7_under_the_limit_is_acknowledged(served: Served) -> None:
    answer = exchange(served.port, chunked("/hl7v2", oru("SMALL-CHUNKED-1"), "application/hl7-v2", 50))
    assert answer.startswith(b"HTTP/1.1 200") and b"MSA|AA|SMALL-CHUNKED-1" in answer


def test_a_head_that_never_ends_is_closed_with_408(served: Served) -> None:
    (sock,) = slow_clients(served.port, 1, head_done=False)
    with sock:
        sock.settimeout(WAIT)
        answer = sock.recv(65536)  # the server gives up on the head after HEAD_TIMEOUT
    assert answer.startswith(b"HTTP/1.1 408")


@pytest.fixture(scope="module")
def served_two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The same with two workers."""
    yield from serve(tmp_path_factory, workers=2)


def sockets_of(pid: int) -> set[str]:
    """The socket inodes a process holds open."""
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:"):
            out.add(target)
    return out


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_connections_opened_at_once_are_shared_by_the_workers(served_two: Served) -> None:
    workers = [int(p) for p in Path(f"/proc/{served_two.master}/task/{served_two.master}/children").read_text().split()]
    assert len(workers) == 2
    before = {w: sockets_of(w) for w in workers}
    conns = [socket.create_connection(("127.0.0.1", served_two.port), timeout=WAIT) for _ in range(8)]
    try:
        for c in conns:  # one request each, so that every connection has been accepted
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        for c in conns:
            assert c.recv(65536).startswith(b"HTTP/1.1 200")
        held = {w: len(sockets_of(w) - before[w]) for w in workers}
    finally:
        for c in conns:
            c.close()
    assert sum(held.values()) == 8
    assert min(held.values()) >= 2, held  # plain gthread often left one worker with none
