"""eGFR computed from serum creatinine: CKD-EPI 2021, race-free (evidence.md §1).

Inker LA et al. New creatinine- and cystatin C-based equations to estimate GFR without
race. N Engl J Med 2021;385:1737-49. Every coefficient comes from ``mappings/egfr.yaml``.
"""

from __future__ import annotations

from typing import Any

FEMALE, MALE = "female", "male"


def ckd_epi_2021(scr_mg_dl: float, age_years: float, sex: str, params: dict[str, Any]) -> float:
    """eGFR (mL/min/1.73 m²) for one sex: 142 × min(Scr/κ,1)^α × max(Scr/κ,1)^−1.2 × 0.9938^age."""
    kappa = float(params["kappa"][sex])
    alpha = float(params["alpha"][sex])
    ratio = scr_mg_dl / kappa
    egfr: float = (
        float(params["constant"])
        * min(ratio, 1.0) ** alpha
        * max(ratio, 1.0) ** float(params["exponent_above"])
        * float(params["age_factor"]) ** age_years
    )
    if sex == FEMALE:
        egfr *= float(params["female_factor"])
    return egfr


def computed_egfr(
    scr_mg_dl: float, age_years: float, sex: str | None, params: dict[str, Any]
) -> float:
    """CKD-EPI 2021 for the patient's sex; with the sex unknown, the lower of both."""
    if sex in (FEMALE, MALE):
        return ckd_epi_2021(scr_mg_dl, age_years, sex, params)
    return min(ckd_epi_2021(scr_mg_dl, age_years, s, params) for s in (FEMALE, MALE))
