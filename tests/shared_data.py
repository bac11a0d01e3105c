"""Where the read-only ``shared/`` folder (spec, clinical texts, real data) is.

CI clones the project next to a copy of ``shared/``; ``CDS_SHARED_DIR`` overrides.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _find() -> Path:
    env = os.environ.get("CDS_SHARED_DIR")
    if env:
        return Path(env)
    beside = ROOT.parent / "shared"
    return beside if beside.is_dir() else Path("/work/shared")


SHARED = _find()
