"""Request bodies for every endpoint: read within the size limit, JSON parsed defensively.

- ``read_body``: the body of a request with a Content-Length or a chunked one, never more
  than ``limit`` bytes (413 past it, whether the length was declared or not: a body is
  never cut short and processed).
- ``parse_json``: JSON whose numbers stay numbers only while they are finite doubles; an
  integer or decimal literal that overflows (a 400-digit value, an integer over the
  interpreter's 4,300-digit conversion limit) or ``NaN``/``Infinity`` is kept as its literal
  text, so the one resource holding it fails its own checks (skipped and counted) instead
  of the request. Nesting deeper than the parser allows is a 400.
"""

from __future__ import annotations

import json
import math
from typing import Any

from flask import request

from cds_service.clinical.numbers import Reported
from cds_service.hooks.errors import BadRequest, PayloadTooLarge

READ_CHUNK = 64 * 1024
MAX_INT_DIGITS = 300  # a double holds up to ~1.8e308; longer integers are not FHIR numbers


def read_body(limit: int) -> bytes:
    """The request body, at most ``limit`` bytes.

    :raises PayloadTooLarge: declared or sent body over ``limit`` bytes.
    :raises BadRequest: the client stopped sending before the body was complete.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"Request body larger than {limit} bytes")
    environ = request.environ
    if declared is None and not environ.get("wsgi.input_terminated"):
        return b""  # neither a length nor a server that frames chunked bodies: no body
    want = limit + 1 if declared is None else declared
    stream = environ["wsgi.input"]
    parts: list[bytes] = []
    got = 0
    try:
        while got < want:
            part = stream.read(min(READ_CHUNK, want - got))
            if not part:
                break
            parts.append(part)
            got += len(part)
    except Exception:  # the server's reader: a dropped client or broken chunked framing
        raise BadRequest("Request body could not be read") from None
    if got > limit:
        raise PayloadTooLarge(f"Request body larger than {limit} bytes")
    if declared is not None and got < declared:
        raise BadRequest("Request body shorter than its Content-Length")
    return b"".join(parts)


def _number_int(text: str) -> int | str:
    return text if len(text.lstrip("-")) > MAX_INT_DIGITS else int(text)


def _number_float(text: str) -> float | str:
    value = Reported(text)  # a decimal keeps its reported precision (clinical/numbers.py)
    return value if math.isfinite(value) else text


def _constant(text: str) -> str:
    return text  # NaN, Infinity, -Infinity: not JSON numbers


def parse_json(raw: bytes, what: str = "Request body") -> Any:
    """``raw`` (UTF-8 JSON) as Python objects; out-of-range numbers as their literal text.

    :raises BadRequest: not Unicode JSON, or nested too deeply.
    """
    try:
        return json.loads(
            raw,
            parse_int=_number_int,
            parse_float=_number_float,
            parse_constant=_constant,
        )
    except UnicodeDecodeError:
        raise BadRequest(f"{what} is not UTF-8 text") from None
    except RecursionError:
        raise BadRequest(f"{what} is nested too deeply") from None
    except json.JSONDecodeError as exc:  # the position only, never the content
        raise BadRequest(
            f"{what} is not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError:
        raise BadRequest(f"{what} is not valid JSON") from None
