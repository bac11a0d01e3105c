"""Benchmark of the clinical core: one realistic 100-entry FHIR Bundle through every stage.

The bundle is derived from MIMIC-IV demo patient 10002428 (tests/fixtures/fhir/mimic-iv-demo,
ODbL 1.0): its second hospital admission (emergency, two MICU periods), every serum Mg and
creatinine of that stay, both albumins, the 10 procedures, 15 of the diagnoses coded at
discharge (``NOW`` is just after it) and the first medication orders up to 100 entries. Two changes make it exercise the whole pipeline, and are the only data not
from MIMIC: the last Mg before ``NOW`` is set to 1.4 mg/dL (so the repletion rule, the trend
rule and the gate run and a MedicationRequest and a ServiceRequest are built and validated),
and two eGFR and two body-weight results are added (the demo converter has none).

Stages timed (time.perf_counter, ``ITERATIONS`` runs after a warm-up; median and p95 in ms):
``json.loads`` of the serialized bundle; extraction (``snapshots_from_bundle``); rule
evaluation (``evaluate``); rendering to the CLI JSON (``advice_dict``: text, and the FHIR R4B
build and validation of the suggestions); and the total of the four. The tracemalloc peak of
one total run is reported too. Run: ``make bench``.
"""

from __future__ import annotations

import copy
import json
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cds_service.clinical.fhir_extract import snapshots_from_bundle  # noqa: E402
from cds_service.render.fhir import OrderCodes  # noqa: E402
from cds_service.render.report import advice_dict  # noqa: E402
from cds_service.render.text import TextRenderer  # noqa: E402
from cds_service.rules.engine import evaluate  # noqa: E402
from cds_service.rules.loader import load_knowledge  # noqa: E402

SOURCE = ROOT / "tests" / "fixtures" / "fhir" / "mimic-iv-demo" / "10002428.json"
ENCOUNTER = "mimic-enc-10002428-2"
NOW = datetime.fromisoformat("2156-04-29T17:00:00+00:00")  # just after discharge: codes recorded
ITERATIONS = 300
LOINC = "http://loinc.org"


def _code(res: dict[str, Any]) -> str | None:
    for c in res.get("code", {}).get("coding", []):
        if c.get("system") == LOINC:
            return str(c["code"])
    return None


def _time(res: dict[str, Any]) -> str:
    for key in ("effectiveDateTime", "recordedDate", "performedDateTime", "authoredOn"):
        if key in res:
            return str(res[key])
    return ""


