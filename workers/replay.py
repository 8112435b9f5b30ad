"""Requests the worker's main thread answered from the L1, by their exact bytes.

design: a hot object is asked for again and again with byte-identical requests (the same client
software, the same URL, the same header lines: a load balancer's checks, a fleet of API clients,
one browser revisiting an image, a benchmark). Parsing, routing and checking such a request gives
the same answer every time: they read nothing but its bytes and this worker's fixed settings (the
client's address is checked once per connection, on its first request). So the main thread keeps
the parsed head and route of requests it answered from the L1 when they arrived alone in one read,
and answers a byte-identical request with them, going straight to the cache front, which decides
afresh as for any hit (the object must still be the L1's current copy and fresh now). Requests
with a body, pipelined ones and partial reads are never kept or matched: they take the parser.

Only the main thread uses it (no lock). Bounded in entries and in the size of a kept request.
"""

from __future__ import annotations

from .http1 import RequestHead
from .proxy import Route

__all__ = ["Replays"]


class Replays:
    def __init__(self, max_entries: int = 512, max_request_bytes: int = 4096) -> None:
        self.max_entries, self.max_request_bytes = max_entries, max_request_bytes
        self._known: dict[bytes, tuple[RequestHead, Route]] = {}

    def get(self, raw: bytes) -> tuple[RequestHead, Route] | None:
        return self._known.get(raw)

    def remember(self, raw: bytes, head: RequestHead, target: Route) -> None:
        if len(raw) > self.max_request_bytes or raw in self._known:
            return
        if len(self._known) >= self.max_entries:
            del self._known[next(iter(self._known))]      # the oldest
        self._known[raw] = (head, target)

    def __len__(self) -> int:
        return len(self._known)
