"""cache.fields and cache.cache_control: parsing field values robustly, table-driven."""

from __future__ import annotations

import pytest

from cache.cache_control import parse_cache_control, request_directives, response_directives
from cache.fields import (DELTA_MAX, ETag, delta_seconds, format_http_date, parse_etag, parse_etag_list,
                          parse_http_date, strong_match, weak_match)

NOV_6_1994 = 784111777.0


@pytest.mark.parametrize("text, expected", [
    pytest.param("Sun, 06 Nov 1994 08:49:37 GMT", NOV_6_1994, id="RFC 9110 §5.6.7 IMF-fixdate"),
    pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", NOV_6_1994, id="RFC 9110 §5.6.7 rfc850-date"),
    pytest.param("Sun Nov  6 08:49:37 1994", NOV_6_1994, id="RFC 9110 §5.6.7 asctime-date"),
    pytest.param("  Sun, 06 Nov 1994 08:49:37 GMT ", NOV_6_1994, id="surrounding whitespace"),
    pytest.param("Sun, 06 nov 1994 08:49:37 GMT", NOV_6_1994, id="month name in any case"),
    pytest.param("Sunday, 06-Nov-14 08:49:37 GMT", 1415263777.0, id="DEVIATION: rfc850 year 14 is 2014"),
    pytest.param("0", None, id="RFC 9111 §5.3 0 is not a date"),
    pytest.param("Sun, 06 Nov 1994 25:49:37 GMT", None, id="hour out of range"),
    pytest.param("Sun, 31 Feb 1994 08:49:37 GMT", None, id="no such day"),
    pytest.param("Sun, 06 Nov 1994 08:49:37 +0100", None, id="only GMT"),
    pytest.param(None, None, id="absent"),
])
def test_parse_http_date(text, expected):
    assert parse_http_date(text) == expected


def test_format_http_date_round_trips():
    assert format_http_date(NOV_6_1994) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert parse_http_date(format_http_date(NOV_6_1994)) == NOV_6_1994


@pytest.mark.parametrize("text, expected", [
    pytest.param("60", 60, id="RFC 9111 §1.2.2 digits"),
    pytest.param("0", 0, id="zero"),
    pytest.param("99999999999999999999", DELTA_MAX, id="RFC 9111 §1.2.2 capped at 2^31"),
    pytest.param("-1", None, id="negative"),
    pytest.param("1.5", None, id="fraction"),
    pytest.param("", None, id="empty"),
    pytest.param(" 60", None, id="not digits"),
])
def test_delta_seconds(text, expected):
    assert delta_seconds(text) == expected


@pytest.mark.parametrize("text, expected", [
    pytest.param('"abc"', ETag(False, "abc"), id="RFC 9110 §8.8.3 strong"),
    pytest.param('W/"abc"', ETag(True, "abc"), id="RFC 9110 §8.8.3 weak"),
    pytest.param('""', ETag(False, ""), id="empty opaque-tag"),
    pytest.param("abc", None, id="unquoted"),
    pytest.param('w/"abc"', None, id="W/ is case-sensitive"),
])
def test_parse_etag(text, expected):
    assert parse_etag(text) == expected


@pytest.mark.parametrize("text, expected", [
    pytest.param('"a", W/"b"', [ETag(False, "a"), ETag(True, "b")], id="RFC 9110 §13.1.2 a list"),
    pytest.param('"a,b"', [ETag(False, "a,b")], id="a comma inside an opaque-tag"),
    pytest.param("*", None, id="star"),
    pytest.param('"a", junk', [], id="malformed"),
    pytest.param(' ,"a",, ', [ETag(False, "a")], id="empty list members"),
])
def test_parse_etag_list(text, expected):
    assert parse_etag_list(text) == expected


@pytest.mark.parametrize("a, b, strong, weak", [
    pytest.param('W/"1"', 'W/"1"', False, True, id="RFC 9110 §8.8.3.2 weak/weak"),
    pytest.param('W/"1"', '"1"', False, True, id="RFC 9110 §8.8.3.2 weak/strong"),
    pytest.param('"1"', '"1"', True, True, id="RFC 9110 §8.8.3.2 strong/strong"),
    pytest.param('"1"', '"2"', False, False, id="RFC 9110 §8.8.3.2 different"),
])
def test_entity_tag_comparison(a, b, strong, weak):
    assert (strong_match(parse_etag(a), parse_etag(b)), weak_match(parse_etag(a), parse_etag(b))) == (strong, weak)


