"""Fixtures shared by the integration suites."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.integration.fhir_server import fhir_server  # noqa: E402

__all__ = ["fhir_server"]
