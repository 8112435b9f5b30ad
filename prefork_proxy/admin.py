"""The admin listener: /stats, /metrics, /healthz and the dashboard, served by the master's own loop.

# design: no thread (the master forks). The listening socket and every admin connection are
# non-blocking; the master waits on `fds()` with its other fds and calls `service()` after each
# wait, which accepts, reads what has arrived, answers a complete request and closes. One request
# per connection (`Connection: close`), a head of at most 8 KiB, 5 s per connection from accept to
# the last byte sent, at most 32 connections: a slow or hostile client costs a socket, never the
# master's time. The allow-list (`[admin] allow`, CIDRs) is checked at accept; a denied client gets
# a 403. A reload rebinds only when `[admin] bind` changed, all or nothing with the proxy listeners
# (`prepare()` opens, `commit()` swaps, `abort()` undoes).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import time
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit

from workers.errors import ProxyError
from workers.http1 import HeadLimits, RequestHead, RequestReader
from workers.settings import parse_address

from . import metrics
from .config import Admin
from .stats import health

__all__ = ["AdminServer", "Rebind", "parse_allow"]

log = logging.getLogger("prefork_proxy.admin")

MAX_CLIENTS = 32
DEADLINE = 5.0                 # per connection, accept to last byte
MAX_REQUEST_BYTES = 8192
_ACCEPTS_PER_TURN = 16
_LIMITS = HeadLimits(request_line=2048, header_line=4096, header_bytes=MAX_REQUEST_BYTES, header_count=50)
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}
# The dashboard is self-contained; the policy makes sure it stays so (no request leaves this origin).
_DASHBOARD_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                  "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allow(entries: list[str]) -> tuple[Network, ...]:
    """CIDRs ('127.0.0.0/8', '::1', '10.0.0.0/8'); ValueError names the bad one."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def allowed(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    extra: tuple[tuple[str, str], ...] = ()

    def encode(self, head_only: bool = False) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Unknown')}",
                 f"Content-Type: {self.content_type}", f"Content-Length: {len(self.body)}",
                 "Cache-Control: no-store", "X-Content-Type-Options: nosniff", "Connection: close",
                 *(f"{name}: {value}" for name, value in self.extra)]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


def _text(status: int, text: str, *extra: tuple[str, str]) -> Response:
    return Response(status, (text.rstrip("\n") + "\n").encode("utf-8"), extra=extra)


class _Client:
    """One admin connection: reading its request, then sending the answer."""

    __slots__ = ("sock", "peer", "denied", "deadline", "reader", "received", "out")

    def __init__(self, sock: socket.socket, peer: str, denied: bool, now: float) -> None:
        self.sock, self.peer, self.denied = sock, peer, denied
        self.deadline = now + DEADLINE
        self.reader = RequestReader(_LIMITS)
        self.received = 0
        self.out = b""

    def fileno(self) -> int:
        return self.sock.fileno()


@dataclass
class Rebind:
    """A prepared change of the admin listener (see AdminServer.prepare)."""

    settings: Admin
    sock: socket.socket | None
    opened: bool                 # a new socket was bound for it

    def abort(self) -> None:
        if self.opened and self.sock is not None:
            _discard(self.sock)


