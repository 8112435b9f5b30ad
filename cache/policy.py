"""RFC 9111 cache policy, sans-IO: what to store, when to reuse, how to validate and invalidate.

Design: pure functions over header lists (`list[tuple[str, str]]`, names in any case) and times
passed in as epoch seconds; nothing here reads a clock, opens a socket or touches Redis. Each call
returns an intention as a frozen dataclass that the worker (the I/O shell) acts on, ending its
`match` with `assert_never`. Every refusal carries `detail`, a short machine-readable reason for the
Cache-Status `detail` parameter and the debug log. Each RFC condition is a named boolean with its
section; `DEVIATION:` marks a deliberate departure. One stored response per variant.

Settings and StoredResponse (status, headers, request_time, response_time, secondary_key: the
fields a store keeps) come from cache.model; freshness and age are computed from them on use, or
once per stored response by prepare(stored, settings) -> Prepared, which the worker keeps with its
L1 copy and passes wherever `stored` goes below (cache.prepared). Likewise request_fields(headers)
reads a request's few fields once, for wherever `request_headers` goes on the reuse path.
The worker's calls, in the order it meets them:

  decide_reuse(method, request_headers, stored | None, settings, now) ->
      Fresh(age, ttl)                 serve `stored` with_age(headers, age); a client's own
                                      conditional_reply / byte_range apply        [hit; ttl]
    | ServeStale(age, ttl, detail, revalidate)  serve `stored`; when `revalidate` (the conditional
                                      headers) is not None, revalidate in the background  [hit]
    | Revalidate(conditional, fwd, detail, stale_if_error, must_revalidate)  forward with
                                      `conditional` replacing the client's If-None-Match /
                                      If-Modified-Since; 304 -> freshen, else -> decide_store. On
                                      5xx, no connection or timeout: serve `stored` stale if
                                      stale_if_error; answer 504 if must_revalidate  [fwd=...]
    | Forward(fwd, detail)            nothing usable: forward as is, then decide_store  [fwd=...]
    | OnlyIfCachedMiss(detail)        answer 504 (RFC 9111 §5.2.1.7)
  decide_store(method, request_headers, status, response_headers, settings, *, request_time,
               response_time) -> Store(response, ttl) | DontStore(detail, rule)
      A HEAD response or a 304 is never stored: give it to freshen_head / freshen.
  freshen(stored, request_headers, headers_of_the_304, settings, *, request_time, response_time)
  freshen_head(stored, request_headers, headers_of_a_HEAD_200, settings, *, request_time, response_time)
      -> Store(response, ttl)         rewrite the entry's metadata, serve `response`
       | ServeOnce(response, detail, drop)  serve `response`, keep nothing; `drop`: delete the entry
       | NoMatch(detail)              304: refetch unconditionally; HEAD: the entry is outdated, delete it
  invalidations(method, target_uri, status, response_headers) -> absolute URIs to purge
  conditional_reply(request_headers, stored) -> the header fields of a 304 | None (send it all)
  byte_range(method, request_headers, stored, length) -> Full(detail) | Partial(start, end, headers)
      | Unsatisfiable(headers)        (200 / 206 with Content-Range / 416)
  with_age(headers, age), current_age(stored, now), freshness_lifetime(stored, settings),
  conditional_headers(stored), cache_status(cache_name, hit=, fwd=, fwd_status=, ttl=, stored=,
      collapsed=, detail=) -> the RFC 9211 Cache-Status member
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import urldefrag, urljoin, urlsplit

from cache.cache_control import Directives, request_directives, response_directives
from cache.cache_status import cache_status
from cache.fields import (DELTA_MAX, Headers, field_date, first_value, format_http_date, parse_etag,
                          parse_etag_list, parse_http_date, strong_match, weak_match, without)
from cache.freshness import HEURISTIC_STATUSES, current_age, freshness_lifetime, time_to_live
from cache.model import Settings, StoredResponse
from cache.prepared import (Prepared, RequestFields, Validators, conditional_headers, prepare, request_fields,
                            validators_of)
from cache.ranges import Full, Partial, Unsatisfiable, byte_range
from cache.vary import field_values, secondary_key, vary_names

__all__ = [
    "Settings", "StoredResponse", "Fresh", "ServeStale", "Revalidate", "Forward", "OnlyIfCachedMiss",
    "Reuse", "Store", "DontStore", "ServeOnce", "NoMatch", "Full", "Partial", "Unsatisfiable",
    "decide_reuse", "decide_store", "freshen", "freshen_head", "invalidations", "conditional_reply",
    "conditional_headers", "byte_range", "with_age", "current_age", "freshness_lifetime", "cache_status",
    "Prepared", "RequestFields", "prepare", "request_fields",
]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # RFC 9110 §9.2.1
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Statuses whose caching rules we implement (RFC 9111 §5.2.2.3 must-understand); 206 is not stored.
_UNDERSTOOD_STATUSES = (HEURISTIC_STATUSES - {206}) | {302, 303, 307, 400, 403, 421, 451, 500, 502, 503, 504}
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                         "upgrade"})
_PROXY_FIELDS = frozenset({"proxy-authenticate", "proxy-authentication-info", "proxy-authorization"})
# Fields describing the stored content's bytes, which a 304 or HEAD response never updates.
_CONTENT_FRAMING = frozenset({"content-length", "content-encoding", "content-range"})
_REUSING_METHODS = ("GET", "HEAD")  # RFC 9111 §4: only GET responses are stored; GET and HEAD use them


# --- Intentions -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Fresh:
    """Serve the stored response as is; `age` for the Age field, `ttl` its remaining freshness."""

    age: int
    ttl: int


@dataclass(frozen=True, slots=True)
class ServeStale:
    """Serve the stored response although stale; revalidate in the background when `revalidate`."""

    age: int
    ttl: int
    detail: str
    revalidate: Headers | None


@dataclass(frozen=True, slots=True)
class Revalidate:
    """Forward with `conditional` (possibly empty: no validator) and freshen on a 304."""

    conditional: Headers
    fwd: str
    detail: str
    stale_if_error: bool = False
    must_revalidate: bool = False


@dataclass(frozen=True, slots=True)
class Forward:
    """No stored response can serve this request: forward it unchanged."""

    fwd: str
    detail: str


@dataclass(frozen=True, slots=True)
class OnlyIfCachedMiss:
    """The client forbids forwarding and nothing usable is stored: answer 504."""

    detail: str


Reuse: TypeAlias = Fresh | ServeStale | Revalidate | Forward | OnlyIfCachedMiss


@dataclass(frozen=True, slots=True)
class Store:
    """Write `response` (and its body) with this TTL in seconds (always > 0)."""

    response: StoredResponse
    ttl: int


@dataclass(frozen=True, slots=True)
class ServeOnce:
    """A validated response to serve but not to keep: `drop` the stored entry too (the origin no
    longer allows keeping it), or leave it as it was (this request forbids storing)."""

    response: StoredResponse
    detail: str
    drop: bool


@dataclass(frozen=True, slots=True)
class DontStore:
    """Do not store: `detail` is the failed condition, `rule` where it is written."""

    detail: str
    rule: str


@dataclass(frozen=True, slots=True)
class NoMatch:
    """A validation response that does not belong to the stored response."""

    detail: str


# --- Storing (RFC 9111 §3) ------------------------------------------------------------------------

def decide_store(method: str, request_headers: Headers, status: int, response_headers: Headers,
                 settings: Settings, *, request_time: float, response_time: float) -> Store | DontStore:
    """Whether and how long to store a response that just arrived (request sent at request_time)."""
    governing = response_directives(response_headers, settings.targeted_fields)   # read once
    refusal = (_request_refusal(method, request_headers, governing[0], settings)
               or _content_refusal(status, response_headers, settings, governing))
    if refusal is not None:
        return refusal
    store = _build(status, response_headers, request_headers, settings, request_time, response_time,
                   governing[0])
    return store if store.ttl > 0 else DontStore("stale-on-arrival", "RFC 9111 §4.2")


def _content_refusal(status: int, headers: Headers, settings: Settings,
                     governing: tuple[Directives, bool] | None = None) -> DontStore | None:
    directives, targeted = governing or response_directives(headers, settings.targeted_fields)
    return _status_refusal(status, directives) or _response_refusal(status, headers, directives, targeted, settings)


def _first_failed(checks: tuple[tuple[bool, str, str], ...]) -> DontStore | None:
    return next((DontStore(detail, rule) for holds, detail, rule in checks if not holds), None)


def _request_refusal(method: str, request_headers: Headers, directives: Directives,
                     settings: Settings) -> DontStore | None:
    authorized = settings.shared and bool(field_values(request_headers, "authorization"))
    shareable = "public" in directives or "s-maxage" in directives or "must-revalidate" in directives
    return _first_failed((
        (method != "HEAD", "head", "RFC 9111 §4.3.5"),  # a HEAD response only freshens
        (method == "GET", "method", "RFC 9111 §3"),
        ("no-store" not in request_directives(request_headers), "request-no-store", "RFC 9111 §5.2.1.5"),
        (not authorized or shareable, "authorization", "RFC 9111 §3.5"),
    ))


def _status_refusal(status: int, directives: Directives) -> DontStore | None:
    understood = status in _UNDERSTOOD_STATUSES or "must-understand" not in directives
    return _first_failed((
        (status >= 200, "status-not-final", "RFC 9111 §3"),
        (status != 206, "partial", "RFC 9111 §3.3"),  # we never combine partial content
        (status != 304, "not-modified", "RFC 9111 §4.3.4"),  # a 304 only freshens
        (understood, "must-understand", "RFC 9111 §5.2.2.3"),
    ))


def _response_refusal(status: int, headers: Headers, directives: Directives, targeted: bool,
                      settings: Settings) -> DontStore | None:
    no_store = "no-store" in directives and "must-understand" not in directives  # RFC 9111 §5.2.2.3
    private = settings.shared and directives.unqualified("private")
    set_cookie = bool(field_values(headers, "set-cookie")) and "set-cookie" not in _unstored_names(
        headers, directives, settings)
    explicit = ("max-age" in directives or (settings.shared and "s-maxage" in directives)
                or (not targeted and bool(field_values(headers, "expires"))) or "public" in directives
                or (not settings.shared and "private" in directives))
    return _first_failed((
        (not no_store, "no-store", "RFC 9111 §5.2.2.5"),
        (not private, "private", "RFC 9111 §5.2.2.7"),
        (settings.store_set_cookie or not set_cookie, "set-cookie", "Settings.store_set_cookie"),
        (explicit or status in HEURISTIC_STATUSES, "no-freshness-info", "RFC 9111 §3"),
        # Storing is never required; a `Vary: *` response can never be selected (RFC 9111 §4.1).
        (vary_names(headers) is not None, "vary-star", "RFC 9111 §4.1"),
    ))


def _build(status: int, headers: Headers, request_headers: Headers, settings: Settings,
           request_time: float, response_time: float, directives: Directives | None = None) -> Store:
    if directives is None:
        directives, _ = response_directives(headers, settings.targeted_fields)
    kept = without(_with_date(headers, response_time), _unstored_names(headers, directives, settings))
    key = secondary_key(request_headers, vary_names(kept) or ())
    response = StoredResponse(status, kept, request_time, response_time, key)
    return Store(response, time_to_live(response, settings))


def _unstored_names(headers: Headers, directives: Directives, settings: Settings) -> frozenset[str]:
    """RFC 9111 §3.1: fields never stored: hop-by-hop, proxy-specific, and those named by qualified
    `private` (shared cache, RFC 9111 §5.2.2.7) or `no-cache` (RFC 9111 §5.2.2.4)."""
    private = directives.fields("private") if settings.shared else None
    return (_connection_fields(headers) | _PROXY_FIELDS | (private or frozenset())
            | (directives.fields("no-cache") or frozenset()))


def _connection_fields(headers: Headers) -> frozenset[str]:
    listed = {name.strip().lower() for value in field_values(headers, "connection") for name in value.split(",")}
    return _HOP_BY_HOP | listed  # RFC 9110 §7.6.1


def _with_date(headers: Headers, response_time: float) -> Headers:
    if field_values(headers, "date"):
        return headers
    return [*headers, ("Date", format_http_date(response_time))]  # RFC 9110 §6.6.1


# --- Reuse (RFC 9111 §4) --------------------------------------------------------------------------

def decide_reuse(method: str, request_headers: Headers | RequestFields, stored: StoredResponse | Prepared | None,
                 settings: Settings, now: float) -> Reuse:
    """How to answer a request given the stored response selected for its key (None: nothing stored).

    The request may come as request_fields(...) and the stored response as prepare(...): read once,
    reused by conditional_reply, byte_range and with_age, and by later hits of the same response.
    """
    request = request_fields(request_headers)
    prepared = None if stored is None else prepare(stored, settings)
    return _fresh_at_once(method, request, prepared, now) or _decide(method, request, prepared, now)


def _fresh_at_once(method: str, request: RequestFields, prepared: Prepared | None, now: float) -> Fresh | None:
    """The common hit decided in one step; None: let _decide apply every rule.

    Equivalent to _decide: without request directives (no Cache-Control, no Pragma: no-cache) and
    without If-Match / If-Unmodified-Since, of a response that varies on nothing, _unselectable
    finds nothing, only-if-cached is absent and _validation_required can only fire on the
    response's own no-cache; what is left is _judge's test of freshness.
    """
    common = (method in _REUSING_METHODS and prepared is not None and prepared.selected_by_all
              and not prepared.no_cache and not request.directives.values and not _origin_precondition(request))
    if not common:
        return None
    age = prepared.current_age(now)
    left = prepared.lifetime - age
    return Fresh(_seconds(age), _seconds(left)) if left > 0 else None


def _decide(method: str, request: RequestFields, prepared: Prepared | None, now: float) -> Reuse:
    """The reuse rules, every one of them."""
    decision: Reuse
    if method not in _REUSING_METHODS:
        decision = Forward("method", "method")
    elif prepared is None:
        decision = Forward("uri-miss", "uri-miss")
    else:
        decision = _unselectable(request, prepared) or _judge(request.directives, prepared, now)
    only_if_cached = "only-if-cached" in request.directives  # RFC 9111 §5.2.1.7
    if only_if_cached and isinstance(decision, (Forward, Revalidate)):
        return OnlyIfCachedMiss(decision.detail)
    return decision


def _unselectable(request: RequestFields, prepared: Prepared) -> Forward | None:
    names = prepared.vary
    # RFC 9111 §4.1
    variant_matches = names is not None and secondary_key(request.headers, names) == prepared.stored.secondary_key
    if not variant_matches:
        return Forward("vary-miss", "vary-miss")
    if _origin_precondition(request):
        return Forward("bypass", "origin-precondition")  # RFC 9111 §4.3.2: not ours to evaluate
    return None


def _origin_precondition(request: RequestFields) -> bool:
    return bool(request.values("if-match") or request.values("if-unmodified-since"))


def _judge(request: Directives, prepared: Prepared, now: float) -> Reuse:
    age = prepared.current_age(now)
    left = prepared.lifetime - age
    required = _validation_required(request, prepared, age, left)
    if required is not None:
        return Revalidate(list(prepared.validators.conditional), *required)
    if left > 0:  # RFC 9111 §4.2: fresh while freshness_lifetime > current_age
        return Fresh(_seconds(age), _seconds(left))
    return _stale(request, prepared, age, -left)


def _validation_required(request: Directives, prepared: Prepared, age: float,
                         left: float) -> tuple[str, str] | None:
    """(fwd, detail) when the stored response may not be used without validation, fresh or not."""
    max_age, min_fresh = request.seconds("max-age"), request.seconds("min-fresh")
    checks = (
        ("no-cache" in request, "request", "request-no-cache"),  # RFC 9111 §5.2.1.4
        (prepared.no_cache, "stale", "no-cache"),  # RFC 9111 §5.2.2.4
        (max_age is not None and age > max_age, "request", "request-max-age"),  # RFC 9111 §5.2.1.1
        (min_fresh is not None and 0 < left < min_fresh, "request", "min-fresh"),  # RFC 9111 §5.2.1.3
    )
    return next(((fwd, detail) for required, fwd, detail in checks if required), None)


def _stale(request: Directives, prepared: Prepared, age: float, staleness: float) -> Reuse:
    conditional = list(prepared.validators.conditional)
    if prepared.stale_forbidden:  # RFC 9111 §4.2.4
        return Revalidate(conditional, "stale", "must-revalidate", must_revalidate=True)
    if staleness <= _max_stale(request):  # RFC 9111 §5.2.1.2
        return ServeStale(_seconds(age), _seconds(-staleness), "max-stale", None)
    while_revalidate = prepared.while_revalidate
    if "min-fresh" not in request and 0 < while_revalidate and staleness <= while_revalidate:  # RFC 5861 §3
        return ServeStale(_seconds(age), _seconds(-staleness), "stale-while-revalidate", conditional)
    if_error = prepared.if_error
    within_if_error = 0 < if_error and staleness <= if_error  # RFC 5861 §4
    return Revalidate(conditional, "stale", "stale", stale_if_error=within_if_error)


def _max_stale(request: Directives) -> float:
    """How stale the client accepts; -1 when it accepts nothing stale."""
    if "max-stale" not in request:
        return -1.0
    if None in request.values["max-stale"]:
        return math.inf  # a bare max-stale accepts any staleness
    seconds = request.seconds("max-stale")
    return -1.0 if seconds is None else float(seconds)


def _seconds(value: float) -> int:
    return max(-DELTA_MAX, min(DELTA_MAX, math.floor(value)))


def with_age(headers: Headers | Prepared, age: float) -> Headers:
    """`headers` (or a prepared response's) with the stored Age replaced by ours (RFC 9111 §5.1, §4:
    sent on every cached response), in whole seconds (RFC 9111 §1.2.2 delta-seconds)."""
    kept = headers.without_age if isinstance(headers, Prepared) else without(headers, frozenset({"age"}))
    return [*kept, ("Age", str(max(0, _seconds(age))))]


# --- Validation (RFC 9111 §4.3) -------------------------------------------------------------------

def freshen(stored: StoredResponse, request_headers: Headers, response_headers: Headers, settings: Settings,
            *, request_time: float, response_time: float) -> Store | ServeOnce | NoMatch:
    """Update `stored` with a 304's header fields (RFC 9111 §4.3.4)."""
    if not _selected_by_304(stored.headers, response_headers):
        return NoMatch("validator-mismatch")
    return _updated(stored, request_headers, response_headers, settings, request_time, response_time)


