"""The card gallery (docs/cards.md, ``make cards-doc``): every rule's cards for a typical patient.

Scenarios are data (``examples/gallery.yaml``): a patient described by value-set ids and
times relative to the scenario's ``now``. Each becomes a CDS Hooks request (the patient
record in prefetch, draft orders in the context), is read by the same extraction as a hook
call, evaluated at ``now`` and rendered in English and Chinese. Codes come from the value
sets of ``mappings/codes`` (the first code of a set in a fixed order), never from Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from cds_service.clinical.fhir_extract import snapshot_from_cds_request
from cds_service.render.cards import CardRenderer
from cds_service.rules.durations import parse_duration
from cds_service.rules.engine import evaluate
from cds_service.rules.model import Knowledge

LOCALES = ("en", "zh-CN")
# A value set's code: the system URI a FHIR resource carries (value sets index ICD-10 as one key).
_SYSTEM_URI = {"icd-10": "http://hl7.org/fhir/sid/icd-10-cm"}
_PREFERRED = (
    "http://snomed.info/sct",
    "http://loinc.org",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode",
    "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
    "icd-10",
)


@dataclass(frozen=True)
class Scenario:
    """One patient of the gallery."""

    id: str
    title: str
    hook: str
    spec: dict[str, Any]


def load_scenarios(path: Path) -> tuple[datetime, list[Scenario]]:
    """The scenarios of ``examples/gallery.yaml`` and their ``now``."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    now = datetime.fromisoformat(str(data["now"]).replace("Z", "+00:00"))
    out = [
        Scenario(str(s["id"]), str(s["title"]), str(s.get("hook", "patient-view")), s)
        for s in data["scenarios"]
    ]
    return now, out


def coding(knowledge: Knowledge, set_id: str) -> dict[str, str]:
    """A representative coding of a value set (preferred systems first, then by code)."""
    vs = knowledge.valuesets.get(set_id)

    def order(key: tuple[str, str]) -> tuple[int, str]:
        system = key[0]
        rank = _PREFERRED.index(system) if system in _PREFERRED else len(_PREFERRED)
        return rank, key[1]

    if not vs.codes:  # a set of ranges only (ICD-10 C00-C96, S06...): its first range
        r = min(vs.ranges, key=lambda r: (r.system, r.prefix or r.low or ""))
        code = r.prefix or r.low or ""
        return {"system": _SYSTEM_URI.get(r.system, r.system), "code": code, "display": vs.title}
    key = min(vs.codes, key=order)
    system, code = _SYSTEM_URI.get(key[0], key[0]), key[1]
    return {"system": system, "code": code, "display": vs.displays.get(key, "")}


