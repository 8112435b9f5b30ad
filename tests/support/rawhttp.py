"""Exact bytes over a socket: a raw HTTP/1.1 client and the small reader both sides of the tests use.

The client sends what a test writes, byte for byte, and reads responses with a framing it checks
itself (Content-Length, chunked, close-delimited, no body for HEAD/1xx/204/304), so a test can tell a
well-framed response from a desynchronised one, and whether the server closed the connection.
"""

from __future__ import annotations

import hashlib
import socket
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

__all__ = ["PeerClosed", "Reader", "Response", "RawClient", "exchange", "parse_head",
           "header_value", "chunked", "build"]

CRLF = b"\r\n"


class PeerClosed(EOFError):
    """The peer closed (or reset) the connection before the expected bytes arrived."""

    def __init__(self, message: str, partial: bytes = b"") -> None:
        super().__init__(message)
        self.partial = partial


class Reader:
    """Buffered reads from a socket; every read is bounded by the socket's timeout."""

    def __init__(self, sock: socket.socket, bufsize: int = 1 << 20) -> None:
        self.sock, self.bufsize, self.buf = sock, bufsize, bytearray()
        self.received = 0  # bytes read from the socket so far

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(self.bufsize)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        self.received += len(data)
        self.buf += data
        return bool(data)

    def read_until(self, separator: bytes, limit: int = 1 << 20) -> bytes:
        """Up to and including `separator`."""
        start = 0
        while True:
            index = self.buf.find(separator, start)
            if index >= 0:
                end = index + len(separator)
                data = bytes(self.buf[:end])
                del self.buf[:end]
                return data
            if len(self.buf) > limit:
                raise ValueError(f"no {separator!r} within {limit} bytes")
            start = max(0, len(self.buf) - len(separator) + 1)
            if not self._fill():
                raise PeerClosed(f"closed before {separator!r}", bytes(self.buf))

    def read_exact(self, size: int, sink: Callable[[bytes], None]) -> int:
        """Pass exactly `size` bytes to sink (fewer if the peer closes first); return the count."""
        done = 0
        while done < size:
            if not self.buf and not self._fill():
                return done
            piece = bytes(self.buf[: size - done])
            del self.buf[: len(piece)]
            sink(piece)
            done += len(piece)
        return done

    def read_to_close(self, sink: Callable[[bytes], None]) -> int:
        done = 0
        while True:
            if self.buf:
                sink(bytes(self.buf))
                done += len(self.buf)
                self.buf.clear()
            if not self._fill():
                return done


def parse_head(head: bytes) -> tuple[list[str], list[tuple[str, str]]]:
    """b'GET / HTTP/1.1\\r\\nA: b\\r\\n\\r\\n' -> (['GET', '/', 'HTTP/1.1'], [('A', 'b')]).

    Tolerant on purpose (the origin must see what a proxy sent, not reject it): a line without a
    colon becomes a header with an empty value and the whole line as its name.
    """
    lines = head.decode("latin-1").split("\r\n")
    start = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name, value.strip(" \t")))
    return start, headers


def header_value(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """All fields called `name` (case-insensitive), joined with ', '; None if absent."""
    values = [value for key, value in headers if key.lower() == name.lower()]
    return ", ".join(values) if values else None


def _tokens(value: str | None) -> list[str]:
    return [token.strip().lower() for token in (value or "").split(",") if token.strip()]


def read_chunked(reader: Reader, sink: Callable[[bytes], None]) -> tuple[int, bool, list[tuple[str, str]]]:
    """Decode a chunked body: (length, complete, trailers). complete = the last chunk was seen."""
    total = 0
    try:
        while True:
            line = reader.read_until(CRLF, limit=4096)
            size = int(line.split(b";", 1)[0].strip() or b"x", 16)
            if size == 0:
                trailers = []
                while True:
                    line = reader.read_until(CRLF, limit=65536)
                    if line == CRLF:
                        return total, True, trailers
                    name, _, value = line.decode("latin-1").strip().partition(":")
                    trailers.append((name, value.strip()))
            got = reader.read_exact(size, sink)
            total += got
            if got < size or reader.read_until(CRLF, limit=2) != CRLF:
                return total, False, []
    except PeerClosed:
        return total, False, []


def chunked(pieces: Iterable[bytes]) -> Iterable[bytes]:
    """Encode pieces as a chunked body (with the last-chunk)."""
    for piece in pieces:
        if piece:
            yield b"%x\r\n" % len(piece) + piece + CRLF
    yield b"0\r\n\r\n"


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""                    # kept only when the caller asked (small bodies)
    body_length: int = 0
    sha256: str = ""
    complete: bool = True                # the body arrived whole per its framing
    framing: str = ""                    # "none", "length", "chunked" or "close"
    interim: list["Response"] = field(default_factory=list)  # 1xx responses before this one
    raw_head: bytes = b""

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)

    def has(self, name: str) -> bool:
        return self.header(name) is not None

    def tokens(self, name: str) -> list[str]:
        """A comma-separated field as lower-case tokens (e.g. Connection)."""
        return _tokens(self.header(name))

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        import json
        return json.loads(self.body)


