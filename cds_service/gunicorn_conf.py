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
# The service's own log lines (cds_service.*: JWT rejection reasons, HL7 outcomes, ...) at
# INFO on stderr beside gunicorn's; everything else at WARNING. Without this, Python's
# last-resort handler printed WARNING and above only, unformatted, and INFO was lost.
_FORMAT = {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s",
           "datefmt": "[%Y-%m-%d %H:%M:%S %z]"}  # fmt: skip
_STDERR = {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stderr"}
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"generic": _FORMAT},
    "handlers": {"error_console": _STDERR},
    "root": {"level": "WARNING", "handlers": ["error_console"]},
    "loggers": {
        "cds_service": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
    },
}
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
    """Drop a dead worker's live gauges and its connection count (the worker's table)."""
    from cds_service.web.worker import release_slot

    release_slot(worker.pid)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
