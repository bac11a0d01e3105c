"""Retention (``CDS_RETENTION_DAYS``) for every table: the CDS Hooks log and the event store."""

from __future__ import annotations

import argparse
import asyncio
import logging

from cds_service.config import Settings, settings_for_command

log = logging.getLogger(__name__)
DAY_SECONDS = 24 * 3600.0


def purge_all(settings: Settings) -> dict[str, int]:
    """Delete everything older than the retention period; rows deleted per table."""
    from cds_service.events.retention import purge_events
    from cds_service.store import migrate, open_store

    migrate(settings.database_url)
    store = open_store(settings.database_url, settings.secret)
    counts = store.purge(settings.retention_days)
    counts.update(purge_events(store.engine, settings.retention_days))
    return counts


async def retention_loop(settings: Settings, stop: asyncio.Event) -> None:
    """Purge once a day until ``stop`` is set (errors are logged, never raised)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            await asyncio.wait_for(stop.wait(), timeout=DAY_SECONDS)
            return
        except TimeoutError:
            pass
        try:
            counts = await loop.run_in_executor(None, purge_all, settings)
            log.info("retention: %d rows older than %d days deleted",
                     sum(counts.values()), settings.retention_days)  # fmt: skip
        except Exception as exc:
            log.error("retention: purge failed (%s)", type(exc).__name__)


def cmd_purge(args: argparse.Namespace) -> int:
    """``cds-service purge``: apply CDS_RETENTION_DAYS now and print the counts."""
    settings = settings_for_command()
    if settings is None:
        return 1
    counts = purge_all(settings)
    for table, n in sorted(counts.items()):
        print(f"{table}\t{n}")
    return 0


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``purge`` on the ``cds-service`` parser."""
    pg = sub.add_parser(
        "purge",
        help="delete rows older than CDS_RETENTION_DAYS (the MLLP process also does it daily)",
    )
    pg.set_defaults(func=cmd_purge)
