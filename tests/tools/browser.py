"""Headless Chromium over the DevTools protocol on a pipe (no extra package, no port).

Headless Chromium's window is at least 500 px wide, so a phone is emulated with
``Emulation.setDeviceMetricsOverride`` (390x844, mobile) instead of ``--window-size``.
``python -m tests.tools.browser URL OUT.png WIDTH HEIGHT`` takes a screenshot (docs/).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]


def find_chromium() -> str | None:
    """The Debian ``chromium`` binary, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium with a fresh profile, driven over fds 3 (in) and 4 (out)."""

    def __init__(self, binary: str, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="cds-chromium-")
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()

        def fds() -> None:  # in the child: the protocol's fixed descriptors 3 and 4
            a, b = os.dup(to_child), os.dup(from_child)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=fds,  # noqa: PLW1509 - no threads in the test process here
        )
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._next = 0
        self._events: list[dict[str, Any]] = []

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> Any:
        """Send one command; its result (events that arrive meanwhile are kept)."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._next:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self._events.append(answer)

    def wait_event(self, method: str, session: str) -> None:
        """Until an event of this method arrives for the session."""
        deadline = time.monotonic() + self.timeout
        while True:
            for i, ev in enumerate(self._events):
                if ev.get("method") == method and ev.get("sessionId") == session:
                    del self._events[i]
                    return
            self._events.append(self._receive(deadline))

    def page(self, width: int, height: int) -> str:
        """A new tab with a viewport of ``width`` x ``height`` (mobile below 600 px): its session."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = str(
            self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        )
        self.call("Page.enable", session=session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
            session,
        )
        return session

    def load(self, session: str, url: str) -> None:
        """Navigate and wait for the load event."""
        self.call("Page.navigate", {"url": url}, session)
        self.wait_event("Page.loadEventFired", session)

    def evaluate(self, session: str, expression: str) -> Any:
        """A JavaScript expression's value (JSON-able)."""
        result = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session
        )
        return result["result"].get("value")

    def screenshot(self, session: str) -> bytes:
        """A PNG of the viewport."""
        return base64.b64decode(
            self.call("Page.captureScreenshot", {"format": "png"}, session)["data"]
        )

    def close(self) -> None:
        """Stop the browser and remove its profile."""
        try:
            self.call("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


def main(argv: list[str]) -> int:
    """``URL OUT.png WIDTH HEIGHT``: a viewport screenshot (scrolled to the URL's fragment)."""
    url, out, width, height = argv[0], Path(argv[1]), int(argv[2]), int(argv[3])
    binary = find_chromium()
    if binary is None:
        print("chromium is not installed", file=sys.stderr)
        return 1
    browser = Browser(binary)
    try:
        session = browser.page(width, height)
        browser.load(session, url)
        time.sleep(0.5)
        out.write_bytes(browser.screenshot(session))
    finally:
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