def _selected_by_304(stored_headers: Headers, headers: Headers) -> bool:
    # RFC 9111 §4.3.4: a strong entity-tag selects by strong comparison, a weak one by weak
    # comparison, else Last-Modified must be the same.
    new_tag = parse_etag(first_value(headers, "etag"))
    if new_tag is not None:
        compare = weak_match if new_tag.weak else strong_match
        return compare(new_tag, parse_etag(first_value(stored_headers, "etag")))
    last_modified = field_date(headers, "last-modified")
    if last_modified is not None:
        return last_modified == field_date(stored_headers, "last-modified")
    # DEVIATION: RFC 9111 §4.3.4 selects a response without validators only if the stored one has
    # none either; our conditional request carried this response's validators alone, so the 304
    # can only be about it.
    return True


def freshen_head(stored: StoredResponse, request_headers: Headers, response_headers: Headers,
                 settings: Settings, *, request_time: float, response_time: float) -> Store | ServeOnce | NoMatch:
    """Update `stored` with the header fields of a 200 answering a HEAD (RFC 9111 §4.3.5)."""
    validators_match = all(first_value(response_headers, name) == first_value(stored.headers, name)
                           for name in ("etag", "last-modified") if field_values(response_headers, name))
    length = first_value(response_headers, "content-length")
    length_matches = length is None or length == first_value(stored.headers, "content-length")
    if not (validators_match and length_matches):
        return NoMatch("head-mismatch")  # RFC 9111 §4.3.5: the stored response is to be considered stale
    return _updated(stored, request_headers, response_headers, settings, request_time, response_time)


