"""Send one outbox row on its channel: what the delivery worker calls for each due row.

A ``Sender`` returns None when the destination accepted the row, else a short error text
(no patient identifier, no token) that is stored as ``last_error`` and retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import requests
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from cds_service.config import Settings
from cds_service.events.fhir_access import fhir_writer
from cds_service.events.outbound_fhir import AdviceRefs, deliver_communication
from cds_service.events.outbound_hl7 import DeliveryError, build_oru, send_mllp
from cds_service.events.outbound_queue import WITHDRAWAL
from cds_service.hooks.fhir_client import FhirUnavailable
from cds_service.store.events_models import AdviceIssued, LabResultRow, OutboxRow, Patient
from cds_service.store.subscription_models import FhirResourceLink

log = logging.getLogger("cds_service.events.outbound")
Sender = Callable[[Session, OutboxRow, datetime], str | None]


def advice_refs(session: Session, advice: AdviceIssued) -> AdviceRefs:
    """The triggering Observation on the FHIR server and the ordering practitioner, if known."""
    if advice.trigger_result_id is None:
        return AdviceRefs()
    result = session.get(LabResultRow, advice.trigger_result_id)
    link = session.scalar(
        select(FhirResourceLink.resource).where(
            FhirResourceLink.lab_result_id == advice.trigger_result_id
        )
    )
    return AdviceRefs(about=link, orderer=result.orderer if result is not None else "")


def control_id(row: OutboxRow) -> str:
    """MSH-10 of the advisory message of one outbox row (the same on every retry)."""
    return f"MGAKI{row.id}"


def default_sender(settings: Settings, http: requests.Session | None = None) -> Sender:
    """A sender for the configured channels (``fhir``: CDS_FHIR_BASE, ``hl7``: CDS_HL7_OUTBOUND)."""
    session_http = http or requests.Session()

    def send(session: Session, row: OutboxRow, now: datetime) -> str | None:
        advice = session.get(AdviceIssued, row.advice_id)
        patient = session.get(Patient, advice.patient_id) if advice is not None else None
        if advice is None or patient is None:
            return "advice or patient missing"
        refs = advice_refs(session, advice)
        withdrawn = row.kind == WITHDRAWAL
        try:
            if row.channel == "fhir":
                client = fhir_writer(settings, session_http)
                deliver_communication(client, advice, patient, refs, now, withdrawn=withdrawn)
                return None
            if row.channel == "hl7":
                if not settings.hl7_outbound:
                    return "CDS_HL7_OUTBOUND is not configured"
                message = build_oru(
                    advice, patient, control_id(row), now, orderer=refs.orderer, withdrawn=withdrawn
                )
                send_mllp(settings.hl7_outbound, message, control_id(row))
                return None
        except FhirUnavailable as exc:
            return f"FHIR: {exc}"
        except DeliveryError as exc:
            return f"HL7: {exc}"
        except (ValidationError, ValueError) as exc:
            log.error("outbox row %s could not be built: %s", row.id, type(exc).__name__)
            return f"invalid resource: {type(exc).__name__}"
        return f"unknown channel {row.channel!r}"

    return send
