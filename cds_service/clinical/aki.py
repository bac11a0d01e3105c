"""AKI status from a creatinine series: KDIGO and NHS England staging (evidence.md §3).

Every number comes from ``mappings/aki.yaml`` (``Knowledge.aki``). Each
creatinine in the episode window [now - episode_window, now] is evaluated
against the values before it; AKI is present when any of them meets KDIGO,
the onset is the first that does, and the stage is the highest reached (ties:
the latest value). ``current`` is always the newest creatinine at or before
now. A date-only creatinine is used only in windows of 7 days or longer (so
never for the 48-hour rise). Dialysis counts for stage 3 when it started
within the episode window.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from statistics import median
from typing import Any, NamedTuple

from cds_service.clinical.model import Condition, LabResult
from cds_service.clinical.units import Quantity
from cds_service.rules.durations import parse_duration

_EPS = 1e-9  # float tolerance for "at least" comparisons of ratios and rises
_DATE_ONLY_MIN = timedelta(days=7)  # evidence.md §1: date-only results need windows >= 7 days


@dataclass(frozen=True, slots=True)
class AkiStatus:
    """KDIGO stage (0-3) and the values behind it, plus the NHS England stage."""

    stage: int = 0
    present: bool = False
    coded: bool = False
    onset: datetime | None = None
    baseline: float | None = None
    baseline_kind: str | None = None
    current: LabResult | None = None
    ratio: float | None = None
    rise_48h: float | None = None
    criteria: tuple[str, ...] = ()
    nhs_stage: int = 0
    nhs_ratio: float | None = None
    peak: LabResult | None = None
    nhs_criteria: tuple[str, ...] = ()
    # For the card (evidence.md §3): the baseline result when it is one value (lowest in the
    # recent window), the criteria met as codes (ratio, rise, absolute, dialysis), the
    # value the rise was measured from, and the dialysis procedure that started.
    baseline_result: LabResult | None = None
    met: tuple[str, ...] = ()
    rise_from: LabResult | None = None
    dialysis: Any = None
    episode_peak: LabResult | None = None  # the highest creatinine of the episode window


class _Eval(NamedTuple):
    """One creatinine judged against the values before it (a tuple: made for every value)."""

    result: LabResult
    stage: int
    criteria: tuple[str, ...]
    met: tuple[str, ...]
    baseline: float | None
    baseline_kind: str | None
    baseline_result: LabResult | None
    rise_from: LabResult | None
    ratio: float | None
    rise: float | None
    nhs_stage: int
    nhs_ratio: float | None
    nhs_criteria: tuple[str, ...]


class _Params:
    """aki.yaml read once: durations parsed, thresholds in the series' unit."""

    def __init__(self, params: dict[str, Any], unit: str, units: Quantity | None) -> None:
        def conv(spec: dict[str, Any]) -> float:
            value, given = float(spec["value"]), str(spec.get("unit", params["unit"]))
            if given == unit:
                return value
            if units is None:
                raise ValueError(
                    f"aki.yaml: a threshold in {given} needs assess_aki(..., units=<creatinine"
                    " Quantity>) to convert it"
                )
            return units.to_canonical(value, given)

        k, n = params["kdigo"], params["nhs"]
        self.episode = parse_duration(k["episode_window"])
        self.k_recent = parse_duration(k["baseline_recent_window"])
        self.k_hist = (
            parse_duration(k["baseline_historic_window"]["start"]),
            parse_duration(k["baseline_historic_window"]["end"]),
        )
        self.rise = conv(k["absolute_rise"])
        self.rise_within = parse_duration(k["absolute_rise"]["within"])
        self.rise_text = f"rise>={k['absolute_rise']['value']:g} in {k['absolute_rise']['within']}"
        self.k_stages = _stages(k["stages"])
        self.k_abs = conv(k["stage3_absolute"])
        self.k_abs_text = f"creatinine>={k['stage3_absolute']['value']:g} with acute rise"
        self.n_recent = parse_duration(n["recent_window"])
        self.n_hist = (
            parse_duration(n["historic_window"]["start"]),
            parse_duration(n["historic_window"]["end"]),
        )
        d = n["difference"]
        self.diff = conv(d)
        self.diff_within = parse_duration(d["within"])
        self.diff_text = f"D>{d['value']:g} {d.get('unit', params['unit'])} in {d['within']}"
        self.n_stages = _stages(n["stages"])
        self.n_abs = conv(n["stage3_absolute"])
        a = n["stage3_absolute"]
        self.n_abs_text = f"creatinine>{a['value']:g} {a.get('unit', params['unit'])}"


