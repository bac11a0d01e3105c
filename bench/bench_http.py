"""Benchmark: CDS Hooks patient-view over HTTP, the product side by side with a trivial endpoint.

Two gunicorn servers, same settings (``cds-service serve``'s command line: its worker class
``BufferedThreadWorker``, ``--workers 2 --threads 4``, ``cds_service.gunicorn_conf``), each on
its own port:

- the product (``cds-service serve``, ``CDS_AUTH=off``, a temporary migrated SQLite DB);
- ``bench/trivial_app.py``: parses the same JSON body and answers one fixed card.

Load: the 100-entry MIMIC-IV demo bundle of ``bench/bench_evaluate.py`` as a patient-view
prefetch, every key of the discovery templates filled as an EHR that honours ``_include``
does: patient; encounter (the ``encounterId`` search, its MICU Location included);
magnesium, creatinine, albumin, egfr, weight (newest first), conditions, procedures,
medications; and, empty for this finished stay, encounters (in progress), planned-procedures,
service-requests, administrations (search keys as searchset Bundles). Times are shifted by whole days so that "now" is about an hour
after the bundle's ``NOW``: the request gets the same advice as in bench_evaluate (a low-Mg
card whose MedicationRequest and ServiceRequest are built and validated per request).

The load generator is a closed loop of ``--clients`` keep-alive connections (asyncio, raw
HTTP/1.1, one process), each request with a fresh ``hookInstance``. A run opens the
connections ``RAMP`` (50 ms) apart, as a client pool grows under load, or (the "burst" run of
the product, skipped with ``--no-burst``) all in one instant, as wrk and many EHR pools do:
under plain gthread one worker then often took all 8 and left the other core idle. Then
``--warmup`` seconds, then ``--duration`` seconds measured. Each of ``--rounds`` rounds runs
the product staggered and burst back to back (order alternating), then the trivial app;
medians over rounds are reported, and the burst p99 is compared with the staggered p99 of the
same round. Latency is per request, send to last byte; CPU is read from /proc for the
measured part, with the busiest worker's share of it (0.5 = balanced). The load generator
runs on the same machine and shares its cores with the servers.

Prints a table; updates the generated part of the section "CDS Hooks over HTTP (gunicorn,
2 workers)" in docs/benchmarks.md (``--no-docs``: don't). ``--wrk``: also run wrk (if on
PATH) against both as a cross-check. Run: ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_evaluate import ENCOUNTER, NOW, build_bundle  # noqa: E402
from cds_service.serve import APP_FACTORY, WORKER_CLASS, gunicorn_argv  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## CDS Hooks over HTTP (gunicorn, 2 workers)"
BEGIN, END = "<!-- bench_http: generated, begin -->", "<!-- bench_http: generated, end -->"
PATH = "/cds-services/magnesium-aki-patient-view"
PLACEHOLDER = "00000000-0000-4000-8000-000000000000"  # hookInstance, rewritten per request
TARGET_RATIO, TARGET_P99_MS = 0.7, 50.0
RAMP = 0.05  # seconds between two clients' connections (a pool grows; not 8 in one instant)
WORKER = WORKER_CLASS.rsplit(".", 1)[-1]  # the serving worker class, as named in the report
BURST = "burst"  # the product again, every connection opened in the same instant
TARGET_BURST = 1.5  # burst p99 at most this many times the staggered p99
LABELS = {"product": "product (`cds-service serve`)", "trivial": "trivial (`bench/trivial_app.py`)",
          BURST: "product, connections opened in one instant"}  # fmt: skip
LOINC_KEYS = {"19123-9": "magnesium", "2160-0": "creatinine", "1751-7": "albumin",
              "62238-1": "egfr", "29463-7": "weight"}  # fmt: skip
_DT = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$")


# --- the request -----------------------------------------------------------------------------


def shift_times(node: Any, delta: timedelta) -> Any:
    """Every FHIR date/dateTime string in ``node`` moved by ``delta`` (whole days)."""
    if isinstance(node, dict):
        return {k: shift_times(v, delta) for k, v in node.items()}
    if isinstance(node, list):
        return [shift_times(v, delta) for v in node]
    if isinstance(node, str) and _DT.match(node):
        if len(node) == 10:
            return (date.fromisoformat(node) + delta).isoformat()
        if "T" in node and (node.endswith("Z") or "+" in node[10:] or "-" in node[10:]):
            return (datetime.fromisoformat(node) + delta).isoformat()
    return node


def _newest_first(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(entries, key=lambda e: str(e["resource"].get("effectiveDateTime", "")), reverse=True)


def _searchset(entries: list[dict[str, Any]]) -> dict[str, Any]:
    out = [{"fullUrl": f"https://ehr.example.org/fhir/{e['resource']['resourceType']}/{e['resource']['id']}",
            "resource": e["resource"], **({"search": e["search"]} if "search" in e else {})}
           for e in entries]  # fmt: skip
    return {"resourceType": "Bundle", "type": "searchset", "total": len(out), "entry": out}


def build_request(now: datetime) -> tuple[dict[str, Any], int]:
    """(patient-view request with the 100-resource prefetch, number of resources)."""
    entries = shift_times(build_bundle()["entry"], timedelta(days=(now - NOW - timedelta(hours=1)).days))
    groups: dict[str, list[dict[str, Any]]] = {k: [] for k in (*LOINC_KEYS.values(), "conditions",
                                                              "procedures", "medications")}  # fmt: skip
    patient = encounter = location = None
    for e in entries:
        res = e["resource"]
        kind = res["resourceType"]
        if kind == "Patient":
            patient = res
        elif kind == "Encounter":
            encounter = e
        elif kind == "Location":
            location = {**e, "search": {"mode": "include"}}
        elif kind == "Observation":
            code = next(c["code"] for c in res["code"]["coding"] if c.get("system") == "http://loinc.org")
            groups[LOINC_KEYS[code]].append(e)
        else:
            groups[{"Condition": "conditions", "Procedure": "procedures",
                    "MedicationRequest": "medications"}[kind]].append(e)  # fmt: skip
    assert patient is not None and encounter is not None and location is not None
    assert encounter["resource"]["id"] == ENCOUNTER
    prefetch: dict[str, Any] = {"patient": patient, "encounter": _searchset([encounter, location])}
    for key, group in groups.items():
        prefetch[key] = _searchset(_newest_first(group) if key in LOINC_KEYS.values() else group)
    for key in ("encounters", "planned-procedures", "service-requests", "administrations"):
        prefetch[key] = _searchset([])
    count = 3 + sum(len(g) for g in groups.values())
    request = {
        "hook": "patient-view",
        "hookInstance": PLACEHOLDER,
        "context": {"userId": "Practitioner/bench", "patientId": patient["id"],
                    "encounterId": encounter["resource"]["id"]},
        "prefetch": prefetch,
    }  # fmt: skip
    return request, count


# --- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise SystemExit(f"{self.name} did not start:\n{self.log.read_text()[-3000:]}")

    def cpu_by_pid(self) -> dict[int, float]:
        """User + system CPU seconds so far of the gunicorn master and each worker (/proc)."""
        pids = [self.proc.pid]
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            pids += [int(p) for p in children.split()]
        except OSError:
            return {}
        out = {}
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_servers(folder: Path, workers: int, threads: int, extra_args: str = "") -> tuple[Server, Server]:
    """The product (``cds-service serve``) and the trivial app, same gunicorn settings."""
    db = f"sqlite:///{folder / 'cds.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    if extra_args:  # gunicorn reads GUNICORN_CMD_ARGS: the same extra settings for both servers
        env["GUNICORN_CMD_ARGS"] = extra_args
    env.update(CDS_DATABASE_URL=db, CDS_AUTH="off", CDS_SECRET="bench",
               CDS_SITE_MAPPINGS=str(ROOT / "mappings" / "site" / "example.yaml"))  # as bench_evaluate
    subprocess.run([sys.executable, "-m", "cds_service.cli", "migrate"], env=env, cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    servers = []
    for name in ("product", "trivial"):
        port = free_port()
        log = folder / f"{name}.log"
        penv = {**env, "PROMETHEUS_MULTIPROC_DIR": str(folder / f"metrics-{name}"), "CDS_HTTP_PORT": str(port)}
        if name == "product":
            argv = [sys.executable, "-m", "cds_service.cli", "serve", "--workers", str(workers),
                    "--threads", str(threads)]  # fmt: skip
        else:
            argv = gunicorn_argv("127.0.0.1", port, workers, threads)
            assert argv[-1] == APP_FACTORY
            argv[-1:] = ["--pythonpath", str(ROOT / "bench"), "trivial_app:app"]
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env=penv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        servers.append(Server(name, port, proc, log))
    for s in servers:
        s.wait_ready()
    return servers[0], servers[1]


# --- load ------------------------------------------------------------------------------------


@dataclass
class Run:
    completed: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    server_cpu_s: float = float("nan")
    client_cpu_s: float = float("nan")
    busiest_worker: float = float("nan")  # the busiest worker's share of the workers' CPU

    @property
    def rps(self) -> float:
        return self.completed / self.seconds

    def pct(self, p: int) -> float:
        if len(self.latencies_ms) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[p - 1]


async def _client(port: int, head: bytes, body: bytes, seq: list[int], window: tuple[float, float],
                  lat: list[float], errors: list[int], delay: float) -> None:  # fmt: skip
    """One keep-alive connection, opened after ``delay`` s, in a closed loop until the window
    ends; requests sent inside the window are recorded. Reopened after ``Connection: close``,
    and after a dropped connection (counted as an error)."""
    marker = PLACEHOLDER.encode()
    writer = None
    measure_from, stop_at = window
    await asyncio.sleep(delay)
    try:
        while time.perf_counter() < stop_at:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            seq[0] += 1
            payload = head + body.replace(marker, f"00000000-0000-4000-8000-{seq[0]:012d}".encode(), 1)
            t0 = time.perf_counter()
            recorded = t0 >= measure_from
            try:
                writer.write(payload)
                raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", raw)
                if length is None:
                    raise RuntimeError(f"no Content-Length in {raw[:200]!r}")
                await asyncio.wait_for(reader.readexactly(int(length.group(1))), 30)
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                errors[0] += recorded
                writer.close()
                writer = None
                continue
            if recorded:
                lat.append((time.perf_counter() - t0) * 1000)
                errors[0] += raw[9:12] != b"200"
            if re.search(rb"(?i)\r\nconnection:\s*close", raw):  # the server ends keep-alive
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


async def _load(server: Server, body: bytes, clients: int, warmup: float, seconds: float,
                ramp: float) -> Run:  # fmt: skip
    """Open the connections ``ramp`` s apart (0: in one instant), run ``warmup`` s more, then
    measure ``seconds``."""
    head = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: keep-alive\r\n\r\n").encode()  # fmt: skip
    lat: list[float] = []
    errors, seq = [0], [0]
    measure_from = time.perf_counter() + ramp * clients + warmup
    window = (measure_from, measure_from + seconds)
    at_start: dict[str, Any] = {}

    def mark() -> None:  # CPU counters when the measured window opens
        at_start.update(cpu=server.cpu_by_pid(), own=time.process_time())

    asyncio.get_running_loop().call_later(measure_from - time.perf_counter(), mark)
    await asyncio.gather(*(_client(server.port, head, body, seq, window, lat, errors, i * ramp)
                           for i in range(clients)))  # fmt: skip
    run = Run(len(lat), errors[0], time.perf_counter() - measure_from, lat)
    cpu1, run.client_cpu_s = server.cpu_by_pid(), time.process_time() - at_start["own"]
    used = {pid: cpu1[pid] - at_start["cpu"].get(pid, 0.0) for pid in cpu1}
    run.server_cpu_s = sum(used.values()) if used else float("nan")
    workers = [cpu for pid, cpu in used.items() if pid != server.proc.pid]
    if workers and sum(workers) > 0:
        run.busiest_worker = max(workers) / sum(workers)
    return run


def load(server: Server, body: bytes, clients: int, warmup: float, seconds: float,
         ramp: float = RAMP) -> Run:  # fmt: skip
    """``clients`` keep-alive connections in a closed loop: ramp-up and ``warmup`` s, then
    ``seconds`` measured (plus in-flight), with the CPU the server and this load generator
    spent in the measured part and the busiest worker's share of it."""
    return asyncio.run(_load(server, body, clients, warmup, seconds, ramp))


