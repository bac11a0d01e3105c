"""A small FHIR R4 JSON client: one base, one bearer token, one deadline.

The token is sent only to URLs inside the base (the base itself or below it followed
by ``/``); paging links that leave the base are refused. Errors, timeouts, non-2xx and
non-JSON answers all raise ``FhirUnavailable``, whose message never holds a URL, a
token or a patient identifier. Used by the CDS Hooks prefetch fallback and reusable
by the event listeners (any base, any deadline).
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from cds_service.clinical import numbers

JsonDict = dict[str, Any]
DEFAULT_TIMEOUT_S = 10.0
MAX_PAGES = 100
FHIR_JSON = "application/fhir+json"

#: GET retries on connect errors and 502/503/504; the whole call stays under the deadline.
RETRY = Retry(
    total=2,
    connect=2,
    read=0,
    redirect=0,
    status=2,
    other=0,
    status_forcelist=(502, 503, 504),
    allowed_methods=frozenset({"GET"}),
    backoff_factor=0.05,
    backoff_max=0.2,
    respect_retry_after_header=False,
    raise_on_status=False,
    raise_on_redirect=False,
)


class _RedactRequestTargets(logging.Filter):
    """Blank request targets in urllib3's records: FHIR paths carry patient identifiers."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(a) for a in record.args)
        return True


def _redact(arg: object) -> object:
    if isinstance(arg, str) and (arg.startswith("/") or "://" in arg):
        return "<url redacted>"
    return arg


for _name in ("urllib3.connectionpool", "urllib3.util.retry"):
    logging.getLogger(_name).addFilter(_RedactRequestTargets())


class FhirUnavailable(Exception):
    """The FHIR server gave no usable answer (timeout, connection, status, or body)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason if status is None else f"{reason} (HTTP {status})")
        self.reason = reason
        self.status = status


def new_session(pool_size: int = 16) -> requests.Session:
    """A session whose adapters retry GETs per ``RETRY`` (share one per process)."""
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=RETRY, pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def within(url: str, base: str) -> bool:
    """True if ``url`` is ``base``, below it (``base/...``) or a query on it (``base?...``).

    Dot segments and user info are refused (they could leave the base once normalised).
    """
    base = base.rstrip("/")
    if not base or not (url == base or url.startswith((base + "/", base + "?"))):
        return False
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        return False
    return all(unquote(seg) not in (".", "..") for seg in parts.path.split("/"))


def allowlisted(server: str, allowlist: tuple[str, ...] | list[str]) -> str | None:
    """The FHIR base to use if ``server`` is on the allowlist, else None."""
    if not isinstance(server, str) or "?" in server or "#" in server:
        return None
    for entry in allowlist:
        if entry.strip() and within(server, entry.strip()):
            return server.rstrip("/")
    return None


class FhirClient:
    """GET resources and whole searches from one FHIR base before a deadline."""

    def __init__(
        self,
        base: str,
        session: requests.Session,
        *,
        token: str | None = None,
        deadline: float | None = None,
    ) -> None:
        """``deadline`` is a ``time.monotonic()`` instant (default: 10 s from now)."""
        self.base = base.rstrip("/")
        self.session = session
        self.deadline = time.monotonic() + DEFAULT_TIMEOUT_S if deadline is None else deadline
        self._headers = {"Accept": FHIR_JSON}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def url(self, path_or_url: str) -> str:
        """The absolute URL of a relative FHIR path, or an absolute URL inside the base.

        :raises FhirUnavailable: an absolute URL outside the base.
        """
        if "://" in path_or_url.split("?", 1)[0]:
            if not within(path_or_url, self.base):
                raise FhirUnavailable("URL outside the FHIR base refused")
            return path_or_url
        return f"{self.base}/{path_or_url.lstrip('/')}"

    def remaining(self) -> float:
        """Seconds left before the deadline (never negative)."""
        return max(0.0, self.deadline - time.monotonic())

    def get(self, path_or_url: str) -> JsonDict:
        """GET one JSON resource (a Bundle for searches).

        :raises FhirUnavailable: timeout, connection error, non-2xx, or not a FHIR resource.
        """
        url = self.url(path_or_url)
        left = self.remaining()
        if left <= 0:
            raise FhirUnavailable("deadline passed")
        try:
            resp = self.session.get(
                url, headers=self._headers, timeout=(left, left), allow_redirects=False
            )
        except requests.Timeout:
            raise FhirUnavailable("timeout") from None
        except requests.RequestException as exc:
            raise FhirUnavailable(f"connection failed: {type(exc).__name__}") from None
        if not 200 <= resp.status_code < 300:
            raise FhirUnavailable("FHIR server error", resp.status_code)
        try:
            body = numbers.loads(resp.content)  # decimals keep their reported precision
        except ValueError:
            raise FhirUnavailable("answer is not JSON", resp.status_code) from None
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise FhirUnavailable("answer is not a FHIR resource", resp.status_code)
        if body["resourceType"] == "OperationOutcome":
            raise FhirUnavailable("answer is an OperationOutcome", resp.status_code)
        return body

    def search_all(self, query: str) -> list[JsonDict]:
        """Every resource of a search, following ``next`` links inside the base.

        :raises FhirUnavailable: as ``get``; also when the answer is not a Bundle.
        """
        bundle = self.fetch(query)
        if bundle.get("resourceType") != "Bundle":
            raise FhirUnavailable("search answer is not a Bundle")
        return [
            e["resource"]
            for e in bundle["entry"]
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)
        ]

    def fetch(self, path_or_url: str) -> JsonDict:
        """A read's resource, or a search's Bundle with the entries of all its pages.

        :raises FhirUnavailable: as ``get``; also a paging link outside the base or a loop.
        """
        first = self.get(path_or_url)
        if first["resourceType"] != "Bundle" or first.get("type") != "searchset":
            return first
        entries = _entries(first)
        seen: set[str] = set()
        page = first
        while (link := _next_link(page)) is not None:
            if link in seen or len(seen) >= MAX_PAGES:
                raise FhirUnavailable("paging does not end")
            seen.add(link)
            page = self.get(link)
            if page["resourceType"] != "Bundle":
                raise FhirUnavailable("page is not a Bundle")
            entries.extend(_entries(page))
        merged = {k: v for k, v in first.items() if k not in ("link", "entry")}
        merged["entry"] = entries
        if "total" not in merged:
            merged["total"] = len(entries)
        return merged


def _entries(bundle: JsonDict) -> list[Any]:
    entries = bundle.get("entry")
    return list(entries) if isinstance(entries, list) else []


def _next_link(bundle: JsonDict) -> str | None:
    links = bundle.get("link")
    for link in links if isinstance(links, list) else ():
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            return url if isinstance(url, str) and url else None
    return None
