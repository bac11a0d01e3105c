"""Suite-wide fixtures: the log scan (no identifier, token or secret in any log line) and the
card text scan (every card any test renders in this process reads clean: tests/cardcheck.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from cds_service.render.cards import CardRenderer
from cds_service.render.text import TextRenderer
from tests.cardcheck import response_problems, text_problems
from tests.hardening_ids import IDENTIFIERS
from tests.logscan import Collector, findings, sensitive_values

COLLECTOR = Collector()


@pytest.fixture(scope="session", autouse=True)
def log_scan() -> Iterator[Collector]:
    """Collect every log record of the session at INFO and above; scan them at the end."""
    root = logging.getLogger()
    level = root.level
    root.addHandler(COLLECTOR)
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        yield COLLECTOR
    finally:
        root.removeHandler(COLLECTOR)
        root.setLevel(level)
    found = findings(COLLECTOR.lines, sensitive_values(IDENTIFIERS))
    assert not found, "secrets or identifiers in the logs:\n" + "\n".join(found[:50])


CARD_PROBLEMS: list[str] = []
_READING: list[str] = [""]  # the running test's id; empty while no test runs or it opts out


@pytest.fixture(autouse=True)
def _card_reader(request: pytest.FixtureRequest) -> Iterator[None]:
    """Name the running test for the card text scan (``cards_unchecked`` tests opt out)."""
    unchecked = request.node.get_closest_marker("cards_unchecked") is not None
    _READING[0] = "" if unchecked else request.node.nodeid
    yield
    _READING[0] = ""


@pytest.fixture(scope="session", autouse=True)
def card_text_scan() -> Iterator[list[str]]:
    """Check every advice text and every card rendered in this process; fail at the end."""
    render, cards = TextRenderer.render, CardRenderer.cards

    def checked_render(self: TextRenderer, advice: Any, conditions: Any = ()) -> Any:
        out = render(self, advice, conditions)
        if _READING[0]:
            labels = [out.medication_label, out.lab_label]
            found = text_problems(out.summary, out.detail, labels, self.locale)
            CARD_PROBLEMS.extend(f"{_READING[0]}: {p}" for p in found)
        return out

    def checked_cards(self: CardRenderer, advice: Any, snapshot: Any, locale: str, now: Any) -> Any:
        advice = list(advice)
        out = cards(self, advice, snapshot, locale, now)
        if _READING[0]:
            known = [r for r in snapshot.serum_mg if r.time <= now]
            latest = max(known, key=lambda r: r.time).value if known else None
            directions = [a.direction for a in advice]
            shown = locale if locale in self.k.texts else "en"  # as TextRenderer falls back
            found = response_problems(out, shown, self.k, directions=directions, latest_mg_dl=latest)
            CARD_PROBLEMS.extend(f"{_READING[0]}: {p}" for p in found)
        return out

    TextRenderer.render = checked_render  # type: ignore[method-assign]
    CardRenderer.cards = checked_cards  # type: ignore[method-assign]
    try:
        yield CARD_PROBLEMS
    finally:
        TextRenderer.render, CardRenderer.cards = render, cards  # type: ignore[method-assign]
    unique = sorted(set(CARD_PROBLEMS))
    assert not unique, f"{len(unique)} card text problems:\n" + "\n".join(unique[:40])
