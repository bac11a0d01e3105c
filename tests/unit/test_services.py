"""Service files: the real ones load; each kind of mistake is named with its file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cds_service.hooks.request import negotiate_locale
from cds_service.hooks.services import discovery, load_service, load_services
from cds_service.rules.loader import MappingError
from cds_service.rules.model import Knowledge

ROOT = Path(__file__).parents[2]
REAL = ROOT / "mappings" / "services"
BASE = yaml.safe_load((REAL / "magnesium-aki-patient-view.yaml").read_text("utf-8"))


def write(tmp_path: Path, data: dict[str, object], name: str = "magnesium-aki-patient-view") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_real_services_load(knowledge: Knowledge) -> None:
    services = load_services(REAL, knowledge)
    assert len(services) == 4
    for s in services.values():
        assert {"patient", "magnesium"} <= s.required_prefetch
        assert "LOINC" not in str(s.discovery())  # codes only as system|code, from value sets
    assert all("prefetch" in s for s in discovery(services)["services"])


def test_magnesium_codes_come_from_the_value_sets(knowledge: Knowledge) -> None:
    s = load_services(REAL, knowledge)["magnesium-aki-patient-view"]
    codes = s.prefetch["magnesium"].split("code=")[1].split("&")[0].split(",")
    expected = {f"{sy}|{c}" for vs in ("serum-magnesium-mass", "serum-magnesium-moles", "ionized-magnesium")
                for sy, c in knowledge.valuesets.get(vs).codes}  # fmt: skip
    assert expected <= set(codes)


def test_templates_use_only_recommended_query_features(knowledge: Knowledge) -> None:
    """The spec's recommended subset, plus ``_include`` of Locations and Specimens only: an EHR
    that ignores it loses nothing (the service reads the references itself: prefetch_refs)."""
    allowed = {"patient", "code", "_sort", "_count", "clinical-status", "status", "_id"}
    includes = {"Encounter:location", "Observation:specimen"}
    seen: set[str] = set()
    for s in load_services(REAL, knowledge).values():
        for template in s.prefetch.values():
            path, _, query = template.partition("?")
            if not query:
                assert re.fullmatch(r"[A-Z][A-Za-z]+/\{\{context\.[A-Za-z]+\}\}", path)
                continue
            params = [p.split("=", 1) for p in query.split("&")]
            names = [name for name, _ in params]
            assert len(names) == len(set(names)), template  # one value per name (Sandbox)
            seen |= {value for name, value in params if name == "_include"}
            assert {n for n in names if n != "_include"} <= allowed, template
    assert seen == includes


def test_every_hook_finds_the_current_encounter_without_encounter_id(knowledge: Knowledge) -> None:
    for s in load_services(REAL, knowledge).values():
        assert s.prefetch["encounters"] == (
            "Encounter?patient={{context.patientId}}&status=in-progress"
            "&_include=Encounter:location"
        ), s.id
        assert s.prefetch["encounter"].startswith("Encounter?_id={{context.encounterId}}&")
        assert s.prefetch["service-requests"].endswith("&status=active")
        assert s.prefetch["planned-procedures"].endswith("&status=preparation")
        assert s.prefetch["administrations"].startswith(
            "MedicationAdministration?patient={{context.patientId}}&"
        )
        assert s.prefetch["magnesium"].endswith("&_include=Observation:specimen")


def test_token_must_be_a_context_field(tmp_path: Path, knowledge: Knowledge) -> None:
    data = {**BASE, "prefetch": {"x": {"read": "Patient", "id": "{{context.nope}}"}}}
    with pytest.raises(MappingError, match=r"magnesium-aki-patient-view.yaml: prefetch.x: token"):
        load_service(write(tmp_path, data), knowledge)


def test_token_must_be_a_primitive_context_field(tmp_path: Path, knowledge: Knowledge) -> None:
    data = {**BASE, "context": {"draftOrders": {"type": "Bundle"}},
            "prefetch": {"x": {"read": "Patient", "id": "{{context.draftOrders}}"}}}  # fmt: skip
    with pytest.raises(MappingError, match="not a primitive field"):
        load_service(write(tmp_path, data), knowledge)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"id": "other"}, "must equal the file name"), ({"hook": "encounter-start"}, "is not one of"),
     ({"description": ""}, "missing field 'description'"),
     ({"prefetch": {"m": {"resource": "Observation", "params": {"code": {"valuesets": ["nope"]}}}}},
      "value set 'nope' is referenced but absent"),
     ({"prefetch": {"m": {"resource": "Observation", "params": {"code": ["1-1"]}}}}, "valuesets"),
     ({"prefetch": {"c": {"resource": "Condition",
                          "params": {"code": {"valuesets": ["myasthenia-gravis"]}}}}}, "code ranges"),
     ({"context": {"patientId": {"type": "number"}}}, "context.patientId.type")],
)  # fmt: skip
def test_bad_service_files(tmp_path: Path, knowledge: Knowledge, change: dict[str, object], message: str) -> None:
    with pytest.raises(MappingError, match=re.escape(message)):
        load_service(write(tmp_path, {**BASE, **change}), knowledge)


def test_no_service_files(tmp_path: Path, knowledge: Knowledge) -> None:
    with pytest.raises(MappingError, match="no service files"):
        load_services(tmp_path, knowledge)


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, "en"), ("zh-CN", "zh-CN"), ("zh", "zh-CN"), ("zh-Hans-CN", "zh-CN"), ("zh-TW", "en"),
     ("en-GB,zh-CN;q=0.5", "en"), ("fr, zh-CN;q=0.2", "zh-CN"), ("zh-CN;q=0", "en"),
     ("*", "en"), ("de;q=x, zh", "zh-CN")],
)  # fmt: skip
def test_negotiate_locale(header: str | None, expected: str) -> None:
    assert negotiate_locale(header, "en") == expected
    assert negotiate_locale("fr", "zh-CN") == "zh-CN"
