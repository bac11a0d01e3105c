"""Convert the MIMIC-IV demo (MEDS extract) into HL7 v2 ADT + ORU messages in time order.

Source: ``/work/shared/data/mimic-iv-demo-meds`` (MIMIC-IV Clinical Database Demo in MEDS,
van de Water et al., PhysioNet 2025, doi 10.13026/t2y8-ea41; ODbL 1.0). Per patient:

- ED_REGISTRATION -> ADT^A04 (PV1-2 E, unit ED); HOSPITAL_ADMISSION -> ADT^A06 when an ED
  visit is open (the ED visit becomes the inpatient stay) else ADT^A01 (PV1-2 I, PV1-44);
  ED_OUT with no admission within 2 h -> ADT^A03; HOSPITAL_DISCHARGE -> ADT^A03 (PV1-45).
- TRANSFER_TO//admit|transfer//<care unit> -> ADT^A02 with PV1-3 = the care unit (ICU units
  are recognised by the site mapping, ``mappings/site/example.yaml``).
- DIAGNOSIS//ICD//9|10//code -> ADT^A08 with DG1 (I9 / I10); PROCEDURE//ICD -> ADT^A08 with
  PR1 (I9CP / I10P, PR1-5); HCPCS -> PR1 (C4).
- LAB rows at one time -> one ORU^R01, one OBX per row: labevents items with a LOINC mapping
  (MIT-LCP mimic-code ``d_labitems_to_loinc``: 50960 Mg 19123-9, 50912 creatinine 2160-0,
  50862 albumin 1751-7) are sent with LOINC first and the item id as the alternate code;
  other items (calcium, sodium, potassium, phosphate, urea; chartevents Mg 220635) carry
  only their local item id and are of no interest to the service.

Usage: ``python bench/make_replay.py [--patients N] [--out FILE]`` writes MLLP-framed
messages (0x0B ... 0x1C 0x0D) that ``nc`` or the benchmark can stream.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

_SHARED = Path(__file__).resolve().parents[2] / "shared"  # CI: a copy of shared/ beside the clone
DATA = Path(
    os.environ.get("MIMIC_DEMO_MEDS_DIR")
    or (_SHARED if _SHARED.is_dir() else Path("/work/shared")) / "data" / "mimic-iv-demo-meds"
)
LOINC = {"50960": ("19123-9", "Magnesium"), "50912": ("2160-0", "Creatinine"),
         "50862": ("1751-7", "Albumin")}  # fmt: skip
MG_ITEM = "50960"
ORDER = {"A04": 0, "A01": 1, "A06": 1, "A02": 2, "ORU": 3, "A08": 4, "A03": 5}


@dataclass(frozen=True)
class Event:
    """One message to send: its time, kind, and segments after MSH."""

    time: datetime
    kind: str
    subject: str
    segments: tuple[str, ...]


def _rows(name: str) -> Iterator[dict[str, str]]:
    with gzip.open(DATA / name, "rt", newline="") as fh:
        yield from csv.DictReader(fh)


def _ts(t: datetime) -> str:
    return t.strftime("%Y%m%d%H%M%S")


def _parse(text: str) -> datetime | None:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S") if text else None


class Patient:
    """Converts one subject's events, keeping its visit state."""

    def __init__(self, subject: str) -> None:
        self.subject, self.birth, self.sex = subject, "", ""
        self.visit, self.visits, self.klass, self.admit = "", 0, "", ""

    def pid(self) -> str:
        return f"PID|1||{self.subject}^^^MIMIC^MR||Demo^Patient||{self.birth}|{self.sex}"

    def pv1(self, unit: str = "", discharge: str = "") -> str:
        fields = [""] * 46
        fields[:4] = ["PV1", "1", self.klass, unit]
        fields[19], fields[44], fields[45] = self.visit, self.admit, discharge
        return "|".join(fields).rstrip("|")

    def adt(self, t: datetime, kind: str, unit: str = "", discharge: str = "") -> Event:
        evn = f"EVN|{kind}|{_ts(t)}||||{_ts(t)}"
        return Event(t, kind, self.subject, (evn, self.pid(), self.pv1(unit, discharge)))


