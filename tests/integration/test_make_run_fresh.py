"""``make run`` on a fresh clone (no ``.venv``): time to the first 200 of CDS Hooks discovery.

This is the newcomer's first minute: clone, ``make run``, call ``GET /cds-services``. The test
clones the committed project into a temporary folder, runs ``make run`` there on free ports,
and measures from the start of ``make`` to the first 200 (printed and kept as a property of
the test; recorded in docs/benchmarks.md, never asserted: it depends on the package index and
the machine). It then checks what a newcomer would see: only runtime dependencies installed
(no pytest, ruff, mypy), no setuptools deprecation warning, and a clean Ctrl-C.

Cost in CI: one virtualenv with the runtime dependencies (about 25-35 s on this 2-core machine;
more when the package index is slow), once per run of the suite.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from tests.integration.test_runner_shutdown import free_port

ROOT = Path(__file__).parents[2]
INSTALL_DEADLINE = 600.0  # a hang guard, not a speed claim


def test_make_run_on_a_fresh_clone_serves_with_runtime_dependencies_only(
    tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    assert not (clone / ".venv").exists()
    http_port, mllp_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_") and k != "VIRTUAL_ENV"}
    env.update(CDS_HTTP_PORT=str(http_port), CDS_MLLP_PORT=str(mllp_port), PIP_NO_CACHE_DIR="1")
    log = tmp_path / "make-run.log"
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT,
                                process_group=0)  # fmt: skip
    try:
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() - started < INSTALL_DEADLINE, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/cds-services", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.25)
        seconds = time.monotonic() - started
        record_property("seconds_to_first_200", round(seconds, 1))
        print(f"make run on a fresh clone: first 200 from /cds-services after {seconds:.1f} s")
        bin_dir = clone / ".venv" / "bin"
        for tool in ("pytest", "ruff", "mypy"):
            assert not (bin_dir / tool).exists(), f"{tool} installed by make run"
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = log.read_text(encoding="utf-8", errors="replace")
    assert "SetuptoolsDeprecationWarning" not in out and "project.license" not in out
    # pip hides the build backend's warnings; the cause of setuptools' (a license table) is gone
    project = tomllib.loads((clone / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert isinstance(project["license"], str)
    for word in ("Traceback", "Perhaps out of memory", "SIGKILL"):
        assert word not in out, (word, out[-3000:])
    assert "Shutting down: Master" in out
