"""Suite-wide fixtures: the log scan (no identifier, token or secret in any log line)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.hardening_ids import IDENTIFIERS
from tests.logscan import Collector, findings, sensitive_values

COLLECTOR = Collector()


@pytest.fixture(scope="session", autouse=True)
def log_scan() -> Iterator[Collector]:
    """Collect every log record of the session at INFO and above; scan them at the end."""
    root = logging.getLogger()
    level = root.level
    root.addHandler(COLLECTOR)
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        yield COLLECTOR
    finally:
        root.removeHandler(COLLECTOR)
        root.setLevel(level)
    found = findings(COLLECTOR.lines, sensitive_values(IDENTIFIERS))
    assert not found, "secrets or identifiers in the logs:\n" + "\n".join(found[:50])