def _context(p: Patient, rows: list[dict[str, str]]) -> Iterator[Event]:
    """ADT events of one subject (rows sorted by time)."""
    admissions = [_parse(r["time"]) for r in rows if r["code"].startswith("HOSPITAL_ADMISSION")]
    coded: dict[tuple[datetime, str], list[str]] = defaultdict(list)
    for r in rows:
        t, code = _parse(r["time"]), r["code"]
        parts = code.split("//")
        if t is None:
            continue
        if code == "ED_REGISTRATION":
            p.visits += 1
            p.visit, p.klass, p.admit = f"V{p.subject}-{p.visits}", "E", _ts(t)
            yield p.adt(t, "A04", "Emergency Department")
        elif parts[0] == "HOSPITAL_ADMISSION":
            if p.klass == "E":
                p.klass, p.admit = "I", _ts(t)
                yield p.adt(t, "A06")
            else:
                p.visits += 1
                p.visit, p.klass, p.admit = f"V{p.subject}-{p.visits}", "I", _ts(t)
                yield p.adt(t, "A01")
        elif code == "ED_OUT" and p.klass == "E":
            if not any(a is not None and t <= a <= t + timedelta(hours=2) for a in admissions):
                yield p.adt(t, "A03", discharge=_ts(t))
                p.klass = ""
        elif parts[0] == "HOSPITAL_DISCHARGE" and p.visit:
            yield p.adt(t, "A03", discharge=_ts(t))
            p.klass = ""
        elif parts[0] == "TRANSFER_TO" and parts[1] in ("admit", "transfer") and p.klass:
            yield p.adt(t, "A02", parts[2])
        elif parts[0] == "DIAGNOSIS" and len(parts) == 4:
            coded[(t, "dx")].append(f"DG1|{{n}}||{parts[3]}^^I{parts[2]}||{_ts(t)}|F")
        elif parts[0] == "PROCEDURE" and parts[1] == "ICD" and len(parts) == 4:
            system = "I9CP" if parts[2] == "9" else "I10P"
            coded[(t, "px")].append(f"PR1|{{n}}||{parts[3]}^^{system}||{_ts(t)}")
        elif parts[0] == "HCPCS" and len(parts) >= 2:
            coded[(t, "px")].append(f"PR1|{{n}}||{parts[1]}^^C4||{_ts(t)}")
    for (t, _), segs in sorted(coded.items()):
        numbered = [s.replace("{n}", str(i + 1), 1) for i, s in enumerate(segs)]
        yield Event(t, "A08", p.subject, (f"EVN|A08|{_ts(t)}", p.pid(), *numbered))


def _labs(p: Patient, rows: list[dict[str, str]]) -> Iterator[Event]:
    """One ORU^R01 per subject and result time."""
    by_time: dict[datetime, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        t = _parse(r["time"])
        if t is not None:
            by_time[t].append(r)
    for t, group in sorted(by_time.items()):
        obx = []
        for i, r in enumerate(group, 1):
            _, item, unit = r["code"].split("//")
            local = f"{item}^MIMIC item {item}^99MIMIC"
            code = f"{LOINC[item][0]}^{LOINC[item][1]}^LN^{local}" if item in LOINC else local
            value_type = "NM" if r["value"] else "ST"
            unit = "" if unit == "UNK" else unit
            obx.append(f"OBX|{i}|{value_type}|{code}||{r['value']}|{unit}|||||F|||{_ts(t)}")
        obr = f"OBR|1|||LABS^MIMIC labs^99MIMIC|||{_ts(t)}"
        yield Event(t, "ORU", p.subject, (p.pid(), obr, *obx))


def events(patients: int | None = None) -> list[Event]:
    """Every event of the first ``patients`` subjects (all when None), in time order."""
    context: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in _rows("context_dx_proc_adm_icu_demog.csv.gz"):
        context[r["subject_id"]].append(r)
    labs: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in _rows("labs_mg_creat_alb_plus.csv.gz"):
        labs[r["subject_id"]].append(r)
    subjects = sorted(set(context) | set(labs))[:patients]
    out: list[Event] = []
    for subject in subjects:
        p = Patient(subject)
        rows = sorted(context.get(subject, []), key=lambda r: (r["time"] == "", r["time"]))
        for r in rows:
            if r["code"] == "MEDS_BIRTH":
                p.birth = r["time"][:10].replace("-", "")
            elif r["code"].startswith("GENDER//"):
                p.sex = r["code"].split("//")[1]
        out += list(_context(p, rows))
        out += list(_labs(p, labs.get(subject, [])))
    return sorted(out, key=lambda e: (e.time, e.subject, ORDER[e.kind]))


def messages(patients: int | None = None) -> list[bytes]:
    """The events as ER7 messages (CR separators), control ids MIMIC-1, MIMIC-2, ..."""
    out = []
    for n, e in enumerate(events(patients), 1):
        mtype = "ORU^R01^ORU_R01" if e.kind == "ORU" else f"ADT^{e.kind}^ADT_A01"
        msh = f"MSH|^~\\&|MIMICDEMO|MIMIC|CDS|HOSP|{_ts(e.time)}||{mtype}|MIMIC-{n}|P|2.5.1"
        out.append("\r".join((msh, *e.segments)).encode() + b"\r")
    return out


def mg_counts(patients: int | None = None) -> dict[str, int]:
    """Serum Mg results (labevents 50960) per subject, as in the source file."""
    counts: dict[str, int] = defaultdict(int)
    subjects = {e.subject for e in events(patients)}
    for r in _rows("labs_mg_creat_alb_plus.csv.gz"):
        if r["subject_id"] in subjects and r["code"].split("//")[1] == MG_ITEM and r["time"]:
            counts[r["subject_id"]] += 1
    return dict(counts)


def main() -> None:
    """Write the MLLP-framed replay file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, help="first N subjects (default: all 100)")
    parser.add_argument("--out", default="var/mimic_replay.mllp")
    args = parser.parse_args()
    msgs = messages(args.patients)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_bytes(b"".join(b"\x0b" + m + b"\x1c\r" for m in msgs))
    print(f"{len(msgs)} messages -> {args.out}")


if __name__ == "__main__":
    main()