class AdminServer:
    """The admin endpoints over `master` (its config, workers and `stats`), driven by its loop."""

    def __init__(self, master, settings: Admin, sock: socket.socket | None) -> None:
        self.master = master
        self.settings = settings
        self.allow = parse_allow(settings.allow)
        self.sock = sock
        self.clients: set[_Client] = set()
        self.dashboard = resources.files(__package__).joinpath("dashboard.html").read_bytes()
        self.routes = {"/stats": self._stats, "/metrics": self._metrics, "/healthz": self._healthz,
                       "/": self._dashboard}

    @classmethod
    def start(cls, master, settings: Admin, path: str) -> AdminServer:
        """Bind `settings.bind` ('' = off); OSError names the key and the address."""
        server = cls(master, settings, open_listener(settings, path))
        if server.sock is not None:
            log.info("admin: stats, metrics and dashboard on http://%s/", settings.bind)
        return server

    # -- reload: all or nothing with the proxy listeners ----------------------------------------
    def prepare(self, settings: Admin, path: str) -> Rebind:
        """Open the new address if `bind` changed (OSError if it cannot); nothing changes yet."""
        if settings.bind == self.settings.bind:
            return Rebind(settings, self.sock, opened=False)
        sock = open_listener(settings, path)
        return Rebind(settings, sock, opened=sock is not None)

    def commit(self, rebind: Rebind) -> None:
        if rebind.sock is not self.sock:
            if self.sock is not None:
                _discard(self.sock)           # connections already accepted are still answered
            log.info("admin: %s", f"now on http://{rebind.settings.bind}/" if rebind.sock else "off")
        self.sock, self.settings = rebind.sock, rebind.settings
        self.allow = parse_allow(rebind.settings.allow)

    def close(self) -> None:
        for client in list(self.clients):
            self._drop(client)
        if self.sock is not None:
            _discard(self.sock)
            self.sock = None

    # -- the master's loop ---------------------------------------------------------------------
    def fds(self) -> list:
        """What the master waits on: the listener and the connections still reading."""
        waiting = [client for client in self.clients if not client.out]
        return ([self.sock] if self.sock is not None else []) + waiting

    def private_fds(self) -> list[int]:
        """Every descriptor the admin server holds: a forked worker closes them."""
        socks = ([self.sock] if self.sock is not None else []) + list(self.clients)
        return [sock.fileno() for sock in socks]

    def timeout(self, default: float) -> float:
        """The master's wait timeout: short while an answer is half sent (we wait for reads only)."""
        if any(client.out for client in self.clients):
            return 0.01
        if self.clients:
            return max(0.0, min(default, min(c.deadline for c in self.clients) - time.monotonic()))
        return default

    def service(self) -> None:
        """Accept, read, answer and close as far as possible without blocking."""
        now = time.monotonic()
        if self.sock is not None:
            self._accept(now)
        for client in list(self.clients):
            try:
                self._step(client, now)
            except Exception:                 # a bug costs one admin connection, never the master
                log.exception("admin: connection from %s failed", client.peer)
                self._drop(client)

    def _step(self, client: _Client, now: float) -> None:
        if now > client.deadline:
            self._drop(client)                # too slow to send its request or to read the answer
        elif client.out:
            self._send(client)
        else:
            self._read(client)

    def _accept(self, now: float) -> None:
        for _ in range(_ACCEPTS_PER_TURN):
            try:
                sock, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:          # EMFILE and friends: try again next turn
                log.warning("admin: accept failed: %s", error)
                return
            sock.setblocking(False)
            if len(self.clients) >= MAX_CLIENTS:
                _discard(sock)
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)  # one send per answer
            except OSError:
                pass
            client = _Client(sock, address[0], not allowed(address[0], self.allow), now)
            self.clients.add(client)
            self._read(client)                # the request usually came with the handshake

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(MAX_REQUEST_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.received += len(data)
        try:
            client.reader.feed(data)
        except ProxyError as error:
            self._answer(client, _text(error.status, error.detail), head_only=False)
            return
        heads = [event for event in client.reader.events if isinstance(event, RequestHead)]
        if heads:
            head = heads[0]
            self._answer(client, self.respond(head, client), head_only=head.method == "HEAD")
        elif client.received > MAX_REQUEST_BYTES:
            self._answer(client, _text(431, "request head too large"), head_only=False)

    def _answer(self, client: _Client, response: Response, head_only: bool) -> None:
        client.out = response.encode(head_only)
        self._send(client)

    def _send(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            sent = len(client.out)            # the client is gone: nothing more to do
        client.out = client.out[sent:]
        if not client.out:
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        self.clients.discard(client)
        _discard(client.sock)

    # -- the endpoints ---------------------------------------------------------------------------
    def respond(self, head: RequestHead, client: _Client) -> Response:
        if client.denied:
            log.warning("admin: %s denied (not in admin.allow)", client.peer)
            return _text(403, f"{client.peer} is not in admin.allow")
        if head.method not in ("GET", "HEAD"):
            return _text(405, f"{head.method} is not allowed here", ("Allow", "GET, HEAD"))
        route = self.routes.get(urlsplit(head.target).path)
        if route is None:
            return _text(404, "not found: try /, /stats, /metrics or /healthz")
        try:
            return route()
        except Exception:                     # a bug here must not stop the master
            log.exception("admin: %s failed", head.target[:200])
            return _text(500, "internal error (see the master's log)")

    def _stats(self) -> Response:
        body = json.dumps(self.master.stats.document(self.master), separators=(",", ":")).encode()
        return Response(200, body, "application/json")

    def _metrics(self) -> Response:
        return Response(200, metrics.render(self.master.stats.document(self.master)), metrics.CONTENT_TYPE)

    def _healthz(self) -> Response:
        ok, reason = health(self.master, time.monotonic())
        return _text(200 if ok else 503, f"{'ok' if ok else 'unavailable'}: {reason}")

    def _dashboard(self) -> Response:
        return Response(200, self.dashboard, "text/html; charset=utf-8",
                        (("Content-Security-Policy", _DASHBOARD_CSP),))


def open_listener(settings: Admin, path: str) -> socket.socket | None:
    if not settings.bind:
        return None
    from .master import _bind  # the one way this program binds a listener (late: master imports us)
    host, port = parse_address(settings.bind)
    try:
        sock = _bind(host, port, 64)
    except OSError as error:
        raise OSError(error.errno, f"{path}: admin.bind: cannot listen on {settings.bind}: "
                                   f"{error.strerror or error}") from None
    sock.setblocking(False)
    return sock


def _discard(sock: socket.socket) -> None:
    """Close now, even though workers forked meanwhile hold a copy of the fd: shutdown() acts on
    the socket itself, so a client sees the end at once and a listener stops listening (Linux)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
