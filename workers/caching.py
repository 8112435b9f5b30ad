"""The cache front: the I/O shell around the RFC 9111 policy (cache.policy) and the store.

# design: `cache.policy` decides (reuse, store, freshen, invalidate) from headers and times passed
# in; this module only acts on its intentions, ending each dispatch with `assert_never`. The store
# answers hot hits from the worker's L1 with no network round trip. A miss streams the origin's
# response to the client while a writer copies it to the store; only a body that arrived whole is
# committed. Concurrent misses for one key collapse onto one origin fetch (in-process future +
# Redis lock). A Redis that is down, slow or full only ever means "serve uncached" (fwd=bypass).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, assert_never

import msgspec

from cache import policy
from cache.layout import Meta
from cache.store import UNAVAILABLE, VARY_MISS
from cache.policy import (DontStore, Forward, Fresh, Full, NoMatch, OnlyIfCachedMiss, Partial,
                          Revalidate, ServeOnce, ServeStale, Store, Unsatisfiable)

from .accesslog import Record
from .errors import BadGateway, Forbidden, GatewayTimeout, NotFound, ProxyError
from .http1 import RequestHead, ResponseHead
from .proxy import Route, end_to_end
from .upstream import Pool, fetch_whole

if TYPE_CHECKING:
    from cache.store import Hit
    from cache.store import Store as CacheStore

    from .connection import ClientConnection, Fetched

__all__ = ["CacheFront"]

log = logging.getLogger("prefork_proxy.cache")

_CACHEABLE_METHODS = frozenset(("GET", "HEAD"))
_HEADS_KEPT = 4096
_SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS", "TRACE"))
_CONDITIONAL_FIELDS = frozenset(("if-none-match", "if-modified-since"))


class _Writer:
    """Tee target: copies the streamed body into a store writer; commits when it ended whole."""

    def __init__(self, writer, meta: Meta) -> None:
        self.writer, self.meta, self.committed = writer, meta, False

    def write(self, data: bytes) -> None:
        self.writer.write(data)       # False once it gave up (too big, Redis failed): keeps going

    def complete(self) -> None:
        self.committed = self.writer.commit(self.meta, time.time())


class CacheFront:
    """Per worker; shared by its handler threads (the store is thread-safe)."""

    def __init__(self, store: CacheStore, settings: policy.Settings, name: str, pool: Pool,
                 purge_allowed: Callable[[str], bool] = lambda ip: False) -> None:
        self.store, self.settings, self.name, self.pool = store, settings, name, pool
        self.purge_allowed = purge_allowed
        self._refreshing: set[str] = set()
        self._refresh_lock = threading.Lock()
        self.passes = _PassList(store.settings.hit_for_miss)
        self._heads: dict[tuple, tuple[Meta, bytes]] = {}     # see _head_bytes
        self._hit_statuses: dict[int, str] = {}

    # -- entry point --------------------------------------------------------------------------
    def handle(self, conn: ClientConnection, head: RequestHead, target: Route, record: Record) -> bool:
        if head.method == "PURGE":
            return self._purge(conn, head, target, record)
        if head.method not in _CACHEABLE_METHODS:
            return self._unsafe(conn, head, target, record)
        if self.passes.holds(target.uri) and head.method == "GET":
            # hit-for-miss: known uncacheable, so no lookup and no collapsing lock
            return self._fetch_and_store(conn, head, target, record, "uri-miss", "hit-for-miss")
        hit = self.store.lookup(target.uri, head.headers)
        if hit is UNAVAILABLE:                              # Redis trouble: serve uncached
            return self._bypass(conn, head, target, record)
        request = policy.request_fields(head.headers)       # read once for every policy call below
        stored = hit.derived(self.settings, policy.prepare) if hit else None    # once per L1 copy
        decision = policy.decide_reuse(head.method, request, stored, self.settings, time.time())
        match decision:
            case Fresh(age=age, ttl=ttl):
                self._count(conn, "cache_hit", record, "hit")
                return self._serve_hit(conn, head, hit, age, record, self._status(hit=True, ttl=ttl), request)
            case ServeStale(age=age, ttl=ttl, detail=detail, revalidate=revalidate):
                self._count(conn, "cache_stale", record, "stale")
                if revalidate is not None:
                    self._refresh_later(conn.upstream_headers(head, target), head, target, hit, revalidate)
                return self._serve_hit(conn, head, hit, age, record,
                                       self._status(hit=True, ttl=ttl, detail=detail), request)
            case Revalidate():
                return self._revalidate(conn, head, target, record, hit, decision)
            case Forward(fwd=fwd, detail=detail):
                if hit is VARY_MISS and fwd == "uri-miss":
                    fwd = "vary-miss"                  # RFC 9211 §2.2: other variants are stored
                return self._miss(conn, head, target, record, self._fwd(fwd), detail)
            case OnlyIfCachedMiss(detail=detail):
                self._count(conn, "cache_miss", record, "miss")
                raise GatewayTimeout(f"only-if-cached: {detail}")       # RFC 9111 §5.2.1.7
            case _:
                assert_never(decision)

    def serve_l1(self, conn: ClientConnection, head: RequestHead, target: Route,
                 record: Record) -> bool | None:
        """The main thread's fast path: a fresh hit held in this worker's L1, answered with no
        I/O wait; None (nothing sent) when the request needs more (Redis, the origin)."""
        if self.passes.holds(target.uri):
            return None
        hit = self.store.lookup_l1(target.uri, head.headers)
        if hit is None:
            return None
        request = policy.request_fields(head.headers)
        stored = hit.derived(self.settings, policy.prepare)
        decision = policy.decide_reuse(head.method, request, stored, self.settings, time.time())
        if not isinstance(decision, Fresh):
            return None
        self._count(conn, "cache_hit", record, "hit")
        return self._serve_hit(conn, head, hit, decision.age, record,
                               self._hit_status(decision.ttl), request)

    # -- hits -----------------------------------------------------------------------------------
    def _serve_hit(self, conn: ClientConnection, head: RequestHead, hit: Hit, age: float,
                   record: Record, cache_status: str, request: policy.RequestFields | None = None) -> bool:
        """Send `hit` (or a 304 or a part of it); `request`: the head's fields, if read already."""
        request = policy.request_fields(head.headers if request is None else request)
        stored = hit.derived(self.settings, policy.prepare)
        not_modified = policy.conditional_reply(request, stored)
        if not_modified is not None:                        # RFC 9110 §13.1: the client's own validators
            headers = policy.with_age(not_modified, age)
            headers.append(("Cache-Status", cache_status))
            return conn.send_stored(head, record, 304, headers, (), 0)
        meta = hit.meta
        part = policy.byte_range(head.method, request, stored, meta.body_length)
        if isinstance(part, Full):
            keep = conn.can_keep(head)
            wire = self._head_bytes(conn, head, meta, stored, age, cache_status, keep, hit.source == "l1")
            return conn.send_prepared(head, record, meta.status, wire, keep, hit.chunks())
        headers = policy.with_age(stored, age)
        headers.append(("Cache-Status", cache_status))
        match part:
            case Full():
                raise AssertionError("answered above")
            case Partial(start=start, end=end, headers=extra):
                body = _slice(hit, start, end)
                return conn.send_stored(head, record, 206, _merge(headers, extra), body, end - start + 1)
            case Unsatisfiable(headers=extra):
                return conn.send_stored(head, record, 416, _merge(headers, extra), (), 0)
            case _:
                assert_never(part)

    def _head_bytes(self, conn, head, meta: Meta, stored, age: float, cache_status: str,
                    keep: bool, reuse: bool) -> bytes:
        """The serialised head of a full hit. It changes only with the second of Age and the
        Cache-Status text, so hot objects (`reuse`: the L1's long-lived copy) reuse it: a hit then
        costs no header building."""
        key = (id(meta), math.floor(max(age, 0.0)), cache_status, head.method, head.version, keep)
        made = self._heads.get(key) if reuse else None
        if made is not None and made[0] is meta:       # the id is only trusted with its object
            return made[1]
        headers = policy.with_age(stored, age)
        headers.append(("Cache-Status", cache_status))
        wire = conn.stored_head(head, meta.status, headers, meta.body_length, keep)
        if not reuse:
            return wire
        if len(self._heads) >= _HEADS_KEPT:
            self._heads.clear()
        self._heads[key] = (meta, wire)
        return wire

    # -- misses ---------------------------------------------------------------------------------
    def _miss(self, conn: ClientConnection, head: RequestHead, target: Route, record: Record,
              fwd: str, detail: str) -> bool:
        if fwd not in ("uri-miss", "vary-miss") or head.has_body:
            return self._fetch_and_store(conn, head, target, record, fwd, detail)
        with self.store.collapse(target.uri) as ticket:     # N concurrent misses -> one fetch
            if not ticket.leader:
                served = self._serve_collapsed(conn, head, target, record)
                if served is not None:
                    return served
            return self._fetch_and_store(conn, head, target, record, fwd, detail)

    def _serve_collapsed(self, conn, head, target, record) -> bool | None:
        """After waiting on another fetch of the key: serve what it stored, if usable now."""
        hit = self.store.lookup(target.uri, head.headers)
        if not hit:                                         # None or VARY_MISS
            return None
        stored = hit.derived(self.settings, policy.prepare)
        decision = policy.decide_reuse(head.method, head.headers, stored, self.settings, time.time())
        if not isinstance(decision, Fresh):
            return None
        self._count(conn, "cache_hit", record, "hit")
        return self._serve_hit(conn, head, hit, decision.age, record,
                               self._status(hit=True, ttl=decision.ttl, collapsed=True))

    def _fetch_and_store(self, conn: ClientConnection, head: RequestHead, target: Route,
                         record: Record, fwd: str, detail: str) -> bool:
        fetched = conn.fetch(head, target, record)
        return self._relay_and_store(conn, head, target, record, fetched, fwd, detail)

    def _relay_and_store(self, conn, head, target, record, fetched: Fetched, fwd: str, detail: str) -> bool:
        response = fetched.response
        decision = self._decide_store(head, response, fetched.request_time, fetched.response_time)
        self.passes.learn(target.uri, decision)
        tee = None
        if isinstance(decision, Store):
            # The policy's headers, not the origin's: fields named by private="..." and
            # no-cache="..." are left out, and a Date is added when the origin sent none.
            meta = Meta(status=response.status, headers=list(decision.response.headers),
                        request_time=fetched.request_time, response_time=fetched.response_time,
                        ttl=decision.ttl)
            tee = _Writer(self.store.open_writer(target.uri, head.headers, decision.ttl), meta)
            self._count(conn, "cache_miss", record, "miss")
        else:
            detail = decision.detail
            self._count(conn, "cache_uncacheable" if fwd != "bypass" else "cache_bypass", record,
                        "uncacheable" if fwd != "bypass" else "bypass")
        status = self._status(fwd=fwd, fwd_status=response.status, stored=tee is not None,
                              detail=None if tee is not None else detail)
        try:
            return conn.relay(head, fetched, record, [("Cache-Status", status)], tee)
        finally:
            if tee is not None and not tee.committed:
                tee.writer.abort()

    def _decide_store(self, head: RequestHead, response: ResponseHead, request_time: float,
                      response_time: float):
        length = response.content_length
        if length is not None and length > self.store.settings.max_object_bytes:
            return DontStore("too-large", "cache.max_object_bytes")
        return policy.decide_store(head.method, head.headers, response.status,
                                   end_to_end(response.headers), self.settings,
                                   request_time=request_time, response_time=response_time)

    # -- validation -----------------------------------------------------------------------------
    def _revalidate(self, conn, head, target, record, hit: Hit, decision: Revalidate) -> bool:
        replace = (_CONDITIONAL_FIELDS, list(decision.conditional))
        try:
            fetched = conn.fetch(head, target, record, replace)
        except (BadGateway, GatewayTimeout) as error:
            return self._origin_failed(conn, head, record, hit, decision, error)
        response = fetched.response
        if response.status >= 500 and decision.stale_if_error:
            conn.discard(fetched)
            return self._serve_stale_on_error(conn, head, record, hit, f"origin answered {response.status}")
        if response.status != 304:
            return self._relay_and_store(conn, head, target, record, fetched, self._fwd(decision.fwd),
                                         decision.detail)
        conn.discard(fetched)
        return self._freshened(conn, head, target, record, hit, fetched, decision)

    def _freshened(self, conn, head, target, record, hit: Hit, fetched: Fetched, decision) -> bool:
        result = policy.freshen(hit.meta, head.headers, fetched.response.headers, self.settings,
                                request_time=fetched.request_time, response_time=fetched.response_time)
        match result:
            case Store(response=fresh, ttl=ttl):
                meta = _replace_meta(hit.meta, fresh, ttl)
                stored = self.store.update_meta(target.uri, meta, time.time()) or \
                    self._store_again(target, head, hit, meta)
                hit.meta = meta
            case ServeOnce(response=fresh, drop=drop):
                if drop:
                    self.store.purge(target.uri)
                stored = False
                hit.meta = _replace_meta(hit.meta, fresh, hit.meta.ttl)
            case NoMatch(detail=detail):
                return self._fetch_and_store(conn, head, target, record, "stale", detail)
            case _:
                assert_never(result)
        self._count(conn, "cache_revalidated", record, "revalidated")
        age = policy.current_age(hit.meta, time.time())
        status = self._status(fwd=self._fwd(decision.fwd), fwd_status=304, stored=stored)
        return self._serve_hit(conn, head, hit, age, record, status)

    def _store_again(self, target: Route, head: RequestHead, hit: Hit, meta: Meta) -> bool:
        """The entry left Redis while only our L1 kept it (its TTL ran out): write it anew."""
        if hit.body is None:
            return False
        writer = self.store.open_writer(target.uri, head.headers, meta.ttl)
        try:
            writer.write(hit.body)
            return writer.commit(_fresh_meta(meta), time.time())
        finally:
            writer.abort()

    def _origin_failed(self, conn, head, record, hit: Hit, decision: Revalidate, error: ProxyError) -> bool:
        if decision.stale_if_error:                           # RFC 5861 §4
            return self._serve_stale_on_error(conn, head, record, hit, error.detail)
        if decision.must_revalidate:                          # RFC 9111 §5.2.2.2
            raise GatewayTimeout(f"cannot revalidate a must-revalidate response: {error.detail}")
        raise error

    def _serve_stale_on_error(self, conn, head, record, hit: Hit, why: str) -> bool:
        self._count(conn, "cache_stale", record, "stale")
        age = policy.current_age(hit.meta, time.time())
        status = self._status(hit=True, detail=f"stale-if-error: {why}")
        return self._serve_hit(conn, head, hit, age, record, status)

    def _refresh_later(self, upstream_headers, head: RequestHead, target: Route, hit: Hit,
                       conditional) -> None:
        """RFC 5861 §3: revalidate in the background, once per key however many requests come."""
        key = target.uri
        with self._refresh_lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)
        thread = threading.Thread(target=self._refresh,
                                  args=(upstream_headers, head, target, hit, conditional),
                                  daemon=True, name="cache-refresh")
        thread.start()

    def _refresh(self, upstream_headers, head: RequestHead, target: Route, hit: Hit, conditional) -> None:
        try:
            with self.store.collapse(target.uri) as ticket:
                if ticket.leader:
                    self._refresh_now(upstream_headers, head, target, hit, conditional)
        except Exception:
            log.exception("background revalidation of %s failed", target.uri)
        finally:
            with self._refresh_lock:
                self._refreshing.discard(target.uri)

    def _refresh_now(self, upstream_headers, head: RequestHead, target: Route, hit: Hit,
                     conditional) -> None:
        headers = [(n, v) for n, v in upstream_headers if n.lower() not in _CONDITIONAL_FIELDS]
        request_time = time.time()
        response, body = fetch_whole(self.pool, target, "GET", headers + list(conditional),
                                     self.store.settings.max_object_bytes)
        response_time = time.time()
        if response.status == 304:
            result = policy.freshen(hit.meta, head.headers, response.headers, self.settings,
                                    request_time=request_time, response_time=response_time)
            if isinstance(result, Store):
                self.store.update_meta(target.uri, _replace_meta(hit.meta, result.response, result.ttl),
                                       time.time())
            return
        decision = self._decide_store(head, response, request_time, response_time)
        if isinstance(decision, Store) and body is not None:
            writer = self.store.open_writer(target.uri, head.headers, decision.ttl)
            try:
                writer.write(body)
                writer.commit(Meta(status=response.status, headers=list(decision.response.headers),
                                   request_time=request_time, response_time=response_time,
                                   ttl=decision.ttl), time.time())
            finally:
                writer.abort()

    def _bypass(self, conn, head, target, record) -> bool:
        self._count(conn, "cache_bypass", record, "bypass")
        return conn.forward(head, target, record,
                            [("Cache-Status", self._status(fwd="bypass", detail="cache unavailable"))])[0]

    # -- unsafe methods and PURGE -------------------------------------------------------------------
    def _unsafe(self, conn, head, target, record) -> bool:
        self._count(conn, "cache_bypass", record, "bypass")
        fetched = conn.fetch(head, target, record)
        response = fetched.response
        if head.method not in _SAFE_METHODS:                   # RFC 9111 §4.4
            # before the client sees the response, so its next request cannot get the old copy
            for uri in policy.invalidations(head.method, target.uri, response.status,
                                            end_to_end(response.headers)):
                self.store.invalidate(uri)
        return conn.relay(head, fetched, record, [("Cache-Status", self._status(fwd="method"))])

    def _purge(self, conn, head, target, record) -> bool:
        if not self.purge_allowed(conn.client_ip):
            raise Forbidden("PURGE is not allowed from this address")
        if not self.store.purge(target.uri):
            raise NotFound(f"nothing cached for {target.uri}")
        body = f"purged {target.uri}\n".encode()
        return conn.send_stored(head, record, 200, [("Content-Type", "text/plain")], (body,), len(body))

    # -- helpers ---------------------------------------------------------------------------------
    def _status(self, **params) -> str:
        return policy.cache_status(self.name, **params)

    def _hit_status(self, ttl: float) -> str:
        """`name; hit; ttl=N`, made once per distinct N (the hot path's Cache-Status)."""
        seconds = int(ttl)                   # as cache_status writes it (RFC 8941 integer)
        made = self._hit_statuses.get(seconds)
        if made is None:
            if len(self._hit_statuses) > 1024:
                self._hit_statuses.clear()
            made = self._hit_statuses[seconds] = self._status(hit=True, ttl=seconds)
        return made

    def _fwd(self, fwd: str) -> str:
        return fwd if self.store.available else "bypass"

    @staticmethod
    def _count(conn: ClientConnection, counter: str, record: Record, label: str) -> None:
        conn.row.add(counter)
        record.cache = label


