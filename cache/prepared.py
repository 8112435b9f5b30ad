"""What the reuse rules read, gathered once: per stored response (Prepared) and per request (RequestFields).

design: a hot object is judged thousands of times a second, but nothing about it that does not
depend on the request or the clock changes between hits: its directives, freshness lifetime,
corrected_initial_age, validators, Vary names. `prepare` derives them once (the store keeps the
result next to its L1 copy and drops it with the copy); `request_fields` reads a request's few
fields the policy looks at in one scan. Both only cache what the functions of cache.freshness,
cache.cache_control and cache.vary compute on use: the RFC rules stay there, cited once.
"""

from __future__ import annotations

from dataclasses import dataclass

from cache.cache_control import Directives, parse_cache_control, pragma_directives, response_directives
from cache.fields import ETag, Headers, field_date, first_value, parse_etag, without
from cache.freshness import (corrected_initial_age, freshness_lifetime, resident_time, stale_forbidden,
                             stale_window)
from cache.model import Settings, StoredResponse
from cache.vary import field_values, vary_names

__all__ = ["Prepared", "RequestFields", "Validators", "conditional_headers", "prepare", "request_fields",
           "stored_response", "validators_of"]

_NOT_MODIFIED_FIELDS = frozenset({"cache-control", "content-location", "date", "etag", "expires", "vary"})
_AGE = frozenset({"age"})
# The request fields the reuse rules, conditional_reply and byte_range read (Vary'd fields aside).
_READ = frozenset({"cache-control", "pragma", "if-match", "if-unmodified-since", "if-none-match",
                   "if-modified-since", "range", "if-range"})
_NO_DIRECTIVES = parse_cache_control("")


# --- Per stored response --------------------------------------------------------------------------

def conditional_headers(stored: StoredResponse) -> Headers:
    """RFC 9111 §4.3.1: the stored entity-tag as If-None-Match, Last-Modified as If-Modified-Since."""
    etag, last_modified = first_value(stored.headers, "etag"), first_value(stored.headers, "last-modified")
    return ([("If-None-Match", etag)] if etag else []) + (
        [("If-Modified-Since", last_modified)] if last_modified else [])


def _modification_time(stored: StoredResponse) -> float:
    # RFC 9111 §4.3.2: Last-Modified, else Date, else when the response was received.
    for name in ("last-modified", "date"):
        moment = field_date(stored.headers, name)
        if moment is not None:
            return moment
    return stored.response_time


@dataclass(frozen=True, slots=True)
class Validators:
    """A stored response's validators, for revalidating it and for answering a client's own
    conditional request (settings play no part)."""

    status: int
    conditional: tuple[tuple[str, str], ...]    # conditional_headers
    etag: ETag | None                           # the first ETag, parsed
    modification_time: float                    # RFC 9111 §4.3.2
    not_modified: tuple[tuple[str, str], ...]   # the header fields of a 304 (RFC 9110 §15.4.5)


def validators_of(stored: StoredResponse) -> Validators:
    etag = first_value(stored.headers, "etag")
    # RFC 9110 §15.4.5: a 304 carries the fields a 200 would among these; Last-Modified only without ETag.
    names = _NOT_MODIFIED_FIELDS if etag is not None else _NOT_MODIFIED_FIELDS | {"last-modified"}
    return Validators(stored.status, tuple(conditional_headers(stored)), parse_etag(etag), _modification_time(stored),
                      tuple(field for field in stored.headers if field[0].lower() in names))


@dataclass(frozen=True, slots=True)
class Prepared:
    """A stored response with what the reuse rules derive from it under `settings`. Build it with
    `prepare`; it is valid for as long as `stored` is (a freshened response is a new one)."""

    stored: StoredResponse
    settings: Settings
    directives: Directives          # response_directives (a targeted field's, if one governs)
    lifetime: float                 # freshness_lifetime
    initial_age: float              # corrected_initial_age
    vary: tuple[str, ...] | None    # vary_names (None: Vary: *)
    selected_by_all: bool           # varies on nothing, so every request selects it (RFC 9111 §4.1)
    no_cache: bool                  # an unqualified no-cache directive
    stale_forbidden: bool           # stale_forbidden
    while_revalidate: float         # stale_window for stale-while-revalidate
    if_error: float                 # stale_window for stale-if-error
    validators: Validators
    without_age: tuple[tuple[str, str], ...]   # the stored header fields but Age

    def current_age(self, now: float) -> float:
        """cache.freshness.current_age, from the corrected_initial_age derived once."""
        return self.initial_age + resident_time(self.stored, now)


def prepare(stored: StoredResponse | Prepared, settings: Settings) -> Prepared:
    """`stored` prepared for `settings`; a Prepared for the same settings is returned as is."""
    if isinstance(stored, Prepared):
        if stored.settings is settings or stored.settings == settings:
            return stored
        stored = stored.stored
    directives, _ = response_directives(stored.headers, settings.targeted_fields)
    vary = vary_names(stored.headers)
    return Prepared(
        stored=stored, settings=settings, directives=directives,
        lifetime=freshness_lifetime(stored, settings),
        initial_age=corrected_initial_age(stored.headers, stored.request_time, stored.response_time),
        vary=vary, selected_by_all=vary == () and stored.secondary_key == "",
        no_cache=directives.unqualified("no-cache"), stale_forbidden=stale_forbidden(directives, settings),
        while_revalidate=stale_window(directives, "stale-while-revalidate", settings.stale_while_revalidate),
        if_error=stale_window(directives, "stale-if-error", settings.stale_if_error),
        validators=validators_of(stored), without_age=tuple(without(stored.headers, _AGE)))


def stored_response(stored: StoredResponse | Prepared) -> StoredResponse:
    return stored.stored if isinstance(stored, Prepared) else stored


# --- Per request ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RequestFields:
    """A request's header fields with the few the policy reads collected in one scan."""

    headers: Headers
    found: dict[str, tuple[str, ...]]   # lower-cased name in _READ -> its values, in order
    directives: Directives              # cache.cache_control.request_directives

    def values(self, name: str) -> tuple[str, ...] | list[str]:
        """field_values(headers, name), without a scan for the fields collected."""
        if name in _READ:
            return self.found.get(name, ())
        return field_values(self.headers, name)

    def first(self, name: str) -> str | None:
        """first_value(headers, name)."""
        values = self.values(name)
        return values[0].strip() if values else None


def request_fields(headers: Headers | RequestFields) -> RequestFields:
    """The request's fields read once; RequestFields are returned as they are."""
    if isinstance(headers, RequestFields):
        return headers
    lists: dict[str, list[str]] = {}
    for name, value in headers:
        lname = name.lower()
        if lname in _READ:
            lists.setdefault(lname, []).append(value)
    if not lists:          # the common request: nothing the policy reads
        return RequestFields(headers, {}, _NO_DIRECTIVES)
    found = {name: tuple(values) for name, values in lists.items()}
    return RequestFields(headers, found, _request_directives(found))


def _request_directives(found: dict[str, tuple[str, ...]]) -> Directives:
    """cache.cache_control.request_directives over the collected fields."""
    values = found.get("cache-control")
    if values:
        return parse_cache_control(", ".join(values))
    return pragma_directives(found.get("pragma", ()))
