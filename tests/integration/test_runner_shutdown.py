"""Ctrl-C on ``make run``: the first stops gracefully, the second at once; both cleanly.

A terminal's Ctrl-C sends SIGINT to the whole foreground process group; the test starts
the runner (what ``make run`` execs) in a new process group and signals that group, with
an idle keep-alive HTTP connection, a half-sent request and an idle MLLP connection open
(the situations that made a gunicorn worker hang until "SIGKILL! Perhaps out of memory?").
The serving worker reads a request whole before a thread runs it, so a half-sent request no
longer holds a graceful stop; a hook call waiting on a FHIR server that never answers does.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cds_service.store import migrate

ROOT = Path(__file__).parents[2]
SITE = ROOT / "mappings" / "site" / "example.yaml"
UNCLEAN = ("Traceback", "SIGKILL", "Perhaps out of memory", "ERROR", "Exception")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SILENT_FHIR = f"http://127.0.0.1:{free_port()}/fhir"  # a FHIR server that never answers


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class Running:
    proc: subprocess.Popen[str]
    http_port: int
    mllp_port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def wait_until_up(run: Running, deadline: float = 90.0) -> None:
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        assert run.proc.poll() is None, run.output()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", run.http_port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                with socket.create_connection(("127.0.0.1", run.mllp_port), timeout=2):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail("the runner did not serve in time:\n" + run.output())


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    http_port, mllp_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(CDS_AUTH="off", CDS_DATABASE_URL=url, CDS_HTTP_PORT=str(http_port),
               CDS_MLLP_PORT=str(mllp_port), CDS_SITE_MAPPINGS=str(SITE), WEB_CONCURRENCY="2",
               CDS_FHIR_ALLOWLIST=SILENT_FHIR, CDS_FHIR_DEADLINE_MS="30000")  # fmt: skip
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cds_service.runner", "serve", "mllp"],
            env=env, stdout=out, stderr=subprocess.STDOUT, text=True, process_group=0,
        )  # fmt: skip
    run = Running(proc, http_port, mllp_port, log)
    try:
        wait_until_up(run)
        yield run
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def open_connections(run: Running, half_sent: bool) -> list[object]:
    """An idle keep-alive HTTP connection, an idle MLLP link; with ``half_sent``, a request
    whose headers never end and a hook call in progress (its prefetch read from a FHIR server
    that accepts and never answers: gunicorn's graceful stop waits for it)."""
    keep = http.client.HTTPConnection("127.0.0.1", run.http_port, timeout=5)
    keep.request("GET", "/healthz")
    assert keep.getresponse().read()
    conns: list[object] = [keep, socket.create_connection(("127.0.0.1", run.mllp_port))]
    if half_sent:
        slow = socket.create_connection(("127.0.0.1", run.http_port))
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")  # no blank line
        silent = socket.socket()
        silent.bind(("127.0.0.1", int(SILENT_FHIR.rsplit(":", 1)[1].split("/", maxsplit=1)[0])))
        silent.listen(8)  # connections complete in the backlog; nothing is ever read or sent
        body = json.dumps({"hook": "patient-view", "hookInstance": "shutdown-test",
                           "fhirServer": SILENT_FHIR, "context": {"patientId": "p1", "userId": "Practitioner/1"}})  # fmt: skip
        hook = socket.create_connection(("127.0.0.1", run.http_port))
        hook.sendall(
            b"POST /cds-services/magnesium-aki-patient-view HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body.encode()
        )
        conns += [slow, silent, hook]
    time.sleep(0.5)
    return conns


def ctrl_c(run: Running) -> None:
    os.killpg(run.proc.pid, signal.SIGINT)  # what the terminal does: the whole group


def test_first_ctrl_c_stops_everything_gracefully_and_cleanly(running: Running) -> None:
    conns = open_connections(running, half_sent=False)
    ctrl_c(running)
    started = time.monotonic()
    code = running.proc.wait(timeout=60)
    print(f"graceful stop took {time.monotonic() - started:.1f} s")
    out = running.output()
    assert code == 0, out
    for word in UNCLEAN:
        assert word not in out, (word, out)
    assert "stopping (Ctrl-C again to stop at once)" in out
    assert "Shutting down: Master" in out  # gunicorn's graceful path, not a kill
    assert "mllp stopping" in out
    assert port_free(running.http_port) and port_free(running.mllp_port)
    del conns


def test_second_ctrl_c_stops_at_once_and_cleanly(running: Running) -> None:
    conns = open_connections(running, half_sent=True)
    ctrl_c(running)
    time.sleep(1.0)  # the graceful stop is waiting for the half-sent request
    ctrl_c(running)
    code = running.proc.wait(timeout=60)
    out = running.output()
    assert code == 0, out
    for word in UNCLEAN:
        assert word not in out, (word, out)
    assert "stopping at once" in out
    # the graceful stop was cut short: gunicorn's master never reached its own end
    assert "Shutting down: Master" not in out
    assert port_free(running.http_port) and port_free(running.mllp_port)
    del conns