def read_response(reader: Reader, method: str = "GET", keep_body: bool = True,
                  max_kept: int = 16 << 20) -> Response:
    """Read one final response (collecting 1xx interim responses); raise PeerClosed if none."""
    interim = []
    while True:
        head = reader.read_until(b"\r\n\r\n", limit=1 << 20)
        start, headers = parse_head(head)
        if len(start) < 2 or not start[0].startswith("HTTP/") or not start[1].isdigit():
            raise ValueError(f"not an HTTP response: {head[:200]!r}")
        response = Response(start[0], int(start[1]), start[2] if len(start) > 2 else "",
                            headers, raw_head=head)
        if 100 <= response.status < 200 and response.status != 101:
            interim.append(response)
            continue
        response.interim = interim
        break
    digest, kept = hashlib.sha256(), bytearray()

    def sink(piece: bytes) -> None:
        digest.update(piece)
        if keep_body and len(kept) < max_kept:
            kept.extend(piece)

    encoding = _tokens(response.header("Transfer-Encoding"))
    length = response.header("Content-Length")
    if method == "HEAD" or response.status in (204, 304) or (method == "CONNECT" and response.status < 300):
        response.framing = "none"
    elif encoding and encoding[-1] == "chunked":
        response.framing = "chunked"
        response.body_length, response.complete, trailers = read_chunked(reader, sink)
        response.headers = response.headers + trailers
    elif length is not None:
        response.framing = "length"
        expected = int(length.split(",")[0].strip())
        response.body_length = reader.read_exact(expected, sink)
        response.complete = response.body_length == expected
    else:
        response.framing = "close"
        response.body_length = reader.read_to_close(sink)
    response.body, response.sha256 = bytes(kept), digest.hexdigest()
    return response


class RawClient:
    """One TCP connection to host:port on which a test writes exact bytes and reads responses."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.reader = Reader(self.sock)

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_body(self, pieces: Iterable[bytes]) -> int:
        sent = 0
        for piece in pieces:
            self.sock.sendall(piece)
            sent += len(piece)
        return sent

    def response(self, method: str = "GET", keep_body: bool = True) -> Response:
        return read_response(self.reader, method, keep_body)

    def request(self, data: bytes, method: str | None = None, keep_body: bool = True) -> Response:
        self.send(data)
        return self.response(method or data.split(b" ", 1)[0].decode("latin-1"), keep_body)

    def read_available(self, wait: float = 0.5) -> bytes:
        """Whatever arrives within `wait` seconds (b'' if nothing or closed)."""
        self.sock.settimeout(wait)
        try:
            data = bytes(self.reader.buf)
            self.reader.buf.clear()
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, ConnectionResetError):
                chunk = b""
            return data + chunk
        finally:
            self.sock.settimeout(self.timeout)

    def closed_by_peer(self, wait: float = 2.0) -> bool:
        """True if the peer closed the connection (EOF or reset) within `wait` seconds.

        Bytes still arriving (e.g. the rest of an unread body) are discarded while waiting.
        """
        self.reader.buf.clear()
        deadline = time.monotonic() + wait
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                try:
                    if not self.sock.recv(65536):
                        return True
                except socket.timeout:
                    return False
                except (ConnectionResetError, BrokenPipeError):
                    return True
        finally:
            self.sock.settimeout(self.timeout)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def exchange(port: int, data: bytes, method: str | None = None, timeout: float = 10.0,
             close_wait: float = 0.0) -> tuple[Response, bool]:
    """Send `data` on a new connection and read one response.

    With close_wait > 0, also report whether the server closed the connection within that time
    (with the default 0 the second value is meaningless: the test does not care).
    """
    with RawClient(port, timeout=timeout) as client:
        response = client.request(data, method)
        return response, client.closed_by_peer(close_wait)


def build(method: str, target: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
          version: str = "HTTP/1.1", host: str | None = "auto") -> bytes:
    """An exact request. host='auto': a Host field from an absolute-form target (or 'test.invalid');
    None: no Host field. A Content-Length is added for a body unless the headers frame it."""
    fields = list(headers)
    names = {name.lower() for name, _ in fields}
    if host == "auto":
        host = target.split("/", 3)[2] if "://" in target else ("test.invalid" if method != "CONNECT" else target)
    if host is not None and "host" not in names:
        fields.insert(0, ("Host", host))
    if body and not names & {"content-length", "transfer-encoding"}:
        fields.append(("Content-Length", str(len(body))))
    lines = [f"{method} {target} {version}"] + [f"{name}: {value}" for name, value in fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
