"""The data the cache policy works on: its Settings and a StoredResponse (the metadata of one variant).

Both are frozen and hold plain values only, so a store can serialise a StoredResponse field by field
(msgpack) and the control plane can build Settings from the config file.
"""

from __future__ import annotations

from dataclasses import dataclass

from cache.fields import Headers

__all__ = ["Settings", "StoredResponse"]


@dataclass(frozen=True, slots=True)
class Settings:
    """How the cache applies RFC 9111; all times in seconds.

    shared: a shared cache (a proxy): `private` responses are not stored, `s-maxage` counts.
    heuristic_fraction / heuristic_max: heuristic freshness = fraction x (Date - Last-Modified), capped.
    store_set_cookie: store responses that carry Set-Cookie (off: such responses are not stored).
    cdn_cache_control: reverse mode, the targeted field to obey (RFC 9213), e.g. "CDN-Cache-Control"
        or an own name such as "Acme-Cache-Control", which then falls back to CDN-Cache-Control.
        None (forward mode): only Cache-Control.
    stale_while_revalidate / stale_if_error: windows (RFC 5861) for responses that name none, by
        out-of-band contract with the origin (RFC 9111 §4.2.4); 0 = only what responses say.
    keep: how long a stale response that has a validator stays stored for conditional
        revalidation after its stale windows (Varnish's `keep`).
    """

    shared: bool = True
    heuristic_fraction: float = 0.1
    heuristic_max: float = 86400.0
    store_set_cookie: bool = False
    cdn_cache_control: str | None = None
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    keep: float = 0.0

    @property
    def targeted_fields(self) -> tuple[str, ...]:
        """RFC 9213 target list, most specific first."""
        name = self.cdn_cache_control
        if not name:
            return ()
        return (name,) if name.lower() == "cdn-cache-control" else (name, "CDN-Cache-Control")


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """One stored response (a variant): what RFC 9111 needs to judge it, nothing derived.

    The fields match what a store keeps (cache.layout.Meta): freshness and age are computed from
    them on use (RFC 9111 §4.2.3), so a change of Settings applies to responses already stored.
    secondary_key: cache.vary.secondary_key of the request that got the response, over
    vary_names(headers) (RFC 9111 §4.1).
    """

    status: int
    headers: Headers
    request_time: float
    response_time: float
    secondary_key: str = ""
