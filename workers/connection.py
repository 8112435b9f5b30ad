"""One client connection, served by one handler thread from accept to close.

# design: a keep-alive loop of request/response exchanges. The request head is read under one total
# deadline (not per read); the body is streamed to the origin piece by piece as it arrives, and the
# response streamed back the same way, so memory per connection is one recv buffer whatever the
# body size. Every failure becomes a `ProxyError` carrying its status; if the head was already sent
# the connection is cut instead, so a client never takes a short body for a complete one. A
# request whose framing is in doubt ends the connection: unread bytes are never parsed as a new
# request.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from .accesslog import AccessLog, Record
from .errors import (BadGateway, BadRequest, ContentTooLarge, ExpectationFailed, GatewayTimeout,
                     MethodNotAllowed, ProxyError, RequestTimeout, UpstreamClosed)
from .http1 import (END, LAST_CHUNK, HeadLimits, RequestHead, RequestReader, ResponseHead,
                    ResponseReader, chunk_prefix, header_value, request_head_bytes, response_head_bytes)
from .proxy import (Route, check_via, client_response_headers, connect_allowed, route,
                    upstream_request_headers)
from .replay import Replays
from .scoreboard import Row
from .settings import Limits, Server
from .tunnel import pump
from .upstream import RECV_SIZE, Pool, Upstream, is_reset, open_connection, recv_within, send_all, wait_for

__all__ = ["Context", "ClientConnection", "Fetched", "Tee"]

log = logging.getLogger("prefork_proxy.worker")

_RETRYABLE = frozenset(("GET", "HEAD", "OPTIONS"))     # issue: never retry a POST
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_ALLOW = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, CONNECT"


@dataclass
class Context:
    """What every handler thread of a worker shares (read-only but for the pool and the log)."""

    server: Server
    limits: Limits
    origin: tuple[str, str, int] | None
    pool: Pool
    access_log: AccessLog
    tunnel_idle_timeout: float = 300.0
    send_timeout: float = 60.0
    linger: float = 0.1          # how long a handler thread waits for the next request before parking
    stop_grace: float = 0.5      # stopping: how long an idle connection may still deliver a request
    cache: Any = None            # the cache front (workers.caching.CacheFront), None = no cache
    access: Any = None           # workers.access.AccessPolicy, None = no checks (unit tests)
    forward_proxy: bool = True   # absolute-form requests to any host are proxied
    server_names: frozenset = frozenset()   # reverse mode: absolute-form hosts that mean the origin
    stopping: bool = False
    replays: Replays = field(default_factory=Replays)   # the main thread's (workers.replay)
    head_limits: HeadLimits = field(init=False)

    def __post_init__(self) -> None:
        lim = self.limits
        self.head_limits = HeadLimits(lim.max_request_line, lim.max_header_line,
                                      lim.max_header_bytes, lim.max_header_count)


class Tee(Protocol):
    """Where a relayed response body is copied as it streams (the cache writer)."""

    def write(self, data: bytes) -> None: ...
    def complete(self) -> None: ...


class Fetched(NamedTuple):
    """An origin's response, head read, body not yet: relay() or discard() it."""

    conn: Upstream
    reader: ResponseReader
    response: ResponseHead
    request_time: float      # wall clock when the request was sent (RFC 9111 §4.2.3)
    response_time: float     # wall clock when the response head arrived


class _ClientGone(Exception):
    """The client closed or reset the connection: nothing more to send."""


class _Abort(Exception):
    """The response head was sent and the exchange failed: cut the connection."""


PARK, DISPATCH, CLOSE = "park", "dispatch", "close"   # what serve_inline() asks of the main thread


