"""The serving workers' shared connection counts (fork-inherited shared memory).

Created when the module is imported, in the gunicorn master (which imports the worker class
before forking), so every worker of that master sees the same table; another master (another
server) has its own. Each live worker holds one slot: ``[pid, open connections]``.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
from multiprocessing.sharedctypes import RawArray

SLOTS = 64

_TABLE = RawArray(ctypes.c_long, 2 * SLOTS)
_LOCK = multiprocessing.Lock()


def claim_slot(pid: int) -> int:
    """A free slot (or one of a dead process) for worker ``pid``; -1 when all are taken."""
    with _LOCK:
        for i in range(SLOTS):
            holder = int(_TABLE[2 * i])
            if holder == 0 or not _alive(holder):
                _TABLE[2 * i], _TABLE[2 * i + 1] = pid, 0
                return i
    return -1


def release_slot(pid: int) -> None:
    """Forget an exited worker's connection count (gunicorn ``child_exit``, worker exit)."""
    with _LOCK:
        for i in range(SLOTS):
            if _TABLE[2 * i] == pid:
                _TABLE[2 * i] = _TABLE[2 * i + 1] = 0


def publish(slot: int, connections: int) -> None:
    """Record the open connections of the worker holding ``slot``."""
    if slot >= 0:
        _TABLE[2 * slot + 1] = connections


def least_other(slot: int) -> int | None:
    """The fewest open connections among the other live workers (None: no other worker)."""
    counts = [int(_TABLE[2 * i + 1]) for i in range(SLOTS) if i != slot and _TABLE[2 * i] != 0]
    return min(counts) if counts else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
