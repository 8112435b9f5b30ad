"""HTTP/1.1 framing, sans-IO: bytes in, events out; heads in, bytes out.

# design: httptools (llhttp, strict: no leniency flags) parses; its callbacks stay tiny and append
# events to a list; all policy runs after `feed()` returns. Events are a `RequestHead` /
# `ResponseHead`, `bytes` (a body piece, never more than one recv) and `END` (end of message).
# Limits are enforced while bytes arrive, so memory per connection stays bounded whatever the peer
# sends. Nothing here opens a socket or reads a clock. Every message the proxy sends is re-serialised
# from a head (never piped raw), so a lenient peer on one side cannot desync the other side.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

import httptools

from .errors import (BadGateway, BadRequest, HeadersTooLarge, NotImplementedCoding, ProxyError,
                     URITooLong, VersionNotSupported)

__all__ = [
    "inner_codings", "END", "RequestHead", "ResponseHead", "RequestReader", "ResponseReader", "HeadLimits",
    "request_head_bytes", "response_head_bytes", "chunk_prefix", "LAST_CHUNK", "header_value",
]

END = object()            # the end-of-message event
_CHUNK_FRAMING_PER_CHUNK = 64   # size line, CRLFs and a modest extension, per chunk
_TRAILER_ALLOWANCE = 8192       # the trailer section (and slack)
_HEAD_SLACK = 64                # a request line's method, version and spaces
LAST_CHUNK = b"0\r\n\r\n"  # RFC 9112 §7.1: last-chunk, no trailer section


@dataclass(frozen=True, slots=True)
class HeadLimits:
    request_line: int = 8192
    header_line: int = 8192
    header_bytes: int = 65536
    header_count: int = 100


@dataclass(slots=True)
class RequestHead:
    method: str
    target: str
    version: str                      # "1.0" or "1.1"
    headers: list[tuple[str, str]]
    keep_alive: bool
    chunked: bool
    content_length: int | None        # None when chunked or no body

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


@dataclass(slots=True)
class ResponseHead:
    status: int
    version: str
    headers: list[tuple[str, str]]
    keep_alive: bool
    chunked: bool
    content_length: int | None
    until_close: bool = False         # RFC 9112 §6.3 rule 8: the body ends when the connection does
    codings: str = ""                 # transfer codings before the final chunked (rare: "gzip")


def header_value(headers: list[tuple[str, str]], name: str) -> str | None:
    """The field's value, several field lines combined with ", " (RFC 9110 §5.3); None if absent."""
    values = [value for key, value in headers if key.lower() == name]
    return ", ".join(values) if values else None


def _framing(codings: str | None, length: str | None) -> tuple[str | None, int | None]:
    """(the Transfer-Encoding value or None, the Content-Length or None), from the field values the
    reader collected; llhttp has already rejected duplicate or non-numeric lengths and a length
    alongside a transfer coding."""
    return codings, (None if codings is not None or length is None else int(length))


def _final_chunked(codings: str) -> bool:
    """RFC 9112 §6.3: the body is chunked only if chunked is the final transfer coding."""
    return codings.rpartition(",")[2].strip().lower() == "chunked"


def inner_codings(codings: str) -> str:
    """The transfer codings applied before the final chunked ('' for plain chunked)."""
    parts = [part.strip() for part in codings.split(",") if part.strip()]
    if parts and parts[-1].lower() == "chunked":
        parts.pop()
    return ", ".join(parts)


def _keep_alive(version: str, headers: list[tuple[str, str]]) -> bool:
    """RFC 9112 §9.3: persistence from the version and the Connection options."""
    tokens = {t.strip().lower() for n, v in headers if n.lower() == "connection" for t in v.split(",")}
    return "keep-alive" in tokens if version == "1.0" else "close" not in tokens


