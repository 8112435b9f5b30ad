"""The Cache-Status field (RFC 9211): one list member saying how our cache handled a response.

Rendered as an RFC 8941 structured field: the cache name as a token (or a string when it is not a
valid token), then parameters: booleans bare, integers in range, strings quoted and escaped.
"""

from __future__ import annotations

import functools
import re

__all__ = ["FORWARD_REASONS", "cache_status"]

# RFC 9211 §2.2: why a request was forwarded.
FORWARD_REASONS = frozenset({"bypass", "method", "uri-miss", "vary-miss", "miss", "request", "stale", "partial"})

_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")  # RFC 8941 §3.3.4
_INTEGER_MAX = 999_999_999_999_999  # RFC 8941 §3.3.1: at most 15 digits


def cache_status(cache_name: str, *, hit: bool = False, fwd: str | None = None, fwd_status: int | None = None,
                 ttl: int | None = None, stored: bool = False, collapsed: bool = False,
                 detail: str | None = None) -> str:
    """The list member for our cache, e.g. `proxy; fwd=miss; fwd-status=200; stored; ttl=60`.

    A proxy appends it to any Cache-Status the response already has (RFC 9211 §2: the member of the
    cache nearest the client comes last).
    """
    if fwd is not None and fwd not in FORWARD_REASONS:
        raise ValueError(f"Cache-Status fwd must be one of {sorted(FORWARD_REASONS)}, got {fwd!r}")
    member = [_token_or_string(cache_name)]
    if hit:
        member.append("hit")
    if fwd:
        member.append(f"fwd={fwd}")
    if fwd_status is not None:
        member.append(f"fwd-status={_integer(fwd_status)}")
    if ttl is not None:
        member.append(f"ttl={_integer(ttl)}")
    if stored:
        member.append("stored")
    if collapsed:
        member.append("collapsed")
    if detail:
        member.append(f"detail={_string(detail)}")
    return "; ".join(member)


@functools.lru_cache(maxsize=16)   # one cache name per proxy: checked once
def _token_or_string(text: str) -> str:
    return text if _TOKEN.fullmatch(text) else _string(text)


def _string(text: str) -> str:
    # RFC 8941 §3.3.3: printable ASCII only; backslash and double quote escaped.
    printable = "".join(char for char in text if " " <= char <= "~")
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _integer(number: int) -> int:
    return max(-_INTEGER_MAX, min(_INTEGER_MAX, int(number)))