def wrk_check(server: Server, body: bytes, clients: int, seconds: float, folder: Path) -> str:
    """wrk's own summary (req/s, latency percentiles), if wrk is installed."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return "wrk not on PATH"
    (folder / "body.json").write_bytes(body)
    script = folder / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{folder / "body.json"}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
    )
    out = subprocess.run(
        [wrk, "-t2", f"-c{clients}", f"-d{int(seconds)}s", "--latency", "-s", str(script), server.base + PATH],
        capture_output=True, text=True, timeout=seconds + 60, check=False,
    ).stdout  # fmt: skip
    keep = [ln.strip() for ln in out.splitlines() if re.match(r"\s*(50%|99%|Requests/sec|Non-2xx)", ln)]
    return "; ".join(keep)


# --- report ----------------------------------------------------------------------------------


def machine() -> str:
    cpu = ""
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))  # fmt: skip
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores ({cpu or platform.machine()}), Python {platform.python_version()}"


def update_docs(table: str) -> None:
    text = DOCS.read_text(encoding="utf-8")
    block = f"{BEGIN}\n{table}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    elif SECTION in text:
        at = text.index(SECTION) + len(SECTION)
        text = text[:at] + "\n\n" + block + text[at:]
    else:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{block}\n"
    DOCS.write_text(text, encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=4, help="product/trivial pairs (medians reported)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--gunicorn-args", default="", help="extra gunicorn settings for both (GUNICORN_CMD_ARGS)")
    ap.add_argument("--no-burst", action="store_true",
                    help="skip the product run whose connections open in one instant")  # fmt: skip
    ap.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    ap.add_argument("--wrk", action="store_true", help="cross-check with wrk if installed")
    args = ap.parse_args()

    request, resources = build_request(datetime.now(UTC))
    body = json.dumps(request).encode()
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        folder = Path(tmp)
        product, trivial = start_servers(folder, args.workers, args.threads, args.gunicorn_args)
        try:
            probe = urllib.request.Request(product.base + PATH, data=body, method="POST",
                                           headers={"Content-Type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(probe, timeout=30) as resp:
                answer = json.loads(resp.read())
            cards = answer["cards"]
            kinds = [a["resource"]["resourceType"] for c in cards for s in c.get("suggestions", [])
                     for a in s["actions"]]  # fmt: skip
            print(f"HTTP benchmark: patient-view, {resources}-resource prefetch ({len(body) / 1024:.0f} KiB body); "
                  f"product answers {len(cards)} cards ({', '.join(c['indicator'] for c in cards)}), "
                  f"suggested resources {kinds}")  # fmt: skip
            if not kinds:
                raise SystemExit("the product gave no suggestion: the benchmark would not exercise rendering")
            print(f"{machine()}; gunicorn {WORKER} --workers {args.workers} --threads {args.threads}; "
                  f"{args.clients} keep-alive clients; {args.warmup:.0f} s warm-up + {args.duration:.0f} s "
                  f"x {args.rounds} round(s) each")  # fmt: skip
            runs: dict[str, list[Run]] = {"product": [], "trivial": [], BURST: []}
            for i in range(args.rounds):
                # the product twice in a row (staggered, then every connection opened in one
                # instant; the order alternates by round), so the two see the same machine
                order = [RAMP, 0.0] if i % 2 == 0 else [0.0, RAMP]
                for ramp in order if not args.no_burst else [RAMP]:
                    name = "product" if ramp else BURST
                    runs[name].append(load(product, body, args.clients, args.warmup, args.duration, ramp))
                runs["trivial"].append(load(trivial, body, args.clients, args.warmup, args.duration))
            wrk = {s.name: wrk_check(s, body, args.clients, args.duration, folder)
                   for s in (product, trivial)} if args.wrk else {}  # fmt: skip
        finally:
            for s in (product, trivial):
                s.stop()
        for s in (product, trivial):
            if "Traceback" in s.log.read_text():
                print(f"warning: {s.name} logged a traceback:\n{s.log.read_text()[-2000:]}")

    def med(name: str, fn: Any) -> float:
        return float(statistics.median(fn(r) for r in runs[name]))

    rows = {n: (med(n, lambda r: r.rps), med(n, lambda r: r.pct(50)), med(n, lambda r: r.pct(99)),
                sum(r.completed for r in runs[n]), sum(r.errors for r in runs[n]),
                med(n, lambda r: r.server_cpu_s * 1000 / r.completed),
                med(n, lambda r: r.client_cpu_s * 1000 / r.completed),
                med(n, lambda r: r.busiest_worker * 100))
            for n in runs if runs[n]}  # fmt: skip
    ratio = rows["product"][0] / rows["trivial"][0]
    p99 = rows["product"][2]
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d} by `bench/bench_http.py`: {machine()}; the load generator "
        f"(one Python process, asyncio) shares the cores with both servers. gunicorn {WORKER} "
        f"`--workers {args.workers} --threads {args.threads}`, {args.clients} keep-alive clients opened "
        f"{RAMP * 1000:.0f} ms apart, {args.warmup:.0f} s warm-up, {args.duration:.0f} s measured x "
        f"{args.rounds} round(s); "
        f"body {len(body) / 1024:.0f} KiB ({resources}-resource prefetch), product answer "
        f"{len(cards)} cards with {len(kinds)} validated suggested resources.",
        "",
        "| endpoint | req/s | p50 ms | p99 ms | server CPU ms/req | busiest worker's CPU share | load-generator CPU ms/req | requests | non-200 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (rps, p50, p99_, n, err, scpu, ccpu, busiest) in rows.items():
        label = LABELS[name]
        lines.append(f"| {label} | {rps:,.0f} | {p50:.1f} | {p99_:.1f} | {scpu:.2f} | {busiest:.0f}% | {ccpu:.2f} "
                     f"| {n:,} | {err} |")  # fmt: skip
    verdict_ratio = "met" if ratio >= TARGET_RATIO else "NOT met"
    verdict_p99 = "met" if p99 < TARGET_P99_MS else "NOT met"
    lines += [
        "",
        f"**Ratio product/trivial req/s: {ratio:.2f}** (target >= {TARGET_RATIO}: {verdict_ratio}); "
        f"**product p99 {p99:.1f} ms** (target < {TARGET_P99_MS:.0f} ms: {verdict_p99}).",
    ]
    if BURST in rows:
        ratios = [b.pct(99) / s.pct(99) for b, s in zip(runs[BURST], runs["product"], strict=True)]
        burst = float(statistics.median(ratios))
        verdict_burst = "met" if burst <= TARGET_BURST else "NOT met"
        lines += [
            "",
            f"**Connections opened in one instant: product p99 {burst:.2f}x the staggered p99 of the same "
            f"round** (median of {len(ratios)} rounds; per round "
            f"{', '.join(f'{r:.2f}' for r in ratios)}; target <= {TARGET_BURST}x: {verdict_burst}); "
            f"busiest worker's CPU share: median {rows[BURST][7]:.0f}%, worst round "
            f"{max(r.busiest_worker for r in runs[BURST]) * 100:.0f}% (50% = balanced).",
        ]
    if wrk:
        lines += ["", f"wrk cross-check (`wrk -t2 -c{args.clients}`, same body, no hookInstance rewrite):"]
        lines += [f"- {name}: {text}" for name, text in wrk.items()]
    table = "\n".join(lines)
    print()
    print(table)
    if not args.no_docs:
        update_docs(table)
        print(f"\n(updated {DOCS.relative_to(ROOT)}, section \"{SECTION[3:]}\")")
    bad = sum(r[4] for r in rows.values())
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
