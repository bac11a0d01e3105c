"""Outbound advice: Communication (R4B), advisory ORU^R01, retries with backoff, MLLP delivery."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B.communication import Communication
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from sqlalchemy.orm import Session

from cds_service.config import Settings
from cds_service.events import outbound as ob
from cds_service.events.fhir_results import FHIR_PATIENT_SYSTEM
from cds_service.events.outbound_fhir import AdviceRefs, build_communication, recipient, subject_ref
from cds_service.events.outbound_hl7 import DeliveryError, build_oru, send_mllp
from cds_service.events.outbound_send import default_sender
from cds_service.store import Store
from cds_service.store.events_models import AdviceIssued, OutboxRow, Patient
from tests.unit.mllp_receiver import Receiver

T0 = datetime(2024, 5, 10, 9, 30, tzinfo=UTC)


def advice(indicator: str = "warning", **extra: Any) -> AdviceIssued:
    values: dict[str, Any] = dict(
        id=11, patient_id=1, rule_id="icu-admission-low", rules=["icu-admission-low"],
        trigger_key="result:5", trigger_result_id=None, direction="supplement", indicator=indicator,
        summary="Low magnesium in the ICU", detail={"detail": "**Mg 1.2 mg/dL** | recheck ^ replete"},
        evaluated_at=T0, created_at=T0, late=False, test=False, shadow=False, withdrawn=False,
    )  # fmt: skip
    values.update(extra)
    return AdviceIssued(**values)


def patient(system: str = FHIR_PATIENT_SYSTEM, value: str = "p1") -> Patient:
    return Patient(
        id=1, id_hash="h" * 64, id_system=system, id_value=value, created_at=T0, updated_at=T0
    )


@pytest.mark.parametrize(("indicator", "priority", "category"),
                         [("info", "routine", "notification"), ("warning", "urgent", "alert"),
                          ("critical", "stat", "alert")])  # fmt: skip
def test_communication_is_valid_r4b_with_priority(
    indicator: str, priority: str, category: str
) -> None:
    refs = AdviceRefs(about="Observation/mg1", orderer="Practitioner/dr1")
    body = build_communication(advice(indicator), {"reference": "Patient/p1"}, refs, "11-x", T0)
    Communication.model_validate(body)
    assert body["status"] == "completed" and body["priority"] == priority
    assert body["category"][0]["coding"][0]["code"] == category
    assert body["about"] == [{"reference": "Observation/mg1"}]
    assert body["recipient"] == [{"reference": "Practitioner/dr1"}]
    assert body["identifier"] == [{"system": "urn:magnesium-aki-cds:advice", "value": "11-x"}]
    assert body["payload"][0]["contentString"].startswith("Low magnesium in the ICU\n\n**Mg 1.2")
    pulled = build_communication(
        advice(), {"reference": "Patient/p1"}, AdviceRefs(), "11-x", T0, withdrawn=True
    )
    assert (
        pulled["status"] == "entered-in-error"
        and "about" not in pulled
        and "recipient" not in pulled
    )


def test_recipient_and_subject_references() -> None:
    xcn = recipient("1234567^Welby^Marcus^^^Dr^^^NPI")
    assert xcn == {"type": "Practitioner", "display": "Dr Marcus Welby",
                   "identifier": {"value": "1234567", "system": "http://hl7.org/fhir/sid/us-npi"}}  # fmt: skip
    assert recipient("") is None and recipient("^^") is None
    assert subject_ref(patient(), None) == {"reference": "Patient/p1"}
    by_id = subject_ref(patient("urn:oid:1.2.3", "MRN9"), None)
    assert by_id == {"type": "Patient", "identifier": {"system": "urn:oid:1.2.3", "value": "MRN9"}}


@pytest.mark.parametrize("withdrawn", [False, True])
def test_advisory_oru_parses_strictly_with_hl7apy(withdrawn: bool) -> None:
    er7 = build_oru(advice(), patient("urn:oid:1.2.840.1", "MRN|1"), "MGAKI3", T0,
                    orderer="1234567^Welby^Marcus^^^Dr^^^NPI", withdrawn=withdrawn)  # fmt: skip
    msg = parse_message(er7, find_groups=True, validation_level=VALIDATION_LEVEL.STRICT)
    assert msg.validate()
    order = msg.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION
    obx = [o.OBX for o in order.ORU_R01_OBSERVATION]
    assert {o.obx_11.to_er7() for o in obx} == {"D" if withdrawn else "F"}
    assert obx[0].obx_5.to_er7() == "Low magnesium in the ICU"
    assert order.OBR.obr_4.to_er7().startswith("MG-AKI-ADVICE^") and order.OBR.obr_25.to_er7() == (
        "C" if withdrawn else "F"
    )
    assert msg.msh.msh_10.to_er7() == "MGAKI3"
    assert (
        msg.ORU_R01_PATIENT_RESULT.ORU_R01_PATIENT.PID.pid_3.to_er7()
        == r"MRN\F\1^^^&1.2.840.1&ISO^MR"
    )


def test_backoff_doubles_up_to_an_hour() -> None:
    assert [ob.backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert ob.backoff(20) == timedelta(hours=1)


def seed(store: Store, channels: tuple[str, ...] = ("fhir",), **flags: Any) -> list[int]:
    """A patient, one advice and one pending outbox row per channel; the row ids."""
    with Session(store.engine) as session, session.begin():
        pat = patient()
        pat.id = None  # type: ignore[assignment]
        session.add(pat)
        session.flush()
        adv = advice(**flags)
        adv.id, adv.patient_id = None, pat.id  # type: ignore[assignment]
        session.add(adv)
        session.flush()
        rows = [OutboxRow(advice_id=adv.id, channel=c, kind="advice", status="pending", attempts=0,
                          next_attempt_at=T0, created_at=T0, updated_at=T0) for c in channels]  # fmt: skip
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]


def outbox_rows(store: Store) -> list[OutboxRow]:
    with Session(store.engine) as session:
        return list(session.query(OutboxRow).order_by(OutboxRow.id))


def test_retry_bookkeeping_with_a_fake_clock(store: Store) -> None:
    seed(store)
    answers = ["FHIR: timeout", "FHIR: FHIR server error (HTTP 503)", None]
    sender = lambda session, row, now: answers.pop(0)  # noqa: E731
    settings = Settings()
    with Session(store.engine) as session:
        assert ob.deliver_pending(session, settings, T0, sender=sender).counts == {"pending": 1}
        row = outbox_rows(store)[0]
        assert (row.attempts, row.next_attempt_at, row.last_error) == (
            1,
            T0 + timedelta(seconds=30),
            "FHIR: timeout",
        )
        assert (
            ob.deliver_pending(session, settings, T0 + timedelta(seconds=10), sender=sender).counts
            == {}
        )
        ob.deliver_pending(session, settings, T0 + timedelta(seconds=30), sender=sender)
        assert outbox_rows(store)[0].next_attempt_at == T0 + timedelta(seconds=90)
        assert ob.deliver_pending(
            session, settings, T0 + timedelta(minutes=5), sender=sender
        ).counts == {"sent": 1}
    row = outbox_rows(store)[0]
    assert (row.status, row.attempts, row.last_error) == ("sent", 3, None)


def test_gives_up_after_max_attempts(store: Store) -> None:
    seed(store)
    now = T0
    with Session(store.engine) as session:
        for _ in range(ob.MAX_ATTEMPTS):
            ob.deliver_pending(session, Settings(), now, sender=lambda s, r, n: "down")
            now += timedelta(hours=2)
    row = outbox_rows(store)[0]
    assert (row.status, row.attempts) == ("failed", ob.MAX_ATTEMPTS)


@pytest.mark.parametrize(("flags", "settings", "status"), [
    ({"shadow": True}, {}, "shadow"), ({}, {"CDS_SHADOW": "1"}, "shadow"),
    ({"late": True}, {}, "suppressed"), ({"test": True}, {}, "suppressed"),
    ({"withdrawn": True}, {}, "cancelled"),
])  # fmt: skip
def test_rows_that_must_not_go_out(
    store: Store, flags: dict[str, Any], settings: dict[str, str], status: str
) -> None:
    seed(store, **flags)
    with Session(store.engine) as session:
        ob.deliver_pending(
            session, Settings.from_mapping(settings), T0, sender=lambda s, r, n: pytest.fail("sent")
        )
    assert outbox_rows(store)[0].status == status


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rcv = Receiver(["AA", "AE"])
    yield rcv
    rcv.stop()


def test_send_mllp_waits_for_the_ack(receiver: Receiver) -> None:
    er7 = build_oru(advice(), patient(), "MGAKI1", T0)
    assert send_mllp(f"127.0.0.1:{receiver.port}", er7, "MGAKI1") == "AA"
    with pytest.raises(DeliveryError, match="ACK AE"):
        send_mllp(f"127.0.0.1:{receiver.port}", er7, "MGAKI1")
    with pytest.raises(DeliveryError):
        send_mllp("127.0.0.1:1", er7, "MGAKI1", timeout=1)


def test_hl7_channel_retries_after_ae_then_sends(store: Store) -> None:
    rcv = Receiver(["AE", "AA"])
    try:
        [row_id] = seed(store, channels=("hl7",))
        settings = Settings.from_mapping(
            {"CDS_HL7_OUTBOUND": f"127.0.0.1:{rcv.port}", "CDS_OUTBOUND": "hl7"}
        )
        with Session(store.engine) as session:
            first = ob.deliver_pending(session, settings, T0, sender=default_sender(settings))
            assert (
                first.counts == {"pending": 1} and outbox_rows(store)[0].last_error == "HL7: ACK AE"
            )
            later = ob.deliver_pending(
                session, settings, T0 + timedelta(minutes=1), sender=default_sender(settings)
            )
            assert later.counts == {"sent": 1}
        controls = [m.split("\r", 1)[0].split("|")[9] for m in rcv.messages]
        assert controls == [f"MGAKI{row_id}"] * 2  # a retry is the same message again
    finally:
        rcv.stop()
