"""Benchmark: normal CDS Hooks calls while slow clients hold connections open.

Starts ``cds-service serve`` (the product's serving design, default workers and threads,
``CDS_AUTH=off``, a temporary SQLite database) and, for ``--duration`` seconds:

- ``--slow`` connections (default 50) that each send a request line and then one header
  line every ``--interval`` seconds (2 s), never finishing the head (``--mode header``), or a
  complete head announcing a 64 KiB body that then arrives one byte per interval
  (``--mode body``); a connection the server closes is reopened at once;
- one normal client that sends a small patient-view request (a Patient, two magnesium
  Observations) every 0.25 s on a fresh connection, 5 s timeout.

Reports the share of normal requests answered (200) within 1 s (acceptance: >= 95 %) and
their p50/p99. The load generator runs on the same machine. Run: ``make bench-slow``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_http import Server, free_port  # noqa: E402

PATH = "/cds-services/magnesium-aki-patient-view"


def small_request(n: int) -> bytes:
    """A patient-view call with a Patient and two serum Mg results."""
    def mg(i: int, value: float, when: str) -> dict[str, object]:
        return {"resourceType": "Observation", "id": f"mg{i}", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "19123-9"}]},
                "subject": {"reference": "Patient/p1"}, "effectiveDateTime": when,
                "valueQuantity": {"value": value, "unit": "mg/dL"}}  # fmt: skip

    body = {
        "hook": "patient-view", "hookInstance": f"00000000-0000-4000-8000-{n:012d}",
        "context": {"userId": "Practitioner/1", "patientId": "p1"},
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": "p1", "birthDate": "1960-01-01"},
            "magnesium": {"resourceType": "Bundle", "type": "searchset", "entry": [
                {"resource": mg(1, 1.2, "2026-01-02T08:00:00Z")},
                {"resource": mg(2, 1.9, "2026-01-01T08:00:00Z")}]},
        },
    }  # fmt: skip
    return json.dumps(body).encode()


async def slow_connection(port: int, mode: str, interval: float, stop: float, opened: list[int]) -> None:
    """One slow client, reopened whenever the server closes it, until ``stop``."""
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        opened[0] += 1
        try:
            writer.write(f"POST {PATH} HTTP/1.1\r\nHost: x\r\n".encode())
            if mode == "body":
                writer.write(b"Content-Type: application/json\r\nContent-Length: 65536\r\n\r\n")
            i = 0
            while time.monotonic() < stop and not reader.at_eof():
                await asyncio.sleep(interval)
                writer.write(b"{" if mode == "body" else f"X-Slow-{i}: {i}\r\n".encode())
                await writer.drain()
                i += 1
        except OSError:
            pass
        finally:
            writer.close()


async def normal_client(port: int, stop: float, results: list[tuple[int, float]]) -> None:
    """A small request every 0.25 s on a new connection: (status, seconds) each."""
    n = 0
    while time.monotonic() < stop:
        n += 1
        body = small_request(n)
        t0 = time.monotonic()
        status = 0
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            writer.write(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)  # fmt: skip
            raw = await asyncio.wait_for(reader.read(), 5)
            status = int(raw[9:12]) if raw[:5] == b"HTTP/" else 0
            writer.close()
        except (OSError, TimeoutError, ValueError):
            status = 0
        results.append((status, time.monotonic() - t0))
        await asyncio.sleep(max(0.0, 0.25 - (time.monotonic() - t0)))


async def scenario(port: int, slow: int, mode: str, interval: float, duration: float) -> dict[str, float]:
    """Run the slow connections and the normal client together; the normal client's figures."""
    stop = time.monotonic() + duration
    opened = [0]
    results: list[tuple[int, float]] = []
    slow_tasks = [asyncio.create_task(slow_connection(port, mode, interval, stop, opened)) for _ in range(slow)]
    await asyncio.sleep(min(3.0, duration / 4))  # the slow clients settle in first
    await normal_client(port, stop, results)
    await asyncio.gather(*slow_tasks)
    times = sorted(t for _, t in results)
    ok_fast = sum(1 for s, t in results if s == 200 and t <= 1.0)
    return {
        "requests": len(results),
        "within_1s": ok_fast / len(results) if results else 0.0,
        "p50_ms": statistics.median(times) * 1000 if times else float("nan"),
        "p99_ms": (statistics.quantiles(times, n=100, method="inclusive")[98] * 1000
                   if len(times) > 1 else float("nan")),
        "slow_connections_opened": opened[0],
    }


def start_product(folder: Path, extra_env: dict[str, str]) -> Server:
    """``cds-service serve`` with its defaults on a free port and a migrated SQLite file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(CDS_DATABASE_URL=f"sqlite:///{folder / 'cds.db'}", CDS_AUTH="off", CDS_SECRET="bench",
               PROMETHEUS_MULTIPROC_DIR=str(folder / "metrics"), **extra_env)  # fmt: skip
    subprocess.run([sys.executable, "-m", "cds_service.cli", "migrate"], env=env, cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    port = free_port()
    env["CDS_HTTP_PORT"] = str(port)
    log = folder / "product.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cds_service.cli", "serve"], env=env, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    server = Server("product", port, proc, log)
    server.wait_ready()
    return server


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slow", type=int, default=50)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--mode", choices=("header", "body", "both"), default="both")
    ap.add_argument("--gunicorn-args", default="", help="extra gunicorn settings (GUNICORN_CMD_ARGS)")
    args = ap.parse_args()
    extra = {"GUNICORN_CMD_ARGS": args.gunicorn_args} if args.gunicorn_args else {}
    modes = ("header", "body") if args.mode == "both" else (args.mode,)
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-slow-") as tmp:
        server = start_product(Path(tmp), extra)
        try:
            for mode in modes:
                r = asyncio.run(scenario(server.port, args.slow, mode, args.interval, args.duration))
                verdict = "met" if r["within_1s"] >= 0.95 else "NOT met"
                failed |= verdict != "met"
                print(f"slow {'headers' if mode == 'header' else 'bodies'}: {args.slow} connections, one {'header line' if mode == 'header' else 'body byte'} "
                      f"every {args.interval:g} s ({r['slow_connections_opened']} opened in {args.duration:g} s); "
                      f"normal requests: {r['requests']}, answered 200 within 1 s: {r['within_1s']:.0%} "
                      f"(target >= 95 %: {verdict}), p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms")  # fmt: skip
        finally:
            server.stop()
        if "Traceback" in server.log.read_text():
            print(f"warning: the server logged a traceback:\n{server.log.read_text()[-2000:]}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
