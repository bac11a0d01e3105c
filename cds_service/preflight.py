"""Configuration checks before a server starts: one line naming the variable, exit code 2.

``cds-service serve`` and ``cds-service mllp`` (and ``make run``, through the runner) call
``preflight`` before anything binds or forks, so a missing secret, an unreadable issuers
file or a busy port is reported as ``error: CDS_X: ...`` instead of a traceback from a
gunicorn worker or gunicorn's "Connection in use" loop.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from cds_service.config import ConfigError, Settings

PreflightError = ConfigError
# the variables that name a command's listening address
LISTENS = {"serve": ("CDS_HTTP_HOST", "CDS_HTTP_PORT"), "mllp": ("CDS_MLLP_HOST", "CDS_MLLP_PORT")}


def check_settings(settings: Settings, command: str) -> None:
    """Settings a server cannot run with (the form of each value is checked on loading).

    :raises ConfigError: the first unusable setting, named.
    """
    settings.zone()
    if not Path(settings.mappings).is_dir():
        raise ConfigError(f"CDS_MAPPINGS: no such folder: {settings.mappings}")
    site = settings.site_path
    if site is not None and not site.is_file():
        raise ConfigError(f"CDS_SITE_MAPPINGS: no such file: {site}")
    try:
        make_url(settings.database_url)
    except ArgumentError:
        raise ConfigError("CDS_DATABASE_URL: not a SQLAlchemy database URL") from None
    if command == "serve" and settings.auth == "jwt":
        if not settings.secret:
            raise ConfigError(
                "CDS_SECRET must be set with CDS_AUTH=jwt (it keys identifier hashes)"
            )
        from cds_service.hooks.auth import load_issuers

        load_issuers(settings.trusted_issuers)  # names CDS_TRUSTED_ISSUERS on error


def check_port(host: str, port: int, host_var: str, port_var: str) -> None:
    """Whether ``host:port`` can be bound now (as the server will: SO_REUSEADDR).

    :raises ConfigError: the port is in use, or the address is not one of this machine.
    """
    if not 0 <= port < 65536:
        raise ConfigError(f"{port_var}: {port} is not a port number (1-65535, or 0: any free port)")
    if port == 0:
        return  # the system picks a free port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise ConfigError(f"{host_var}: cannot resolve {host!r}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"{port_var}: {host}:{port} is already in use; "
                    f"set {port_var} to a free port (or stop the other server)"
                ) from None
            if exc.errno == errno.EACCES:
                raise ConfigError(
                    f"{port_var}: no permission to listen on port {port}; choose a port above 1023"
                ) from None
            raise ConfigError(
                f"{host_var}: cannot listen on {host!r} ({exc.strerror}); "
                "use an address of this machine"
            ) from None


def preflight(command: str, host: str | None = None, port: int | None = None) -> Settings:
    """The settings of a server command, checked, with its port free (``host``/``port``
    override the settings, as ``serve --host/--port`` do).

    :raises ConfigError: an unusable setting or a busy port, named.
    """
    settings = Settings.from_env()
    check_settings(settings, command)
    if command in LISTENS:
        host_var, port_var = LISTENS[command]
        default_host, default_port = (
            (settings.http_host, settings.http_port)
            if command == "serve"
            else (settings.mllp_host, settings.mllp_port)
        )
        check_port(host or default_host, port or default_port, host_var, port_var)
    return settings
