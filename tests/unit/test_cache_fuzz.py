"""Robustness: the policy never raises on hostile field values, and its outcomes stay consistent."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cache.cache_control import parse_cache_control
from cache.fields import parse_etag_list, parse_http_date
from cache.policy import (DontStore, Forward, Fresh, OnlyIfCachedMiss, Revalidate, ServeStale, Settings, Store,
                          byte_range, conditional_reply, decide_reuse, decide_store)

T0 = 1_700_000_000.0
FIELD_NAMES = ["Cache-Control", "Expires", "Date", "Age", "ETag", "Last-Modified", "Vary", "Pragma", "Range",
               "If-None-Match", "If-Modified-Since", "If-Range", "Set-Cookie", "CDN-Cache-Control", "Connection"]
TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40)
PIECES = st.sampled_from(["max-age=", "s-maxage=", "no-cache", "no-store", "private", "public", '"', ",", "=",
                          "must-revalidate", "stale-while-revalidate=", "stale-if-error=", "bytes=", "-", "W/",
                          "*", "60", "0", "-1", "Sun, 06 Nov 1994 08:49:37 GMT", " "])
VALUES = st.one_of(TEXT, st.lists(PIECES, max_size=8).map("".join))
HEADERS = st.lists(st.tuples(st.sampled_from(FIELD_NAMES), VALUES), max_size=8)


@given(VALUES)
@settings(max_examples=300, deadline=None)
def test_parsers_never_raise(value):
    parse_cache_control(value).seconds("max-age")
    parse_http_date(value)
    parse_etag_list(value)


@given(HEADERS, HEADERS, st.floats(min_value=-1e6, max_value=1e9, allow_nan=False), st.booleans())
@settings(max_examples=300, deadline=None)
def test_store_then_reuse_never_raises(request_headers, response_headers, elapsed, reverse):
    policy = Settings(cdn_cache_control="CDN-Cache-Control" if reverse else None, keep=60)
    verdict = decide_store("GET", request_headers, 200, response_headers, policy, request_time=T0, response_time=T0)
    assert isinstance(verdict, (Store, DontStore))
    if isinstance(verdict, DontStore):
        return
    assert verdict.ttl > 0
    outcome = decide_reuse("GET", request_headers, verdict.response, policy, T0 + elapsed)
    assert isinstance(outcome, (Fresh, ServeStale, Revalidate, Forward, OnlyIfCachedMiss))
    if isinstance(outcome, (Fresh, ServeStale)):
        assert outcome.age >= 0
    conditional_reply(request_headers, verdict.response)
    byte_range("GET", request_headers, verdict.response, 100)