class _Reader:
    """Shared callback plumbing of the request and response readers."""

    def __init__(self, limits: HeadLimits) -> None:
        self.limits = limits
        self.events: list = []
        self._headers: list[tuple[str, str]] = []
        self._head_bytes = self._trailer_bytes = 0
        self._raw_head_bytes = 0
        self._feed_head = 0                     # head bytes counted in the current feed
        self._in_head = False
        self._head_began_in_feed = False
        self._codings: str | None = None        # the head's Transfer-Encoding, lines combined
        self._length: str | None = None         # its Content-Length

    def on_message_begin(self) -> None:
        self._headers = []
        self._trailer_bytes = 0
        self._head_bytes = 0
        self._raw_head_bytes = 0
        self._in_head = True
        self._head_began_in_feed = True
        self._codings = self._length = None

    def on_header(self, name: bytes, value: bytes) -> None:
        # Called once per field line of every message: kept flat (no helper calls) on purpose.
        size = len(name) + len(value) + 4
        if not self._in_head:
            # A trailer field (RFC 9112 §7.1.2): never merged into the head, never forwarded.
            self._trailer_bytes += size
            if self._trailer_bytes > _TRAILER_ALLOWANCE:
                raise self._invalid("trailer section too large")
            return
        limits = self.limits
        self._head_bytes += size
        self._feed_head += size + 2             # + the CRLF
        if size > limits.header_line or self._head_bytes > limits.header_bytes \
                or len(self._headers) >= limits.header_count:
            raise self._head_limit(name, size)
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))
        if len(name) in (14, 17):               # len("content-length"), len("transfer-encoding")
            self._framing_field(name.lower(), value)

    def _framing_field(self, lname: bytes, value: bytes) -> None:
        if lname == b"transfer-encoding":
            self._transfer_coding(value)
            text = value.decode("latin-1")
            self._codings = text if self._codings is None else f"{self._codings}, {text}"
        elif lname == b"content-length":
            self._length = value.decode("latin-1")

    def _transfer_coding(self, value: bytes) -> None:
        """A Transfer-Encoding field line: the request side checks it."""

    def _head_limit(self, name: bytes, size: int) -> ProxyError:
        limits = self.limits
        if size > limits.header_line:
            return self._too_large(f"header field {name[:40]!r} longer than {limits.header_line} bytes")
        if len(self._headers) >= limits.header_count:
            return self._too_large(f"more than {limits.header_count} header fields")
        return self._too_large(f"header section larger than {limits.header_bytes} bytes")

    def _add_head_bytes(self, size: int) -> None:
        self._head_bytes += size
        self._feed_head += size + 2             # + the request line's framing
        if self._head_bytes > self.limits.header_bytes:
            raise self._too_large(f"header section larger than {self.limits.header_bytes} bytes")

    def _too_large(self, detail: str) -> ProxyError:
        return HeadersTooLarge(detail)

    def on_body(self, body: bytes) -> None:
        self.events.append(body)

    @property
    def in_head(self) -> bool:
        """A message head has begun and is not complete yet."""
        return self._in_head

    def on_message_complete(self) -> None:
        self.events.append(END)

    def _count_head(self, size: int) -> None:
        # The callbacks count the head exactly, but llhttp hands over a field only when it is
        # complete; this guard bounds what it buffers meanwhile. A head that began inside this feed
        # is counted from the next feed on, so at most one recv more than the limit is buffered.
        if self._in_head and not self._head_began_in_feed:
            self._raw_head_bytes += size
            if self._raw_head_bytes > self.limits.header_bytes:
                raise self._too_large(f"header section larger than {self.limits.header_bytes} bytes")

    def _feed(self, data: bytes) -> None:
        self._head_began_in_feed = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, ProxyError):
                raise error.__context__ from None
            raise self._invalid(str(error)) from None
        except httptools.HttpParserError as error:
            raise self._invalid(str(error)) from None
        self._count_head(len(data))


