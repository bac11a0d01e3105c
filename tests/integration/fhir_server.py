"""A real FHIR server for tests: Medplum's in-memory engine (tests/fhirserver), one per test.

The fixture installs the pinned npm packages on first use (``npm ci``, file-locked so
pytest-xdist workers install once), starts ``node server.cjs`` on a free port, waits for
``/metadata`` and stops it afterwards. No Node or a failed install FAILS the tests that
use it, with the reason; set ``CDS_TEST_NO_NODE=1`` to skip them instead.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

SERVER_DIR = Path(__file__).resolve().parents[1] / "fhirserver"
INSTALLED = SERVER_DIR / "node_modules" / "@medplum" / "fhir-router" / "package.json"
INSTALL_TIMEOUT_S = 600
START_TIMEOUT_S = 60


class NodeUnavailable(RuntimeError):
    """Node or the npm packages of tests/fhirserver cannot be made ready."""


def _lock_path() -> Path:
    digest = hashlib.sha256(str(SERVER_DIR).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"cds-fhirserver-{digest}.lock"


_FAILED: list[str] = []  # an install that failed once is not retried by every test


def ensure_installed() -> None:
    """Install tests/fhirserver's npm packages if they are missing.

    :raises NodeUnavailable: no node/npm, or the install failed.
    """
    if INSTALLED.exists():
        return
    if _FAILED:
        raise NodeUnavailable(_FAILED[0])
    try:
        _install()
    except NodeUnavailable as exc:
        _FAILED.append(str(exc))
        raise


def _install() -> None:
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        raise NodeUnavailable("node and npm (Node 20+) are needed for the FHIR server tests")
    with open(_lock_path(), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if INSTALLED.exists():
            return
        verb = "ci" if (SERVER_DIR / "package-lock.json").exists() else "install"
        cmd = [npm, verb, "--no-audit", "--no-fund"]
        try:
            proc = subprocess.run(
                cmd, cwd=SERVER_DIR, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            raise NodeUnavailable(f"`npm {verb}` in {SERVER_DIR} timed out") from None
        if proc.returncode != 0 or not INSTALLED.exists():
            tail = (proc.stderr or proc.stdout).strip()[-1500:]
            raise NodeUnavailable(
                f"`npm {verb}` in {SERVER_DIR} failed (exit {proc.returncode}):\n{tail}"
            )


class FhirServer:
    """One running in-memory FHIR server: ``.base``, ``.load(bundle)``, ``.stop()``."""

    def __init__(self) -> None:
        self.base = ""
        self.proc: subprocess.Popen[str] | None = None
        self._log = tempfile.TemporaryFile(mode="w+")

    def start(self) -> FhirServer:
        """Start node on a free port and wait until ``/metadata`` answers.

        :raises NodeUnavailable: node exits or does not answer in time.
        """
        node = shutil.which("node")
        if node is None:
            raise NodeUnavailable("node is not on PATH")
        self.proc = subprocess.Popen(
            [node, "--experimental-websocket", "server.cjs", "0"],
            cwd=SERVER_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, "EXIT_WITH_STDIN": "1"},
        )
        port = self._read_port(time.monotonic() + START_TIMEOUT_S)
        self.base = f"http://127.0.0.1:{port}"
        self._wait_ready(time.monotonic() + START_TIMEOUT_S)
        return self

    def _read_port(self, deadline: float) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if sel.select(timeout=0.2):
                    line = self.proc.stdout.readline()
                    if line.startswith("listening "):
                        return int(line.split()[1])
                    if not line:
                        break
        self.stop()
        raise NodeUnavailable(f"the FHIR server did not start:\n{self.stderr()}")

    def _wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.base}/metadata", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise NodeUnavailable(f"the FHIR server gave no /metadata:\n{self.stderr()}")

    def stderr(self) -> str:
        """What node wrote on stderr so far (for failure messages)."""
        self._log.seek(0)
        return self._log.read()[-3000:]

    def load(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """POST a transaction Bundle; returns the transaction-response."""
        resp = requests.post(
            self.base, json=bundle, headers={"Content-Type": "application/fhir+json"}, timeout=30
        )
        assert resp.status_code == 200, resp.text[:2000]
        body: dict[str, Any] = resp.json()
        return body

    @staticmethod
    def ids(bundle: dict[str, Any], response: dict[str, Any]) -> dict[str, str]:
        """Map each request entry's ``resource.id`` (or fullUrl) to the server's ``Type/id``."""
        out: dict[str, str] = {}
        for sent, got in zip(bundle["entry"], response["entry"], strict=True):
            res = got.get("resource") or {}
            ref = f"{res['resourceType']}/{res['id']}" if res else got["response"]["location"]
            out[sent["resource"].get("id") or sent["fullUrl"]] = "/".join(ref.split("/")[:2])
        return out

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def fhir_server() -> Iterator[FhirServer]:
    """A fresh, empty FHIR R4 server (Medplum in memory) for one test."""
    if os.environ.get("CDS_TEST_NO_NODE") == "1":
        pytest.skip("CDS_TEST_NO_NODE=1: tests needing the Node FHIR server are skipped")
    server = FhirServer()
    try:
        ensure_installed()
        server.start()
    except NodeUnavailable as exc:
        server.stop()
        pytest.fail(f"FHIR test server unavailable: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
        server._log.close()
