"""Settings of the cache, as the config file's [cache] section (validated by msgspec)."""

from __future__ import annotations

import msgspec

__all__ = ["CacheSettings"]

_SCHEMES = ("redis://", "rediss://", "unix://")


class CacheSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    redis_url: str = "embedded"

    def __post_init__(self) -> None:
        url = self.redis_url
        if url not in ("embedded", "") and not url.startswith(_SCHEMES):
            raise ValueError(
                f"`redis_url`: must be 'embedded', '' (no cache) or start with redis://, rediss:// or unix://, got {url!r}")