class RequestReader(_Reader):
    """Client side: feed() bytes from the client; consume `events`.

    After a CONNECT head the parser stops: `tunnel_data` holds the bytes that followed the head,
    and nothing more may be fed. A request with Upgrade stops the parser too (llhttp then skips
    its body): this proxy never switches protocols, so such a request must have no body and ends
    the connection (`keep_alive` False); the bytes after it are never parsed.
    """

    def __init__(self, limits: HeadLimits = HeadLimits()) -> None:
        super().__init__(limits)
        self._parser = httptools.HttpRequestParser(self)
        self._url: list[bytes] = []
        self._url_len = 0
        self._te_count = 0
        self.tunnel_data: bytes | None = None
        self.stopped = False
        self._chunked_body = self._chunked_ended = False
        self._framing_bytes = self._chunks = self._feed_body = self._feed_head = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url = []
        self._url_len = 0
        self._te_count = 0

    def on_url(self, url: bytes) -> None:
        self._url_len += len(url)
        if self._url_len > self.limits.request_line:
            raise URITooLong(f"request target longer than {self.limits.request_line} bytes")
        self._add_head_bytes(len(url))
        self._url.append(url)

    def _transfer_coding(self, value: bytes) -> None:
        self._te_count += 1
        if self._te_count > 1:
            raise BadRequest("more than one Transfer-Encoding field")
        if value.strip().lower() != b"chunked":
            # RFC 9112 §6.1: a server that does not understand a transfer coding answers 501.
            raise NotImplementedCoding(f"unsupported transfer coding {value[:40].decode('latin-1')!r}")

    def on_headers_complete(self) -> None:
        parser = self._parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise VersionNotSupported(f"HTTP/{version} is not supported")
        codings, length = _framing(self._codings, self._length)   # codings is "chunked" (checked per line)
        self.events.append(RequestHead(
            method=parser.get_method().decode("ascii"), target=b"".join(self._url).decode("latin-1"),
            version=version, headers=self._headers, keep_alive=parser.should_keep_alive(),
            chunked=codings is not None, content_length=length))
        self._in_head = False
        if codings is not None:
            self._chunked_body, self._chunked_ended = True, False
            self._framing_bytes = self._chunks = 0

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._chunked_ended = self._chunked_body

    # Chunk extensions and trailers are parsed by llhttp but never handed to us, so they are
    # bounded by accounting: of each feed's bytes, what was neither body data nor a head
    # (counted by the callbacks) is chunk framing. Its running total for a message may not
    # exceed a little per chunk plus an allowance for the trailer section.
    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._feed_body += len(body)

    def _check_chunk_framing(self, size: int) -> None:
        if not self._chunked_body:
            return
        self._framing_bytes += max(0, size - self._feed_body - self._feed_head - _HEAD_SLACK)
        if self._framing_bytes > _CHUNK_FRAMING_PER_CHUNK * (self._chunks + 1) + _TRAILER_ALLOWANCE:
            raise BadRequest("chunk extensions or trailer fields too large")
        if self._chunked_ended:                 # the chunked message ended in this feed
            self._chunked_body = self._chunked_ended = False

    def feed(self, data: bytes) -> None:
        if self.stopped:
            return                              # after an Upgrade request: never parsed
        self._feed_body = self._feed_head = 0
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgraded(data[upgrade.args[0]:])
            return
        self._check_chunk_framing(len(data))

    def _upgraded(self, rest: bytes) -> None:
        head = next(event for event in reversed(self.events) if isinstance(event, RequestHead))
        if head.method == "CONNECT":
            self.tunnel_data = rest
            return
        self.stopped = True
        if head.has_body:
            raise BadRequest("a request with Upgrade cannot have a body here (no protocol switch)")
        head.keep_alive = False

    def _invalid(self, reason: str) -> ProxyError:
        if reason.startswith("Invalid") and "version" in reason:       # llhttp's version errors
            return VersionNotSupported(reason)
        if reason.startswith("Request has invalid `Transfer-Encoding`"):  # a coding, no chunked
            return NotImplementedCoding(reason)
        return BadRequest(reason)


