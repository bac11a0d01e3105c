"""The ``cds-service`` command: evaluate files, print the rule table."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cds_service.clinical import numbers
from cds_service.clinical.fhir_extract import snapshot_from_cds_request, snapshots_from_bundle
from cds_service.config import ConfigError, zone
from cds_service.events.commands import add_commands as add_event_commands
from cds_service.events.mllp import add_command as add_mllp
from cds_service.examples import add_command as add_example
from cds_service.preflight import LISTENS, preflight
from cds_service.render.cards import CardRenderer
from cds_service.render.fhir import OrderCodes
from cds_service.render.gallery import gallery_markdown
from cds_service.render.plain import document_text
from cds_service.render.report import advice_dict
from cds_service.render.rules_table import rules_json, rules_markdown
from cds_service.render.text import TextRenderer
from cds_service.rules.engine import evaluate
from cds_service.rules.loader import MappingError, load_knowledge
from cds_service.rules.model import Knowledge
from cds_service.serve import add_commands
from cds_service.store.retention import add_command as add_purge

PROJECT = Path(__file__).resolve().parent.parent
EXIT_BAD_INPUT = 2
EXIT_CONFIG = 2  # a configuration error: one line naming the variable


class InputError(Exception):
    """The input file cannot be read as a FHIR Bundle or a CDS Hooks request."""


def mappings_dir() -> Path:
    """The mappings folder (``CDS_MAPPINGS`` or the project's own)."""
    return Path(os.environ.get("CDS_MAPPINGS", PROJECT / "mappings"))


def load(site: str | None = None) -> Knowledge:
    """Load the knowledge base with the configured site mapping.

    :raises MappingError: invalid mappings.
    """
    site_path = site or os.environ.get("CDS_SITE_MAPPINGS")
    return load_knowledge(mappings_dir(), Path(site_path) if site_path else None)


def _parse_now(text: str | None, tz: Any) -> datetime | None:
    if text is None:
        return None
    try:
        now = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"--now is not an ISO 8601 date-time: {text!r}") from None
    return now if now.tzinfo else now.replace(tzinfo=tz)


def _read_input(path: str) -> dict[str, Any]:
    try:
        raw = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc.__class__.__name__}") from None
    try:
        data = numbers.loads(raw)  # decimals keep their reported precision
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not JSON (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object (a FHIR Bundle or a CDS Hooks request)")
    if data.get("resourceType") != "Bundle" and "hook" not in data:
        raise InputError(f"{path}: neither a FHIR Bundle nor a CDS Hooks request")
    return data


def run_evaluate(
    knowledge: Knowledge, data: dict[str, Any], now: datetime | None, locale: str, tz: Any
) -> dict[str, Any]:
    """Evaluate a Bundle (each patient alone) or a CDS Hooks request; the CLI JSON document."""
    if "hook" in data:
        snapshots = [snapshot_from_cds_request(data, knowledge, tz=tz, now=now)]
    else:
        snapshots = snapshots_from_bundle(data, knowledge, tz=tz, now=now)
    if now is None:
        times = [s.newest_time for s in snapshots if s.newest_time is not None]
        now = max(times) if times else datetime.now(UTC)
        if "hook" in data:
            snapshots = [snapshot_from_cds_request(data, knowledge, tz=tz, now=now)]
        else:
            snapshots = snapshots_from_bundle(data, knowledge, tz=tz, now=now)
    renderer = TextRenderer(knowledge, locale)
    codes = OrderCodes(mappings_dir() / "orders.yaml")
    patients = []
    for snap in snapshots:
        advice = evaluate(knowledge, snap, now)
        patients.append(
            {
                "patient": snap.patient_id,
                "now": now.isoformat(),
                "advice": [advice_dict(a, snap, renderer, codes, now) for a in advice],
                "excluded": [{"resource": e.resource, "reason": e.reason} for e in snap.excluded],
            }
        )
    return {"patients": patients}


def _cmd_evaluate(args: argparse.Namespace) -> int:
    try:
        tz = zone(os.environ.get("CDS_TIMEZONE", "UTC"))
    except ConfigError:
        print("error: CDS_TIMEZONE is not a known timezone", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        data = _read_input(args.file)
        now = _parse_now(args.now, tz)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    knowledge = load(args.site)
    doc = run_evaluate(knowledge, data, now, args.locale or os.environ.get("CDS_LOCALE", "en"), tz)
    if args.format == "text":
        print(document_text(doc), end="")
    else:
        print(json.dumps(doc, ensure_ascii=False, indent=1))
    return 0


def _cmd_rules(args: argparse.Namespace) -> int:
    knowledge = load(args.site)
    if args.format == "md":
        print(rules_markdown(knowledge), end="")  # already newline-terminated
    else:
        print(json.dumps(rules_json(knowledge), ensure_ascii=False, indent=1))
    return 0


def _cmd_cards(args: argparse.Namespace) -> int:
    knowledge = load(args.site)
    renderer = CardRenderer(knowledge, OrderCodes(mappings_dir() / "orders.yaml"))
    print(gallery_markdown(knowledge, renderer, Path(args.scenarios)), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``cds-service``."""
    parser = argparse.ArgumentParser(prog="cds-service", description=__doc__)
    parser.add_argument("--site", help="site mapping file (default: $CDS_SITE_MAPPINGS)")
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="evaluate a FHIR Bundle or a CDS Hooks request")
    ev.add_argument("file", help="JSON file, or - for standard input")
    ev.add_argument("--now", help="evaluation time (ISO 8601); default: newest time in the input")
    ev.add_argument(
        "--locale", choices=["en", "zh-CN"], help="card language (default $CDS_LOCALE or en)"
    )
    ev.add_argument("--format", choices=["json", "text"], default="json")
    ev.set_defaults(func=_cmd_evaluate)
    ru = sub.add_parser("rules", help="print the rule table with citations")
    ru.add_argument("--format", choices=["json", "md"], default="json")
    ru.set_defaults(func=_cmd_rules)
    ca = sub.add_parser("cards", help="print the card gallery (docs/cards.md) as Markdown")
    ca.add_argument(
        "--scenarios", default=str(PROJECT / "examples" / "gallery.yaml"), help="scenario file"
    )
    ca.set_defaults(func=_cmd_cards)
    add_commands(sub)
    add_mllp(sub)
    add_event_commands(sub)
    add_purge(sub)
    add_example(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cds-service`` console script."""
    args = build_parser().parse_args(argv)
    try:
        if args.command in LISTENS:  # servers: settings, secrets and the port, before binding
            preflight(args.command, getattr(args, "host", None), getattr(args, "port", None))
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except MappingError as exc:
        print(f"error: CDS_MAPPINGS: invalid mappings: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return code


if __name__ == "__main__":
    raise SystemExit(main())
