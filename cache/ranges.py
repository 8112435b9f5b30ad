"""Range requests (RFC 9110 §14) answered from a stored full 200 of known length.

One byte range gives a 206, an unsatisfiable one a 416; anything else (several ranges, another
unit, a malformed field, a failed If-Range) is ignored and the whole 200 is sent, as RFC 9110 §14.2
allows a server to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cache.fields import Headers, field_date, first_value, parse_etag, parse_http_date, strong_match
from cache.model import StoredResponse
from cache.prepared import Prepared, RequestFields, request_fields, stored_response

__all__ = ["Full", "Partial", "Unsatisfiable", "byte_range"]

_RANGE_SPEC = re.compile(r"\s*([0-9]*)-([0-9]*)\s*")
# RFC 9110 §8.8.2.2: an intermediate cache holds a Last-Modified strong when Date is 60 s later.
_STRONG_LAST_MODIFIED_GAP = 60.0


@dataclass(frozen=True, slots=True)
class Full:
    """Send the whole stored 200; `detail` says why the Range field (if any) was not used."""

    detail: str


@dataclass(frozen=True, slots=True)
class Partial:
    """Send a 206 with bytes start..end (inclusive) and these extra header fields."""

    start: int
    end: int
    headers: Headers


@dataclass(frozen=True, slots=True)
class Unsatisfiable:
    """Send a 416 with these header fields and no content."""

    headers: Headers


_NO_RANGE = Full("no-range")


def byte_range(method: str, request_headers: Headers | RequestFields, stored: StoredResponse | Prepared,
               length: int) -> Full | Partial | Unsatisfiable:
    """How to answer the request's Range from `stored`, whose body is `length` bytes."""
    request = request_fields(request_headers)
    values = request.values("range")
    if not values:
        return _NO_RANGE
    stored = stored_response(stored)
    range_applies = method == "GET" and stored.status == 200  # RFC 9110 §14.2
    if not range_applies:
        return Full("range-not-applicable")
    if not _if_range_holds(request.first("if-range"), stored.headers):
        return Full("if-range-mismatch")  # RFC 9110 §13.1.5: ignore Range
    spec = _single_range(",".join(values))
    if isinstance(spec, str):
        return Full(spec)
    return _resolve(*spec, length)


def _single_range(value: str) -> tuple[int | None, int | None] | str:
    """(first-pos, last-pos) or (None, suffix-length); a string says why the field is ignored."""
    unit, equals, range_set = value.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return "range-unit"  # RFC 9110 §14.1: range units are case-insensitive; others ignored
    specs = [spec for spec in range_set.split(",") if spec.strip()]
    if len(specs) > 1:
        return "multiple-ranges"
    match = _RANGE_SPEC.fullmatch(specs[0]) if specs else None
    if match is None or not (match.group(1) or match.group(2)):
        return "malformed-range"
    first = int(match.group(1)) if match.group(1) else None
    last = int(match.group(2)) if match.group(2) else None
    if first is not None and last is not None and last < first:
        return "malformed-range"  # RFC 9110 §14.1.1: last-pos < first-pos is invalid
    return first, last


def _resolve(first: int | None, last: int | None, length: int) -> Partial | Unsatisfiable:
    # RFC 9110 §14.1.1: an int-range is satisfiable when first-pos < length, a suffix-range when
    # its length is non-zero (and there are bytes to send); last-pos is capped at length - 1.
    if first is None:
        satisfiable = bool(last) and length > 0
        start, end = max(0, length - (last or 0)), length - 1
    else:
        satisfiable = first < length
        start, end = first, length - 1 if last is None else min(last, length - 1)
    if not satisfiable:
        return Unsatisfiable([("Content-Range", f"bytes */{length}")])  # RFC 9110 §15.5.17
    return Partial(start, end, [("Content-Range", f"bytes {start}-{end}/{length}")])  # RFC 9110 §14.4


def _if_range_holds(value: str | None, stored_headers: Headers) -> bool:
    """RFC 9110 §13.1.5: an entity-tag must match strongly; a date must equal a strong Last-Modified."""
    if value is None:
        return True
    if value.startswith(('"', "W/")):
        return strong_match(parse_etag(value), parse_etag(first_value(stored_headers, "etag")))
    last_modified = field_date(stored_headers, "last-modified")
    date = field_date(stored_headers, "date")
    strong = last_modified is not None and date is not None and date - last_modified >= _STRONG_LAST_MODIFIED_GAP
    return strong and parse_http_date(value) == last_modified
