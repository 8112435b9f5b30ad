"""Settings of the cache, as the config file's [cache] section (validated by msgspec).

Sizes are bytes, times seconds. Each check names its key first ("`l1_ttl`: must be > 0"), which the
config loader turns into "file: cache.l1_ttl: must be > 0".
"""

from __future__ import annotations

import ipaddress

import msgspec

from cache import redis_url
from cache.model import Settings

__all__ = ["CacheSettings"]

_MiB = 1 << 20


class CacheSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    redis_url: str = "embedded"
    key_prefix: str = "pp"                  # every key is "<prefix>:{<tag>}:..."; the channel "<prefix>:events"
    socket_timeout: float = 0.25            # per Redis operation
    connect_timeout: float = 0.25
    breaker_threshold: int = 3              # consecutive failures that open a circuit
    breaker_cooldown: float = 5.0           # an open circuit skips Redis this long, then sends one probe
    max_object_bytes: int = 8 * _MiB        # larger bodies are not stored (the writer gives up mid-stream)
    chunk_bytes: int = 256 * 1024           # bodies are stored in chunks of this size
    ttl_margin: float = 60.0                # body chunks outlive their metadata by this much
    l1_max_bytes: int = 64 * _MiB           # per-worker in-process cache (0 = off)
    l1_max_object_bytes: int = 1 * _MiB     # larger objects are not kept in the L1
    l1_ttl: float = 5.0                     # an L1 copy is re-checked against Redis after this long
    lock_ttl: float = 30.0                  # a request-collapsing lock expires after this (killed worker)
    lock_timeout: float = 5.0               # a collapsed request waits this long, then fetches itself
    embedded_maxmemory: int = 256 * _MiB    # maxmemory of the embedded redis-server
    # RFC 9111 policy (cache.model.Settings)
    heuristic_fraction: float = 0.1         # §4.2.2: fraction of (Date - Last-Modified)
    heuristic_max: float = 86400.0          # ... capped at this
    store_set_cookie: bool = False          # store responses that carry Set-Cookie
    cdn_cache_control: str = "CDN-Cache-Control"  # RFC 9213 targeted field, reverse mode only ("" = off)
    stale_while_revalidate: float = 0.0     # RFC 5861 windows for responses that name none
    stale_if_error: float = 0.0
    keep: float = 600.0                     # stale responses with validators stay this long for revalidation
    hit_for_miss: float = 120.0             # an uncacheable URL is fetched straight this long (0 = off)
    purge_allow: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])

    def __post_init__(self) -> None:
        url = self.redis_url
        if url not in ("embedded", ""):
            try:
                redis_url.check(url)
            except ValueError as error:
                raise ValueError(f"`redis_url`: {error} (or be 'embedded', or '' for no cache), got {url!r}") from None
        if not self.key_prefix or any(c in self.key_prefix for c in "{} \t\r\n"):
            raise ValueError("`key_prefix`: must be a non-empty word without braces or spaces")
        self._positive("socket_timeout", "connect_timeout", "breaker_threshold", "breaker_cooldown",
                       "max_object_bytes", "l1_ttl", "lock_ttl", "embedded_maxmemory")
        self._positive("ttl_margin", "l1_max_bytes", "l1_max_object_bytes", "lock_timeout", allow_zero=True)
        if not 1024 <= self.chunk_bytes <= 64 * _MiB:
            raise ValueError(f"`chunk_bytes`: must be between 1024 and {64 * _MiB}, got {self.chunk_bytes}")
        self._positive("heuristic_fraction", "heuristic_max", "stale_while_revalidate",
                       "stale_if_error", "keep", "hit_for_miss", allow_zero=True)
        if self.heuristic_fraction > 1:
            raise ValueError(f"`heuristic_fraction`: must be <= 1, got {self.heuristic_fraction}")
        for network in self.purge_allow:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"`purge_allow`: {network!r} is not an address or CIDR network") from None
        if self.embedded_maxmemory < _MiB:
            raise ValueError(f"`embedded_maxmemory`: must be >= {_MiB} (1 MiB), got {self.embedded_maxmemory}")

    def _positive(self, *names: str, allow_zero: bool = False) -> None:
        for name in names:
            value = getattr(self, name)
            if value < 0 or (value == 0 and not allow_zero):
                raise ValueError(f"`{name}`: must be {'>= 0' if allow_zero else '> 0'}, got {value}")

    def policy(self, reverse: bool) -> Settings:
        """The RFC 9111 policy settings; CDN-Cache-Control (RFC 9213) applies in reverse mode only."""
        return Settings(shared=True, heuristic_fraction=self.heuristic_fraction,
                        heuristic_max=self.heuristic_max, store_set_cookie=self.store_set_cookie,
                        cdn_cache_control=(self.cdn_cache_control or None) if reverse else None,
                        stale_while_revalidate=self.stale_while_revalidate,
                        stale_if_error=self.stale_if_error, keep=self.keep)
