"""GET /rules in headless Chromium at 1280x800 and 390x844 (phone), English and Chinese.

Chromium loads the page the app serves (saved to a file) with the viewport set over the
DevTools protocol, then reports what a reviewer sees: the page width against the viewport
(no horizontal scrolling), any element sticking out, and each rule section's visible text.
Every rule must have its section; a rule that may suggest magnesium must show its dose,
dilution, rate and the safety-gate conditions, computed here from the loaded rules.

``make test`` installs Debian's ``chromium`` when it is missing (as root); without it the
test skips and says why.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.render.reviewer import review
from cds_service.rules.loader import load_knowledge
from cds_service.rules.model import Knowledge
from tests.tools.browser import Browser, find_chromium

ROOT = Path(__file__).parents[2]
SITE = ROOT / "mappings" / "site" / "example.yaml"
MEASURE = """(() => {
  const vw = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > vw + 1)
    .map(e => e.tagName + (e.id ? '#' + e.id : '') + ' ' + (e.textContent || '').slice(0, 40));
  const rules = {};
  document.querySelectorAll('section.rule').forEach(s => { rules[s.id] = s.innerText; });
  return {viewport: vw, scroll: document.documentElement.scrollWidth, wide: wide.slice(0, 20),
          rules: rules, lang: document.documentElement.lang};
})()"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    binary = find_chromium()
    if binary is None:
        pytest.skip(
            "Debian package chromium is not installed; `make test` installs it when run as root"
        )
    b = Browser(binary)
    yield b
    b.close()


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return load_knowledge(ROOT / "mappings", SITE)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> FlaskClient:
    db = tmp_path_factory.mktemp("browser") / "db.sqlite"
    app = create_app({"auth": "off", "database_url": f"sqlite:///{db}", "site_mappings": str(SITE)})
    return app.test_client()


def flat(text: str) -> str:
    return " ".join(text.split())


def render(
    browser: Browser, client: FlaskClient, lang: str, width: int, height: int, tmp_path: Path
) -> dict[str, Any]:
    resp = client.get("/rules", headers={"Accept": "text/html", "Accept-Language": lang})
    assert resp.status_code == 200 and resp.headers["Content-Language"] == lang
    page = tmp_path / f"rules-{lang}.html"
    page.write_bytes(resp.get_data())
    session = browser.page(width, height)
    browser.load(session, page.as_uri())
    shown: dict[str, Any] = browser.evaluate(session, MEASURE)
    return shown


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)])
def test_rules_page_fits_the_screen_and_shows_every_dose_and_gate(
    browser: Browser,
    client: FlaskClient,
    knowledge: Knowledge,
    lang: str,
    width: int,
    height: int,
    tmp_path: Path,
) -> None:
    shown = render(browser, client, lang, width, height, tmp_path)
    assert shown["viewport"] == width and shown["lang"] == lang
    assert shown["scroll"] <= width, (
        f"horizontal overflow: {shown['scroll']} px > {width} px: {shown['wide']}"
    )
    assert shown["wide"] == []
    doc = review(knowledge, lang)
    assert len(shown["rules"]) == len(knowledge.rules) == len(doc["rules"]) == 31
    with_dose = 0
    for rule in doc["rules"]:
        text = flat(shown["rules"][f"rule-{rule['id']}"])
        assert rule["id"] in text and rule["citations"][0]["link"] in text
        assert flat(rule["fires_when"]) in text and flat(rule["indicator_range"]["text"]) in text
        s = rule.get("suggestion") or {}
        if s.get("kind") == "medication":
            with_dose += 1
            for key in ("dose_text", "dilution_text", "rate_text"):
                assert flat(s[key]) in text, (rule["id"], key, s[key])
            gate_intro = knowledge.texts[lang]["reviewer"]["gate"]["applies_list"]
            assert flat(gate_intro) in text, rule["id"]
            for condition in doc["gate"]["conditions"]:
                assert flat(condition["text"]) in text, (rule["id"], condition["id"])
        elif rule["category"] == "supplementation":
            assert flat(rule["gate"]) in text, rule["id"]
    assert with_dose == 5  # cisplatin, laparoscopic, ICU repletion, vancomycin + pip/tazo, sepsis
