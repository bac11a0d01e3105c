"""gunicorn settings for ``cds-service serve`` (prometheus multiprocess bookkeeping, logging)."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

from prometheus_client import multiprocess

errorlog = "-"
loglevel = "info"
timeout = 30
graceful_timeout = 10
keepalive = 5
# behind a TLS-terminating proxy: trust its X-Forwarded-* only from the proxy's address
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
if Path("/dev/shm").is_dir():  # noqa: S108 - gunicorn's heartbeat files, not data
    worker_tmp_dir = "/dev/shm"  # noqa: S108


def on_starting(server: Any) -> None:
    """Start with an empty metrics directory (stale samples of a previous run are dropped)."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for old in Path(folder).glob("*.db"):
            old.unlink()


def post_worker_init(worker: Any) -> None:
    """Move the loaded app (mappings, value sets, FHIR models) out of the cyclic GC's view.

    Those objects live as long as the worker; without this every full collection walks them
    all (~80 ms with the GIL held on a 2-core machine, stalling every thread of the worker).
    """
    gc.freeze()


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the multiprocess metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
