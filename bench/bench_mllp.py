"""HL7 v2 over MLLP: throughput and ACK latency, and the full MIMIC-IV demo replay.

Starts ``cds-service mllp`` as a child process on a fresh SQLite database (the default
deployment) and drives it with an asyncio client:

1. mixed stream: 70 % ORU^R01 without Mg/creatinine (electrolytes only: acknowledged after
   the cheap scan), 30 % with serum Mg and creatinine (parsed, stored, evaluated);
2. Mg-bearing messages alone;
   each sent one at a time per connection (send, wait for the ACK: how interface engines
   send), on 1 and on 4 connections; ACK latency p50/p99 is client-measured;
3. the 100-patient MIMIC-IV demo replay (bench/make_replay.py), pipelined on one
   connection: every ACK must be AA; advice issued per lead rule is read from the store.

``--burden`` runs only the replay, with ``CDS_OUTBOUND=hl7`` and an advisory sink
(bench/advisory_sink.py), and reports the alert burden of pushed advice (bench/burden.py,
evidence.md §8) into docs/benchmarks.md.

Usage: ``python bench/bench_mllp.py [--quick] [--no-replay] [--burden [--patients N] [--no-docs]]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.advisory_sink import AdvisorySink  # noqa: E402
from bench.burden import burden_report, markdown  # noqa: E402
from bench.make_replay import messages, mg_counts  # noqa: E402
from cds_service.events.mllp_frames import FrameReader, TooLarge, frame  # noqa: E402

SITE = ROOT / "mappings" / "site" / "example.yaml"
HEAD = "MSH|^~\\&|BENCH|LAB|CDS|HOSP|20240510093000||ORU^R01^ORU_R01|{cid}|P|2.5.1\r"
PID = "PID|1||B{pat:05d}^^^BENCH^MR||Bench^Patient||19600101|M\rOBR|1|||CMP^Panel^L|||{ts}\r"
ELECTROLYTES = "".join(
    f"OBX|{i}|NM|{code}^{name}^LN||{value}|mmol/L|||||F|||{{ts}}\r"
    for i, (code, name, value) in enumerate(
        [("2951-2", "Sodium", "139"), ("2823-3", "Potassium", "4.1"), ("2075-0", "Chloride", "101"),
         ("2028-9", "CO2", "24"), ("2345-7", "Glucose", "5.4")], 1)
)  # fmt: skip
MG = (
    "OBX|6|NM|19123-9^Magnesium^LN||{mg}|mg/dL|1.7-2.5||||F|||{ts}\r"
    "OBX|7|NM|2160-0^Creatinine^LN||{cr}|mg/dL|0.6-1.2||||F|||{ts}\r"
)


def oru(n: int, with_mg: bool) -> bytes:
    """Message n: electrolytes, plus Mg and creatinine when ``with_mg``."""
    ts = f"202405{1 + n // 1440 % 28:02d}{n // 60 % 24:02d}{n % 60:02d}00"
    text = HEAD.format(cid=f"B-{n}") + PID.format(pat=n % 400, ts=ts) + ELECTROLYTES.format(ts=ts)
    if with_mg:
        text += MG.format(mg=f"{1.2 + (n % 15) / 10:.1f}", cr=f"{0.7 + (n % 9) / 10:.1f}", ts=ts)
    return text.encode()


class Listener:
    """``cds-service mllp`` on a fresh database, as a child process (``extra``: more settings)."""

    def __init__(self, db: Path, **extra: str) -> None:
        self.url = f"sqlite:///{db}"
        env = {**os.environ, "CDS_DATABASE_URL": self.url, "CDS_MLLP_PORT": "0",
               "CDS_SITE_MAPPINGS": str(SITE), "CDS_SECRET": "bench", "CDS_OUTBOUND": "", **extra}  # fmt: skip
        self.proc = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "cds-service"), "mllp"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        match = re.search(r":(\d+)$", line.strip())
        if not match:
            raise RuntimeError(f"listener did not start: {line!r}")
        self.port = int(match.group(1))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


async def _one_by_one(port: int, msgs: list[bytes], latencies: list[float]) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    frames, acks = FrameReader(1 << 20), []
    for m in msgs:
        started = time.perf_counter()
        writer.write(frame(m))
        got: list[bytes | TooLarge] = []
        while not got:
            got = frames.feed(await reader.read(65536))
        latencies.append(time.perf_counter() - started)
        acks += [a for a in got if isinstance(a, bytes)]
    writer.close()
    return acks


def run_stream(port: int, msgs: list[bytes], connections: int) -> dict[str, float]:
    """Send ``msgs`` split over ``connections``, each one at a time; rate and latency."""
    latencies: list[float] = []

    async def main() -> list[bytes]:
        parts = [msgs[i::connections] for i in range(connections)]
        done = await asyncio.gather(*(_one_by_one(port, p, latencies) for p in parts))
        return [a for acks in done for a in acks]

    started = time.perf_counter()
    acks = asyncio.run(main())
    elapsed = time.perf_counter() - started
    codes = Counter(a.split(b"\r")[1].split(b"|")[1] for a in acks)
    assert codes == {b"AA": len(msgs)}, codes
    q = statistics.quantiles(latencies, n=100)
    return {"n": len(msgs), "rate": len(msgs) / elapsed, "p50": q[49] * 1000, "p99": q[98] * 1000}


async def _pipelined(port: int, msgs: list[bytes]) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(frame(m) for m in msgs))
    frames, acks = FrameReader(1 << 20), []
    while len(acks) < len(msgs):
        data = await asyncio.wait_for(reader.read(65536), 120)
        if not data:
            break
        acks += [a for a in frames.feed(data) if isinstance(a, bytes)]
    writer.close()
    return acks


def run_replay(listener: Listener, patients: int | None) -> dict[str, object]:
    """The MIMIC replay, pipelined; checks and counts from the store."""
    from sqlalchemy import create_engine, func, select

    from cds_service.store.events_models import AdviceIssued, LabResultRow, Patient

    msgs = messages(patients)
    started = time.perf_counter()
    acks = asyncio.run(_pipelined(listener.port, msgs))
    elapsed = time.perf_counter() - started
    codes = Counter(a.split(b"\r")[1].split(b"|")[1].decode() for a in acks)
    engine = create_engine(listener.url)
    with engine.connect() as conn:
        stored = dict(conn.execute(
            select(Patient.id_value, func.count(LabResultRow.id))
            .join(LabResultRow, LabResultRow.patient_id == Patient.id)
            .where(LabResultRow.code == "19123-9").group_by(Patient.id_value)).all())  # fmt: skip
        advice = dict(conn.execute(
            select(AdviceIssued.rule_id, func.count()).group_by(AdviceIssued.rule_id)).all())  # fmt: skip
        patients_advised = conn.scalar(select(func.count(func.distinct(AdviceIssued.patient_id))))
    engine.dispose()
    return {"messages": len(msgs), "seconds": elapsed, "rate": len(msgs) / elapsed, "acks": codes,
            "mg_expected": sum(mg_counts(patients).values()), "mg_stored": sum(stored.values()),
            "mg_match": stored == mg_counts(patients), "advice": advice,
            "patients_advised": patients_advised}  # fmt: skip


def _delivered(url: str, sink: AdvisorySink, limit: float = 900.0) -> int:
    """Wait until the listener's outbox has nothing left to send; the rows sent."""
    from sqlalchemy import create_engine, func, select

    from cds_service.store.events_models import OutboxRow

    engine = create_engine(url)
    deadline = time.monotonic() + limit
    try:
        while True:
            with engine.connect() as conn:
                by_status = dict(conn.execute(
                    select(OutboxRow.status, func.count()).group_by(OutboxRow.status)).all())  # fmt: skip
            if not by_status.get("pending") and not by_status.get("sending"):
                return int(by_status.get("sent", 0))
            if time.monotonic() > deadline:
                raise RuntimeError(f"outbox not delivered in {limit:.0f} s: {by_status}")
            time.sleep(1.0)
    finally:
        engine.dispose()


