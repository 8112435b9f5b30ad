"""A scriptable, misbehaving HTTP/1.1 origin on 127.0.0.1 (threaded, raw sockets).

It records exactly what it receives (request line, header fields in order, body length and hash,
which TCP connection and which request on it) and counts TCP connections, so a test can see what a
proxy forwarded and whether it reused upstream connections. Built-in routes, chosen by path, with
options in the query string:

    /echo     200 JSON of the request as received.  ?status=N ?h=Name:Value (repeatable)
              ?delay=S (after the body) ?stall=S (before reading the body) ?no100=1
    /bytes    ?n=N bytes of tests.support.pattern; ?chunked=1, ?close=1 (no length, close-delimited),
              ?delay=S, ?type=...  (HEAD: the same head, no body)
    /hang     reads the request, never answers (until ?s=S or the origin stops)
    /close-before   reads the request, closes without a byte
    /close-mid      ?n=N announces N bytes, sends N//2, closes
    /status   ?code=204|304|...  (no body for 204/304, a short one otherwise)
    /info     a 103 Early Hints interim response, then 200 "final"
    /garbage  answers with bytes that are not HTTP, then closes
    /flaky    200 on a fresh connection; on a reused one, reads the request and closes unanswered
    files added with add_file(path, body, content_type); anything else is 404.

Custom behaviour: origin.route(path, handler), handler(exchange) with the Exchange API below.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from .pattern import iter_pattern
from .rawhttp import PeerClosed, Reader, header_value, parse_head, read_chunked
from .tcpserver import ThreadedServer

__all__ = ["Origin", "Received", "Exchange"]

REASONS = {100: "Continue", 103: "Early Hints", 200: "OK", 204: "No Content", 304: "Not Modified",
           400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}


@dataclass
class Received:
    """One request as the origin read it off the wire."""

    connection: int            # which TCP connection (1, 2, ...)
    index: int                 # which request on that connection (0 = first)
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    raw_head: bytes
    body_length: int = 0
    body_sha256: str = ""
    body_complete: bool = False
    time: float = field(default_factory=time.monotonic)

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)

    def has(self, name: str) -> bool:
        return self.header(name) is not None

    @property
    def path(self) -> str:
        return urlsplit(self.target).path if "://" in self.target else self.target.split("?", 1)[0]

    def as_json(self) -> dict:
        return {"method": self.method, "target": self.target, "version": self.version,
                "headers": [list(pair) for pair in self.headers], "body_length": self.body_length,
                "body_sha256": self.body_sha256, "connection": self.connection, "index": self.index}


class Exchange:
    """One request being served; what a route handler works with."""

    def __init__(self, origin: "Origin", sock: socket.socket, reader: Reader, received: Received) -> None:
        self.origin, self.sock, self.reader, self.request = origin, sock, reader, received
        split = urlsplit(received.target)
        self.path = split.path or "/"
        self.query = parse_qs(split.query)
        self.keep_alive = origin.keepalive and received.version == "HTTP/1.1" and \
            "close" not in (received.header("Connection") or "").lower()
        self.body_read = False
        self.sent_any = False
        self.closed = False

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def read_body(self, keep: bool = False) -> bytes:
        """Read the request body per its framing; record its length and sha256."""
        if self.body_read:
            return b""
        self.body_read = True
        request, digest, kept = self.request, hashlib.sha256(), bytearray()

        def sink(piece: bytes) -> None:
            digest.update(piece)
            request.body_length += len(piece)
            if keep:
                kept.extend(piece)

        if "100-continue" in (request.header("Expect") or "").lower() and not self.arg("no100"):
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        encoding = (request.header("Transfer-Encoding") or "").lower()
        if "chunked" in encoding:
            _, request.body_complete, _ = read_chunked(self.reader, sink)
        else:
            length = int((request.header("Content-Length") or "0").split(",")[0] or 0)
            request.body_complete = self.reader.read_exact(length, sink) == length
        request.body_sha256 = digest.hexdigest()
        if not request.body_complete:
            self.keep_alive = False
        return bytes(kept)

    def send(self, data: bytes) -> None:
        self.sent_any = True
        self.sock.sendall(data)
        self.origin._count_sent(len(data))

    def head(self, status: int, headers: list[tuple[str, str]] | None = None, reason: str | None = None) -> None:
        fields = list(headers or [])
        if not self.keep_alive and not any(k.lower() == "connection" for k, _ in fields):
            fields.append(("Connection", "close"))
        lines = [f"HTTP/1.1 {status} {reason or REASONS.get(status, 'Status')}"]
        lines += [f"{name}: {value}" for name, value in fields]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def respond(self, status: int, body: bytes = b"", content_type: str = "text/plain",
                headers: list[tuple[str, str]] | None = None) -> None:
        self.read_body()
        fields = [("Content-Type", content_type), ("Content-Length", str(len(body)))] + list(headers or [])
        self.head(status, fields)
        if self.request.method != "HEAD" and body:
            self.send(body)

    def close(self) -> None:
        """Close the connection now (abortive: no more responses on it)."""
        self.closed, self.keep_alive = True, False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake up when the origin is stopped."""
        self.origin._stopping.wait(seconds)


Handler = Callable[[Exchange], None]


