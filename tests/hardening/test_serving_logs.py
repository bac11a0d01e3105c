"""Under gunicorn (``cds-service serve``, CDS_AUTH=jwt) the service's log lines reach the log:
JWT rejection reasons and HL7 outcomes, and never a token, a secret or an identifier."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from cds_service.store import migrate
from tests.conftest import COLLECTOR
from tests.hardening.support import PATIENT_VIEW, oru
from tests.hardening_ids import EVENTS_TOKEN, FAMILY, MRN, SECRET

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ISSUER = "https://ehr.hardening.example"


@dataclass
class Served:
    port: int
    log: Path
    trusted: ec.EllipticCurvePrivateKey


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def exchange(port: int, data: bytes) -> bytes:
    """One request on a new connection; the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def post(path: str, body: bytes, kind: str, authorization: str) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {kind}\r\n"
            f"Authorization: {authorization}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")  # fmt: skip
    return head.encode() + body


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``cds-service serve`` with CDS_AUTH=jwt (one trusted ES384 key) and an events token."""
    tmp = tmp_path_factory.mktemp("serving-logs")
    url = f"sqlite:///{tmp / 'cds.db'}"
    migrate(url)
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="ES384", use="sig")
    (tmp / "issuers.json").write_text(json.dumps({ISSUER: {"keys": [jwk]}}))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(CDS_DATABASE_URL=url, CDS_AUTH="jwt", CDS_SECRET=SECRET, CDS_HTTP_PORT=str(port),
               CDS_TRUSTED_ISSUERS=str(tmp / "issuers.json"), CDS_EVENTS_TOKEN=EVENTS_TOKEN,
               PROMETHEUS_MULTIPROC_DIR=str(tmp / "metrics"))  # fmt: skip
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cds_service.cli", "serve", "--workers", "1", "--threads", "2"],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                if b" 200 " in exchange(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"):
                    break
            except OSError:
                time.sleep(0.2)
        yield Served(port, log, key)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        COLLECTOR.scan_file(log)


def token(key: ec.EllipticCurvePrivateKey, port: int) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "client", "aud": f"http://127.0.0.1{PATIENT_VIEW}",
              "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}  # fmt: skip
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": "k1", "typ": "JWT"})


def wait_for_log(log: Path, text: str) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        content = log.read_text("utf-8", "replace")
        if text in content:
            return content
        time.sleep(0.1)
    return log.read_text("utf-8", "replace")


def test_jwt_rejection_reason_is_logged_without_the_token(served: Served) -> None:
    stranger = ec.generate_private_key(ec.SECP384R1())  # right kid, wrong key: bad signature
    bad = token(stranger, served.port)
    answer = exchange(served.port, post(PATIENT_VIEW, b"{}", "application/json", f"Bearer {bad}"))
    assert answer.startswith(b"HTTP/1.1 401")
    content = wait_for_log(served.log, "CDS client JWT rejected: bad signature")
    assert "CDS client JWT rejected: bad signature" in content
    assert bad not in content and bad.split(".")[1] not in content


def test_hl7_outcome_is_logged_without_identifiers_or_token(served: Served) -> None:
    wrong = exchange(served.port, post("/hl7v2", oru("LOG-1"), "application/hl7-v2", "Bearer nope"))
    assert wrong.startswith(b"HTTP/1.1 401")
    answer = exchange(served.port, post("/hl7v2", oru("LOG-1"), "application/hl7-v2", f"Bearer {EVENTS_TOKEN}"))
    assert answer.startswith(b"HTTP/1.1 200") and b"MSA|AA|LOG-1" in answer
    content = wait_for_log(served.log, "control_id=LOG-1")
    assert "hl7 http control_id=LOG-1 type=ORU^R01" in content
    for secret in (MRN, FAMILY, EVENTS_TOKEN, SECRET):
        assert secret not in content