def run_burden(folder: Path, patients: int | None, docs: bool) -> str:
    """The MIMIC replay through MLLP with an advisory sink; the burden report (markdown)."""
    from sqlalchemy import create_engine

    from cds_service.rules.loader import load_knowledge

    sink = AdvisorySink()
    listener = Listener(folder / "burden.db", CDS_OUTBOUND="hl7",
                        CDS_HL7_OUTBOUND=f"127.0.0.1:{sink.port}")  # fmt: skip
    msgs = messages(patients)
    try:
        started = time.perf_counter()
        acks = asyncio.run(_pipelined(listener.port, msgs))
        elapsed = time.perf_counter() - started
        codes = Counter(a.split(b"\r")[1].split(b"|")[1].decode() for a in acks)
        assert codes == {"AA": len(msgs)}, codes
        sent = _delivered(listener.url, sink)
    finally:
        listener.stop()
        sink.stop()
    engine = create_engine(listener.url)
    report = burden_report(engine, load_knowledge(ROOT / "mappings", SITE))
    engine.dispose()
    text = (f"Measured {date.today().isoformat()} by `python bench/bench_mllp.py --burden`: the MIMIC-IV "
            f"demo replay ({len(msgs):,} messages, {patients or 100} patients) pipelined on one MLLP "
            f"connection to `cds-service mllp` with `CDS_OUTBOUND=hl7` and an advisory sink as "
            f"`CDS_HL7_OUTBOUND` ({elapsed:.0f} s; {sent:,} advisories delivered, "
            f"{sink.withdrawals} withdrawals).\n\n" + markdown(report, sink.received))  # fmt: skip
    if docs:
        write_block(ROOT / "docs" / "benchmarks.md", "burden", text)
    return text