def _updated(stored: StoredResponse, request_headers: Headers, headers: Headers, settings: Settings,
             request_time: float, response_time: float) -> Store | ServeOnce:
    merged = _merge(stored.headers, _with_date(headers, response_time))
    governing = response_directives(merged, settings.targeted_fields)
    store = _build(stored.status, merged, request_headers, settings, request_time, response_time, governing[0])
    refusal = _request_refusal("GET", request_headers, governing[0], settings)
    if refusal is not None:
        return ServeOnce(store.response, refusal.detail, drop=False)
    refusal = _content_refusal(stored.status, merged, settings, governing)
    if refusal is not None or store.ttl <= 0:
        return ServeOnce(store.response, refusal.detail if refusal else "stale-on-arrival", drop=True)
    return store


def _merge(stored_headers: Headers, headers: Headers) -> Headers:
    """RFC 9111 §3.2: each field of the new response replaces all stored lines of that name, except
    the hop-by-hop and content-framing ones; the new message's Age (or none) replaces the stored one."""
    updates = without(headers, _connection_fields(headers) | _PROXY_FIELDS | _CONTENT_FRAMING)
    replaced = {name.lower() for name, _ in updates} | {"age"}
    return [*without(stored_headers, frozenset(replaced)), *updates]


def conditional_reply(request_headers: Headers | RequestFields,
                      stored: StoredResponse | Prepared) -> Headers | None:
    """The header fields of a 304 answering the client's own conditional GET/HEAD, or None."""
    request = request_fields(request_headers)
    if not (request.values("if-none-match") or request.values("if-modified-since")):
        return None  # no validator of the client's, so _not_modified would be False
    validators = stored.validators if isinstance(stored, Prepared) else validators_of(stored)
    preconditions_apply = 200 <= validators.status < 300  # RFC 9110 §13.2.1
    if not (preconditions_apply and _not_modified(request, validators)):
        return None
    return list(validators.not_modified)