class AkiCriteria:
    """aki.yaml compiled once: the episode window, and the thresholds per series unit."""

    def __init__(self, params: dict[str, Any], units: Quantity | None = None) -> None:
        self.params = params
        self.units = units
        self.episode = parse_duration(params["kdigo"]["episode_window"])
        self._in_unit: dict[str, _Params] = {}

    def in_unit(self, unit: str) -> _Params:
        """The criteria with thresholds in the series' unit (memoised).

        :raises ValueError: a threshold needs conversion and there is no unit table.
        """
        try:
            return self._in_unit[unit]
        except KeyError:
            pass
        found = _Params(self.params, unit, self.units)
        self._in_unit[unit] = found
        return found


def _stages(raw: list[dict[str, Any]]) -> tuple[tuple[int, float, float | None], ...]:
    return tuple(
        (
            int(s["stage"]),
            float(s["ratio_ge"]),
            None if s.get("ratio_lt") is None else float(s["ratio_lt"]),
        )
        for s in raw
    )


def _ratio_stage(
    ratio: float | None, stages: tuple[tuple[int, float, float | None], ...]
) -> tuple[int, str | None]:
    """The stage a ratio reaches and its criterion text."""
    if ratio is None:
        return 0, None
    best, text = 0, None
    for stage, ge, lt in stages:
        if ratio >= ge - _EPS and (lt is None or ratio < lt - _EPS) and stage > best:
            best, text = stage, f"ratio>={ge:g}"
    return best, text


class _Prior:
    """The values before one creatinine at ``t``: ``series[:n]`` of a series in time order."""

    def __init__(
        self, series: Sequence[LabResult], times: Sequence[datetime], n: int, t: datetime
    ) -> None:
        self.series, self.times, self.n, self.t = series, times, n, t
        self._windows: dict[tuple[timedelta, timedelta], list[LabResult]] = {}

    def window(self, start: timedelta, end: timedelta) -> list[float]:
        """Values in [t - end, t - start] (date-only ones only when the window spans >= 7 days).

        KDIGO and NHS share windows: each is read once.
        """
        return [r.value for r in self.results(start, end)]

    def results(self, start: timedelta, end: timedelta) -> list[LabResult]:
        """The results of ``window`` (read once per window)."""
        found = self._windows.get((start, end))
        if found is None:
            lo = bisect_left(self.times, self.t - end, 0, self.n)
            hi = bisect_right(self.times, self.t - start, 0, self.n)
            wide = end - start >= _DATE_ONLY_MIN
            found = [r for r in self.series[lo:hi] if wide or not r.date_only]
            self._windows[(start, end)] = found
        return found


def _evaluate(series: Sequence[LabResult], times: Sequence[datetime], i: int, p: _Params) -> _Eval:
    """KDIGO and NHS criteria for series[i] against the values before it.

    ``series`` is in time order and ``times`` are its times.
    """
    cur = series[i]
    t, c = cur.time, cur.value
    prior = _Prior(series, times, bisect_left(times, t, 0, i), t)  # the values before t
    zero = timedelta(0)
    recent = prior.results(zero, p.k_recent)
    baseline: float | None = None
    kind: str | None = None
    base_result: LabResult | None = None
    if recent:
        base_result = min(recent, key=lambda r: (r.value, r.time))
        baseline, kind = base_result.value, "lowest-7d"
    else:
        hist = prior.window(*p.k_hist)
        if hist:
            baseline, kind = median(hist), "median-8-365d"
    ratio = c / baseline if baseline else None
    near = [] if cur.date_only else prior.results(zero, p.rise_within)
    low_near = min(near, key=lambda r: (r.value, r.time)) if near else None
    rise = c - low_near.value if low_near is not None else None
    stage, text = _ratio_stage(ratio, p.k_stages)
    criteria = [text] if text else []
    met = ["ratio"] if text else []
    if rise is not None and rise >= p.rise - _EPS:
        stage = max(stage, 1)
        criteria.append(p.rise_text)
        met.append("rise")
    if stage >= 1 and c >= p.k_abs - _EPS:
        stage = 3
        criteria.append(p.k_abs_text)
        met.append("absolute")
    # NHS England: the higher of the ratios to RV1 (lowest 0-7 d) and RV2 (median 8-365 d)
    rv1 = prior.window(zero, p.n_recent)
    rv2 = prior.window(*p.n_hist)
    refs = [x for x in (min(rv1) if rv1 else None, median(rv2) if rv2 else None) if x]
    n_ratio = max(c / x for x in refs) if refs else None
    n_stage, n_text = _ratio_stage(n_ratio, p.n_stages)
    n_criteria = [n_text] if n_text else []
    d_near = [] if cur.date_only else prior.window(zero, p.diff_within)
    if n_stage == 0 and d_near and c - min(d_near) > p.diff:
        n_stage = 1
        n_criteria.append(p.diff_text)
    if n_stage >= 1 and c > p.n_abs:
        n_stage = 3
        n_criteria.append(p.n_abs_text)
    return _Eval(
        cur,
        stage,
        tuple(criteria),
        tuple(met),
        baseline,
        kind,
        base_result,
        low_near if "rise" in met else None,
        ratio,
        rise,
        n_stage,
        n_ratio,
        tuple(n_criteria),
    )