class ResponseReader(_Reader):
    """Upstream side: feed() bytes from the origin; consume `events`.

    `head_only` is set for responses to HEAD (RFC 9110 §9.3.2): the message ends with its head.
    `clean_end` says whether the response ended exactly at the end of the bytes received: bytes
    after the declared end are dropped, never parsed as another response, and the connection must
    not be reused. `eof()` ends a close-delimited body or reports a truncated one.
    """

    def __init__(self, limits: HeadLimits = HeadLimits(), head_only: bool = False) -> None:
        super().__init__(limits)
        self._parser = httptools.HttpResponseParser(self)
        self.head_only = head_only
        self.clean_end = True
        self._head: ResponseHead | None = None
        self._complete = False
        self._heads = 0                    # heads parsed so far (1xx included)
        self._final_done = False           # the final (non-1xx) response is complete
        self._raw = bytearray()            # HEAD only: every byte received, to check clean_end

    def on_message_begin(self) -> None:
        if self._final_done:
            raise _Extra()                  # bytes after the response: stop, never parse them
        super().on_message_begin()
        self._complete = False

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        codings, length = _framing(self._codings, self._length)
        chunked = codings is not None and _final_chunked(codings)
        bodiless = self.head_only or status < 200 or status in (204, 304)
        version = parser.get_http_version()
        head = ResponseHead(status=status, version=version, headers=self._headers,
                            keep_alive=_keep_alive(version, self._headers) if bodiless
                            else parser.should_keep_alive(),
                            chunked=chunked, content_length=0 if bodiless else length,
                            until_close=not bodiless and not chunked and length is None,
                            codings=inner_codings(codings) if codings else "")
        self._head = head
        self._heads += 1
        self._in_head = False
        self.events.append(head)
        if self.head_only and status >= 200:
            self.events.append(END)
            self._complete = True
            raise _HeadDone()

    def on_message_complete(self) -> None:
        if not self._complete:
            self._complete = True
            self._final_done = self._head is not None and self._head.status >= 200
            super().on_message_complete()

    def feed(self, data: bytes) -> None:
        if self._final_done:
            self.clean_end = False
            return
        if self.head_only:
            self._raw += data
        try:
            self._feed(data)
        except _Extra:
            self.clean_end = False
        except BadGateway:
            if not self._final_done:
                raise
            self.clean_end = False          # garbage after a complete response
        except _HeadDone:
            # Each head ends at its only empty line, so the bytes are exactly the heads iff they
            # end with one and hold no more empty lines than heads were parsed.
            raw = self._raw
            self.clean_end = raw.endswith(b"\r\n\r\n") and raw.count(b"\r\n\r\n") == self._heads

    def eof(self) -> bool:
        """The origin closed: True if that ended the body (close-delimited), False if truncated."""
        if self._complete:
            return True
        head = self._head
        if head is not None and head.until_close:
            self._complete = True
            self.events.append(END)
            return True
        return False

    @property
    def complete(self) -> bool:
        return self._complete

    def _too_large(self, detail: str) -> ProxyError:
        return BadGateway(f"origin response head: {detail}")

    def _invalid(self, reason: str) -> ProxyError:
        return BadGateway(f"invalid response from origin: {reason}")


class _HeadDone(ProxyError):
    """Raised in a callback to stop the parser after the head of a response to HEAD."""


class _Extra(ProxyError):
    """Raised in a callback to stop the parser at bytes that follow a complete response."""


# ---------------------------------------------------------------------------------------------
# Serialisation. Status lines are built once (uvicorn's trick); heads are joined in one pass.

_STATUS_LINES = {
    int(status): f"HTTP/1.1 {int(status)} {status.phrase}\r\n".encode("latin-1") for status in HTTPStatus
}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else f"HTTP/1.1 {status} Unknown\r\n".encode("latin-1")


def _fields(headers: list[tuple[str, str]]) -> bytes:
    return "".join([f"{name}: {value}\r\n" for name, value in headers]).encode("latin-1") + b"\r\n"


def request_head_bytes(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    return f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + _fields(headers)


def response_head_bytes(status: int, headers: list[tuple[str, str]]) -> bytes:
    return _status_line(status) + _fields(headers)


def chunk_prefix(size: int) -> bytes:
    """RFC 9112 §7.1: chunk-size in hex, no extensions."""
    return b"%x\r\n" % size