def _not_modified(request: RequestFields, validators: Validators) -> bool:
    if_none_match = request.values("if-none-match")
    if if_none_match:  # RFC 9110 §13.1.2, weak comparison; If-Modified-Since is then ignored
        tags = parse_etag_list(",".join(if_none_match))
        return tags is None or any(weak_match(tag, validators.etag) for tag in tags)
    since = request.values("if-modified-since")
    date = parse_http_date(since[0]) if len(since) == 1 else None  # RFC 9110 §13.1.3: else ignored
    return date is not None and validators.modification_time <= date


# --- Invalidation (RFC 9111 §4.4) -----------------------------------------------------------------

def invalidations(method: str, target_uri: str, status: int, response_headers: Headers) -> list[str]:
    """The absolute URIs whose stored responses an unsafe request's non-error response invalidates."""
    unsafe = method not in _SAFE_METHODS  # methods of unknown safety count as unsafe
    non_error = 200 <= status < 400
    if not (unsafe and non_error):
        return []
    uris = [target_uri]
    for name in ("location", "content-location"):
        value = first_value(response_headers, name)
        uri = urldefrag(urljoin(target_uri, value)).url if value else ""
        origin = _origin(uri) if uri else None
        same_origin = origin is not None and origin == _origin(target_uri)  # RFC 9111 §4.4
        if same_origin and uri not in uris:
            uris.append(uri)
    return uris


def _origin(uri: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname or "", port or _DEFAULT_PORTS.get(scheme)
