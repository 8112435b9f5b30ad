"""Cache-Control (RFC 9111 §5.2), Pragma (§5.4) and targeted fields (RFC 9213) parsed into Directives.

Parsing is robust, never strict: directive names are case-insensitive, values may be tokens or
quoted strings, commas inside quoted strings do not split, garbage between commas is skipped, and
every occurrence of a duplicated directive is kept so that the reader can judge the conflict
(RFC 9111 §4.2.1). Parsed values are cached by field value: hot responses parse once.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cache.fields import Headers, delta_seconds
from cache.vary import field_values

__all__ = ["Directives", "parse_cache_control", "pragma_directives", "request_directives", "response_directives"]

_DIRECTIVE = re.compile(r"""
    ([^=,\s"]+)                               # name
    \s* (?: = \s* ("(?:[^"\\]|\\.)*" | [^,]*) )?  # =value: a quoted-string, or up to the next comma
    \s* (?:,|$)""", re.X)
_ESCAPE = re.compile(r"\\(.)")

# RFC 8941 §3.2 dictionary members (key, or key=item) as RFC 9213 §2.1 requires of targeted fields.
_SF_KEY = r"[a-z*][a-z0-9_\-.*]*"
_SF_ITEM = r"""(?: -?\d{1,15}(?:\.\d{1,3})?                # integer or decimal
               | "(?:[^"\\\x00-\x1f\x7f]|\\["\\])*"      # string
               | [A-Za-z*][!#$%&'*+\-.^_`|~\w:/]*          # token
               | \?[01] )"""                                # boolean
_SF_MEMBER = rf"{_SF_KEY} (?: = {_SF_ITEM} )?"
_SF_DICTIONARY = re.compile(rf"\s* {_SF_MEMBER} (?: \s*,\s* {_SF_MEMBER} )* \s*", re.X)


@dataclass(frozen=True, slots=True)
class Directives:
    """Directive name (lower case) -> the values of all its occurrences (None: no argument)."""

    values: dict[str, tuple[str | None, ...]]

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def seconds(self, name: str) -> int | None:
        """The delta-seconds argument; None when absent, not an integer, or given twice differently."""
        values = set(self.values.get(name, ()))
        return delta_seconds(values.pop()) if len(values) == 1 else None

    def fields(self, name: str) -> frozenset[str] | None:
        """Field names listed by a qualified no-cache / private; None when absent or unqualified."""
        values = self.values.get(name, ())
        lists = [value for value in values if value and value.strip()]
        if not values or len(lists) < len(values):
            return None
        return frozenset(part.strip().lower() for value in lists for part in value.split(",") if part.strip())

    def unqualified(self, name: str) -> bool:
        """Present without a field-name list, so it covers the whole response."""
        return name in self.values and self.fields(name) is None


@functools.lru_cache(maxsize=2048)
def parse_cache_control(value: str) -> Directives:
    """All directives of a (combined) Cache-Control field value."""
    values: dict[str, tuple[str | None, ...]] = {}
    for match in _DIRECTIVE.finditer(value):
        name, argument = match.group(1).lower(), match.group(2)
        if argument is not None:
            argument = argument.strip()
            if argument.startswith('"') and argument.endswith('"') and len(argument) > 1:
                argument = _ESCAPE.sub(r"\1", argument[1:-1])
        values[name] = values.get(name, ()) + (argument,)
    return Directives(values)


_EMPTY = parse_cache_control("")
_NO_CACHE = parse_cache_control("no-cache")


def request_directives(headers: Headers) -> Directives:
    """The request's directives; `Pragma: no-cache` counts only without Cache-Control."""
    values = field_values(headers, "cache-control")
    if values:
        return parse_cache_control(", ".join(values))
    return pragma_directives(field_values(headers, "pragma"))


def pragma_directives(values: Sequence[str]) -> Directives:
    """The directives a request's Pragma values stand for when it has no Cache-Control."""
    pragma = {token.strip().lower() for value in values for token in value.split(",")}
    return _NO_CACHE if "no-cache" in pragma else _EMPTY  # RFC 9111 §5.4


def response_directives(headers: Headers, targets: tuple[str, ...] = ()) -> tuple[Directives, bool]:
    """The directives that govern a response, and whether they came from a targeted field.

    The first of `targets` present with a valid, non-empty value wins, and then Cache-Control and
    Expires are ignored (RFC 9213 §2.2); otherwise Cache-Control.
    """
    for name in targets:
        values = field_values(headers, name)
        directives = _targeted(", ".join(values)) if values else None
        if directives is not None:
            return directives, True
    return parse_cache_control(", ".join(field_values(headers, "cache-control"))), False


@functools.lru_cache(maxsize=256)
def _targeted(value: str) -> Directives | None:
    # RFC 9213 §2.1: a targeted field is a Dictionary; empty or unparseable, it is ignored.
    # DEVIATION: members with parameters count as unparseable (no directive defines any).
    if not value.strip() or not _SF_DICTIONARY.fullmatch(value):
        return None
    parsed = parse_cache_control(value).values
    # RFC 8941 §3.3.6: `?0` is false (the directive is absent), `?1` true (a bare directive).
    values = {name: tuple(None if arg == "?1" else arg for arg in args)
              for name, args in parsed.items() if "?0" not in args}
    return Directives(values)
