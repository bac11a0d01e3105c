"""CDS Hooks against a real gunicorn (``cds-service serve``, 2 gthread workers) over a socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from cds_service.store import migrate
from tests.integration.hooks_support import (
    SERVICE,
    check_response,
    medication_suggestions,
    positive_control,
    spec_example,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("live")
    url = f"sqlite:///{folder / 'cds.db'}"
    migrate(url)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(CDS_DATABASE_URL=url, CDS_AUTH="off", CDS_SECRET="live", CDS_HTTP_PORT=str(port),
               CDS_MAX_BODY_BYTES="200000", PROMETHEUS_MULTIPROC_DIR=str(folder / "metrics"))  # fmt: skip
    log = (folder / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cds_service.cli", "serve", "--workers", "2", "--threads", "4"],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60  # a loaded CI machine: gunicorn + 2 workers can be slow to boot
    while True:
        try:
            if requests.get(root + "/healthz", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"gunicorn did not start:\n{(folder / 'gunicorn.log').read_text()[-2000:]}")
        time.sleep(0.1)
    yield root
    proc.terminate()
    proc.wait(timeout=15)
    log.close()
    assert "Traceback" not in (folder / "gunicorn.log").read_text()


def test_live_discovery(base: str) -> None:
    resp = requests.get(base + "/cds-services", timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json")
    assert len(resp.json()["services"]) == 4


def test_live_patient_view_card(base: str) -> None:
    resp = requests.post(base + SERVICE + "patient-view", json=positive_control(), timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json")
    check_response(resp.json())
    assert medication_suggestions(resp.json())


def test_live_zh_cn(base: str) -> None:
    resp = requests.post(base + SERVICE + "patient-view", json=positive_control(),
                         headers={"Accept-Language": "zh-CN"}, timeout=5)  # fmt: skip
    assert any("\u4e00" <= ch <= "\u9fff" for ch in resp.json()["cards"][0]["summary"])


def test_live_errors(base: str) -> None:
    url = base + SERVICE + "patient-view"
    assert requests.post(url, json=spec_example("02_patient-view_request.json"), timeout=5).status_code == 412
    assert requests.post(url, data=b"x" * 300_000, headers={"Content-Type": "application/json"},
                         timeout=5).status_code == 413  # fmt: skip
    assert requests.post(url, data="{}", headers={"Content-Type": "text/plain"}, timeout=5).status_code == 415
    assert requests.get(url, timeout=5).status_code == 405
    assert requests.post(base + "/cds-services/nope", json={}, timeout=5).status_code == 404
    bad = requests.post(url, data="{", headers={"Content-Type": "application/json"}, timeout=5)
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"


def test_live_latency_under_500_ms(base: str) -> None:
    url = base + SERVICE + "patient-view"
    body = positive_control()
    with requests.Session() as session:
        session.post(url, json=body, timeout=5)
        times = []
        for _ in range(10):
            started = time.perf_counter()
            assert session.post(url, json=body, timeout=5).status_code == 200
            times.append(time.perf_counter() - started)
    assert sorted(times)[len(times) // 2] < 0.5


def test_live_concurrent_calls_and_metrics_across_workers(base: str) -> None:
    url = base + SERVICE + "order-sign"

    def call(_: int) -> int:
        return requests.post(url, json=positive_control("order-sign"), timeout=10).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(call, range(24))) == {200}
    text = requests.get(base + "/metrics", timeout=5).text
    line = next(x for x in text.splitlines() if x.startswith("cds_http_requests_total{")
                and 'service="magnesium-aki-order-sign"' in x and 'status="200"' in x)  # fmt: skip
    assert float(line.split()[-1]) >= 24
    assert requests.get(base + "/readyz", timeout=5).json()["status"] == "ready"