class Origin(ThreadedServer):
    """A threaded origin server; `with Origin() as origin:` or start()/stop()."""

    name = "origin"

    def __init__(self, host: str = "127.0.0.1", keepalive: bool = True) -> None:
        super().__init__(host, backlog=256)
        self.keepalive = keepalive
        self.base = f"http://{host}:{self.port}"
        self.received: list[Received] = []
        self.bytes_sent = 0
        self.errors: list[str] = []
        self.files: dict[str, tuple[bytes, str]] = {}
        self.routes: dict[str, Handler] = {
            "/echo": _echo, "/bytes": _bytes, "/hang": _hang, "/close-before": _close_before,
            "/close-mid": _close_mid, "/status": _status, "/info": _info, "/garbage": _garbage,
            "/flaky": _flaky,
        }

    # -- scripting -----------------------------------------------------------------------------------
    def url(self, path: str = "/") -> str:
        return self.base + path

    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    def add_file(self, path: str, body: bytes, content_type: str) -> None:
        self.files[path] = (body, content_type)

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    # -- observation -----------------------------------------------------------------------------
    def requests(self, path: str | None = None, method: str | None = None) -> list[Received]:
        with self._lock:
            found = list(self.received)
        return [r for r in found if (path is None or r.path == path) and (method is None or r.method == method)]

    def reset(self) -> None:
        with self._lock:
            self.received.clear()
            self.connections = 0
            self.bytes_sent = 0

    def _count_sent(self, size: int) -> None:
        with self._lock:
            self.bytes_sent += size

    # -- serving -----------------------------------------------------------------------------------
    def _serve(self, sock: socket.socket, number: int) -> None:
        sock.settimeout(30.0)
        reader = Reader(sock, bufsize=256 << 10)
        try:
            for index in range(1 << 30):
                try:
                    head = reader.read_until(b"\r\n\r\n", limit=1 << 20)
                except (PeerClosed, socket.timeout, OSError):
                    return
                start, headers = parse_head(head)
                received = Received(number, index, start[0], start[1] if len(start) > 1 else "",
                                    start[2] if len(start) > 2 else "", headers, head)
                with self._lock:
                    self.received.append(received)
                exchange = Exchange(self, sock, reader, received)
                self._dispatch(exchange)
                if not exchange.keep_alive or exchange.closed or self._stopping.is_set():
                    return
        except (OSError, ValueError) as error:
            if not self._stopping.is_set():
                self.errors.append(f"connection {number}: {error!r}")
        finally:
            self._forget(sock)
            try:
                sock.close()
            except OSError:
                pass

    def _dispatch(self, exchange: Exchange) -> None:
        handler = self.routes.get(exchange.path)
        if handler is not None:
            handler(exchange)
        elif exchange.path in self.files:
            body, content_type = self.files[exchange.path]
            exchange.respond(200, body, content_type, [("Cache-Control", "no-store")])
        else:
            exchange.respond(404, b"not found\n")
        if not exchange.closed:
            exchange.read_body()


# -- built-in routes ---------------------------------------------------------------------------------
def _extra_headers(ex: Exchange) -> list[tuple[str, str]]:
    return [tuple(part.strip() for part in item.split(":", 1)) for item in ex.query.get("h", [])]


def _echo(ex: Exchange) -> None:
    if ex.arg("stall"):
        ex.sleep(float(ex.arg("stall")))
    ex.read_body()
    if ex.arg("delay"):
        ex.sleep(float(ex.arg("delay")))
    body = json.dumps(ex.request.as_json()).encode()
    ex.respond(int(ex.arg("status", "200")), body, "application/json", _extra_headers(ex))


def _bytes(ex: Exchange) -> None:
    ex.read_body()
    size = int(ex.arg("n", "0"))
    if ex.arg("delay"):
        ex.sleep(float(ex.arg("delay")))
    fields = [("Content-Type", ex.arg("type", "application/octet-stream"))] + _extra_headers(ex)
    if ex.arg("chunked"):
        ex.head(200, fields + [("Transfer-Encoding", "chunked")])
        if ex.request.method != "HEAD":
            for piece in iter_pattern(size):
                ex.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
            ex.send(b"0\r\n\r\n")
        return
    if ex.arg("close"):
        ex.keep_alive = False
        ex.head(200, fields + [("Connection", "close")])
    else:
        ex.head(200, fields + [("Content-Length", str(size))])
    if ex.request.method != "HEAD":
        for piece in iter_pattern(size):
            ex.send(piece)
    if ex.arg("close"):
        ex.close()


def _hang(ex: Exchange) -> None:
    ex.read_body()
    ex.sleep(float(ex.arg("s", "3600")))
    ex.close()


def _close_before(ex: Exchange) -> None:
    ex.read_body()
    ex.close()


def _close_mid(ex: Exchange) -> None:
    ex.read_body()
    size = int(ex.arg("n", "100000"))
    ex.head(200, [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
    for piece in iter_pattern(size // 2):
        ex.send(piece)
    ex.close()


def _status(ex: Exchange) -> None:
    code = int(ex.arg("code", "200"))
    ex.read_body()
    if code in (204, 304):
        fields = [("ETag", '"v1"')] if code == 304 else []
        ex.head(code, fields + _extra_headers(ex))
    else:
        ex.respond(code, f"status {code}\n".encode(), headers=_extra_headers(ex))


def _info(ex: Exchange) -> None:
    ex.read_body()
    ex.send(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
    ex.respond(200, b"final")


def _garbage(ex: Exchange) -> None:
    ex.read_body()
    ex.send(b"THIS IS NOT HTTP AT ALL\r\n\r\n")
    ex.close()


def _flaky(ex: Exchange) -> None:
    ex.read_body()
    if ex.request.index > 0:
        ex.close()
    else:
        ex.respond(200, b"fresh connection\n")
