"""Connections to origins: a per-worker keep-alive pool, and one request/response exchange.

# design: a pooled connection is a socket plus nothing else: every response gets a fresh
# `ResponseReader`, so no parser state survives between exchanges. A connection goes back to the
# pool only after a complete, cleanly framed, keep-alive response; anything in doubt is closed.
# Before reuse, a peek tells whether the origin closed it while idle. The caller retries once on a
# fresh connection when a *reused* one dies before the first response byte (idempotent, bodiless
# requests only), because that is the race every keep-alive client loses now and then.
#
# Plain TCP sockets, to origins and to clients, stay non-blocking and wait with one poll() only
# when the kernel cannot take or give bytes at once (`send_all`, `recv_within`). A socket with a
# timeout would poll before every send and switch modes with an ioctl on every settimeout(): each
# of those syscalls releases the GIL, and with many busy threads each release is a thread switch.
"""

from __future__ import annotations

import errno
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable

from .errors import BadGateway, GatewayTimeout, ProxyError, UpstreamClosed
from .http1 import END, HeadLimits, ResponseHead, ResponseReader, request_head_bytes

__all__ = ["Pool", "Upstream", "RECV_SIZE", "fetch_whole", "open_connection", "recv_within", "send_all",
           "wait_for", "Check"]

Check = Callable[[str, int], None]   # raises a ProxyError to refuse an address

RECV_SIZE = 65536
_RESPONSE_LIMITS = HeadLimits(request_line=8192, header_line=65536, header_bytes=262144, header_count=500)


