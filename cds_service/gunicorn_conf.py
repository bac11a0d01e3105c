"""gunicorn settings for ``cds-service serve`` (prometheus multiprocess bookkeeping, logging)."""

from __future__ import annotations

import gc
import logging
import os
import sys
from pathlib import Path
from typing import Any

from prometheus_client import multiprocess

LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"
LOG_DATEFMT = "[%Y-%m-%d %H:%M:%S %z]"

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
    """Send the service's log lines to stderr; freeze the loaded app out of the GC's view.

    Logging: the service's own lines (``cds_service.*``: JWT rejection reasons, HL7 outcomes)
    at INFO beside gunicorn's; without a handler, Python's last resort printed WARNING and
    above only. (Not gunicorn's ``logconfig_dict``: it also turns the access log on, which
    cost ~0.4 ms of CPU per request.)

    GC: the loaded objects (mappings, value sets, FHIR models) live as long as the worker;
    without ``gc.freeze()`` every full collection walks them all (~80 ms with the GIL held
    on a 2-core machine, stalling every thread of the worker).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATEFMT))
    service = logging.getLogger("cds_service")
    service.addHandler(handler)
    service.setLevel(logging.INFO)
    service.propagate = False
    gc.freeze()
    service.info("worker %s ready", worker.pid)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges and its connection count (the worker's table)."""
    from cds_service.web.worker_table import release_slot

    release_slot(worker.pid)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
