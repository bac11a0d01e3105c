"""``cds-service serve`` (gunicorn, gthread-based workers) and ``cds-service migrate``."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from cds_service.config import ConfigError, Settings, settings_for_command
from cds_service.preflight import check_settings

DEFAULT_WORKERS = 2
DEFAULT_THREADS = 8
APP_FACTORY = "cds_service.app:create_app()"
# gthread that reads whole requests before a thread runs them (docs/decisions.md §14)
WORKER_CLASS = "cds_service.web.worker.BufferedThreadWorker"


def gunicorn_argv(host: str, port: int, workers: int, threads: int) -> list[str]:
    """The gunicorn command line that serves the app."""
    return [
        sys.executable, "-m", "gunicorn",
        "--worker-class", WORKER_CLASS,
        "--workers", str(workers),
        "--threads", str(threads),
        "--bind", f"{host}:{port}",
        "--config", "python:cds_service.gunicorn_conf",
        APP_FACTORY,
    ]  # fmt: skip


def _check_startup(settings: Settings) -> None:
    """Load mappings and services once before forking, so a bad file stops start-up here.

    :raises MappingError: invalid mappings or service files.
    """
    from cds_service.hooks.services import load_services
    from cds_service.rules.loader import load_knowledge

    knowledge = load_knowledge(Path(settings.mappings), settings.site_path)
    load_services(Path(settings.mappings) / "services", knowledge)


def cmd_serve(args: argparse.Namespace) -> int:
    """Replace this process with gunicorn (signals reach its master directly)."""
    settings = settings_for_command()
    if settings is None:
        return 1
    _check_startup(settings)
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="cds-metrics-")
    argv = gunicorn_argv(
        args.host or settings.http_host, args.port or settings.http_port, args.workers, args.threads
    )
    sys.stdout.flush()
    os.execv(sys.executable, argv)  # noqa: S606 - our own interpreter and fixed arguments
    return 0  # pragma: no cover - execv does not return


def cmd_migrate(args: argparse.Namespace) -> int:
    """Upgrade the database of ``CDS_DATABASE_URL`` (or ``--url``) to the newest schema."""
    from sqlalchemy.exc import SQLAlchemyError

    from cds_service.store import migrate

    url = args.url
    if not url:
        settings = settings_for_command()
        if settings is None:
            return 1
        check_settings(settings, "migrate")  # one line naming the variable, before connecting
        url = settings.database_url
    try:
        migrate(url)
    except SQLAlchemyError as exc:  # the URL may hold a password: never printed
        raise ConfigError(
            f"CDS_DATABASE_URL: cannot open the database ({exc.__class__.__name__})"
        ) from None
    print("database migrated")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``serve`` and ``migrate`` on the ``cds-service`` parser."""
    sv = sub.add_parser("serve", help="serve HTTP with gunicorn (CDS_HTTP_HOST:CDS_HTTP_PORT)")
    sv.add_argument("--host", help="bind address (default $CDS_HTTP_HOST or 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port (default $CDS_HTTP_PORT or 8080)")
    workers = int(os.environ.get("WEB_CONCURRENCY", DEFAULT_WORKERS))
    sv.add_argument("--workers", type=int, default=workers, help="gunicorn workers (2)")
    sv.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    sv.set_defaults(func=cmd_serve)
    mg = sub.add_parser("migrate", help="create or upgrade the database schema")
    mg.add_argument("--url", help="SQLAlchemy URL (default $CDS_DATABASE_URL)")
    mg.set_defaults(func=cmd_migrate)
