"""A counting origin for the cache tests: resources whose headers, body, validators and failures a
test changes while the proxy runs, on top of the scriptable Origin (which records every request).

    origin = CountingOrigin().start()
    page = origin.resource("/page", body=b"v1", headers=[("Cache-Control", "max-age=60")], etag='"v1"')
    ... page.body = b"v2"; page.mode = "error" ...
    origin.count("/page"); origin.seen("/page")[-1].header("If-None-Match")

A resource answers If-None-Match with a 304 (plus `not_modified_headers`) when its current ETag is
listed; `mode` makes it misbehave: "error" (500), "close" (close without answering), "truncate"
(announce the whole body, send `truncate_at` bytes, close). `delay` (seconds) is slept before
answering; `conditional_delay` only before answering a conditional request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .origin import Exchange, Origin, Received

__all__ = ["CountingOrigin", "Resource"]

Body = bytes | Callable[[Received], bytes]


@dataclass
class Resource:
    body: Body = b"body\n"
    headers: list[tuple[str, str]] = field(default_factory=list)
    status: int = 200
    etag: str | None = None
    not_modified_headers: list[tuple[str, str]] = field(default_factory=list)
    mode: str = "ok"                 # "ok", "error", "close", "truncate"
    truncate_at: int = 0
    delay: float = 0.0
    conditional_delay: float = 0.0
    content_type: str = "application/octet-stream"

    def __call__(self, ex: Exchange) -> None:
        ex.read_body()
        request = ex.request
        conditional = request.has("If-None-Match")
        pause = self.delay + (self.conditional_delay if conditional else 0.0)
        if pause:
            ex.sleep(pause)
        if self.mode == "close":
            ex.close()
        elif self.mode == "error":
            ex.respond(500, b"origin failed\n", headers=[("Cache-Control", "no-store")])
        elif conditional and self.etag is not None and self._matches(request.header("If-None-Match")):
            ex.head(304, [("ETag", self.etag)] + list(self.not_modified_headers))
        else:
            self._full(ex)

    def _matches(self, listed: str) -> bool:
        tags = [tag.strip() for tag in listed.split(",")]
        return "*" in tags or self.etag in tags or self.etag.removeprefix("W/") in [
            tag.removeprefix("W/") for tag in tags]

    def _full(self, ex: Exchange) -> None:
        body = self.body(ex.request) if callable(self.body) else self.body
        fields = [("Content-Type", self.content_type), ("Content-Length", str(len(body)))]
        fields += [("ETag", self.etag)] if self.etag is not None else []
        if self.mode == "truncate":
            ex.keep_alive = False
            ex.head(self.status, fields + list(self.headers))
            ex.send(body[:self.truncate_at])
            ex.close()
            return
        ex.head(self.status, fields + list(self.headers))
        if ex.request.method != "HEAD" and body and self.status not in (204, 304):
            ex.send(body)


class CountingOrigin(Origin):
    """Origin with named resources; counts and keeps every request per path (Origin.received)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self._resources_lock = threading.Lock()

    def resource(self, path: str, body: Body = b"body\n", **options: object) -> Resource:
        resource = Resource(body=body, **options)
        with self._resources_lock:
            self.route(path, resource)
        return resource

    def seen(self, path: str, method: str | None = None) -> list[Received]:
        return self.requests(path, method)

    def count(self, path: str, method: str | None = None) -> int:
        return len(self.requests(path, method))
