"""cache.prepared and the policy's fast path: the same answers as the full rules on the raw headers.

Differential: for a table and for generated requests and stored responses, decide_reuse with
prepared inputs (prepare, request_fields) and with its one-step fast path gives exactly what the
full rules (_decide) give, and conditional_reply, byte_range and with_age answer the same whether
given header lists or prepared values. Times are offsets from T0; no test reads the clock.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache import policy
from cache.cache_control import request_directives, response_directives
from cache.fields import format_http_date
from cache.freshness import corrected_initial_age, current_age, freshness_lifetime
from cache.policy import (Fresh, Settings, StoredResponse, byte_range, conditional_headers, conditional_reply,
                          decide_reuse, prepare, request_fields, with_age)
from cache.vary import field_values, secondary_key, vary_names

T0 = 1_700_000_000.0
SETTINGS = [Settings(), Settings(shared=False), Settings(cdn_cache_control="CDN-Cache-Control"),
            Settings(stale_while_revalidate=30, stale_if_error=60)]


def date(offset: float = 0) -> str:
    return format_http_date(T0 + offset)


RESPONSE_FIELDS = {
    "Cache-Control": ["max-age=60", "max-age=0", "s-maxage=30", "no-cache", 'no-cache="set-cookie"',
                      "must-revalidate", "proxy-revalidate", "public", "private", "stale-while-revalidate=30",
                      "stale-if-error=100", "max-age=abc", "max-age=60, max-age=70", "immutable"],
    "CDN-Cache-Control": ["max-age=600", "no-store", "Max-Age=60"],
    "Expires": [date(300), "0", date(-10)],
    "Date": [date(), date(-30), "garbage"],
    "Age": ["0", "10", "100", "x"],
    "ETag": ['"a"', 'W/"a"', '"b"', "bad"],
    "Last-Modified": [date(-3600), date(-5), "garbage"],
    "Vary": ["accept-encoding", "Accept-Encoding, accept-language", "*", ""],
    "Content-Type": ["text/plain"],
}
REQUEST_FIELDS = {
    "Cache-Control": ["max-age=0", "max-age=100", "min-fresh=10", "max-stale", "max-stale=20", "no-cache",
                      "only-if-cached", "no-store", "MAX-AGE=5", "max-stale, only-if-cached"],
    "Pragma": ["no-cache", "foo", "No-Cache, x"],
    "If-None-Match": ['"a"', 'W/"a"', '"b", "a"', "*", "bad", ""],
    "If-Modified-Since": [date(-7200), date(), date(7200), "bad"],
    "If-Match": ['"a"', "*"],
    "If-Unmodified-Since": [date()],
    "Range": ["bytes=0-9", "bytes=-5", "bytes=5-", "bytes=0-1,3-4", "items=1-2", "bytes=500-"],
    "If-Range": ['"a"', 'W/"a"', date(-3600)],
    "Accept-Encoding": ["gzip", "br"],
    "Accept-Language": ["en", "de"],
    "User-Agent": ["test"],
}


def fields(table: dict[str, list[str]]) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Header lists drawn from `table`, with names in any case."""
    name = st.sampled_from(sorted(table))
    field = name.flatmap(lambda n: st.tuples(st.sampled_from([n, n.lower(), n.upper()]), st.sampled_from(table[n])))
    return st.lists(field, max_size=6)


# Half of them plain requests of usually fresh responses, so that the fast path gets its share.
REQUESTS = st.one_of(fields({"User-Agent": ["test"], "Accept-Encoding": ["gzip"]}), fields(REQUEST_FIELDS))
RESPONSE_HEADERS = st.one_of(fields(RESPONSE_FIELDS), fields(RESPONSE_FIELDS).map(
    lambda headers: [("Date", date()), ("Cache-Control", "max-age=90"), *headers]))
STORED = st.builds(StoredResponse, st.sampled_from([200, 200, 206, 301, 404, 500]), RESPONSE_HEADERS,
                   st.just(T0), st.sampled_from([T0, T0 + 1]), st.just(""))
NOW = st.sampled_from([-10, 0, 5, 30, 59, 60, 61, 90, 200, 4000]).map(lambda offset: T0 + offset)


def with_secondary_key(stored: StoredResponse, request_headers) -> StoredResponse:
    """`stored` as if this request had got it (its Vary'd fields selected it)."""
    key = secondary_key(request_headers, vary_names(stored.headers) or ())
    return StoredResponse(stored.status, stored.headers, stored.request_time, stored.response_time, key)


@given(REQUESTS, STORED, NOW, st.sampled_from(SETTINGS), st.sampled_from(["GET", "GET", "HEAD", "POST"]),
       st.booleans())
@settings(max_examples=400, deadline=None)
def test_prepared_and_fast_paths_decide_as_the_full_rules(request_headers, stored, now, settings_, method, selected):
    stored = with_secondary_key(stored, request_headers) if selected else stored
    request, prepared = request_fields(request_headers), prepare(stored, settings_)
    full = policy._decide(method, request, prepared, now)
    assert decide_reuse(method, request_headers, stored, settings_, now) == full
    assert decide_reuse(method, request, prepared, settings_, now) == full
    assert decide_reuse(method, request, prepare(stored, Settings(keep=1)), settings_, now) == full  # re-prepared
    if isinstance(full, Fresh):
        age = current_age(stored, now)
        assert full == Fresh(math.floor(age), math.floor(freshness_lifetime(stored, settings_) - age))


