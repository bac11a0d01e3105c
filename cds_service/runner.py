"""Run several ``cds-service`` commands as child processes in the foreground (``make run``).

``python -m cds_service.runner serve mllp`` starts one child per command; Ctrl-C (or
SIGTERM) stops them all, and when one child exits the others are stopped too.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import FrameType

STOP_TIMEOUT = 10.0
POLL_SECONDS = 0.2


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run(commands: list[str]) -> int:
    """Start ``cds-service <command>`` for each command; the exit code of the first to end."""
    stopping = False

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    children = [
        subprocess.Popen([sys.executable, "-m", "cds_service.cli", cmd])  # noqa: S603
        for cmd in commands
    ]
    code = 0
    try:
        while not stopping:
            ended = [c for c in children if c.poll() is not None]
            if ended:
                code = ended[0].returncode
                break
            time.sleep(POLL_SECONDS)
    finally:
        _stop(children)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point: the commands to run side by side (default: ``serve``)."""
    commands = (sys.argv[1:] if argv is None else argv) or ["serve"]
    return run(commands)


if __name__ == "__main__":
    raise SystemExit(main())
