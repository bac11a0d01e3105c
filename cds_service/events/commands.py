"""``cds-service outbox`` (deliveries; advice by push status) and ``cds-service subscribe``."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cds_service.config import Settings, settings_for_command

STATUSES = ("pending", "sending", "failed", "sent", "cancelled", "shadow", "suppressed")
BACKPORT_CONTENT = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content"
)


def outbox_table(rows: list[Any]) -> str:
    """The outbox as a text table (no patient identifiers)."""
    head = ("id", "channel", "kind", "status", "attempts", "next attempt", "last error")
    lines = [head] + [
        (str(r.id), r.channel, r.kind, r.status, str(r.attempts),
         r.next_attempt_at.strftime("%Y-%m-%d %H:%M:%SZ") if r.status == "pending" else "-",
         (r.last_error or "").replace("\n", " ")[:60])
        for r in rows
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)  # fmt: skip


def advice_table(rows: list[Any]) -> str:
    """Advice recorded, with its push status, as a text table (no patient identifiers)."""
    head = ("advice", "lead rule", "push", "indicator", "created")
    lines = [head] + [
        (str(r.id), r.rule_id, r.push_status, r.indicator,
         r.created_at.strftime("%Y-%m-%d %H:%M:%SZ"))
        for r in rows
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)  # fmt: skip


def push_summary(by_status: dict[str, int]) -> str:
    """One line: advice recorded by push status (only pushed advice has deliveries)."""
    parts = ", ".join(
        f"{s} {by_status.get(s, 0)}" for s in ("pushed", "repeat", "not-pushed", "held")
    )
    return (f"advice recorded: {sum(by_status.values())} ({parts}); only pushed advice is queued "
            "for delivery (docs/deployment.md)")  # fmt: skip


def cmd_outbox(args: argparse.Namespace) -> int:
    """List outbox rows (pending and failed by default); ``--deliver`` runs one pass first.

    The last line counts the advice recorded by push status; ``--advice`` lists advice instead.
    """
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from cds_service.events.outbound import deliver_pending
    from cds_service.store import engine_for, migrate
    from cds_service.store.events_models import AdviceIssued, OutboxRow

    settings = settings_for_command()
    if settings is None:
        return 1
    migrate(settings.database_url)
    with Session(engine_for(settings.database_url), expire_on_commit=False) as session:
        if args.deliver:
            report = deliver_pending(session, settings, datetime.now(UTC))
            done = ", ".join(f"{k}={v}" for k, v in sorted(report.counts.items())) or "nothing due"
            print(f"delivery pass: {done}")
        if args.advice:
            advice = select(AdviceIssued).order_by(AdviceIssued.id.desc()).limit(args.limit)
            print(advice_table(list(session.scalars(advice))))
        else:
            wanted = [args.status] if args.status else ["pending", "failed"]
            query = select(OutboxRow).where(OutboxRow.status.in_(wanted))
            query = query.order_by(OutboxRow.id.desc()).limit(args.limit)
            print(outbox_table(list(session.scalars(query))))
        by_status = session.execute(
            select(AdviceIssued.push_status, func.count()).group_by(AdviceIssued.push_status)
        )
        print(push_summary({str(s): int(n) for s, n in by_status}))
    return 0


def subscription(settings: Settings, codes: str, endpoint: str, payload: str) -> dict[str, Any]:
    """The R4 Subscription (rest-hook) for lab results, validated with fhir.resources.R4B."""
    from fhir.resources.R4B.subscription import Subscription

    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint}
    if payload != "empty":
        channel["payload"] = "application/fhir+json"
    if payload == "id-only":
        channel["_payload"] = {"extension": [{"url": BACKPORT_CONTENT, "valueCode": "id-only"}]}
    if settings.auth != "off":
        channel["header"] = [f"Authorization: Bearer {settings.events_token}"]
    body = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Magnesium-AKI CDS: serum magnesium, creatinine and albumin results",
        "criteria": f"Observation?code={codes}",
        "channel": channel,
    }
    out: dict[str, Any] = Subscription.model_validate(body).model_dump(
        mode="json", exclude_none=True
    )
    return out


def cmd_subscribe(args: argparse.Namespace) -> int:
    """Create the Subscription on CDS_FHIR_BASE; print its id."""
    import requests

    from cds_service.events.fhir_access import fhir_writer
    from cds_service.events.fhir_snapshot import TRIGGER_SETS, codes_param
    from cds_service.hooks.fhir_client import FhirUnavailable
    from cds_service.rules.loader import load_knowledge

    settings = settings_for_command()
    if settings is None:
        return 1
    if not settings.fhir_base:
        print("error: CDS_FHIR_BASE is not set", file=sys.stderr)
        return 1
    if settings.auth != "off" and not settings.events_token:
        print("error: CDS_EVENTS_TOKEN is not set (the server must send it)", file=sys.stderr)
        return 1
    knowledge = load_knowledge(Path(settings.mappings), settings.site_path)
    body = subscription(settings, codes_param(knowledge, TRIGGER_SETS), args.endpoint, args.payload)
    try:
        client = fhir_writer(settings, requests.Session())
        _, created = client.send("POST", "Subscription", body)
    except FhirUnavailable as exc:
        print(f"error: the Subscription was not created: {exc}", file=sys.stderr)
        return 1
    rid = created.get("id") if created else None
    print(f"Subscription/{rid}" if isinstance(rid, str) else "Subscription created")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``outbox`` and ``subscribe`` on the ``cds-service`` parser."""
    ob = sub.add_parser("outbox", help="list outbound deliveries (pending and failed by default)")
    ob.add_argument("--status", choices=STATUSES, help="only rows with this status")
    ob.add_argument("--deliver", action="store_true", help="run one delivery pass first")
    ob.add_argument("--limit", type=int, default=100, help="rows shown (newest first)")
    ob.add_argument(
        "--advice", action="store_true", help="list advice recorded, with its push status"
    )
    ob.set_defaults(func=cmd_outbox)
    sb = sub.add_parser("subscribe", help="create the FHIR Subscription on CDS_FHIR_BASE")
    sb.add_argument("--endpoint", required=True, help="our public URL of /fhir/notifications")
    sb.add_argument(
        "--payload", choices=["full-resource", "id-only", "empty"], default="full-resource"
    )
    sb.set_defaults(func=cmd_subscribe)
