"""Every configuration error of a server command is one line naming the variable, exit code 2.

The commands run as a newcomer runs them (the installed ``cds-service`` script, and the
runner behind ``make run``) with the environment of each case; none may print a traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SCRIPT = Path(sys.executable).parent / "cds-service"


def command(*args: str) -> list[str]:
    """``cds-service ARGS`` (the installed script, else the module)."""
    return (
        [str(SCRIPT), *args]
        if SCRIPT.exists()
        else [sys.executable, "-m", "cds_service.cli", *args]
    )


def run(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    full = {**base, "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", **env}
    return subprocess.run(args, env=full, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another server is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def assert_one_line(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("error: "), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)


CASES = {
    "jwt-without-secret": (["serve"], {"CDS_AUTH": "jwt"}, ["CDS_SECRET", "CDS_AUTH=jwt"]),
    "issuers-unreadable": (
        ["serve"],
        {"CDS_AUTH": "jwt", "CDS_SECRET": "s", "CDS_TRUSTED_ISSUERS": "/nonexistent/issuers.json"},
        ["CDS_TRUSTED_ISSUERS"],
    ),
    "port-not-a-number": (
        ["serve"],
        {"CDS_AUTH": "off", "CDS_HTTP_PORT": "eighty"},
        ["CDS_HTTP_PORT"],
    ),
    "port-out-of-range": (["mllp"], {"CDS_MLLP_PORT": "70000"}, ["CDS_MLLP_PORT"]),
    "unknown-auth": (["serve"], {"CDS_AUTH": "maybe"}, ["CDS_AUTH"]),
    "unknown-timezone": (["mllp"], {"CDS_TIMEZONE": "Mars/Olympus"}, ["CDS_TIMEZONE"]),
    "site-file-missing": (
        ["mllp"],
        {"CDS_SITE_MAPPINGS": "/nonexistent/site.yaml"},
        ["CDS_SITE_MAPPINGS"],
    ),
    "unknown-outbound": (["mllp"], {"CDS_OUTBOUND": "email"}, ["CDS_OUTBOUND"]),
    "bad-database-url": (["mllp"], {"CDS_DATABASE_URL": "not a url"}, ["CDS_DATABASE_URL"]),
    "migrate-bad-value": (["migrate"], {"CDS_MAX_BODY_BYTES": "lots"}, ["CDS_MAX_BODY_BYTES"]),
    # `make run` migrates first: its database errors are one line too (the URL, which may
    # hold a password, is never printed)
    "migrate-bad-database-url": (["migrate"], {"CDS_DATABASE_URL": "notaurl"}, ["CDS_DATABASE_URL"]),
    "migrate-database-unreachable": (
        ["migrate"],
        {"CDS_DATABASE_URL": "postgresql+psycopg://cds:pw-51@127.0.0.1:1/cds"},
        ["CDS_DATABASE_URL", "cannot open the database"],
    ),
    "mappings-not-loadable": (["rules"], {"CDS_MAPPINGS": str(ROOT / "tests")}, ["CDS_MAPPINGS"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_configuration_error_is_one_line_naming_the_variable(case: str, tmp_path: Path) -> None:
    args, env, words = CASES[case]
    proc = run(command(*args), env, tmp_path)
    assert_one_line(proc, *words)
    assert "pw-51" not in proc.stderr + proc.stdout  # a database password is never shown


@pytest.mark.parametrize(
    ("cmd", "variable"), [("serve", "CDS_HTTP_PORT"), ("mllp", "CDS_MLLP_PORT")]
)
def test_busy_port_names_the_variable_to_change(
    cmd: str, variable: str, busy_port: int, tmp_path: Path
) -> None:
    proc = run(command(cmd), {"CDS_AUTH": "off", variable: str(busy_port)}, tmp_path)
    assert_one_line(proc, variable, f"127.0.0.1:{busy_port}", "in use")
    assert "Connection in use" not in proc.stderr  # gunicorn never started


def test_make_run_runner_reports_a_busy_port_before_starting_anything(
    busy_port: int, tmp_path: Path
) -> None:
    """The runner behind ``make run`` checks every command's settings and port first."""
    proc = run(
        [sys.executable, "-m", "cds_service.runner", "serve", "mllp"],
        {"CDS_AUTH": "off", "CDS_MLLP_PORT": str(busy_port)},
        tmp_path,
    )
    assert_one_line(proc, "CDS_MLLP_PORT", "in use")
    assert "Listening at" not in proc.stderr + proc.stdout  # gunicorn was not started


def test_make_run_with_jwt_and_no_secret_is_one_line(tmp_path: Path) -> None:
    proc = run(
        [sys.executable, "-m", "cds_service.runner", "serve", "mllp"], {"CDS_AUTH": "jwt"}, tmp_path
    )
    assert_one_line(proc, "CDS_SECRET")
