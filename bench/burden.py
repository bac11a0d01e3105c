"""Alert burden of pushed advice (evidence.md §8), computed from the store after a replay.

- Patient-days: the time patients spent in inpatient and emergency encounters (not cancelled),
  overlaps counted once; an encounter never closed ends where the patient's next encounter
  starts, else at the patient's newest result.
- Pushed advisories: advice with push status ``pushed`` (queued on every configured channel).
  Before the push policy every advice issued from an event was queued: "before" counts every
  advice recorded.
- Results that could have triggered a rule: the stored results of the series the rule reads
  (serum Mg for the Mg rules, ionized Mg, creatinine for ``aki-kdigo``, serum Mg and creatinine
  for ``mg-data-quality``); a rule that reads no series (triggered by its context:
  ``monitoring-gap``, ``sepsis-mg``...) counts every result that starts an evaluation.
- What would meet the target: the pushed advice left after each change, from the same store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from cds_service.clinical import model as m
from cds_service.events.process import TRIGGER_KINDS
from cds_service.rules.model import Knowledge
from cds_service.store.events_models import (
    AdviceIssued,
    AdvicePush,
    DiagnosisRow,
    EncounterRow,
    LabResultRow,
)

TARGET = 10.0  # pushed advisories per 100 patient-days (evidence.md §8)
STATUSES = ("pushed", "repeat", "not-pushed", "held")
TRIGGER_SERIES = {"kdigo": (m.CREATININE,), "mg-trend": (m.SERUM_MG,),
                  "data-quality": (m.SERUM_MG, m.CREATININE)}  # fmt: skip
RENAL_REPLACEMENT = ("esrd",)  # value sets (mappings/codes): ESRD, dialysis dependence


@dataclass(frozen=True)
class RuleBurden:
    """One lead rule: results that could trigger it, advice recorded, and by push status."""

    rule: str
    candidates: int
    recorded: int
    by_status: dict[str, int]

    @property
    def pushed(self) -> int:
        """Advice pushed (queued on the channels)."""
        return self.by_status.get("pushed", 0)


@dataclass(frozen=True)
class Burden:
    """The burden report of one store."""

    patients: int
    patient_days: float
    rules: tuple[RuleBurden, ...]
    what_if: tuple[tuple[str, int], ...]

    def per_100(self, count: int) -> float:
        """``count`` per 100 patient-days."""
        return 100 * count / self.patient_days if self.patient_days else float("nan")

    @property
    def recorded(self) -> int:
        """Every advice recorded (what was pushed before the policy)."""
        return sum(r.recorded for r in self.rules)

    @property
    def pushed(self) -> int:
        """Advice pushed under the policy."""
        return sum(r.pushed for r in self.rules)


def patient_days(session: Session) -> float:
    """Inpatient and emergency encounter days, overlaps counted once.

    An encounter never closed ends where the patient's next encounter starts, else at the
    patient's newest result.
    """
    newest = dict(
        session.execute(
            select(LabResultRow.patient_id, func.max(LabResultRow.time)).group_by(
                LabResultRow.patient_id
            )
        ).all()
    )
    query = (
        select(EncounterRow.patient_id, EncounterRow.start, EncounterRow.end)
        .where(
            EncounterRow.klass.in_(("inpatient", "emergency")),
            EncounterRow.status != "cancelled",
            EncounterRow.start.is_not(None),
        )
        .order_by(EncounterRow.patient_id, EncounterRow.start)
    )
    spans: dict[int, list[tuple[datetime, datetime | None]]] = {}
    for patient, start, end in session.execute(query):
        spans.setdefault(patient, []).append((start, end))
    days = 0.0
    for patient, found in spans.items():
        reach: datetime | None = None  # the end of the time already counted
        for i, (start, end) in enumerate(found):
            later = found[i + 1][0] if i + 1 < len(found) else newest.get(patient)
            until = end or later
            if until is None:
                continue
            begin = max(start, reach) if reach is not None else start
            if until > begin:
                days += (until - begin).total_seconds() / 86400
                reach = until
    return days


def _series(knowledge: Knowledge, rule_id: str) -> tuple[str, ...]:
    rule = knowledge.rule(rule_id)
    if rule.measure is not None:
        return (knowledge.measures[rule.measure].series,)
    if rule.trigger is not None and rule.trigger[0] in TRIGGER_SERIES:
        return TRIGGER_SERIES[rule.trigger[0]]
    return tuple(sorted(TRIGGER_KINDS))


@dataclass(frozen=True)
class _Pushed:
    id: int
    patient: int
    message: int | None
    at: datetime
    keys: tuple[str, ...]


def _what_if(session: Session, knowledge: Knowledge) -> tuple[tuple[str, int], ...]:
    """Pushed advice left after each change the report proposes (computed, not applied)."""
    keys: dict[int, list[str]] = {}
    for advice_id, key in session.execute(select(AdvicePush.advice_id, AdvicePush.push_key)):
        keys.setdefault(advice_id, []).append(key)
    query = select(
        AdviceIssued.id, AdviceIssued.patient_id, AdviceIssued.message_id, AdviceIssued.evaluated_at
    ).where(AdviceIssued.push_status == "pushed")
    pushed = [_Pushed(i, p, msg, at, tuple(keys.get(i, ()))) for i, p, msg, at in session.execute(query)]
    renal: dict[int, datetime] = {}
    for patient, system, code, recorded in session.execute(
        select(DiagnosisRow.patient_id, DiagnosisRow.system, DiagnosisRow.code, DiagnosisRow.recorded)
    ):
        coding = m.Coding(system, code, None)
        if any(knowledge.valuesets.in_set(coding, vs) for vs in RENAL_REPLACEMENT):
            renal[patient] = min(recorded, renal.get(patient, recorded))

    def aki_only(p: _Pushed, keep: Callable[[str], bool]) -> bool:
        aki = [k for k in p.keys if k.startswith("aki-kdigo|")]
        return not (aki and len(aki) == len(p.keys) and not any(keep(k) for k in aki))

    def stage2(p: _Pushed) -> bool:
        return aki_only(p, lambda k: not k.endswith("|stage:1"))

    def no_renal(p: _Pushed) -> bool:
        return aki_only(p, lambda k: not (p.patient in renal and renal[p.patient] <= p.at))

    def per_message(rows: list[_Pushed]) -> int:
        return len({("m", p.message) if p.message is not None else ("a", p.id) for p in rows})

    both = [p for p in pushed if stage2(p) and no_renal(p)]
    return (
        ("aki-kdigo pushed from stage 2 (a stage-1 episode recorded, pushed when it reaches 2)",
         sum(1 for p in pushed if stage2(p))),
        ("aki-kdigo not pushed once ESRD or dialysis dependence is coded (recorded, shown)",
         sum(1 for p in pushed if no_renal(p))),
        ("one advisory per event message (the cards of one message sent together)",
         per_message(pushed)),
        ("the two aki-kdigo changes", len(both)),
        ("all three", per_message(both)),
    )  # fmt: skip


def burden_report(engine: Engine, knowledge: Knowledge) -> Burden:
    """The burden of pushed advice in a store (after a replay)."""
    with Session(engine) as session:
        counts: dict[str, Counter[str]] = {}
        for rule, status, n in session.execute(
            select(AdviceIssued.rule_id, AdviceIssued.push_status, func.count()).group_by(
                AdviceIssued.rule_id, AdviceIssued.push_status
            )
        ):
            counts.setdefault(rule, Counter())[status] = n
        results = Counter(
            dict(
                session.execute(
                    select(LabResultRow.kind, func.count())
                    .where(LabResultRow.superseded.is_(False), LabResultRow.retracted.is_(False))
                    .group_by(LabResultRow.kind)
                ).all()
            )
        )
        rules = tuple(
            RuleBurden(
                rule,
                sum(results[s] for s in _series(knowledge, rule)),
                sum(c.values()),
                {s: c[s] for s in STATUSES if c[s]},
            )
            for rule, c in sorted(counts.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
        )
        patients = session.scalar(select(func.count(func.distinct(EncounterRow.patient_id))))
        return Burden(int(patients or 0), patient_days(session), rules, _what_if(session, knowledge))


def markdown(report: Burden, received: Counter[str] | None = None) -> str:
    """The report as markdown: by rule, totals, the target, and what would meet it."""
    per = report.per_100
    lines = [
        f"{report.patients} patients with an encounter, **{report.patient_days:,.0f} patient-days** "
        "(days in inpatient and emergency encounters, overlaps once; an encounter never closed "
        "ends at the patient's next encounter, else at the newest result).",
        "",
        "| lead rule | results that could trigger it | before: advice recorded, all pushed | "
        "after: pushed | repeat | not pushed | before / 100 patient-days | "
        "after / 100 patient-days |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report.rules:
        lines.append(
            f"| `{r.rule}` | {r.candidates:,} | {r.recorded:,} | {r.pushed:,} | "
            f"{r.by_status.get('repeat', 0):,} | {r.by_status.get('not-pushed', 0):,} | "
            f"{per(r.recorded):.1f} | {per(r.pushed):.1f} |"
        )
    lines.append(
        f"| **all** | | **{report.recorded:,}** | **{report.pushed:,}** | | | "
        f"**{per(report.recorded):.1f}** | **{per(report.pushed):.1f}** |"
    )
    met = per(report.pushed) <= TARGET
    lines += ["", f"Target at most {TARGET:g} pushed advisories per 100 patient-days: "
              f"**{'met' if met else 'NOT met'}** ({per(report.pushed):.1f})."]  # fmt: skip
    if received is not None:
        lines.append(
            f"The advisory sink received {sum(received.values()):,} advisory ORU^R01 "
            f"({'equal to' if received == _pushed_by_rule(report) else 'DIFFERENT from'} "
            "the pushed advice, by lead rule)."
        )
    lines += ["", "| if (computed from the same store, not applied) | pushed | per 100 patient-days |",
              "|---|---|---|"]  # fmt: skip
    lines += [f"| {label} | {n:,} | {per(n):.1f} |" for label, n in report.what_if]
    return "\n".join(lines)


def _pushed_by_rule(report: Burden) -> Counter[str]:
    return Counter({r.rule: r.pushed for r in report.rules if r.pushed})