class Upstream:
    """One connection to an origin. Sends and receives raise socket.timeout (TimeoutError) after
    `timeout` seconds without progress. A TLS socket keeps ssl's own timeout mode; a plain one is
    non-blocking (see the module's design note)."""

    __slots__ = ("sock", "key", "reused", "idle_since", "timeout", "_tls")

    def __init__(self, sock: socket.socket, key: tuple[str, str, int], timeout: float = 30.0) -> None:
        self.sock, self.key, self.timeout = sock, key, timeout
        self.reused = False
        self.idle_since = 0.0
        self._tls = isinstance(sock, ssl.SSLSocket)
        if self._tls:
            sock.settimeout(timeout)
        else:
            sock.setblocking(False)

    def send(self, data: bytes) -> None:
        self.send_parts([data])

    def send_parts(self, parts: list[bytes]) -> None:
        if self._tls:
            self.sock.sendall(b"".join(parts))
        else:
            send_all(self.sock, parts, self.timeout)

    def recv(self) -> bytes:
        if self._tls:
            return self.sock.recv(RECV_SIZE)
        return recv_within(self.sock, self.timeout)

    def reader(self, head_only: bool) -> ResponseReader:
        return ResponseReader(_RESPONSE_LIMITS, head_only=head_only)

    def alive(self) -> bool:
        """False if the origin closed (or sent unsolicited bytes) while the connection was idle:
        an idle keep-alive connection has nothing to read, so readable means EOF or garbage."""
        if self._tls and self.sock.pending():
            return False
        return not wait_for(self.sock, select.POLLIN, 0)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def wait_for(sock: socket.socket, event: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for `event` (select.POLLIN / POLLOUT) on a socket; True if
    it came (or the socket failed: the next call on it says how). One poll() syscall."""
    poller = select.poll()
    poller.register(sock, event)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def recv_within(sock: socket.socket, timeout: float) -> bytes:
    """recv() on a non-blocking socket, waiting up to `timeout` for bytes: socket.timeout if none."""
    deadline = time.monotonic() + timeout
    while True:
        if not wait_for(sock, select.POLLIN, deadline - time.monotonic()):
            raise socket.timeout("timed out")
        try:
            return sock.recv(RECV_SIZE)
        except BlockingIOError:
            continue                     # a spurious wake-up: wait again


def send_all(sock: socket.socket, parts: list[bytes], timeout: float) -> None:
    """sendmsg() every part on a non-blocking socket; when the kernel's buffer is full, wait up to
    `timeout` seconds for room each time (socket.timeout if none comes). Usually one syscall."""
    views = [memoryview(part) for part in parts if part]
    while views:
        try:
            sent = sock.sendmsg(views)
        except BlockingIOError:
            sent = 0
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if sent:
            views[0] = views[0][sent:]
        elif views and not wait_for(sock, select.POLLOUT, timeout):
            raise socket.timeout("timed out")


class Pool:
    """Idle keep-alive connections per (scheme, host, port), shared by a worker's threads."""

    def __init__(self, *, size: int, idle_timeout: float, connect_timeout: float,
                 read_timeout: float) -> None:
        self.size, self.idle_timeout = size, idle_timeout
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._idle: dict[tuple[str, str, int], deque[Upstream]] = {}
        self._lock = threading.Lock()
        self._tls_context: ssl.SSLContext | None = None

    def acquire(self, key: tuple[str, str, int], fresh: bool = False,
                check: Check | None = None) -> Upstream:
        """A live pooled connection (reused=True) or a new one; raises BadGateway/GatewayTimeout.
        `check(ip, port)` vets the address a new connection goes to (forward-mode policy)."""
        while not fresh:
            conn = self._pop(key)
            if conn is None:
                break
            if time.monotonic() - conn.idle_since < self.idle_timeout and conn.alive():
                conn.reused = True
                return conn
            conn.close()
        return self._connect(key, check)

    def _pop(self, key: tuple[str, str, int]) -> Upstream | None:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def release(self, conn: Upstream) -> None:
        """Give back a connection whose last exchange ended cleanly."""
        if self.size == 0:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        with self._lock:
            idle = self._idle.setdefault(conn.key, deque())
            idle.append(conn)
            surplus = idle.popleft() if len(idle) > self.size else None
        if surplus is not None:
            surplus.close()

    def close_all(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def _connect(self, key: tuple[str, str, int], check: Check | None) -> Upstream:
        scheme, host, port = key
        sock = open_connection(host, port, self.connect_timeout, check)
        sock.settimeout(self.read_timeout)
        if scheme == "https":
            sock = self._wrap_tls(sock, host)
        return Upstream(sock, key, self.read_timeout)

    def _wrap_tls(self, sock: socket.socket, host: str) -> ssl.SSLSocket:
        if self._tls_context is None:
            self._tls_context = ssl.create_default_context()
        try:
            return self._tls_context.wrap_socket(sock, server_hostname=host)
        except (ssl.SSLError, OSError) as error:
            sock.close()
            raise BadGateway(f"TLS handshake with {host} failed: {error}") from None


def open_connection(host: str, port: int, timeout: float, check: Check | None = None) -> socket.socket:
    """Resolve, vet each address with `check`, connect to the first that is allowed and answers.

    Vetting the address we then connect to (not the name) closes the DNS-rebinding gap."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise BadGateway(f"cannot resolve {host}: {error.strerror}") from None
    refused: ProxyError | None = None
    failure = "no address"
    for family, kind, proto, _, address in infos:
        if check is not None:
            try:
                check(address[0], port)
            except ProxyError as error:
                refused = error
                continue
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except socket.timeout:
            sock.close()
            raise GatewayTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as error:
            sock.close()
            failure = error.strerror or str(error)
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    if refused is not None:
        raise refused
    raise BadGateway(f"cannot connect to {host}:{port}: {failure}")


def is_reset(error: OSError) -> bool:
    """A connection the origin closed under us (as opposed to a timeout)."""
    return isinstance(error, (ConnectionError, UpstreamClosed)) or error.errno in (
        errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED)


def fetch_whole(pool: Pool, route, method: str, headers: list[tuple[str, str]],
                max_bytes: int) -> tuple[ResponseHead, bytes | None]:
    """One bodiless request with no client attached (background revalidation): the final response
    head and its body, or None for the body when it is larger than `max_bytes`."""
    conn = pool.acquire(route.key)
    reader = conn.reader(head_only=method == "HEAD")
    final: ResponseHead | None = None
    pieces: list[bytes] | None = []
    size = 0
    try:
        conn.send(request_head_bytes(method, route.target, headers))
        while True:
            for event in reader.events:
                if isinstance(event, ResponseHead):
                    final = event if event.status >= 200 else final
                elif event is END and final is not None:
                    if reader.clean_end and final.keep_alive:
                        pool.release(conn)
                    else:
                        conn.close()
                    return final, None if pieces is None else b"".join(pieces)
                elif isinstance(event, bytes) and pieces is not None:
                    size += len(event)
                    if size > max_bytes:
                        pieces = None
                    else:
                        pieces.append(event)
            reader.events.clear()
            data = conn.recv()
            if data:
                reader.feed(data)
            elif not reader.eof():
                raise BadGateway("the origin closed the connection mid-response")
    except BaseException:
        conn.close()
        raise