def assess_aki(
    creatinine: Sequence[LabResult],
    now: datetime,
    params: dict[str, Any] | AkiCriteria,
    *,
    coded_aki: Sequence[Condition] = (),
    dialysis_started: datetime | None = None,
    units: Quantity | None = None,
    dialysis_procedure: Any = None,
) -> AkiStatus:
    """KDIGO/NHS AKI status at ``now`` from creatinine (canonical unit), coded AKI and dialysis.

    ``params`` is aki.yaml, or its compiled form (``Knowledge.aki_criteria``, which
    has its own unit table). ``units`` (the creatinine Quantity) converts thresholds
    given in another unit than the series' (the NHS µmol/L ones).

    :raises ValueError: a threshold needs conversion and ``units`` is None.
    """
    criteria = params if isinstance(params, AkiCriteria) else AkiCriteria(params, units)
    series = sorted((r for r in creatinine if r.time <= now), key=lambda r: r.time)
    coded_times = [c.onset for c in coded_aki]
    coded_onset = max((x for x in coded_times if x is not None and x <= now), default=None)
    status = AkiStatus(coded=bool(coded_aki), present=bool(coded_aki), onset=coded_onset)
    episode = criteria.episode
    dialysis = dialysis_started is not None and now - episode <= dialysis_started <= now
    if series:
        p = criteria.in_unit(series[-1].unit)
        times = [r.time for r in series]
        first = bisect_left(times, now - p.episode)
        evals = [_evaluate(series, times, i, p) for i in range(first, len(series))]
        if not evals:  # nothing in the episode window: describe the newest value only
            evals = [_evaluate(series, times, len(series) - 1, p)]
        meeting = [e for e in evals if e.stage >= 1]
        peak = max(reversed(evals), key=lambda e: e.stage)  # highest stage, latest on ties
        nhs = max(reversed(evals), key=lambda e: e.nhs_stage)
        show = peak if meeting else evals[-1]
        status = AkiStatus(
            stage=peak.stage,
            present=status.present or bool(meeting),
            coded=status.coded,
            onset=coded_onset or (meeting[0].result.time if meeting else None),
            baseline=show.baseline,
            baseline_kind=show.baseline_kind,
            current=series[-1],
            ratio=show.ratio,
            rise_48h=show.rise,
            criteria=show.criteria,
            nhs_stage=nhs.nhs_stage,
            nhs_ratio=nhs.nhs_ratio,
            peak=peak.result if meeting else None,
            nhs_criteria=nhs.nhs_criteria,
            baseline_result=show.baseline_result,
            met=show.met,
            rise_from=show.rise_from,
            episode_peak=max(evals, key=lambda e: (e.result.value, e.result.time)).result,
        )
    if dialysis:
        status = replace(
            status,
            stage=3,
            present=True,
            onset=status.onset or dialysis_started,
            criteria=(*status.criteria, "dialysis"),
            met=(*status.met, "dialysis"),
            dialysis=dialysis_procedure,
        )
    return status