def write_block(path: Path, name: str, text: str) -> None:
    """Replace the generated block ``name`` of a markdown file."""
    begin, end = f"<!-- {name}: generated, begin -->", f"<!-- {name}: generated, end -->"
    doc = path.read_text(encoding="utf-8")
    if begin not in doc or end not in doc:
        raise SystemExit(f"{path}: no {begin} ... {end} block")
    head, rest = doc.split(begin, 1)
    path.write_text(f"{head}{begin}\n{text}\n{end}{rest.split(end, 1)[1]}", encoding="utf-8")


def main() -> None:
    """Run the benchmarks and print a markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, 5-patient replay")
    parser.add_argument("--no-replay", action="store_true")
    parser.add_argument("--burden", action="store_true",
                        help="only the replay with an advisory sink: pushed advice per 100 "
                             "patient-days, by rule, written to docs/benchmarks.md")  # fmt: skip
    parser.add_argument("--patients", type=int, help="--burden: the first N patients (default 100)")
    parser.add_argument("--no-docs", action="store_true", help="--burden: leave docs/ alone")
    args = parser.parse_args()
    if args.burden:
        with tempfile.TemporaryDirectory() as tmp:
            print(run_burden(Path(tmp), args.patients, not args.no_docs and not args.patients))
        return
    n = 300 if args.quick else 1500
    mixed = [oru(i, i % 10 < 3) for i in range(n)]
    mg_only = [oru(n + i, True) for i in range(n // 2)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, msgs in (("mixed 70/30", mixed), ("Mg-bearing only", mg_only)):
            for connections in (1, 4):
                listener = Listener(Path(tmp) / f"{label[:3]}{connections}.db")
                try:
                    r = run_stream(listener.port, msgs, connections)
                finally:
                    listener.stop()
                rows.append(f"| {label} | {connections} | {r['n']:.0f} | {r['rate']:.0f} | "
                             f"{r['p50']:.1f} | {r['p99']:.1f} |")  # fmt: skip
        print("| stream | connections | messages | messages/s | ACK p50 ms | ACK p99 ms |")
        print("|---|---|---|---|---|---|")
        print("\n".join(rows))
        if args.no_replay:
            return
        listener = Listener(Path(tmp) / "replay.db")
        try:
            r = run_replay(listener, 5 if args.quick else None)
        finally:
            listener.stop()
        print(f"\nMIMIC replay: {r['messages']} messages in {r['seconds']:.1f} s "
              f"({r['rate']:.0f} messages/s, pipelined on one connection); ACKs {dict(r['acks'])}; "  # type: ignore[call-overload]
              f"serum Mg stored {r['mg_stored']} of {r['mg_expected']} (per patient equal: {r['mg_match']}); "
              f"{r['patients_advised']} patients with advice")  # fmt: skip
        print("\n| lead rule | advice issued |\n|---|---|")
        for rule, count in sorted(r["advice"].items(), key=lambda kv: (-kv[1], kv[0])):  # type: ignore[attr-defined]
            print(f"| `{rule}` | {count} |")


if __name__ == "__main__":
    main()
