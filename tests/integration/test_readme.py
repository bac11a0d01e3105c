"""The README's commands, run as written against a running ``make run`` (the runner it execs).

Every command line of the README's code blocks that starts with ``.venv/bin/`` (and its pipes)
is run by bash in the project folder. Only the address changes: the server listens on free
ports (this machine is shared), so ``127.0.0.1:8080`` becomes that port, and ``CDS_MLLP_PORT``
and ``CDS_DATABASE_URL`` are set as ``make run`` sets them; the words are otherwise verbatim.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_runner_shutdown import SITE, Running, free_port, wait_until_up

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"


def readme_commands() -> list[str]:
    """The runnable command lines of the README's fenced code blocks, in order."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)
    lines = [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line.startswith(".venv/bin/")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("readme")
    url = f"sqlite:///{tmp / 'db.sqlite'}"
    subprocess.run([sys.executable, "-m", "cds_service.cli", "migrate", "--url", url], check=True,
                   capture_output=True, cwd=ROOT)  # fmt: skip
    http_port, mllp_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(CDS_AUTH="off", CDS_DATABASE_URL=url, CDS_HTTP_PORT=str(http_port),
               CDS_MLLP_PORT=str(mllp_port), CDS_SITE_MAPPINGS=str(SITE))  # fmt: skip
    log = tmp / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cds_service.runner", "serve", "mllp"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, text=True, process_group=0, cwd=ROOT)  # fmt: skip
    run = Running(proc, http_port, mllp_port, log)
    try:
        wait_until_up(run)
        yield run, env
    finally:
        proc.terminate()
        proc.wait(30)


def run_readme(command: str, server: tuple[Running, dict[str, str]]) -> str:
    run, env = server
    line = command.replace("127.0.0.1:8080", f"127.0.0.1:{run.http_port}")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", line], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, (command, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    return proc.stdout


def test_readme_has_the_commands_a_newcomer_runs() -> None:
    commands = readme_commands()
    assert any("example patient-view" in c and "curl" in c for c in commands), commands
    assert any("example hl7 --send" in c for c in commands), commands
    assert any(" evaluate " in c and "--now" in c and "--format text" in c for c in commands), commands
    text = README.read_text(encoding="utf-8")
    for shot in ("docs/rules-page-1280.png", "docs/rules-page-390.png", "docs/rules-page-390-zh-CN.png"):
        assert shot in text and (ROOT / shot).stat().st_size > 10_000


def test_readme_first_card_is_the_intended_card_with_its_suggestion(server: tuple[Running, dict[str, str]]) -> None:
    (command,) = [c for c in readme_commands() if "example patient-view" in c]
    cards = json.loads(run_readme(command, server))["cards"]
    assert [c["indicator"] for c in cards] == ["warning"], [c["summary"] for c in cards]
    card = cards[0]  # the one card the README describes, and nothing the example leaves out
    assert "Not available for this evaluation" not in card["detail"]
    assert card["summary"].startswith("ICU, serum Mg 1.5 mg/dL")
    assert "withheld" not in card["summary"] and "withheld" not in card.get("detail", "")
    (med,) = [s for s in card["suggestions"] if s["actions"][0]["resource"]["resourceType"] == "MedicationRequest"]
    assert med["label"] == "Magnesium sulfate 5.9 g IV over 24 h, daily for 3 days"
    assert card["extension"]["magnesium-aki"]["rules"][0] == "icu-hypomagnesemia-repletion"
    assert not any(c["source"]["topic"]["code"] == "monitoring-gap" for c in cards)  # the result is fresh


def test_readme_hl7_quick_start_shows_the_acks_and_the_advice(server: tuple[Running, dict[str, str]]) -> None:
    (command,) = [c for c in readme_commands() if "example hl7" in c]
    out = run_readme(command, server)
    assert out.count("MSA|AA|EX-") == 2, out
    assert "advice for EX-ORU-1" in out and "Admission Mg 1.4 mg/dL" in out
    assert "icu-hypomagnesemia-repletion" in out  # the MICU of PV1-3 is an ICU (site mapping)
    assert "withheld" in out  # no weight in the ORU: the gate says why


def test_readme_evaluate_example_shows_advice_in_full(server: tuple[Running, dict[str, str]]) -> None:
    (command,) = [c for c in readme_commands() if " evaluate " in c]
    out = run_readme(command, server)
    assert "\n  no advice\n" not in out  # the CLI's line for a patient without advice
    # hypermagnesemia-toxic on a suspect value (1.4 -> 8.6 mg/dL in 6 h, no magnesium recorded as
    # given): it leads with the repeat (evidence.md §1), with its detail:
    assert "[critical] Confirm with a repeat sample; stop magnesium meanwhile: suspect serum Mg 8.6 mg/dL" in out
    assert "What to do: Confirm with a repeat sample; stop magnesium meanwhile" in out and "Evidence:" in out
    assert "<https://doi.org/" in out and "**" not in out and "###" not in out
