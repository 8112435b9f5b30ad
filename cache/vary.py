"""Vary (RFC 9111 §4.1): which request fields select a stored variant, and the key they make.

Headers everywhere in this project are `list[tuple[str, str]]` (latin-1 text, names in any case).
"""

from __future__ import annotations

__all__ = ["vary_names", "secondary_key", "field_values"]


def field_values(headers: list[tuple[str, str]], name: str) -> list[str]:
    """All values of field `name` (case-insensitive), in order."""
    lname, size = name.lower(), len(name)
    return [value for key, value in headers if len(key) == size and key.lower() == lname]


def vary_names(response_headers: list[tuple[str, str]]) -> tuple[str, ...] | None:
    """The sorted, lower-cased field names a response varies on; None for `Vary: *` (never matches)."""
    names: set[str] = set()
    for value in field_values(response_headers, "vary"):
        for name in value.split(","):
            name = name.strip().lower()
            if name == "*":
                return None  # RFC 9111 §4.1: a Vary of "*" always fails to match
            if name:
                names.add(name)
    return tuple(sorted(names))


def _normalise(values: list[str]) -> str:
    # RFC 9111 §4.1: values may be normalised — combine field lines (RFC 9110 §5.3) and fold
    # whitespace around commas, so "gzip,br" and "gzip, br" select the same variant.
    joined = ",".join(values)
    return ",".join(part.strip() for part in joined.split(",")) if values else "\x00absent"


def secondary_key(request_headers: list[tuple[str, str]], names: tuple[str, ...]) -> str:
    """A stable key from the request's values of the Vary'd fields (absent differs from empty)."""
    if not names:
        return ""
    return "\n".join(f"{name}:{_normalise(field_values(request_headers, name))}" for name in names)
