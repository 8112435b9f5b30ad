"""cache.ranges: a single byte range from a stored full 200 (RFC 9110 §14), table-driven."""

from __future__ import annotations

import pytest

from cache.fields import format_http_date
from cache.model import StoredResponse
from cache.ranges import Full, Partial, Unsatisfiable, byte_range

T0 = 1_700_000_000.0
LAST_MODIFIED = format_http_date(T0 - 3600)
STORED = StoredResponse(200, [("Date", format_http_date(T0)), ("ETag", '"v1"'), ("Last-Modified", LAST_MODIFIED)],
                        T0, T0)


def partial(start: int, end: int, length: int = 1000) -> Partial:
    return Partial(start, end, [("Content-Range", f"bytes {start}-{end}/{length}")])


def unsatisfiable(length: int = 1000) -> Unsatisfiable:
    return Unsatisfiable([("Content-Range", f"bytes */{length}")])


@pytest.mark.parametrize("request_headers, length, expected", [
    pytest.param([("Range", "bytes=0-99")], 1000, partial(0, 99), id="RFC 9110 §14.1.2 first-last"),
    pytest.param([("Range", "bytes=100-")], 1000, partial(100, 999), id="RFC 9110 §14.1.2 open-ended"),
    pytest.param([("Range", "bytes=-50")], 1000, partial(950, 999), id="RFC 9110 §14.1.2 suffix"),
    pytest.param([("Range", "bytes=-5000")], 1000, partial(0, 999), id="RFC 9110 §14.1.1 suffix longer than all"),
    pytest.param([("Range", "bytes=900-5000")], 1000, partial(900, 999), id="RFC 9110 §14.1.1 last-pos capped"),
    pytest.param([("Range", " Bytes = 0-0 ")], 1000, partial(0, 0), id="robust: whitespace around = tolerated"),
    pytest.param([("Range", "BYTES=0-0")], 1000, partial(0, 0), id="RFC 9110 §14.1 unit is case-insensitive"),
    pytest.param([("Range", "bytes=1000-")], 1000, unsatisfiable(), id="RFC 9110 §14.1.1 first-pos past the end"),
    pytest.param([("Range", "bytes=-0")], 1000, unsatisfiable(), id="RFC 9110 §14.1.1 zero suffix"),
    pytest.param([("Range", "bytes=0-")], 0, unsatisfiable(0), id="RFC 9110 §14.1.1 empty representation"),
    pytest.param([("Range", "bytes=0-1,5-6")], 1000, Full("multiple-ranges"), id="RFC 9110 §14.2 several ranges"),
    pytest.param([("Range", "bytes=0-1"), ("Range", "5-6")], 1000, Full("multiple-ranges"),
                 id="RFC 9110 §5.3 field lines combine"),
    pytest.param([("Range", "bytes=5-1")], 1000, Full("malformed-range"), id="RFC 9110 §14.1.1 last < first"),
    pytest.param([("Range", "bytes=a-b")], 1000, Full("malformed-range"), id="RFC 9110 §14.2 not numbers"),
    pytest.param([("Range", "bytes=-")], 1000, Full("malformed-range"), id="RFC 9110 §14.2 no positions"),
    pytest.param([("Range", "bytes=")], 1000, Full("malformed-range"), id="RFC 9110 §14.2 empty set"),
    pytest.param([("Range", "items=0-1")], 1000, Full("range-unit"), id="RFC 9110 §14.2 another unit"),
    pytest.param([], 1000, Full("no-range"), id="no Range"),
    pytest.param([("Range", "bytes=0-9"), ("If-Range", '"v1"')], 1000, partial(0, 9),
                 id="RFC 9110 §13.1.5 If-Range entity-tag matches"),
    pytest.param([("Range", "bytes=0-9"), ("If-Range", '"v2"')], 1000, Full("if-range-mismatch"),
                 id="RFC 9110 §13.1.5 If-Range entity-tag differs"),
    pytest.param([("Range", "bytes=0-9"), ("If-Range", 'W/"v1"')], 1000, Full("if-range-mismatch"),
                 id="RFC 9110 §13.1.5 a weak entity-tag never matches"),
    pytest.param([("Range", "bytes=0-9"), ("If-Range", LAST_MODIFIED)], 1000, partial(0, 9),
                 id="RFC 9110 §13.1.5 If-Range date equals a strong Last-Modified"),
    pytest.param([("Range", "bytes=0-9"), ("If-Range", format_http_date(T0))], 1000, Full("if-range-mismatch"),
                 id="RFC 9110 §13.1.5 If-Range date differs"),
    pytest.param([("Range", "bytes=5000-"), ("If-Range", '"v2"')], 1000, Full("if-range-mismatch"),
                 id="RFC 9110 §13.2.2 If-Range before Range"),
])
def test_byte_range(request_headers, length, expected):
    assert byte_range("GET", request_headers, STORED, length) == expected


@pytest.mark.parametrize("method, stored, expected", [
    pytest.param("HEAD", STORED, Full("range-not-applicable"), id="RFC 9110 §14.2 GET only"),
    pytest.param("GET", StoredResponse(404, [], T0, T0), Full("range-not-applicable"), id="a full 200 only"),
    pytest.param("GET", StoredResponse(200, [("Date", format_http_date(T0)),
                                             ("Last-Modified", format_http_date(T0 - 30))], T0, T0),
                 Full("if-range-mismatch"), id="RFC 9110 §8.8.2.2 Last-Modified within 60 s of Date is weak"),
])
def test_byte_range_applicability(method, stored, expected):
    headers = [("Range", "bytes=0-9"), ("If-Range", format_http_date(T0 - 30))]
    assert byte_range(method, headers, stored, 100) == expected
