"""docs/rules.md is the generated rule table; `cds-service rules` lists every rule with links."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds_service.cli import main
from cds_service.render.rules_table import rules_markdown
from cds_service.rules.model import Knowledge

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "rules.md"


def test_docs_rules_md_is_up_to_date(knowledge: Knowledge) -> None:
    expected = rules_markdown(knowledge)  # what `cds-service rules --format md` prints
    assert DOC.exists(), "docs/rules.md is missing: run `make rules-doc`"
    assert DOC.read_text(encoding="utf-8") == expected, (
        "docs/rules.md differs from the rules in mappings/: run `make rules-doc`"
    )


def test_cli_markdown_equals_the_doc_generator(
    knowledge: Knowledge, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CDS_MAPPINGS", raising=False)
    assert main(["--site", str(ROOT / "mappings/site/example.yaml"), "rules", "--format", "md"]) == 0
    assert capsys.readouterr().out == rules_markdown(knowledge)


def test_cli_rules_json_lists_every_rule_with_linked_citations(
    knowledge: Knowledge, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CDS_MAPPINGS", raising=False)
    assert main(["rules"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in doc["rules"]] == [r.id for r in knowledge.rules]
    assert len(doc["rules"]) == 31
    for rule in doc["rules"]:
        assert rule["version"] and rule["title"] and rule["fires_when"]
        assert rule["evidence"]["study"] and rule["evidence"]["design"]
        assert rule["citations"], rule["id"]
        for cite in rule["citations"]:
            assert cite["link"].startswith("https://"), (rule["id"], cite)
    assert doc["mappings_version"] == knowledge.version
    gate_ids = {g["id"] for g in doc["gate"]["conditions"]}
    assert gate_ids >= {"mg-high", "renal-unknown", "dialysis", "mg-active"}
