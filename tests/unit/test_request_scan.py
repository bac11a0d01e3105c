"""Request framing of the serving worker's read-ahead: when is a whole request buffered?"""

from __future__ import annotations

import pytest

from cds_service.web.request_scan import MAX_HEAD, RequestScan, Scan

HEAD = b"POST /x HTTP/1.1\r\nHost: a\r\n"


def feed_bytewise(data: bytes, limit: int = 1000) -> list[Scan]:
    """The verdict after every byte, as a slow client would deliver them."""
    scan, buf, out = RequestScan(limit), bytearray(), []
    for b in data:
        buf.append(b)
        out.append(scan.feed(buf))
    return out


def test_content_length_request_is_ready_at_its_last_byte() -> None:
    data = HEAD + b"Content-Length: 5\r\n\r\nhello"
    verdicts = feed_bytewise(data)
    assert verdicts[-1] is Scan.READY and set(verdicts[:-1]) == {Scan.MORE}


def test_request_without_body_is_ready_at_the_end_of_its_head() -> None:
    verdicts = feed_bytewise(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert verdicts[-1] is Scan.READY and set(verdicts[:-1]) == {Scan.MORE}


def test_chunked_request_is_ready_after_the_last_chunk_and_trailers() -> None:
    body = b"4\r\nwxyz\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n"
    verdicts = feed_bytewise(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body)
    assert verdicts[-1] is Scan.READY and set(verdicts[:-1]) == {Scan.MORE}


def test_chunked_body_over_the_limit_is_too_large_before_it_arrives() -> None:
    scan = RequestScan(100)
    assert scan.feed(HEAD + b"Transfer-Encoding: chunked\r\n\r\n60\r\n" + b"a" * 96) is Scan.MORE
    assert scan.feed(HEAD + b"Transfer-Encoding: chunked\r\n\r\n60\r\n" + b"a" * 96 + b"\r\n10\r\n") is Scan.TOO_LARGE


def test_declared_length_over_the_limit_is_too_large_at_once() -> None:
    assert RequestScan(100).feed(HEAD + b"Content-Length: 101\r\n\r\n") is Scan.TOO_LARGE
    assert RequestScan(100).feed(HEAD + b"content-length: 100\r\n\r\n" + b"a" * 100) is Scan.READY


@pytest.mark.parametrize(
    "data",
    [
        HEAD + b"Content-Length: abc\r\n\r\n",  # gunicorn answers 400
        HEAD + b"Content-Length: -1\r\n\r\n",
        HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"1" * 2000,  # a size line that never ends
        b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * MAX_HEAD,  # a head that never ends
    ],
    ids=["bad-length", "negative-length", "bad-chunk-size", "endless-chunk-line", "endless-head"],
)
def test_malformed_framing_is_handed_to_the_parser(data: bytes) -> None:
    assert RequestScan(10_000).feed(data) is Scan.READY