# Refusals that say something about the request, not about what the URL's responses are like.
_REQUEST_DRIVEN = frozenset(("head", "method", "request-no-store", "authorization",
                             "status-not-final", "partial", "not-modified"))


class _PassList:
    """Varnish's hit-for-miss: URLs whose last response could not be stored are fetched straight
    for `ttl` seconds, with no Redis lookup and no collapsing lock (which would serialise them).
    Each response is still judged, so the first storable one ends the pass at once."""

    def __init__(self, ttl: float, size: int = 8192) -> None:
        self.ttl, self.size = ttl, size
        self._until: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def holds(self, key: str) -> bool:
        until = self._until.get(key)
        return until is not None and until > time.monotonic()

    def learn(self, key: str, decision) -> None:
        if isinstance(decision, Store):
            if key in self._until:
                with self._lock:
                    self._until.pop(key, None)
        elif self.ttl and decision.detail not in _REQUEST_DRIVEN:
            with self._lock:
                self._until[key] = time.monotonic() + self.ttl
                self._until.move_to_end(key)
                if len(self._until) > self.size:
                    self._until.popitem(last=False)


def _merge(headers: list[tuple[str, str]], extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
    names = {name.lower() for name, _ in extra}
    return [(n, v) for n, v in headers if n.lower() not in names] + list(extra)


def _slice(hit: Hit, start: int, end: int):
    """The bytes start..end (inclusive) of a stored body, streamed."""
    offset = 0
    for piece in hit.chunks():
        lo, hi = max(start - offset, 0), min(end + 1 - offset, len(piece))
        if lo < hi:
            yield piece[lo:hi]
        offset += len(piece)
        if offset > end:
            return


def _fresh_meta(meta: Meta) -> Meta:
    """Only the caller's fields: the writer fills in the body's."""
    return Meta(status=meta.status, headers=list(meta.headers), request_time=meta.request_time,
                response_time=meta.response_time, ttl=meta.ttl)


def _replace_meta(meta: Meta, fresh: policy.StoredResponse, ttl: float) -> Meta:
    return msgspec.structs.replace(meta, status=fresh.status, headers=list(fresh.headers),
                                   request_time=fresh.request_time, response_time=fresh.response_time,
                                   ttl=ttl)