def build_bundle() -> dict[str, Any]:
    """The 100-entry collection Bundle described in the module docstring."""
    src = json.loads(SOURCE.read_text(encoding="utf-8"))
    entries: list[dict[str, Any]] = src["entry"]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_type.setdefault(e["resource"]["resourceType"], []).append(e)
    enc = next(e for e in by_type["Encounter"] if e["resource"]["id"] == ENCOUNTER)
    start = enc["resource"]["period"]["start"]
    end = NOW.isoformat()

    def in_stay(e: dict[str, Any]) -> bool:
        return start[:10] <= _time(e["resource"])[:10] and _time(e["resource"]) <= end

    obs = [e for e in by_type["Observation"] if in_stay(e)]
    mg = [e for e in obs if _code(e["resource"]) == "19123-9"]
    creat = [e for e in obs if _code(e["resource"]) == "2160-0"]
    alb = [e for e in obs if _code(e["resource"]) == "1751-7"]
    mg = copy.deepcopy(mg)
    mg[-1]["resource"]["valueQuantity"]["value"] = 1.4  # see the module docstring

    def added(template: dict[str, Any], n: int, loinc: str, display: str, value: float,
              unit: str, at: str) -> dict[str, Any]:  # fmt: skip
        e = copy.deepcopy(template)
        r = e["resource"]
        r["id"] = f"bench-{loinc}-{n}"
        e["fullUrl"] = f"urn:uuid:00000000-0000-4000-8000-{n:012d}"
        r["code"] = {"coding": [{"system": LOINC, "code": loinc, "display": display}]}
        r["valueQuantity"] = {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        }
        r["effectiveDateTime"] = at
        r.pop("issued", None)
        return e

    extra = [
        added(
            creat[0],
            1,
            "62238-1",
            "eGFR CKD-EPI",
            78,
            "mL/min/{1.73_m2}",
            "2156-04-20T03:30:00+00:00",
        ),
        added(
            creat[0],
            2,
            "62238-1",
            "eGFR CKD-EPI",
            95,
            "mL/min/{1.73_m2}",
            "2156-04-27T07:00:00+00:00",
        ),
        added(creat[0], 3, "29463-7", "Body weight", 61.5, "kg", "2156-04-13T08:00:00+00:00"),
        added(creat[0], 4, "29463-7", "Body weight", 59.8, "kg", "2156-04-27T08:00:00+00:00"),
    ]
    conditions = [e for e in by_type["Condition"] if in_stay(e)]
    procedures = [e for e in by_type["Procedure"] if in_stay(e)]
    meds = [e for e in by_type["MedicationRequest"] if in_stay(e)]
    fixed = [*by_type["Patient"], enc, *by_type["Location"][:1], *mg, *creat, *alb, *extra]
    room = 100 - len(fixed)
    n_proc = min(len(procedures), 10)
    n_cond = min(len(conditions), (room - n_proc) // 2)
    n_meds = room - n_proc - n_cond
    chosen = [*fixed, *procedures[:n_proc], *conditions[:n_cond], *meds[:n_meds]]
    assert len(chosen) == 100, len(chosen)
    return {"resourceType": "Bundle", "type": "collection", "entry": chosen}


def measure(fn: Callable[[], Any], n: int) -> list[float]:
    fn()  # warm-up (imports, caches)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20, method="inclusive")[18]


def main() -> int:
    knowledge = load_knowledge(ROOT / "mappings", ROOT / "mappings" / "site" / "example.yaml")
    renderer = TextRenderer(knowledge, "en")
    codes = OrderCodes(ROOT / "mappings" / "orders.yaml")
    bundle = build_bundle()
    raw = json.dumps(bundle)
    data = json.loads(raw)
    (snap,) = snapshots_from_bundle(data, knowledge, now=NOW)
    advice = evaluate(knowledge, snap, NOW)

    def render() -> list[dict[str, Any]]:
        return [advice_dict(a, snap, renderer, codes, NOW) for a in advice]

    def total() -> list[dict[str, Any]]:
        d = json.loads(raw)
        (s,) = snapshots_from_bundle(d, knowledge, now=NOW)
        return [
            advice_dict(a, s, renderer, codes, NOW) for a in evaluate(knowledge, s, NOW)
        ]

    stages = {
        "json.loads": lambda: json.loads(raw),
        "extract (snapshots_from_bundle)": lambda: snapshots_from_bundle(data, knowledge, now=NOW),
        "evaluate": lambda: evaluate(knowledge, snap, NOW),
        "render (advice_dict + R4B validation)": render,
        "total": total,
    }
    results = {name: measure(fn, ITERATIONS) for name, fn in stages.items()}
    tracemalloc.start()
    total()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    kinds = [s["resource"]["resourceType"] for a in render() for s in a["suggestions"]]
    print(
        f"Evaluate benchmark: {len(bundle['entry'])}-entry bundle ({len(raw) / 1024:.0f} KiB), "
        f"{len(snap.serum_mg)} Mg, {len(snap.creatinine)} creatinine; "
        f"{len(advice)} cards ({', '.join(a.direction for a in advice)}), suggestions: {kinds}"
    )
    print(f"Python {platform.python_version()} on {platform.machine()}, {ITERATIONS} iterations")
    print()
    width = max(len(n) for n in results)
    print(f"{'stage':<{width}}  {'median ms':>9}  {'p95 ms':>7}  {'share':>5}")
    tot = statistics.median(results["total"])
    for name, xs in results.items():
        med = statistics.median(xs)
        share = "" if name == "total" else f"{med / tot:5.0%}"
        print(f"{name:<{width}}  {med:9.3f}  {p95(xs):7.3f}  {share:>5}")
    print(f"\ntracemalloc peak (one total run): {peak / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
