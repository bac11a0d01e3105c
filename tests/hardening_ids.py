"""Patient identifiers, names and tokens the hardening suite sends (the log scan looks for them)."""

from __future__ import annotations

MRN = "MRN777123"
FAMILY = "Doeberg"
GIVEN = "Janelle"
PATIENT_ID = "pat-hardening-4711"
EVENTS_TOKEN = "hardening-events-token-9f2c"
SECRET = "hardening-secret-51ab"
FHIR_ACCESS_TOKEN = "hardening-fhir-access-token-77"
IDENTIFIERS = frozenset({MRN, FAMILY, GIVEN, PATIENT_ID, EVENTS_TOKEN, SECRET, FHIR_ACCESS_TOKEN})
