"""Never crash on input: mutated fixtures and corpus messages always get an ACK."""

from __future__ import annotations

import random
from pathlib import Path

from cds_service.events.hl7_ack import ERROR_TEXTS
from cds_service.store import dispose_engine
from tests.hl7support import CORPUS, FIXTURES, make_ingestor, msa

INSERTS = [
    b"|",
    b"^",
    b"&",
    b"~",
    b"\\",
    b"\r",
    b"\n",
    b"\xff\xfe",
    b"PID|||",
    b"OBX|1|SN|19123-9^Mg^LN||<^",
]


def test_mutated_messages_are_always_acknowledged(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    ing = make_ingestor(url)
    seeds = [p.read_bytes() for p in sorted(FIXTURES.glob("*.hl7")) + sorted(CORPUS.glob("*.hl7"))]
    rnd = random.Random(20240510)
    for n in range(300):
        data = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randint(1, 6)):
            pos, op = rnd.randrange(len(data)), rnd.random()
            if op < 0.4:
                data[pos] = rnd.randrange(256)
            elif op < 0.6:
                del data[pos : pos + rnd.randint(1, 30)]
            else:
                data[pos:pos] = rnd.choice(INSERTS)
        out = ing.handle(bytes(data))
        assert out.code in ("AA", "AE", "AR"), n
        assert msa(out.ack)[1] in ("AA", "AE", "AR", "CA", "CE", "CR")
        assert ERROR_TEXTS["207"] not in out.ack, n  # no internal error
    dispose_engine(url)
