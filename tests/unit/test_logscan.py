"""The suite-wide log scan finds what it looks for (it cannot pass vacuously)."""

from __future__ import annotations

from tests.hardening_ids import IDENTIFIERS, MRN
from tests.logscan import findings, sensitive_values


def test_the_scan_knows_the_suites_secrets_and_identifiers() -> None:
    values = sensitive_values(IDENTIFIERS)
    for expected in ("events-token-for-tests", "unit-test-secret", "MRN1001", "99887766",
                     "Testpatient", MRN):  # fmt: skip
        assert expected in values
    assert len(values) > 20


def test_the_scan_reports_identifiers_tokens_and_jwts_only() -> None:
    values = sensitive_values(IDENTIFIERS)
    lines = [
        ("cds_service.events", "hl7 mllp control_id=MSG-1 type=ORU^R01 status=AA"),
        ("cds_service.events", "failed: PID|1||MRN1001^^^H^MR||Testpatient^Anna"),
        ("urllib3", "Authorization: Bearer events-token-for-tests"),
        ("cds_service.hooks.auth", "token eyJhbGciOiJFUzM4NCJ9.eyJpc3MiOiJodHRwczovL2VociJ9.sig"),
        ("cds_service.x", "MRN10011 is not MRN1001 as a word"),
    ]
    found = findings(lines, values)
    assert not any("control_id=MSG-1" in f for f in found)
    sources = [f.split(":")[0] for f in found]
    assert sources.count("cds_service.events") == 3  # MRN1001, Testpatient, Anna
    assert "urllib3" in sources and "cds_service.hooks.auth" in sources
    assert sum(1 for f in found if f.startswith("cds_service.x")) == 1  # the word, not the prefix
    assert all("MRN1001" not in f for f in found)  # the report masks what it found