class ClientConnection:
    """A client connection's state; served in turns by handler threads, parked in between.

    `run()` serves requests for as long as they arrive promptly, then returns True to have the
    worker's main thread park the connection in its poller (a parked connection holds no thread,
    so idle keep-alive and slow clients cost a socket, not a thread) or False when it is closed.
    While parked, `deadline` is when the main thread gives up on it: silently for an idle
    keep-alive connection, with a 408 when a request head had begun (`expired_response()`).
    """

    def __init__(self, sock: socket.socket, client_ip: str, ctx: Context) -> None:
        sock.setblocking(False)      # for good: reads and writes wait with poll() only when they must
        self.sock, self.client_ip, self.ctx = sock, client_ip, ctx
        self.reader = RequestReader(ctx.head_limits)
        self.pending: deque = deque()
        self.served = 0
        self.head_deadline = 0.0     # set when the first byte of a request head arrives
        self.idle_since = time.monotonic()
        self.counted = False
        self.row: Row | None = None
        self.inline = False          # being served by the main thread: never block
        self.unsent = b""            # what a non-blocking send could not write yet
        self.deferred: ProxyError | None = None
        self.client_checked = False  # the client's address passed the allow/deny lists
        self.closing = False         # close once `unsent` is flushed
        self.hot = False             # the last request was a hit: park at once after it
        self._body_done = True       # the current request's body has been read to its end

    @property
    def deadline(self) -> float:
        if self.head_deadline:
            return self.head_deadline
        wait = self.ctx.server.keepalive_timeout if self.served else self.ctx.limits.header_timeout
        return self.idle_since + wait

    def expired_response(self) -> bytes:
        """What to send when the deadline passes while parked (b'' = close silently)."""
        if not self.head_deadline:
            return b""
        body = b"408 request head not received in time\n"
        return response_head_bytes(408, [("Content-Type", "text/plain; charset=utf-8"),
                                         ("Content-Length", str(len(body))), ("Connection", "close"),
                                         ("Via", f"1.1 {self.ctx.server.via_pseudonym}")]) + body

    # -- the keep-alive loop ---------------------------------------------------------------
    def run(self, row: Row) -> bool:
        """Serve what is ready; True = park me, False = closed (or to be closed)."""
        self.row = row
        if not self.counted:
            self.counted = True
            row.add("connections")          # once, by the first thread that serves it
        try:
            self._flush_unsent()
            if self.closing:
                return False
            while True:
                record = Record(self.client_ip)
                try:
                    if self.deferred is not None:      # found by the main thread's read
                        error, self.deferred = self.deferred, None
                        raise error
                    head = self._next_head()
                except ProxyError as error:
                    return self._fail_early(error, record)
                if head is None:
                    return not self.ctx.stopping
                if not self._serve(head, record):
                    return False
        except _ClientGone:
            return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- the main thread's fast path ----------------------------------------------------------
    def serve_inline(self, row: Row) -> str:
        """The worker's main thread saw this parked connection become readable: read what is
        there without blocking and answer fresh hits held in the L1 on the spot, with no thread
        hand-off and no I/O wait. Returns PARK (wait for more bytes), DISPATCH (a handler thread
        takes over, with what was read) or CLOSE."""
        self.row, self.inline = row, True
        try:
            return self._inline(row)
        except _ClientGone:
            return CLOSE
        finally:
            self.inline = False

    def _inline(self, row: Row) -> str:
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return PARK
        except OSError:
            return CLOSE
        if not data:
            return CLOSE
        replayed = self._replay(data)
        if replayed is not None:
            return replayed
        idle = not self.pending and not self.reader.in_head
        if not self.head_deadline:
            self.head_deadline = time.monotonic() + self.ctx.limits.header_timeout
        try:
            self._feed(data)
        except ProxyError as error:
            self.deferred = error
            return DISPATCH
        raw = data if idle and self._one_request() else None
        while self.pending:
            keep = self._serve_fast(self.pending[0], raw)
            if keep is None:
                return DISPATCH
            if self.unsent:                      # a handler thread finishes the sending
                self.closing = not keep
                return DISPATCH
            if not keep:
                return CLOSE
        self.head_deadline = time.monotonic() + self.ctx.limits.header_timeout if self.reader.in_head else 0.0
        return PARK

    def _one_request(self) -> bool:
        """The bytes just fed were one bodiless request, whole, and nothing else."""
        pending, reader = self.pending, self.reader
        return len(pending) == 2 and pending[1] is END and not reader.in_head and not reader.stopped \
            and isinstance(pending[0], RequestHead) and not pending[0].has_body

    def _replay(self, data: bytes) -> str | None:
        """`data` byte for byte a request the main thread answered from the L1 before (this
        connection's or another's): answer it the same way without parsing, routing or checking
        it again, all of which depend on nothing but those bytes and this worker's settings (the
        client's address is checked once per connection, before its first request). None: it is
        not one, or its object is no longer a fresh L1 hit: parse it as usual (nothing was sent)."""
        if self.pending or self.reader.in_head or (self.ctx.access is not None and not self.client_checked):
            return None
        known = self.ctx.replays.get(data)
        if known is None:
            return None
        head, target = known
        keep = self._answer_from_l1(head, target)
        if keep is None:
            return None
        self.row.add("bytes_in", len(data))
        if self.unsent:
            self.closing = not keep
            return DISPATCH
        return PARK if keep else CLOSE

    def _serve_fast(self, head, raw: bytes | None = None) -> bool | None:
        """One request answered from the L1 (True/False: keep the connection), or None: not
        something the main thread may answer (anything that could wait on I/O). `raw`: the
        request's bytes, when they were read alone: remembered for _replay."""
        ctx = self.ctx
        if not isinstance(head, RequestHead) or head.method not in ("GET", "HEAD") or head.has_body \
                or ctx.cache is None or (ctx.access is not None and ctx.access.auth):
            return None
        try:
            self._check_request(head)
            target = route(head, ctx.origin, ctx.forward_proxy, ctx.server_names)
            self._check_route(head, target)
        except ProxyError:
            return None                          # a handler thread answers it
        if target.kind not in ("forward", "reverse"):
            return None
        keep = self._answer_from_l1(head, target)
        if keep is None:
            return None
        if raw is not None:
            ctx.replays.remember(raw, head, target)
        self.pending.popleft()
        if self.pending and self.pending[0] is END:
            self.pending.popleft()
        return keep

    def _answer_from_l1(self, head: RequestHead, target: Route) -> bool | None:
        """A checked GET or HEAD answered from the L1, or None: nothing sent (always while stopping:
        the handler threads end connections gracefully)."""
        ctx = self.ctx
        if ctx.stopping:
            return None
        started, record = time.monotonic(), Record(self.client_ip, started=time.time())
        if ctx.access_log.enabled:
            self._describe(head, record)
        keep = ctx.cache.serve_l1(self, head, target, record)
        if keep is None:
            return None
        record.duration = time.monotonic() - started
        self.row.end(record.duration)
        ctx.access_log.log(record)
        self.served += 1
        self.idle_since = time.monotonic()
        self.head_deadline = 0.0
        return keep

    def _serve(self, head: RequestHead, record: Record) -> bool:
        started = time.monotonic()
        record.started = time.time()
        self.row.begin(started)
        try:
            keep = self._exchange(head, record)
        finally:
            record.duration = time.monotonic() - started
            self.row.end(record.duration)
            self.ctx.access_log.log(record)
            self.served += 1
            self.idle_since = time.monotonic()
            self.hot = record.cache == "hit"
        # A response that promised keep-alive is honoured even if a stop began meanwhile: the
        # client may already be sending its next request, which gets `Connection: close`.
        return keep

    def _fail_early(self, error: ProxyError, record: Record) -> bool:
        """A request that failed before its head was complete: answer and close."""
        record.started = time.time()
        self._send_error(error, record, close=True)
        self.ctx.access_log.log(record)
        return False

    # -- reading the client -----------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        self.row.add("bytes_in", len(data))
        self.reader.feed(data)
        if self.reader.events:
            self.pending.extend(self.reader.events)
            self.reader.events.clear()

    def _next_head(self) -> RequestHead | None:
        """The next complete request head, or None when none arrives within the linger time."""
        while not self.pending:
            data = self._recv_soon()
            if data is None:
                return None
            if not self.head_deadline:
                self.head_deadline = time.monotonic() + self.ctx.limits.header_timeout
            self._feed(data)
        self.head_deadline = 0.0
        head = self.pending.popleft()
        if not isinstance(head, RequestHead):  # pragma: no cover - the parser guarantees order
            raise BadRequest("unexpected data before a request head")
        if not head.has_body and self.pending and self.pending[0] is END:
            self.pending.popleft()            # llhttp ends a bodiless message with its head
        return head

    def _recv_soon(self) -> bytes | None:
        """Bytes that arrive within the linger time (None = none came: park), within deadlines."""
        now = time.monotonic()
        if self.head_deadline and now >= self.head_deadline:
            raise RequestTimeout("request head not received in time")
        if now >= self.deadline:
            raise _ClientGone()            # idle past the keep-alive timeout
        # After a hit, park at once: the main thread answers the next hit without a hand-off.
        linger = self.ctx.stop_grace if self.ctx.stopping else 0.0 if self.hot else self.ctx.linger
        try:
            if not wait_for(self.sock, select.POLLIN, min(linger, self.deadline - now)):
                return None
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return None
        except OSError:
            raise _ClientGone() from None
        if not data:
            raise _ClientGone()
        return data

    def _recv_before(self, deadline: float, on_timeout: ProxyError) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise on_timeout
        try:
            return recv_within(self.sock, remaining)
        except socket.timeout:
            raise on_timeout from None
        except OSError:
            raise _ClientGone() from None

    def _body_events(self, head: RequestHead):
        """Yield the request body's pieces as they arrive, enforcing size, deadline and rate."""
        limits = self.ctx.limits
        received, started = 0, time.monotonic()
        self._body_done = False
        while True:
            while self.pending:
                event = self.pending.popleft()
                if event is END:
                    self._body_done = True
                    return
                received += len(event)
                if limits.max_body_bytes and received > limits.max_body_bytes:
                    raise ContentTooLarge(f"request body larger than {limits.max_body_bytes} bytes")
                yield event
            self._check_rate(received, started)
            data = self._recv_before(time.monotonic() + limits.body_timeout,
                                     RequestTimeout("request body stalled"))
            if not data:
                raise _ClientGone()
            self._feed(data)

    def _check_rate(self, received: int, started: float) -> None:
        limits = self.ctx.limits
        elapsed = time.monotonic() - started
        if limits.body_min_rate and elapsed > limits.body_rate_grace:
            if received / elapsed < limits.body_min_rate:
                raise RequestTimeout(f"request body slower than {limits.body_min_rate} bytes/s")

    # -- one exchange ---------------------------------------------------------------------
    @staticmethod
    def _describe(head: RequestHead, record: Record) -> None:
        record.method, record.target, record.version = head.method, head.target, head.version
        record.referer = header_value(head.headers, "referer") or "-"
        record.user_agent = header_value(head.headers, "user-agent") or "-"

    def _exchange(self, head: RequestHead, record: Record) -> bool:
        self._describe(head, record)
        try:
            return self._dispatch(head, record)
        except ProxyError as error:
            keep = self._body_done and not error.close and head.keep_alive
            return self._send_error(error, record, close=not keep) and keep
        except _Abort:
            return False

    def _dispatch(self, head: RequestHead, record: Record) -> bool:
        self._check_request(head)
        target = route(head, self.ctx.origin, self.ctx.forward_proxy, self.ctx.server_names)
        self._check_route(head, target)
        if target.kind == "connect":
            return self._tunnel(head, target, record)
        if head.method == "TRACE":
            raise MethodNotAllowed("TRACE is disabled")
        max_forwards = header_value(head.headers, "max-forwards")
        if target.kind == "asterisk" or (head.method == "OPTIONS" and max_forwards == "0"):
            return self._answer_options(head, record)   # RFC 9110 §7.6.2: we are the recipient
        if self.ctx.cache is not None:
            return self.ctx.cache.handle(self, head, target, record)
        return self.forward(head, target, record)[0]

    def _check_route(self, head: RequestHead, target: Route) -> None:
        access = self.ctx.access
        if access is None or target.kind not in ("forward", "connect"):
            return
        access.check_auth(header_value(head.headers, "proxy-authorization"))
        if target.kind == "forward":
            access.check_port(target.port)

    def _destination_check(self, target: Route):
        """Forward-mode and CONNECT destinations are vetted at connect time; the origin is not."""
        access = self.ctx.access
        return access.check_destination if access is not None and target.kind != "reverse" else None

    def _check_request(self, head: RequestHead) -> None:
        self._body_done = not head.has_body      # first: a refusal below must know to close
        if not self.client_checked and self.ctx.access is not None:
            self.ctx.access.check_client(self.client_ip)     # once per connection: same address
            self.client_checked = True
        hosts, expect = 0, None
        for name, value in head.headers:                      # one pass over the fields
            lname = name.lower()
            if lname == "host":
                hosts += 1
            elif lname == "via":
                check_via(value, self.ctx.server.via_pseudonym)
            elif lname == "expect":
                expect = value if expect is None else f"{expect}, {value}"
        if head.version == "1.1" and hosts != 1:
            raise BadRequest("HTTP/1.1 request needs exactly one Host field")  # RFC 9112 §3.2
        if expect is not None and expect.strip().lower() != "100-continue":
            raise ExpectationFailed(f"unsupported expectation {expect[:40]!r}")  # RFC 9110 §10.1.1
        limit = self.ctx.limits.max_body_bytes
        if limit and head.content_length and head.content_length > limit:
            raise ContentTooLarge(f"request body of {head.content_length} bytes is over {limit}")
        self._body_done = not head.has_body

    def _answer_options(self, head: RequestHead, record: Record) -> bool:
        headers = [("Allow", _ALLOW), ("Content-Length", "0")]
        return self._send_simple(record, 200, headers, b"", keep=head.keep_alive)

    # -- forwarding (also the primitives the cache front builds on) ----------------------------
    def forward(self, head: RequestHead, target: Route, record: Record,
                extra: list[tuple[str, str]] | None = None) -> tuple[bool, ResponseHead]:
        """Send the request on and relay the response: (keep the connection?, the response head)."""
        fetched = self.fetch(head, target, record)
        return self.relay(head, fetched, record, extra), fetched.response

    def fetch(self, head: RequestHead, target: Route, record: Record,
              replace: tuple[frozenset[str], list[tuple[str, str]]] | None = None) -> Fetched:
        """Send the request (streaming its body); return the origin's final response head.

        `replace` = (lower-case field names to drop, fields to add), e.g. the cache's own
        conditional request instead of the client's.
        """
        headers = self.upstream_headers(head, target)
        if replace is not None:
            drop, add = replace
            headers = [(n, v) for n, v in headers if n.lower() not in drop] + add
        if head.chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        elif head.content_length is not None:
            headers.append(("Content-Length", str(head.content_length)))
        request = request_head_bytes(head.method, target.target, headers)
        began, request_time = time.monotonic(), time.time()
        try:
            conn, reader, response = self._send_request(head, target, request)
        except GatewayTimeout:
            self.row.add("upstream_timeouts")
            raise
        except BadGateway:
            self.row.add("upstream_errors")
            raise
        record.upstream_status = response.status
        record.upstream_time = time.monotonic() - began
        return Fetched(conn, reader, response, request_time, time.time())

    def upstream_headers(self, head: RequestHead, target: Route) -> list[tuple[str, str]]:
        return upstream_request_headers(head, target, self.client_ip, self.ctx.server.via_pseudonym)

    def discard(self, fetched: Fetched) -> None:
        """Drop a response we will not relay (e.g. a 304 we answer from the cache)."""
        conn, reader = fetched.conn, fetched.reader
        try:
            while not reader.complete:
                data = conn.recv()
                if not data:
                    if not reader.eof():
                        break
                    continue
                reader.feed(data)
        except (OSError, ProxyError):
            pass
        self._finish_upstream(fetched)

    def _finish_upstream(self, fetched: Fetched) -> None:
        reader = fetched.reader
        if fetched.response.keep_alive and reader.complete and reader.clean_end and self._body_done:
            self.ctx.pool.release(fetched.conn)
        else:
            fetched.conn.close()

    def _send_request(self, head: RequestHead, target: Route, request: bytes):
        """Send the request; return the connection, its reader and the final response head."""
        retryable = head.method in _RETRYABLE and not head.has_body
        check = self._destination_check(target)
        conn = self.ctx.pool.acquire(target.key, check=check)
        try:
            return self._attempt(head, conn, request)
        except UpstreamClosed:
            conn.close()
            if not (conn.reused and retryable):
                raise
        conn = self.ctx.pool.acquire(target.key, fresh=True, check=check)   # one transparent retry
        try:
            return self._attempt(head, conn, request)
        except BaseException:
            conn.close()
            raise

    def _attempt(self, head: RequestHead, conn: Upstream, request: bytes):
        try:
            conn.send(request)
            if head.has_body:
                self._send_body(head, conn)
            return self._response_head(head, conn)
        except ProxyError:
            conn.close()
            raise
        except socket.timeout:
            conn.close()
            raise GatewayTimeout("the origin did not respond in time") from None
        except OSError as error:
            conn.close()
            if is_reset(error):
                raise UpstreamClosed() from None
            raise BadGateway(f"origin connection failed: {error}") from None

    def _send_body(self, head: RequestHead, conn: Upstream) -> None:
        if header_value(head.headers, "expect") is not None and head.version == "1.1":
            self._send_client(_CONTINUE)          # RFC 9110 §10.1.1: we read the body ourselves
        for piece in self._body_events(head):
            if head.chunked:
                conn.send_parts([chunk_prefix(len(piece)), piece, b"\r\n"])
            else:
                conn.send(piece)
        if head.chunked:
            conn.send(LAST_CHUNK)

    def _response_head(self, head: RequestHead, conn: Upstream):
        """Read up to the final response head, relaying 1xx interim responses (RFC 9110 §15.2)."""
        reader = conn.reader(head_only=head.method == "HEAD")
        got_bytes = False
        while True:
            while reader.events:
                event = reader.events.pop(0)
                if isinstance(event, ResponseHead):
                    if event.status >= 200:
                        return conn, reader, event
                    self._interim(head, event)
                # END of an interim response: nothing to do
            data = conn.recv()
            if not data:
                if got_bytes:
                    raise BadGateway("the origin closed the connection in the response head")
                raise UpstreamClosed()
            got_bytes = True
            reader.feed(data)

    def _interim(self, head: RequestHead, response: ResponseHead) -> None:
        if response.status == 101:
            raise BadGateway("the origin switched protocols, which this proxy does not support")
        if head.version == "1.1" and response.status != 100:
            self._send_client(response_head_bytes(response.status, client_response_headers(
                response, self.ctx.server.via_pseudonym)))

    # -- relaying the response --------------------------------------------------------------
    def relay(self, head: RequestHead, fetched: Fetched, record: Record,
              extra: list[tuple[str, str]] | None = None, tee: Tee | None = None) -> bool:
        """Stream the fetched response to the client (and to `tee`); True to keep the connection."""
        response = fetched.response
        headers, chunked, keep = self._response_framing(head, response)
        if extra:
            headers.extend(extra)
        record.status = response.status
        try:
            sent = self._stream(fetched.conn, fetched.reader,
                                response_head_bytes(response.status, headers), chunked, tee)
        except (_ClientGone, _Abort):
            fetched.conn.close()
            raise _Abort() from None
        record.bytes_sent = sent
        self.row.add("bytes_out", sent)
        self._finish_upstream(fetched)
        return keep

    def _response_framing(self, head: RequestHead, response: ResponseHead):
        """The client-side head fields, whether to chunk, and whether to keep the connection."""
        headers = client_response_headers(response, self.ctx.server.via_pseudonym)
        keep = head.keep_alive and self._body_done and not self.ctx.stopping
        chunked = False
        if head.method == "HEAD" or response.status == 304:
            length = header_value(response.headers, "content-length")
            if length is not None:             # RFC 9110 §8.6: the length a GET would have had
                headers.append(("Content-Length", length))
        elif response.status == 204:
            pass
        elif response.content_length is not None:
            headers.append(("Content-Length", str(response.content_length)))
        elif head.version == "1.1":
            chunked = True   # re-chunked; codings applied before chunked are kept (RFC 9112 §6.1)
            codings = f"{response.codings}, chunked" if response.codings else "chunked"
            headers.append(("Transfer-Encoding", codings))
        else:
            keep = False                       # HTTP/1.0 client: the body ends at close
        if not keep:
            headers.append(("Connection", "close"))
        elif head.version == "1.0":
            headers.append(("Connection", "keep-alive"))
        return headers, chunked, keep

    def _stream(self, conn: Upstream, reader, head_bytes: bytes, chunked: bool,
                tee: Tee | None) -> int:
        """Send the head and the body as it arrives; gather what is ready into one sendmsg."""
        parts, sent = [head_bytes], 0
        while True:
            done = False
            while reader.events:
                event = reader.events.pop(0)
                if event is END:
                    done = True
                    if chunked:
                        parts.append(LAST_CHUNK)
                    break
                sent += len(event)
                if tee is not None:
                    tee.write(event)
                parts.extend((chunk_prefix(len(event)), event, b"\r\n") if chunked else (event,))
            self._send_client_parts(parts)
            parts = []
            if done:
                if tee is not None:
                    tee.complete()
                return sent
            self._read_upstream(conn, reader)

    def _read_upstream(self, conn: Upstream, reader) -> None:
        try:
            data = conn.recv()
        except OSError as error:
            log.warning("origin %s:%s failed mid-response: %s", conn.key[1], conn.key[2], error)
            raise _Abort() from None
        if data:
            try:
                reader.feed(data)
            except ProxyError as error:
                log.warning("origin %s:%s: %s", conn.key[1], conn.key[2], error.detail)
                raise _Abort() from None
        elif not reader.eof():
            log.warning("origin %s:%s closed mid-response: body truncated", conn.key[1], conn.key[2])
            raise _Abort()

    # -- CONNECT ---------------------------------------------------------------------------
    def _tunnel(self, head: RequestHead, target: Route, record: Record) -> bool:
        connect_allowed(target.port, self.ctx.server.connect_ports)
        upstream = open_connection(target.host, target.port, self.ctx.pool.connect_timeout,
                                   self._destination_check(target))
        record.status = 200
        try:
            self._send_client(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            self.row.begin(0.0)   # a tunnel is long-lived by design: its idle timeout governs it
            early = self.reader.tunnel_data or b""
            record.bytes_sent = pump(self.sock, upstream, early, self.ctx.tunnel_idle_timeout,
                                     lambda: self.ctx.stopping)
        finally:
            upstream.close()
        return False

    # -- writing the client ---------------------------------------------------------------
    def _send_client(self, data: bytes) -> None:
        self._send_client_parts([data])

    def _send_client_parts(self, parts: list[bytes]) -> None:
        if self.inline:
            self._send_nowait(parts)
            return
        try:
            send_all(self.sock, parts, self.ctx.send_timeout)
        except OSError:
            raise _ClientGone() from None

    def _send_nowait(self, parts: list[bytes]) -> None:
        """Main thread: write what the socket takes now (one sendmsg, no copy of the parts);
        keep the rest for a handler thread."""
        if self.unsent:
            self.unsent += b"".join(parts)
            return
        try:
            sent = self.sock.sendmsg(parts)
        except BlockingIOError:
            sent = 0
        except OSError:
            raise _ClientGone() from None
        if sent < sum(map(len, parts)):
            self.unsent = b"".join(parts)[sent:]

    def _flush_unsent(self) -> None:
        if self.unsent:
            data, self.unsent = self.unsent, b""
            self._send_client(data)

    def _send_simple(self, record: Record, status: int, headers: list[tuple[str, str]],
                     body: bytes, keep: bool) -> bool:
        keep = keep and self._body_done and not self.ctx.stopping
        if not keep:
            headers.append(("Connection", "close"))
        headers.append(("Via", f"1.1 {self.ctx.server.via_pseudonym}"))
        record.status, record.bytes_sent = status, len(body)
        self._send_client_parts([response_head_bytes(status, headers), body])
        return keep

    def send_stored(self, head: RequestHead, record: Record, status: int,
                    headers: list[tuple[str, str]], body: Iterable[bytes], length: int) -> bool:
        """Send a response the proxy has (from the cache): Content-Length framing, body pieces."""
        keep = self.can_keep(head)
        return self.send_prepared(head, record, status, self.stored_head(head, status, headers, length, keep),
                                  keep, body)

    def can_keep(self, head: RequestHead) -> bool:
        return head.keep_alive and self._body_done and not self.ctx.stopping

    def stored_head(self, head: RequestHead, status: int, headers: list[tuple[str, str]],
                    length: int, keep: bool) -> bytes:
        """The serialised head of a response the proxy has; it depends on nothing but the args."""
        headers.append(("Via", f"1.1 {self.ctx.server.via_pseudonym}"))
        if status not in (204, 304) and not 100 <= status < 200:
            headers.append(("Content-Length", str(length)))
        if not keep:
            headers.append(("Connection", "close"))
        elif head.version == "1.0":
            headers.append(("Connection", "keep-alive"))
        return response_head_bytes(status, headers)

    def send_prepared(self, head: RequestHead, record: Record, status: int, head_bytes: bytes,
                      keep: bool, body: Iterable[bytes]) -> bool:
        """Send a head made by stored_head() and the body pieces."""
        record.status = status
        parts = [head_bytes]
        sent = 0
        if head.method != "HEAD" and status != 304:
            try:
                for piece in body:
                    parts.append(piece)
                    sent += len(piece)
                    if sent > RECV_SIZE:
                        self._send_client_parts(parts)
                        parts = []
            except Exception as error:   # a chunk vanished from the store mid-body
                log.warning("cached body of %s broke off: %s", record.target[:200], error)
                raise _Abort() from None
        self._send_client_parts(parts)
        record.bytes_sent = sent
        self.row.add("bytes_out", sent)
        return keep

    def _send_error(self, error: ProxyError, record: Record, close: bool) -> bool:
        """A short text/plain answer with the error's status (and 'Connection: close' if closing)."""
        if error.status >= 500:
            log.info("%s %s -> %d %s", record.method, record.target[:200], error.status, error.detail)
        else:
            log.debug("%s %s -> %d %s", record.method, record.target[:200], error.status, error.detail)
        if error.status < 500:
            self.row.add("client_errors")
        body = f"{error.status} {error.detail}\n".encode("utf-8", "replace")
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                   ("Cache-Control", "no-store"), *error.headers]
        try:
            return self._send_simple(record, error.status, headers, body, keep=not close)
        except _ClientGone:
            return False
