"""Field-value primitives the cache policy reads: delta-seconds, HTTP-dates and entity-tags.

Pure text-to-value functions (RFC 9110 §5.6.7, §8.8.3, RFC 9111 §1.2.2); invalid input gives None,
never an exception. Headers are `list[tuple[str, str]]` (names in any case), as everywhere.
"""

from __future__ import annotations

import calendar
import datetime
import functools
import re
from email.utils import formatdate
from typing import NamedTuple

from cache.vary import field_values

__all__ = [
    "DELTA_MAX", "Headers", "ETag", "first_value", "without", "delta_seconds", "parse_http_date",
    "format_http_date", "field_date", "parse_etag", "parse_etag_list", "strong_match", "weak_match",
]

Headers = list[tuple[str, str]]

# RFC 9111 §1.2.2: a delta-seconds too large to represent counts as 2^31.
DELTA_MAX = 2**31

_DIGITS = re.compile(r"[0-9]+")
_MONTHS = {name: number for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_TIME = r"(\d\d):(\d\d):(\d\d)"
# RFC 9110 §5.6.7: IMF-fixdate, the obsolete rfc850-date and asctime-date; recipients accept all three.
_IMF_FIXDATE = re.compile(rf"[A-Za-z]{{3}}, (\d\d) ([A-Za-z]{{3}}) (\d{{4}}) {_TIME} GMT")
_RFC850_DATE = re.compile(rf"[A-Za-z]{{6,9}}, (\d\d)-([A-Za-z]{{3}})-(\d\d) {_TIME} GMT")
_ASCTIME_DATE = re.compile(rf"[A-Za-z]{{3}} ([A-Za-z]{{3}}) ([ \d]\d) {_TIME} (\d{{4}})")


def first_value(headers: Headers, name: str) -> str | None:
    """The first value of field `name` (case-insensitive), stripped; None when absent."""
    values = field_values(headers, name)
    return values[0].strip() if values else None


def without(headers: Headers, names: set[str] | frozenset[str]) -> Headers:
    """`headers` minus every field whose lower-cased name is in `names`."""
    return [field for field in headers if field[0].lower() not in names]


def delta_seconds(text: str | None) -> int | None:
    """RFC 9111 §1.2.2 delta-seconds (1*DIGIT), capped at 2^31; None when absent or not digits."""
    if text is None or not _DIGITS.fullmatch(text):
        return None
    return min(int(text), DELTA_MAX)


@functools.lru_cache(maxsize=1024)
def parse_http_date(text: str | None) -> float | None:
    """Epoch seconds of an HTTP-date in any of its three formats; None when invalid."""
    if text is None:
        return None
    text = text.strip()
    if match := _IMF_FIXDATE.fullmatch(text):
        day, month, year, hour, minute, second = match.groups()
    elif match := _RFC850_DATE.fullmatch(text):
        day, month, year, hour, minute, second = match.groups()
        # DEVIATION: RFC 9110 §5.6.7 pivots a two-digit year on the current date; with no clock here,
        # 70-99 mean 19xx and 00-69 mean 20xx (the rfc850 form is obsolete and rare).
        year = str(int(year) + (1900 if int(year) >= 70 else 2000))
    elif match := _ASCTIME_DATE.fullmatch(text):
        month, day, hour, minute, second, year = match.groups()
    else:
        return None
    return _timestamp(int(year), month, int(day), int(hour), int(minute), int(second))


def _timestamp(year: int, month: str, day: int, hour: int, minute: int, second: int) -> float | None:
    number = _MONTHS.get(month.lower())
    try:
        moment = datetime.datetime(year, number or 0, day, hour, minute, min(second, 59))
    except ValueError:
        return None  # Feb 31, hour 25 and the like
    return float(calendar.timegm(moment.timetuple()))


def format_http_date(timestamp: float) -> str:
    """IMF-fixdate (RFC 9110 §5.6.7), the only format a sender generates."""
    return formatdate(timestamp, usegmt=True)


def field_date(headers: Headers, name: str) -> float | None:
    """The first value of a date field, parsed; None when absent or invalid."""
    return parse_http_date(first_value(headers, name))


class ETag(NamedTuple):
    weak: bool
    opaque: str


_ETAG = re.compile(r'\s*(W/)?"([^"]*)"\s*')
_ETAG_MEMBER = re.compile(r'[\s,]*(W/)?"([^"]*)"\s*(?:,|$)')


def parse_etag(text: str | None) -> ETag | None:
    """One entity-tag (RFC 9110 §8.8.3); None when absent or malformed."""
    match = _ETAG.fullmatch(text) if text is not None else None
    return ETag(bool(match.group(1)), match.group(2)) if match else None


def parse_etag_list(text: str) -> list[ETag] | None:
    """If-None-Match / If-Match: a list of entity-tags; None for `*`; [] when malformed."""
    if text.strip() == "*":
        return None
    tags, position = [], 0
    while text[position:].strip(" \t,"):  # an opaque-tag may hold commas: scan, don't split
        match = _ETAG_MEMBER.match(text, position)
        if match is None:
            return []
        tags.append(ETag(bool(match.group(1)), match.group(2)))
        position = match.end()
    return tags


def strong_match(a: ETag | None, b: ETag | None) -> bool:
    """RFC 9110 §8.8.3.2 strong comparison: both strong and identical."""
    return a is not None and b is not None and not a.weak and not b.weak and a.opaque == b.opaque


def weak_match(a: ETag | None, b: ETag | None) -> bool:
    """RFC 9110 §8.8.3.2 weak comparison: identical opaque-tags, either or both may be weak."""
    return a is not None and b is not None and a.opaque == b.opaque
