"""CDS Hooks prefetch policy: read what the client sent, fetch what it left out.

For every template key of the service:

- present with a resource or Bundle: used. A Bundle's entries that are not objects or
  hold no resource with a ``resourceType`` are dropped and counted in ``bad_resources``;
  OperationOutcome entries (search messages) are dropped silently.
- present with an OperationOutcome: the client's fetch failed; unobtainable, not refetched.
- present with anything else (a string, a list, an object with no ``resourceType``):
  counted as one bad resource; unobtainable, not refetched.
- present with ``null``: no data; not refetched.
- absent: fetched from ``fhirServer`` with the ``fhirAuthorization`` bearer token, only if
  ``fhirServer`` equals a ``CDS_FHIR_ALLOWLIST`` entry or starts with one followed by ``/``
  (otherwise unobtainable and nothing is sent). All keys are fetched in parallel under one
  deadline (``CDS_FHIR_DEADLINE_MS`` for the whole call); GETs retry on connect errors and
  502/503/504 inside it; searchset ``next`` links are followed inside the same base. A read
  answered 404/410 is no data (``None``); any other failure, or the deadline, is unobtainable.
- a template whose token the context cannot fill (e.g. no ``encounterId``): ``None``
  (unobtainable if the key is required).
- then, Locations and Specimens that the resources name by reference but the request does
  not hold (an EHR that ignores ``_include``) are read from the same ``fhirServer`` under the
  same deadline and added as include entries (``prefetch_refs``); unreadable ones are listed
  as ``locations`` / ``specimens`` in ``PrefetchOutcome.missing``.

Keys the request sends that are not templates are ignored. Unobtainable required keys
raise ``PrefetchRequired`` (HTTP 412 at the edge), before any fetch when already known;
unobtainable optional keys are listed in ``PrefetchOutcome.missing``. Logs carry key names,
reasons and status codes only: never a URL, a token, or a patient identifier.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import requests

from cds_service.config import Settings
from cds_service.hooks.fhir_client import FhirClient, FhirUnavailable, allowlisted, new_session
from cds_service.hooks.prefetch_refs import follow_references
from cds_service.hooks.prefetch_tokens import render, token_values

log = logging.getLogger(__name__)
MAX_WORKERS = 8
_SESSION: requests.Session | None = None


class PrefetchService(Protocol):
    """What the policy needs from a CDS service definition."""

    @property
    def prefetch(self) -> Mapping[str, str]:
        """Prefetch templates by key."""

    @property
    def required_prefetch(self) -> AbstractSet[str]:
        """Keys without which the service cannot run."""


class PrefetchRequired(Exception):
    """Required prefetch data can be neither read from the request nor fetched."""

    def __init__(self, keys: list[str], reason: str) -> None:
        super().__init__(f"required prefetch unobtainable: {', '.join(keys)} ({reason})")
        self.keys = keys
        self.reason = reason


@dataclass(frozen=True)
class PrefetchOutcome:
    """Every template key mapped to a resource, a Bundle, or None, and what went wrong."""

    prefetch: dict[str, Any]
    missing: list[str] = field(default_factory=list)
    bad_resources: int = 0
    fetched: list[str] = field(default_factory=list)


def _clean(value: Any) -> tuple[Any, int, str | None]:
    """(usable value, bad resources, reason it is unobtainable) for one prefetch value."""
    if value is None:
        return None, 0, None
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        return None, 1, "unreadable prefetch value"
    if value["resourceType"] == "OperationOutcome":
        return None, 0, "OperationOutcome"
    if value["resourceType"] != "Bundle" or "entry" not in value:
        return value, 0, None
    entries = value["entry"]
    if not isinstance(entries, list):
        return None, 1, "Bundle.entry is not an array"
    kept, bad = [], 0
    for entry in entries:
        res = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            bad += 1
        elif res["resourceType"] != "OperationOutcome":
            kept.append(entry)
    if len(kept) == len(entries):
        return value, 0, None
    return {**value, "entry": kept}, bad, None


def _server(request: Mapping[str, Any], settings: Settings) -> tuple[str | None, str | None, str]:
    """(allowlisted base, bearer token, reason when there is no base)."""
    server = request.get("fhirServer")
    if not isinstance(server, str) or not server:
        return None, None, "no fhirServer"
    base = allowlisted(server, settings.fhir_allowlist)
    if base is None:
        return None, None, "fhirServer not on the allowlist"
    auth = request.get("fhirAuthorization")
    token = auth.get("access_token") if isinstance(auth, dict) else None
    kind = auth.get("token_type", "Bearer") if isinstance(auth, dict) else None
    if not isinstance(token, str) or not isinstance(kind, str) or kind.lower() != "bearer":
        token = None
    return base, token, ""


def _is_read(url: str) -> bool:
    return "?" not in url and url.count("/") == 1


def _fetch_one(client: FhirClient, url: str) -> Any:
    """The fetched value; None for a read of a resource that does not exist."""
    try:
        return client.fetch(url)
    except FhirUnavailable as exc:
        if exc.status in (404, 410) and _is_read(url):
            return None
        raise


def _fetch_all(client: FhirClient, todo: dict[str, str]) -> dict[str, tuple[Any, str | None]]:
    """Fetch every key in parallel; (value, reason unobtainable) per key, by the deadline."""
    pool = ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(todo)), thread_name_prefix="fhir")
    futures: dict[Future[Any], str] = {}
    for key, url in todo.items():
        futures[pool.submit(_fetch_one, client, url)] = key
    done, _ = wait(futures, timeout=client.remaining())
    pool.shutdown(wait=False, cancel_futures=True)
    results: dict[str, tuple[Any, str | None]] = {}
    for future, key in futures.items():
        if future not in done:
            results[key] = (None, "deadline passed")
            continue
        try:
            results[key] = (future.result(), None)
        except FhirUnavailable as exc:
            results[key] = (None, str(exc))
        except Exception as exc:  # a bug or library error must not fail the hook call
            results[key] = (None, f"fetch failed: {type(exc).__name__}")
    return results


def _raise_if_required(service: PrefetchService, unobtainable: dict[str, str]) -> None:
    keys = [k for k in service.prefetch if k in unobtainable and k in service.required_prefetch]
    if keys:
        reason = "; ".join(f"{k}: {unobtainable[k]}" for k in keys)
        log.warning("required prefetch unobtainable: %s", reason)
        raise PrefetchRequired(keys, reason)


def _context_results(context: Any) -> list[dict[str, Any]]:
    """The resources of ``context.results`` (result-review), whose specimens are followed too."""
    results = context.get("results") if isinstance(context, dict) else None
    entries = results.get("entry") if isinstance(results, dict) else None
    return [
        e["resource"]
        for e in (entries if isinstance(entries, list) else ())
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]


def default_session() -> requests.Session:
    """The process-wide retrying session used when the caller passes none."""
    global _SESSION  # noqa: PLW0603 - one lazily built session per process
    if _SESSION is None:
        _SESSION = new_session()
    return _SESSION


def resolve_prefetch(
    request: Mapping[str, Any],
    service: PrefetchService,
    settings: Settings,
    session: requests.Session | None = None,
) -> PrefetchOutcome:
    """Apply the prefetch policy (module docstring) to one CDS Hooks request.

    ``session`` should come from ``fhir_client.new_session()`` (its adapters do the retries).

    :raises PrefetchRequired: a required key is unobtainable.
    """
    started = time.monotonic()
    given = request.get("prefetch")
    given = given if isinstance(given, dict) else {}
    context = request.get("context")
    tokens = token_values(context if isinstance(context, dict) else {})
    result: dict[str, Any] = {}
    unobtainable: dict[str, str] = {}
    todo: dict[str, str] = {}
    bad = 0
    for key, template in service.prefetch.items():
        result[key] = None
        if key in given:
            value, nbad, why = _clean(given[key])
            bad += nbad
            result[key] = value
            if why:
                unobtainable[key] = why
        elif (url := render(template, tokens)) is not None:
            todo[key] = url
        elif key in service.required_prefetch:
            unobtainable[key] = "context lacks a prefetch token"
    base, token, why_not = _server(request, settings)
    if todo and base is None:
        unobtainable.update(dict.fromkeys(todo, why_not))
        todo = {}
    _raise_if_required(service, unobtainable)
    fetched: list[str] = []
    client = None
    if base is not None:
        deadline = started + settings.fhir_deadline_ms / 1000
        client = FhirClient(base, session or default_session(), token=token, deadline=deadline)
    if todo and client is not None:
        for key, (raw, failure) in _fetch_all(client, todo).items():
            if failure is not None:
                unobtainable[key] = failure
                continue
            value, nbad, why = _clean(raw)
            bad += nbad
            result[key] = value
            if why:
                unobtainable[key] = why
            else:
                fetched.append(key)
        _raise_if_required(service, unobtainable)
    followed = follow_references(
        result,
        service.prefetch,
        _context_results(context),
        None if client is None else partial(_fetch_all, client),
    )
    result, bad = followed.prefetch, bad + followed.bad_resources
    missing = [k for k in service.prefetch if k in unobtainable] + followed.missing
    for key in missing:
        log.info("optional prefetch %s unobtainable: %s", key, unobtainable.get(key, "not read"))
    log.debug(
        "prefetch resolved in %.0f ms: fetched=%s references read=%d missing=%s bad=%d",
        (time.monotonic() - started) * 1000,
        fetched,
        followed.reads,
        missing,
        bad,
    )
    return PrefetchOutcome(result, missing, bad, [k for k in service.prefetch if k in fetched])