@given(REQUESTS, STORED, st.sampled_from(["GET", "HEAD"]), st.sampled_from([0, 10, 1000]),
       st.integers(min_value=-5, max_value=10**6))
@settings(max_examples=300, deadline=None)
def test_serving_answers_the_same_from_prepared_values(request_headers, stored, method, length, age):
    request, prepared = request_fields(request_headers), prepare(stored, Settings())
    assert conditional_reply(request, prepared) == conditional_reply(request_headers, stored)
    assert byte_range(method, request, prepared, length) == byte_range(method, request_headers, stored, length)
    assert with_age(prepared, age) == with_age(stored.headers, age)


@given(fields(REQUEST_FIELDS))
@settings(max_examples=200, deadline=None)
def test_request_fields_read_what_field_values_reads(request_headers):
    request = request_fields(request_headers)
    assert request.directives == request_directives(request_headers)
    for name in [*(n.lower() for n in REQUEST_FIELDS), "host"]:
        assert list(request.values(name)) == field_values(request_headers, name)
    assert request_fields(request) is request


@given(STORED, st.sampled_from(SETTINGS))
@settings(max_examples=200, deadline=None)
def test_prepare_derives_what_the_policy_computes_on_use(stored, settings_):
    prepared = prepare(stored, settings_)
    assert prepared.stored is stored and prepare(prepared, settings_) is prepared
    assert prepared.directives == response_directives(stored.headers, settings_.targeted_fields)[0]
    assert prepared.lifetime == freshness_lifetime(stored, settings_)
    assert prepared.initial_age == corrected_initial_age(stored.headers, stored.request_time, stored.response_time)
    assert prepared.vary == vary_names(stored.headers)
    assert list(prepared.validators.conditional) == conditional_headers(stored)
    assert prepared.current_age(T0 + 100) == current_age(stored, T0 + 100)


COMMON = [("Host", "example.test"), ("User-Agent", "test"), ("Accept", "*/*"), ("Accept-Encoding", "gzip")]
MAX_AGE_60 = [("Date", date()), ("Cache-Control", "max-age=60"), ("ETag", '"v1"')]


@pytest.mark.parametrize("request_headers, headers, now, expected", [
    pytest.param(COMMON, MAX_AGE_60, 30, Fresh(30, 30), id="the common hit: fast path"),
    pytest.param(COMMON, MAX_AGE_60, 60, "Revalidate", id="stale: the full rules decide"),
    pytest.param(COMMON, [*MAX_AGE_60, ("Age", "20")], 10, Fresh(30, 30), id="§4.2.3 Age counts"),
    pytest.param(COMMON, [("Date", date()), ("Cache-Control", "max-age=60, no-cache")], 1, "Revalidate",
                 id="§5.2.2.4 response no-cache leaves the fast path"),
    pytest.param([*COMMON, ("Pragma", "x-anything")], MAX_AGE_60, 1, Fresh(1, 59),
                 id="§5.4 a Pragma other than no-cache has no directives: fast path"),
    pytest.param([*COMMON, ("Pragma", "no-cache")], MAX_AGE_60, 1, "Revalidate", id="§5.4 Pragma no-cache"),
    pytest.param([*COMMON, ("If-Match", '"v1"')], MAX_AGE_60, 1, "Forward", id="§4.3.2 origin precondition"),
    pytest.param([*COMMON, ("Cache-Control", "only-if-cached")], MAX_AGE_60, 100, "OnlyIfCachedMiss",
                 id="§5.2.1.7 only-if-cached"),
    pytest.param(COMMON, [*MAX_AGE_60, ("Vary", "Accept-Encoding")], 1, Fresh(1, 59),
                 id="§4.1 a Vary'd response: the full rules select it"),
])
def test_fast_and_full_paths_agree(request_headers, headers, now, expected):
    stored = with_secondary_key(StoredResponse(200, headers, T0, T0), COMMON)
    outcome = decide_reuse("GET", request_headers, stored, Settings(), T0 + now)
    assert outcome == policy._decide("GET", request_fields(request_headers), prepare(stored, Settings()), T0 + now)
    assert outcome == expected if isinstance(expected, Fresh) else type(outcome).__name__ == expected


@pytest.mark.parametrize("request_headers, headers, fast", [
    pytest.param(COMMON, MAX_AGE_60, True, id="the common hit"),
    pytest.param([*COMMON, ("If-None-Match", '"v1"'), ("Range", "bytes=0-1")], MAX_AGE_60, True,
                 id="the client's validators and Range do not matter to reuse"),
    pytest.param([*COMMON, ("Cache-Control", "max-age=600")], MAX_AGE_60, False, id="request directives"),
    pytest.param(COMMON, [*MAX_AGE_60, ("Vary", "Accept-Encoding")], False, id="a Vary'd response"),
])
def test_which_requests_take_the_fast_path(request_headers, headers, fast):
    stored = with_secondary_key(StoredResponse(200, headers, T0, T0), COMMON)
    outcome = policy._fresh_at_once("GET", request_fields(request_headers), prepare(stored, Settings()), T0 + 1)
    assert outcome == (Fresh(1, 59) if fast else None)


def test_a_fresh_hit_of_a_prepared_response_with_an_age_field():
    prepared = prepare(StoredResponse(200, [("Date", date()), ("Age", "7"), ("Cache-Control", "max-age=60")],
                                      T0, T0), Settings())
    assert prepared.without_age == (("Date", date()), ("Cache-Control", "max-age=60"))
    assert with_age(prepared, 12.9) == [*prepared.without_age, ("Age", "12")]   # delta-seconds: whole