@pytest.mark.parametrize("value, expected", [
    pytest.param("max-age=60, no-cache", {"max-age": ("60",), "no-cache": (None,)}, id="RFC 9111 §5.2 list"),
    pytest.param("Max-Age=60", {"max-age": ("60",)}, id="RFC 9111 §5.2 names are case-insensitive"),
    pytest.param('private="a, b", max-age=1', {"private": ("a, b",), "max-age": ("1",)},
                 id="RFC 9111 §5.2 quoted-string with a comma"),
    pytest.param(r'x="a\"b"', {"x": ('a"b',)}, id="RFC 9110 §5.6.4 quoted-pair"),
    pytest.param("max-age=1, max-age=2", {"max-age": ("1", "2")}, id="RFC 9111 §4.2.1 duplicates kept"),
    pytest.param(" , ,public,, ", {"public": (None,)}, id="empty members"),
    pytest.param("max-age = 60", {"max-age": ("60",)}, id="whitespace around ="),
    pytest.param("", {}, id="empty"),
])
def test_parse_cache_control(value, expected):
    assert parse_cache_control(value).values == expected


@pytest.mark.parametrize("value, name, expected", [
    pytest.param("max-age=60", "max-age", 60, id="RFC 9111 §5.2.2.1 max-age"),
    pytest.param("max-age=60, max-age=60", "max-age", 60, id="identical duplicates"),
    pytest.param("max-age=60, max-age=61", "max-age", None, id="RFC 9111 §4.2.1 conflicting duplicates"),
    pytest.param("max-age=1a", "max-age", None, id="RFC 9111 §4.2.1 non-integer"),
    pytest.param("max-age", "max-age", None, id="missing argument"),
    pytest.param("public", "max-age", None, id="absent"),
])
def test_directive_seconds(value, name, expected):
    assert parse_cache_control(value).seconds(name) == expected


@pytest.mark.parametrize("value, fields, unqualified", [
    pytest.param('no-cache="Set-Cookie, X-A"', frozenset({"set-cookie", "x-a"}), False,
                 id="RFC 9111 §5.2.2.4 qualified no-cache"),
    pytest.param("no-cache", None, True, id="RFC 9111 §5.2.2.4 unqualified no-cache"),
    pytest.param('no-cache="a", no-cache', None, True, id="unqualified anywhere wins"),
    pytest.param('no-cache=""', None, True, id="an empty list counts as unqualified"),
    pytest.param("public", None, False, id="absent"),
])
def test_directive_fields(value, fields, unqualified):
    directives = parse_cache_control(value)
    assert (directives.fields("no-cache"), directives.unqualified("no-cache")) == (fields, unqualified)


@pytest.mark.parametrize("headers, expected", [
    pytest.param([("Pragma", "no-cache")], {"no-cache"}, id="RFC 9111 §5.4 Pragma no-cache"),
    pytest.param([("Pragma", "x, No-Cache")], {"no-cache"}, id="RFC 9111 §5.4 in a list, any case"),
    pytest.param([("Pragma", "no-cache"), ("Cache-Control", "max-age=5")], {"max-age"},
                 id="RFC 9111 §5.4 ignored with Cache-Control"),
    pytest.param([("cache-control", "no-store"), ("Cache-Control", "max-age=1")], {"no-store", "max-age"},
                 id="RFC 9110 §5.3 field lines combine"),
    pytest.param([], set(), id="none"),
])
def test_request_directives(headers, expected):
    assert set(request_directives(headers).values) == expected


@pytest.mark.parametrize("headers, expected, targeted", [
    pytest.param([("CDN-Cache-Control", "max-age=5"), ("Cache-Control", "no-store")], {"max-age"}, True,
                 id="RFC 9213 §2.2 the targeted field wins"),
    pytest.param([("CDN-Cache-Control", ""), ("Cache-Control", "no-store")], {"no-store"}, False,
                 id="RFC 9213 §2.1 empty: ignored"),
    pytest.param([("CDN-Cache-Control", "max-age=5;a=1"), ("Cache-Control", "no-store")], {"no-store"}, False,
                 id="DEVIATION: parameters count as unparseable"),
    pytest.param([("CDN-Cache-Control", 'private="x", max-age=5')], {"private", "max-age"}, True,
                 id="RFC 8941 a string value"),
    pytest.param([("CDN-Cache-Control", "no-store=?1")], {"no-store"}, True, id="RFC 8941 §3.3.6 ?1 is true"),
    pytest.param([("cdn-cache-control", "max-age=5"), ("CDN-Cache-Control", "public")], {"max-age", "public"},
                 True, id="RFC 9110 §5.3 targeted field lines combine"),
])
def test_response_directives(headers, expected, targeted):
    directives, from_target = response_directives(headers, ("CDN-Cache-Control",))
    assert (set(directives.values), from_target) == (expected, targeted)