class _Builder:
    """A scenario as FHIR resources (a patient record) and draft orders."""

    def __init__(self, knowledge: Knowledge, scenario: Scenario, now: datetime) -> None:
        self.k, self.s, self.now = knowledge, scenario.spec, now
        self.pid = f"gallery-{scenario.id}"
        self.resources: list[dict[str, Any]] = []
        self.drafts: list[dict[str, Any]] = []
        self.n = 0

    def at(self, offset: str) -> str:
        return (self.now + parse_duration(offset)).isoformat().replace("+00:00", "Z")

    def rid(self, kind: str) -> str:
        self.n += 1
        return f"{kind.lower()}-{self.n}"

    def concept(self, set_id: str) -> dict[str, Any]:
        c = coding(self.k, set_id)
        return {"coding": [c], "text": c["display"] or None}

    def subject(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.pid}"}

    def build(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        p = self.s.get("patient") or {}
        birth = None
        if "age" in p:
            years = int(p["age"])
            birth = date(self.now.year - years, self.now.month, min(self.now.day, 28)) - timedelta(
                days=30
            )
        patient: dict[str, Any] = {"resourceType": "Patient", "id": self.pid}
        if birth is not None:
            patient["birthDate"] = birth.isoformat()
        if "sex" in p:
            patient["gender"] = p["sex"]
        self.resources.append(patient)
        self._encounter(self.s.get("encounter"))
        for set_id, values in (self.s.get("labs") or {}).items():
            for value, unit, offset in values:
                self._observation(set_id, value, unit, offset)
        for set_id in self.s.get("conditions") or []:
            self.resources.append({
                "resourceType": "Condition", "id": self.rid("Condition"),
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                "code": self.concept(set_id), "subject": self.subject(),
            })  # fmt: skip
        for proc in self.s.get("procedures") or []:
            self._procedure(proc)
        for med in self.s.get("medications") or []:
            self._medication(med)
        return self.resources, self.drafts

    def _encounter(self, enc: dict[str, Any] | None) -> None:
        if not enc:
            return
        klass = coding(self.k, f"encounter-{enc['class']}")
        resource: dict[str, Any] = {
            "resourceType": "Encounter", "id": self.rid("Encounter"), "status": "in-progress",
            "class": {"system": klass["system"], "code": klass["code"]},
            "subject": self.subject(), "period": {"start": self.at(enc["start"])},
        }  # fmt: skip
        if "icu" in enc:
            icu = coding(self.k, "icu-location")
            location = {"resourceType": "Location", "id": self.rid("Location"),
                        "name": enc.get("unit", "ICU"), "type": [{"coding": [icu]}]}  # fmt: skip
            self.resources.append(location)
            resource["location"] = [
                {"location": {"reference": f"Location/{location['id']}"},
                 "period": {"start": self.at(enc["icu"])}}
            ]  # fmt: skip
        self.resources.append(resource)

    def _observation(self, set_id: str, value: Any, unit: str | None, offset: str) -> None:
        obs: dict[str, Any] = {
            "resourceType": "Observation", "id": self.rid("Observation"), "status": "final",
            "code": self.concept(set_id), "subject": self.subject(),
            "effectiveDateTime": self.at(offset),
        }  # fmt: skip
        if isinstance(value, str) and not unit:
            obs["valueString"] = value
        else:
            quantity: dict[str, Any] = {"value": value}
            if unit:
                quantity.update(unit=unit)
            obs["valueQuantity"] = quantity
        self.resources.append(obs)

    def _procedure(self, proc: dict[str, Any]) -> None:
        if proc.get("planned"):
            self.resources.append({
                "resourceType": "ServiceRequest", "id": self.rid("ServiceRequest"),
                "status": "active", "intent": "order", "code": self.concept(proc["set"]),
                "subject": self.subject(),
            })  # fmt: skip
            return
        self.resources.append({
            "resourceType": "Procedure", "id": self.rid("Procedure"), "status": "completed",
            "code": self.concept(proc["set"]), "subject": self.subject(),
            "performedPeriod": {"start": self.at(proc["start"]), "end": self.at(proc["end"])},
        })  # fmt: skip

    def _medication(self, med: dict[str, Any]) -> None:
        kind = med.get("as", "active")
        if kind == "given":
            self.resources.append({
                "resourceType": "MedicationAdministration", "id": self.rid("MedicationAdministration"),
                "status": "completed", "medicationCodeableConcept": self.concept(med["set"]),
                "subject": self.subject(), "effectiveDateTime": self.at(med["at"]),
            })  # fmt: skip
            return
        request = {
            "resourceType": "MedicationRequest", "id": self.rid("MedicationRequest"),
            "status": "draft" if kind == "draft" else "active", "intent": "order",
            "medicationCodeableConcept": self.concept(med["set"]), "subject": self.subject(),
        }  # fmt: skip
        (self.drafts if kind == "draft" else self.resources).append(request)


def request_for(knowledge: Knowledge, scenario: Scenario, now: datetime) -> dict[str, Any]:
    """The CDS Hooks request an EHR would send for the scenario (record in prefetch)."""
    resources, drafts = _Builder(knowledge, scenario, now).build()
    pid = f"gallery-{scenario.id}"
    context: dict[str, Any] = {"patientId": pid, "userId": "Practitioner/gallery"}
    if scenario.hook in ("order-select", "order-sign"):
        entries = [{"resource": d} for d in drafts]
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": entries}
        if scenario.hook == "order-select":
            context["selections"] = [f"MedicationRequest/{d['id']}" for d in drafts]
    return {
        "hook": scenario.hook,
        "hookInstance": f"gallery-{scenario.id}",
        "context": context,
        "prefetch": {
            "record": {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": r} for r in resources],
            }
        },
    }


def cards_for(
    knowledge: Knowledge, renderer: CardRenderer, scenario: Scenario, now: datetime, locale: str
) -> list[dict[str, Any]]:
    """The cards of one scenario in one locale."""
    request = request_for(knowledge, scenario, now)
    snapshot = snapshot_from_cds_request(request, knowledge, now=now)
    return renderer.cards(evaluate(knowledge, snapshot, now), snapshot, locale, now)


def _suggestion_lines(card: dict[str, Any]) -> list[str]:
    out = []
    for s in card.get("suggestions", []):
        res = s["actions"][0]["resource"]
        line = f"- **Suggestion** ({res['resourceType']}): {s['label']}"
        if res["resourceType"] == "MedicationRequest":
            first = res["dosageInstruction"][0]
            dose = first["doseAndRate"][0]["doseQuantity"]
            repeat = first.get("timing", {}).get("repeat", {})
            bounds = [f"{k} {v}" for k, v in sorted(repeat.items()) if k != "boundsDuration"]
            if "boundsDuration" in repeat:
                b = repeat["boundsDuration"]
                bounds.append(f"boundsDuration {b['value']} {b['unit']}")
            line += f" — resource: {dose['value']} {dose['unit']}; timing {', '.join(bounds)}"
        out.append(line)
    return out


def gallery_markdown(knowledge: Knowledge, renderer: CardRenderer, path: Path) -> str:
    """docs/cards.md: every scenario's cards in both locales."""
    now, scenarios = load_scenarios(path)
    lines = [
        "# Card gallery",
        "",
        "Generated by `make cards-doc` from `examples/gallery.yaml` (do not edit): what the service "
        "says for a typical patient of every rule, in English and Chinese, with the withheld and "
        f"suspect variants. Every scenario is evaluated at {now.isoformat()} as a CDS Hooks "
        "call; the cards are shown as an EHR shows them (summary, then the detail).",
        "",
        "## Contents",
        "",
    ]
    lines += [f"- [{s.title}](#{s.id})" for s in scenarios]
    for s in scenarios:
        lines += ["", f'<a id="{s.id}"></a>', "", f"## {s.title}", ""]
        if s.spec.get("note"):
            lines += [str(s.spec["note"]), ""]
        for locale in LOCALES:
            cards = cards_for(knowledge, renderer, s, now, locale)
            lines += [f"### {locale}", ""]
            if not cards:
                lines += ["_No card._", ""]
            for card in cards:
                ext = card["extension"]["magnesium-aki"]
                lines += [f"#### [{card['indicator']}] {card['summary']}", ""]
                lines += ["> " + line if line else ">" for line in card["detail"].split("\n")]
                lines.append("")
                lines += _suggestion_lines(card)
                meta = f"- rules: {', '.join(ext['rules'])}"
                if ext.get("withheld"):
                    meta += f"; withheld by: {', '.join(ext['withheld'])}"
                lines += [meta, ""]
    return "\n".join(lines).rstrip() + "\n"
