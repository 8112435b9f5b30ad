"""Deterministic bodies of any size, generated in chunks (never held whole in memory).

The block length is a prime, so a body shifted, truncated or with a chunk repeated or lost does
not hash the same as the expected one.
"""

from __future__ import annotations

import functools
import hashlib
import random
from typing import Iterator

BLOCK = random.Random(20240611).randbytes(65521)
_TWICE = BLOCK * 2
CHUNK = len(BLOCK)


def iter_pattern(size: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """Yield `size` bytes of the pattern in pieces of at most `chunk` (<= len(BLOCK)) bytes."""
    chunk = min(chunk, CHUNK)
    offset, left = 0, size
    while left > 0:
        step = min(chunk, left)
        yield _TWICE[offset:offset + step]
        offset = (offset + step) % CHUNK
        left -= step


def pattern_bytes(size: int) -> bytes:
    """The first `size` bytes of the pattern, whole (for small bodies)."""
    return b"".join(iter_pattern(size))


@functools.lru_cache(maxsize=32)
def pattern_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for piece in iter_pattern(size):
        digest.update(piece)
    return digest.hexdigest()
