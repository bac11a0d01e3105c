"""Run several ``cds-service`` commands as child processes in the foreground (``make run``).

``python -m cds_service.runner serve mllp`` checks the configuration and the ports first
(one line naming the variable, exit code 2), then starts one child per command.

Ctrl-C reaches only this process: each child runs in its own session, so the terminal's
SIGINT never hits gunicorn's master and workers directly (a worker interrupted by SIGINT
with a connection open hangs until the master kills it: "Perhaps out of memory?"). The
first Ctrl-C (or SIGTERM, SIGHUP) asks every child for a graceful stop (SIGTERM: gunicorn
finishes its requests within its graceful timeout, the MLLP listener its messages). A
second one stops at once: every child's process group is killed (gunicorn's master
ignores signals while it stops; an MLLP message not yet acknowledged is sent again by its
sender, and nothing acknowledged is lost: it was stored first). A child still running
after ``STOP_TIMEOUT`` is killed. When one child ends by itself, the others are stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

from cds_service.preflight import PreflightError, preflight

STOP_TIMEOUT = 20.0  # longer than gunicorn's graceful_timeout: its master ends its workers
POLL_SECONDS = 0.1
EXIT_CONFIG = 2


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM if this runner dies without stopping it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Runner:
    """The children of one ``make run`` and the stop requests received so far."""

    def __init__(self, commands: list[str]) -> None:
        """Nothing starts until ``start``."""
        self.commands = commands
        self.children: list[subprocess.Popen[bytes]] = []
        self.stops = 0

    def start(self) -> None:
        """Start one ``cds-service <command>`` per command, each in its own session."""
        for cmd in self.commands:
            child = subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
                [sys.executable, "-m", "cds_service.cli", cmd],
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
            )
            self.children.append(child)

    def request_stop(self, signum: int = signal.SIGINT, frame: FrameType | None = None) -> None:
        """A stop request: graceful the first time, quick the second."""
        del signum, frame
        self.stops += 1
        if self.stops == 1:
            print("stopping (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
        elif self.stops == 2:
            print("stopping at once", file=sys.stderr, flush=True)
        for child in self.children:
            if child.poll() is not None:
                continue
            try:
                if self.stops == 1:
                    child.send_signal(signal.SIGTERM)
                else:
                    os.killpg(child.pid, signal.SIGKILL)  # its own session: pgid == pid
            except ProcessLookupError:  # ended meanwhile
                pass

    def wait(self) -> int:
        """Until a stop request or a child's end; then stop the rest. The exit code."""
        code = 0
        while not self.stops:
            ended = [c for c in self.children if c.poll() is not None]
            if ended:
                code = ended[0].returncode
                self.stops = 1  # quietly: stop the others gracefully
                for child in self.children:
                    if child.poll() is None:
                        child.send_signal(signal.SIGTERM)
                break
            time.sleep(POLL_SECONDS)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in self.children:
            while child.poll() is None and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
            if child.poll() is None:
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                child.wait()
        return code


def run(commands: list[str]) -> int:
    """Check the configuration, start ``cds-service <command>`` for each command, wait.

    The exit code: 2 on a configuration error, else that of the first child to end by
    itself, else 0 (stopped by Ctrl-C).
    """
    try:
        for cmd in commands:
            preflight(cmd)
    except PreflightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    runner = Runner(commands)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, runner.request_stop)
    runner.start()
    return runner.wait()


def main(argv: list[str] | None = None) -> int:
    """Entry point: the commands to run side by side (default: ``serve``)."""
    commands = (sys.argv[1:] if argv is None else argv) or ["serve"]
    return run(commands)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
