"""Hostile inputs of the hardening suite: an ORU for the hardening patient, a hook call."""

from __future__ import annotations

import copy
from typing import Any

from tests.hardening_ids import FAMILY, GIVEN, MRN
from tests.integration.hooks_support import positive_control

PATIENT_VIEW = "/cds-services/magnesium-aki-patient-view"


def oru(control_id: str, mrn: str = MRN, mg: str = "1.2") -> bytes:
    """An ORU^R01 with a serum magnesium result for the hardening patient."""
    segments = [
        f"MSH|^~\\&|LIS|GENHOSP|CDS|GENHOSP|20240510093000||ORU^R01^ORU_R01|{control_id}|P|2.5.1",
        f"PID|1||{mrn}^^^GENHOSP^MR||{FAMILY}^{GIVEN}||19580312|F",
        "OBR|1|ORD77^CPOE|FIL77^LIS|80053^Metabolic panel^C4|||20240510080000",
        "OBX|1|NM|19123-9^Magnesium [Mass/volume] in Serum or Plasma^LN||"
        f"{mg}|mg/dL^milligram per deciliter^UCUM|1.7-2.5|L|||F|||20240510080000",
    ]
    return ("\r".join(segments) + "\r").encode()


def hook_request(**changes: Any) -> dict[str, Any]:
    """The patient-view positive control (a low-Mg card), with top-level members replaced."""
    body = copy.deepcopy(positive_control("patient-view"))
    body.update(changes)
    return body
