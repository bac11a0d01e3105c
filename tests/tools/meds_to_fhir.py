"""Convert MIMIC-IV demo MEDS rows into FHIR R4 Bundles (test fixtures).

Input: the derived CSVs of ``/work/shared/data/mimic-iv-demo-meds`` (MIMIC-IV Clinical
Database Demo in MEDS, doi 10.13026/t2y8-ea41, via standardmodelbio/quickstart, ODbL 1.0):
``context_dx_proc_adm_icu_demog.csv.gz``, ``labs_mg_creat_alb_plus.csv.gz`` and
``medications.csv.gz`` (columns ``subject_id,time,code,table,value``).

Output: one Bundle (type ``collection``) per patient with Patient, Encounter (hospital
admissions and ED visits; ICU stays as ``Encounter.location`` periods), Location,
Observation (serum Mg, creatinine, albumin), Condition (ICD-9/10 diagnoses), Procedure
(ICD-9/ICD-10-PCS and HCPCS rows), MedicationRequest (prescriptions) and
MedicationAdministration (eMAR rows of a few drugs only).

MIMIC times are naive; they are written as UTC (``+00:00``).

Usage::

    python -m tests.tools.meds_to_fhir --patients 10002428,10005348 --out DIR \
        [--data-dir DIR] [--max-admissions N]

Only the csv and gzip modules are used to read the data (no pandas/pyarrow).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import re
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tests.shared_data import SHARED

JsonDict = dict[str, Any]

DEFAULT_DATA_DIR = Path(
    os.environ.get("MIMIC_DEMO_MEDS_DIR") or str(SHARED / "data" / "mimic-iv-demo-meds")
)
CONTEXT_CSV = "context_dx_proc_adm_icu_demog.csv.gz"
LABS_CSV = "labs_mg_creat_alb_plus.csv.gz"
MEDS_CSV = "medications.csv.gz"

# Code systems
LOINC = "http://loinc.org"
MIMIC_LABITEMS = "http://mimic.mit.edu/fhir/mimic/CodeSystem/mimic-d-labitems"
UCUM = "http://unitsofmeasure.org"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
CPT = "http://www.ama-assn.org/go/cpt"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
COND_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
COND_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
COND_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
PATIENT_ID_SYSTEM = "http://mimic.mit.edu/fhir/mimic/identifier/patient"

# itemid -> (LOINC, LOINC display, label, unit). LOINC codes are those of MIT-LCP/mimic-code
# mimic-iv/mapping/d_labitems_to_loinc.csv (checked against that file by the unit tests).
LAB_ITEMS: dict[str, tuple[str, str, str, str]] = {
    "50960": ("19123-9", "Magnesium [Mass/volume] in Serum or Plasma", "Magnesium", "mg/dL"),
    "50912": ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "Creatinine", "mg/dL"),
    "50862": ("1751-7", "Albumin [Mass/volume] in Serum or Plasma", "Albumin", "g/dL"),
}

# MedicationAdministration is emitted only for drug names containing one of these.
ADMIN_KEYWORDS = (
    "magnesium",
    "cisplatin",
    "vancomycin",
    "piperacillin",
    "gentamicin",
    "amikacin",
    "tobramycin",
    "pantoprazole",
    "omeprazole",
    "esomeprazole",
    "lansoprazole",
    "hydrochlorothiazide",
    "chlorthalidone",
    "metolazone",
)

# eMAR event text -> MedicationAdministration.status (checked in order, on the lower-cased text)
_UNKNOWN_EVENTS = {
    "unk",
    "assessed",
    "delayed assessed",
    "not assessed",
    "infusion reconciliation",
    "infusion reconciliation not done",
    "read",
    "rate change",
    "delayed",
    "removed",
    "not removed",
}

STEP_DOWN = re.compile(r"step ?down|intermediate", re.IGNORECASE)

RESTRICT_MARGIN = timedelta(hours=24)  # kept before an admission with --max-admissions


# ---------------------------------------------------------------- code helpers


def dot_icd9_dx(code: str) -> str:
    """ICD-9-CM diagnosis: dot after 3 characters (E-codes after 4)."""
    code = code.strip().upper()
    n = 4 if code.startswith("E") else 3
    return code if len(code) <= n else f"{code[:n]}.{code[n:]}"


def dot_icd10_cm(code: str) -> str:
    """ICD-10-CM diagnosis: dot after 3 characters."""
    code = code.strip().upper()
    return code if len(code) <= 3 else f"{code[:3]}.{code[3:]}"


def dot_icd9_proc(code: str) -> str:
    """ICD-9-CM procedure (volume 3): dot after 2 digits."""
    code = code.strip()
    return code if len(code) <= 2 else f"{code[:2]}.{code[2:]}"


def icd_diagnosis_coding(version: str, code: str) -> JsonDict:
    if version == "9":
        return {"system": ICD9CM, "code": dot_icd9_dx(code)}
    if version == "10":
        return {"system": ICD10CM, "code": dot_icd10_cm(code)}
    raise ValueError(f"unknown ICD version {version!r}")


def icd_procedure_coding(version: str, code: str) -> JsonDict:
    if version == "9":
        return {"system": ICD9CM, "code": dot_icd9_proc(code)}
    if version == "10":
        return {"system": ICD10PCS, "code": code.strip().upper()}
    raise ValueError(f"unknown ICD version {version!r}")


def hcpcs_code(text: str) -> JsonDict:
    """A HCPCS row: a real code gets a coding; MEDS here carries only the short description."""
    text = text.strip()
    if re.fullmatch(r"\d{4}[0-9FTU]", text):  # CPT (Level I HCPCS)
        return {"coding": [{"system": CPT, "code": text}]}
    if re.fullmatch(r"[A-V]\d{4}", text):  # HCPCS Level II
        return {"coding": [{"system": HCPCS, "code": text}]}
    return {"text": text}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "unknown"


def location_type(unit: str) -> JsonDict:
    """v3 RoleCode ICU for MIMIC ICU care units; step-down units (which MIMIC-IV also lists
    in icustays: "Neuro Stepdown", "Neuro Intermediate") get a text-only type."""
    if STEP_DOWN.search(unit):
        return {"text": unit}
    return {
        "coding": [{"system": ROLE_CODE, "code": "ICU", "display": "Intensive care unit"}],
        "text": unit,
    }


def fhir_time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S") + "+00:00"


def parse_time(s: str) -> datetime | None:
    s = s.strip()
    if not s:
        return None
    return datetime.fromisoformat(s)


def full_url(rtype: str, rid: str) -> str:
    return "urn:uuid:" + str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"http://mimic.mit.edu/fhir/{rtype}/{rid}")
    )


def ref(rtype: str, rid: str, display: str | None = None) -> JsonDict:
    out: JsonDict = {"reference": f"{rtype}/{rid}"}
    if display:
        out["display"] = display
    return out


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class Row:
    subject: str
    time: datetime | None
    code: str
    value: str
    seq: int  # position in its file (stable ordering of equal times)


def read_rows(path: Path, subjects: set[str]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = defaultdict(list)
    with gzip.open(path, "rt", newline="", encoding="utf-8") as fh:
        for i, rec in enumerate(csv.DictReader(fh)):
            sid = rec["subject_id"]
            if sid in subjects:
                out[sid].append(Row(sid, parse_time(rec["time"]), rec["code"], rec["value"], i))
    for rows in out.values():
        rows.sort(key=lambda r: (r.time or datetime.min, r.seq))
    return out


def pair_intervals(
    starts: list[tuple[datetime, Any]], ends: list[tuple[datetime, Any]]
) -> list[tuple[datetime, Any, datetime | None, Any]]:
    """Pair each start with the first unused end at or after it and not after the next start."""
    starts = sorted(starts, key=lambda x: x[0])
    ends = sorted(ends, key=lambda x: x[0])
    used = [False] * len(ends)
    out: list[tuple[datetime, Any, datetime | None, Any]] = []
    for i, (s, sinfo) in enumerate(starts):
        nxt = starts[i + 1][0] if i + 1 < len(starts) else None
        match = None
        for j, (e, _) in enumerate(ends):
            if used[j] or e < s:
                continue
            if nxt is not None and e > nxt:
                break
            match = j
            break
        if match is None:
            out.append((s, sinfo, None, None))
        else:
            used[match] = True
            out.append((s, sinfo, ends[match][0], ends[match][1]))
    return out


# ---------------------------------------------------------------- model


@dataclass
class Admission:
    rid: str
    start: datetime
    end: datetime | None
    adm_type: str
    source: str
    disposition: str | None
    locations: list[JsonDict] = field(default_factory=list)
    n_mg: int = 0

    def contains(self, t: datetime, *, from_midnight: bool = False) -> bool:
        start = self.start
        if from_midnight:
            start = start.replace(hour=0, minute=0, second=0, microsecond=0)
        return start <= t and (self.end is None or t <= self.end)


@dataclass
class EdVisit:
    rid: str
    start: datetime
    end: datetime | None

    def contains(self, t: datetime) -> bool:
        return self.start <= t and (self.end is None or t <= self.end)


class PatientConverter:
    def __init__(
        self,
        subject: str,
        ctx: list[Row],
        labs: list[Row],
        meds: list[Row],
        max_admissions: int | None = None,
    ) -> None:
        self.s = subject
        self.ctx, self.labs, self.meds = ctx, labs, meds
        self.max_admissions = max_admissions
        self.pid = f"mimic-{subject}"
        times = [r.time for r in (*ctx, *labs, *meds) if r.time is not None]
        self.last_event = max(times) if times else None
        self.entries: list[JsonDict] = []
        self.locations: dict[str, JsonDict] = {}
        self.admissions: list[Admission] = []
        self.ed_visits: list[EdVisit] = []
        self.windows: list[tuple[datetime, datetime | None]] | None = None

    # -- helpers
    def add(self, res: JsonDict) -> None:
        self.entries.append({"fullUrl": full_url(res["resourceType"], res["id"]), "resource": res})

    def admission_at(self, t: datetime, *, from_midnight: bool = False) -> Admission | None:
        for adm in self.admissions:
            if adm.contains(t):
                return adm
        if from_midnight:  # day-precision rows (procedures): the admission of that day
            for adm in self.admissions:
                if adm.contains(t, from_midnight=True):
                    return adm
        return None

    def encounter_ref_at(self, t: datetime, *, from_midnight: bool = False) -> JsonDict | None:
        adm = self.admission_at(t, from_midnight=from_midnight)
        if adm is not None:
            return ref("Encounter", adm.rid)
        for ed in self.ed_visits:
            if ed.contains(t):
                return ref("Encounter", ed.rid)
        return None

    def kept(self, t: datetime | None) -> bool:
        if self.windows is None or t is None:
            return True
        return any(a <= t and (b is None or t <= b) for a, b in self.windows)

    # -- steps
    def build(self) -> JsonDict:
        self.read_encounters()
        self.restrict()
        self.patient()
        self.encounters()
        self.conditions_and_procedures()
        self.observations()
        self.medications()
        # Patient first, then Locations, then the rest in creation order
        patient = [e for e in self.entries if e["resource"]["resourceType"] == "Patient"]
        others = [e for e in self.entries if e["resource"]["resourceType"] != "Patient"]
        locs = [
            {"fullUrl": full_url("Location", loc["id"]), "resource": loc}
            for loc in self.locations.values()
        ]
        return {
            "resourceType": "Bundle",
            "id": f"mimic-{self.s}",
            "type": "collection",
            "entry": patient + locs + others,
        }

    def read_encounters(self) -> None:
        adm_starts, adm_ends, ed_starts, ed_ends, icu_starts, icu_ends = [], [], [], [], [], []
        for r in self.ctx:
            if r.time is None:
                continue
            parts = r.code.split("//")
            head = parts[0]
            if head == "HOSPITAL_ADMISSION":
                adm_starts.append(
                    (
                        r.time,
                        (
                            parts[1] if len(parts) > 1 else "UNK",
                            parts[2] if len(parts) > 2 else "UNK",
                        ),
                    )
                )
            elif head == "HOSPITAL_DISCHARGE":
                adm_ends.append((r.time, parts[1] if len(parts) > 1 else "UNK"))
            elif head == "ED_REGISTRATION":
                ed_starts.append((r.time, None))
            elif head == "ED_OUT":
                ed_ends.append((r.time, None))
            elif head == "ICU_ADMISSION":
                icu_starts.append((r.time, parts[1] if len(parts) > 1 else "ICU"))
            elif head == "ICU_DISCHARGE":
                icu_ends.append((r.time, parts[1] if len(parts) > 1 else "ICU"))
        for n, (s, (atype, src), e, disp) in enumerate(pair_intervals(adm_starts, adm_ends), 1):
            self.admissions.append(Admission(f"mimic-enc-{self.s}-{n}", s, e, atype, src, disp))
        for n, (s, _, e, _) in enumerate(pair_intervals(ed_starts, ed_ends), 1):
            self.ed_visits.append(EdVisit(f"mimic-ed-{self.s}-{n}", s, e))
        for s, unit, e, _ in pair_intervals(icu_starts, icu_ends):
            adm = self.icu_owner(s, e)
            if adm is None:
                print(f"warning: {self.s}: ICU stay at {s} outside any admission", file=sys.stderr)
                continue
            lid = f"mimic-loc-{slug(unit)}"
            self.locations.setdefault(
                lid,
                {
                    "resourceType": "Location",
                    "id": lid,
                    "status": "active",
                    "name": unit,
                    "mode": "instance",
                    "type": [location_type(unit)],
                },
            )
            period: JsonDict = {"start": fhir_time(s)}
            if e is not None:
                period["end"] = fhir_time(e)
            adm.locations.append(
                {
                    "location": ref("Location", lid, unit),
                    "status": "completed" if e is not None else "active",
                    "period": period,
                }
            )
        for r in self.labs:
            if r.code.startswith("LAB//50960//") and r.time is not None:
                adm = self.admission_at(r.time)
                if adm is not None:
                    adm.n_mg += 1

    def icu_owner(self, s: datetime, e: datetime | None) -> Admission | None:
        """The admission containing the ICU start, else the one overlapping the stay most."""
        adm = self.admission_at(s)
        if adm is not None:
            return adm
        best, best_overlap = None, timedelta(0)
        for a in self.admissions:
            hi = min(x for x in (e, a.end) if x is not None) if (e or a.end) else None
            lo = max(s, a.start)
            if hi is not None and hi > lo and hi - lo > best_overlap:
                best, best_overlap = a, hi - lo
        return best

    def restrict(self) -> None:
        n = self.max_admissions
        if n is None or len(self.admissions) <= n:
            return
        ranked = sorted(self.admissions, key=lambda a: (a.n_mg, a.start), reverse=True)[:n]
        keep = {a.rid for a in ranked}
        self.admissions = [a for a in self.admissions if a.rid in keep]
        self.windows = [(a.start - RESTRICT_MARGIN, a.end) for a in self.admissions]
        self.ed_visits = [
            v
            for v in self.ed_visits
            if any(v.start <= (b or v.start) and (v.end or v.start) >= a for a, b in self.windows)
        ]

    def patient(self) -> None:
        res: JsonDict = {
            "resourceType": "Patient",
            "id": self.pid,
            "identifier": [{"system": PATIENT_ID_SYSTEM, "value": self.s}],
        }
        for r in self.ctx:
            if r.code == "MEDS_BIRTH" and r.time is not None:
                res["birthDate"] = r.time.date().isoformat()
            elif r.code == "GENDER//F":
                res["gender"] = "female"
            elif r.code == "GENDER//M":
                res["gender"] = "male"
            elif r.code == "MEDS_DEATH" and r.time is not None:
                # MIMIC dod is a date (written at midnight); deathtime has a time
                if r.time.time() == datetime.min.time():
                    res["deceasedDateTime"] = r.time.date().isoformat()
                else:
                    res["deceasedDateTime"] = fhir_time(r.time)
        self.add(res)

    def encounters(self) -> None:
        subject = ref("Patient", self.pid)
        for a in self.admissions:
            emer = "EMER" in a.adm_type.upper()
            period: JsonDict = {"start": fhir_time(a.start)}
            if a.end is not None:
                period["end"] = fhir_time(a.end)
            hosp: JsonDict = {"admitSource": {"text": a.source}}
            if a.disposition:
                hosp["dischargeDisposition"] = {"text": a.disposition}
            res: JsonDict = {
                "resourceType": "Encounter",
                "id": a.rid,
                "status": "finished" if a.end is not None else "in-progress",
                "class": {
                    "system": ACT_CODE,
                    "code": "EMER" if emer else "IMP",
                    "display": "emergency" if emer else "inpatient encounter",
                },
                "type": [{"text": f"Hospital admission: {a.adm_type}"}],
                "subject": subject,
                "period": period,
                "hospitalization": hosp,
            }
            if a.locations:
                res["location"] = a.locations
            self.add(res)
        for v in self.ed_visits:
            period = {"start": fhir_time(v.start)}
            if v.end is not None:
                period["end"] = fhir_time(v.end)
            self.add(
                {
                    "resourceType": "Encounter",
                    "id": v.rid,
                    "status": "finished" if v.end is not None else "in-progress",
                    "class": {"system": ACT_CODE, "code": "EMER", "display": "emergency"},
                    "type": [{"text": "Emergency department visit"}],
                    "subject": subject,
                    "period": period,
                }
            )

    def conditions_and_procedures(self) -> None:
        subject = ref("Patient", self.pid)
        n_cond = n_proc = 0
        seen: set[tuple[str, datetime | None]] = set()
        for r in self.ctx:
            if r.time is None or not self.kept(r.time):
                continue
            parts = r.code.split("//")
            if parts[0] == "DIAGNOSIS" and len(parts) == 4 and parts[1] == "ICD":
                if (r.code, r.time) in seen:  # exact duplicate rows
                    continue
                seen.add((r.code, r.time))
                n_cond += 1
                res: JsonDict = {
                    "resourceType": "Condition",
                    "id": f"mimic-cond-{self.s}-{n_cond}",
                    "clinicalStatus": {"coding": [{"system": COND_CLINICAL, "code": "active"}]},
                    "verificationStatus": {
                        "coding": [{"system": COND_VERIFICATION, "code": "confirmed"}]
                    },
                    "category": [
                        {"coding": [{"system": COND_CATEGORY, "code": "encounter-diagnosis"}]}
                    ],
                    "code": {"coding": [icd_diagnosis_coding(parts[2], parts[3])]},
                    "subject": subject,
                    "recordedDate": fhir_time(r.time),
                }
                enc = self.encounter_ref_at(r.time)
                if enc:
                    res["encounter"] = enc
                self.add(res)
            elif (parts[0] == "PROCEDURE" and len(parts) == 4 and parts[1] == "ICD") or (
                parts[0] == "HCPCS" and len(parts) >= 2
            ):
                if (r.code, r.time) in seen:
                    continue
                seen.add((r.code, r.time))
                n_proc += 1
                if parts[0] == "PROCEDURE":
                    code: JsonDict = {"coding": [icd_procedure_coding(parts[2], parts[3])]}
                else:
                    code = hcpcs_code("//".join(parts[1:]))
                res = {
                    "resourceType": "Procedure",
                    "id": f"mimic-proc-{self.s}-{n_proc}",
                    "status": "completed",
                    "code": code,
                    "subject": subject,
                    "performedDateTime": fhir_time(r.time),
                }
                enc = self.encounter_ref_at(r.time, from_midnight=True)
                if enc:
                    res["encounter"] = enc
                self.add(res)
            # PROCEDURE//START|END//<itemid> (ICU procedure events), DRG, TRANSFER_TO: not converted

    def observations(self) -> None:
        subject = ref("Patient", self.pid)
        n = 0
        for r in self.labs:
            parts = r.code.split("//")
            if len(parts) < 2 or parts[0] != "LAB" or parts[1] not in LAB_ITEMS:
                continue  # other labs; ICU chart Mg 220635 is not a lab result
            if r.time is None or not self.kept(r.time):
                continue
            loinc, display, label, unit = LAB_ITEMS[parts[1]]
            if len(parts) > 2 and parts[2] not in ("", "UNK"):
                unit = parts[2]
            n += 1
            res: JsonDict = {
                "resourceType": "Observation",
                "id": f"mimic-obs-{self.s}-{n}",
                "status": "final",
                "category": [
                    {
                        "coding": [
                            {"system": OBS_CATEGORY, "code": "laboratory", "display": "Laboratory"}
                        ]
                    }
                ],
                "code": {
                    "coding": [
                        {"system": LOINC, "code": loinc, "display": display},
                        {"system": MIMIC_LABITEMS, "code": parts[1], "display": label},
                    ],
                    "text": label,
                },
                "subject": subject,
                "effectiveDateTime": fhir_time(r.time),
            }
            enc = self.encounter_ref_at(r.time)
            if enc:
                res["encounter"] = enc
            raw = r.value.strip()
            try:
                value = float(raw)
            except ValueError:
                value = None
            if value is not None and value == value and abs(value) != float("inf"):
                res["valueQuantity"] = {
                    "value": value,
                    "unit": unit,
                    "system": UCUM,
                    "code": unit,
                }
            elif raw:
                res["valueString"] = raw
            else:  # FHIR strings cannot be empty
                res["dataAbsentReason"] = {
                    "coding": [{"system": DATA_ABSENT, "code": "unknown", "display": "Unknown"}],
                    "text": "empty value in source",
                }
            self.add(res)

    def medications(self) -> None:
        subject = ref("Patient", self.pid)
        starts: list[tuple[Row, str]] = []
        stops: dict[str, list[Row]] = defaultdict(list)
        admins: list[tuple[Row, str, str]] = []
        for r in self.meds:
            if r.time is None:
                continue
            parts = r.code.split("//", 2)
            if len(parts) < 3 or parts[0] != "MEDICATION":
                continue
            if parts[1] == "START":
                starts.append((r, parts[2]))
            elif parts[1] == "STOP":
                stops[parts[2]].append(r)
            else:
                name, event = parts[1], parts[2]
                if any(k in name.lower() for k in ADMIN_KEYWORDS):
                    admins.append((r, name, event))
        pairs = pair_prescriptions(starts, stops)
        n = 0
        for r, name in starts:
            if name.strip().upper() == "UNK" or not self.kept(r.time):
                continue
            assert r.time is not None
            stop = pairs.get(r.seq)
            validity: JsonDict = {"start": fhir_time(r.time)}
            note = None
            if stop is None:
                status = "active"  # no STOP row at all
            elif stop < r.time:
                status = "stopped"
                note = f"source STOP row ({fhir_time(stop)}) precedes the START row"
            else:
                validity["end"] = fhir_time(stop)
                ended = self.last_event is not None and stop <= self.last_event
                status = "completed" if ended else "active"
            n += 1
            res: JsonDict = {
                "resourceType": "MedicationRequest",
                "id": f"mimic-medreq-{self.s}-{n}",
                "status": status,
                "intent": "order",
                "medicationCodeableConcept": {"text": name},
                "subject": subject,
                "authoredOn": fhir_time(r.time),
                "dispenseRequest": {"validityPeriod": validity},
            }
            if note:
                res["note"] = [{"text": note}]
            enc = self.encounter_ref_at(r.time)
            if enc:
                res["encounter"] = enc
            self.add(res)
        n = 0
        for r, name, event in admins:
            if not self.kept(r.time):
                continue
            assert r.time is not None
            n += 1
            status = admin_status(event)
            res = {
                "resourceType": "MedicationAdministration",
                "id": f"mimic-medadm-{self.s}-{n}",
                "status": status,
                "medicationCodeableConcept": {"text": name},
                "subject": subject,
                "effectiveDateTime": fhir_time(r.time),
                "note": [{"text": f"eMAR event: {event.strip() or 'UNK'}"}],
            }
            if status == "not-done":
                res["statusReason"] = [{"text": event.strip()}]
            enc = self.encounter_ref_at(r.time)
            if enc:
                res["context"] = enc
            self.add(res)


def pair_prescriptions(
    starts: list[tuple[Row, str]], stops: dict[str, list[Row]]
) -> dict[int, datetime]:
    """STOP time per START row (by ``seq``), matched on the drug name.

    MEDS keeps no link between a prescription's START and STOP rows. When a name has as
    many STOPs as STARTs, the k-th START (in time order) gets the k-th STOP, which keeps the
    source's stop-before-start prescriptions (MIMIC stoptime < starttime) as such; otherwise
    each START takes the first unused STOP at or after it (some STARTs then stay unpaired).
    """
    by_name: dict[str, list[Row]] = defaultdict(list)
    for r, name in starts:
        by_name[name].append(r)
    out: dict[int, datetime] = {}
    for name, srows in by_name.items():
        s_sorted = sorted(srows, key=lambda r: (r.time, r.seq))
        e_times = sorted(r.time for r in stops.get(name, ()) if r.time is not None)
        if len(s_sorted) == len(e_times):
            for r, e in zip(s_sorted, e_times, strict=True):
                out[r.seq] = e
            continue
        used = [False] * len(e_times)
        for r in s_sorted:
            assert r.time is not None
            for j, e in enumerate(e_times):
                if not used[j] and e >= r.time:
                    used[j] = True
                    out[r.seq] = e
                    break
    return out


def admin_status(event: str) -> str:
    """MedicationAdministration.status for an eMAR event text."""
    ev = event.strip().lower()
    if ev in _UNKNOWN_EVENTS or not ev:
        return "unknown"
    if ev.startswith(("not ", "hold")) or " not done" in ev:
        return "not-done"
    if ev.startswith("stopped") or ev == "delayed stopped":
        return "stopped"
    # Administered, Started, Restarted, Applied, Flushed, Confirmed, Partial/Delayed ...,
    # "... in Other Location", "Removed Existing / Applied New"
    return "completed"


# ---------------------------------------------------------------- API


def convert(
    subject_ids: list[str], data_dir: Path = DEFAULT_DATA_DIR, max_admissions: int | None = None
) -> dict[str, dict[str, Any]]:
    """One FHIR R4 Bundle (type collection) per subject id."""
    data_dir = Path(data_dir)
    wanted = {str(s).strip() for s in subject_ids if str(s).strip()}
    ctx = read_rows(data_dir / CONTEXT_CSV, wanted)
    labs = read_rows(data_dir / LABS_CSV, wanted)
    meds = read_rows(data_dir / MEDS_CSV, wanted)
    out: dict[str, dict[str, Any]] = {}
    for raw_id in subject_ids:
        sid = str(raw_id).strip()
        if not sid:
            continue
        if sid not in ctx and sid not in labs:
            raise KeyError(f"subject {sid} not found in {data_dir}")
        out[sid] = PatientConverter(
            sid, ctx.get(sid, []), labs.get(sid, []), meds.get(sid, []), max_admissions
        ).build()
    return out


def resources(bundle: JsonDict) -> Iterator[JsonDict]:
    for entry in bundle.get("entry", []):
        yield entry["resource"]


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--patients", required=True, help="comma-separated MIMIC subject ids")
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument(
        "--max-admissions",
        type=int,
        default=None,
        help="keep only the N hospital admissions with the most serum Mg results "
        "(and events from 24 h before each through its discharge); patients with "
        "N or fewer admissions are unchanged",
    )
    args = ap.parse_args(list(argv) if argv is not None else None)
    ids = [p.strip() for p in args.patients.split(",") if p.strip()]
    bundles = convert(ids, args.data_dir, args.max_admissions)
    args.out.mkdir(parents=True, exist_ok=True)
    for sid, bundle in bundles.items():
        path = args.out / f"{sid}.json"
        path.write_text(json.dumps(bundle, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        counts: dict[str, int] = defaultdict(int)
        for res in resources(bundle):
            counts[res["resourceType"]] += 1
        summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        print(f"{path}: {path.stat().st_size // 1024} KB; {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
