"""workers.http1 as (bytes -> events) and (bytes -> status) tables; no sockets, no clock.

Events are compared through `summary()`: a head becomes a short tuple, consecutive body pieces are
joined (their boundaries depend on how the bytes were split, not on the message) and END is "END".
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.errors import ProxyError
from workers.http1 import (END, LAST_CHUNK, HeadLimits, RequestHead, RequestReader, ResponseHead,
                           ResponseReader, chunk_prefix, header_value, request_head_bytes,
                           response_head_bytes)


# -- helpers ---------------------------------------------------------------------------------------
def table(names: str, rows: list):
    """parametrize over (id, *values) rows: the first item of each row names the case."""
    values = [row[1] if len(row) == 2 else row[1:] for row in rows]
    return pytest.mark.parametrize(names, values, ids=[row[0] for row in rows])


def req(method: str, target: str, length: int | None = None, chunked: bool = False,
        version: str = "1.1", keep_alive: bool = True) -> tuple:
    return ("req", method, target, version, length, chunked, keep_alive)


def resp(status: int, length: int | None = None, chunked: bool = False, until_close: bool = False,
         keep_alive: bool = True) -> tuple:
    return ("resp", status, length, chunked, until_close, keep_alive)


def summary(events: list) -> list:
    out: list = []
    for event in events:
        if isinstance(event, RequestHead):
            out.append(req(event.method, event.target, event.content_length, event.chunked,
                           event.version, event.keep_alive))
        elif isinstance(event, ResponseHead):
            out.append(resp(event.status, event.content_length, event.chunked, event.until_close,
                            event.keep_alive))
        elif event is END:
            out.append("END")
        elif out and isinstance(out[-1], bytes):
            out[-1] += event
        else:
            out.append(bytes(event))
    return out


def feed(reader, data: bytes, step: int | None = None):
    """Feed `data` whole, or in pieces of `step` bytes; return the reader."""
    step = step or len(data) or 1
    for start in range(0, len(data), step):
        reader.feed(data[start:start + step])
    return reader


def request_status(data: bytes, limits: HeadLimits = HeadLimits(), step: int | None = None) -> int:
    with pytest.raises(ProxyError) as caught:
        feed(RequestReader(limits), data, step)
    return caught.value.status


def post(*fields: str, body: bytes = b"") -> bytes:
    """A POST with Host and the given field lines (already 'Name: value')."""
    lines = "".join(f"{field}\r\n" for field in ("Host: a", *fields))
    return f"POST / HTTP/1.1\r\n{lines}\r\n".encode("latin-1") + body


def head_with(n_fields: int, value_size: int) -> bytes:
    fields = b"".join(b"X-%d: %s\r\n" % (i, b"v" * value_size) for i in range(n_fields))
    return b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n"


# -- valid requests ----------------------------------------------------------------------------------
# RFC 9112 §2.2 (message parsing), §3.2 (request-target forms), §6.1 (chunked), §6.3 (body length),
# §7.1 (chunk syntax: extensions and trailer fields are accepted and not surfaced as body).
VALID_REQUESTS = [
    ("get", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", [req("GET", "/"), "END"]),
    ("get-close", b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
     [req("GET", "/x", keep_alive=False), "END"]),
    ("http10", b"GET / HTTP/1.0\r\n\r\n", [req("GET", "/", version="1.0", keep_alive=False), "END"]),
    ("post-length", post("Content-Length: 5", body=b"hello"), [req("POST", "/", 5), b"hello", "END"]),
    ("post-length-zero", post("Content-Length: 0"), [req("POST", "/", 0), "END"]),
    ("post-chunked", post("Transfer-Encoding: chunked", body=b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
     [req("POST", "/", chunked=True), b"abcde", "END"]),
    ("chunk-ext-and-trailer",
     post("Transfer-Encoding: Chunked", body=b"3;name=value\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"),
     [req("POST", "/", chunked=True), b"abc", "END"]),
    ("pipelined", b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n" + post("Content-Length: 2", body=b"hi")
     + b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
     [req("GET", "/1"), "END", req("POST", "/", 2), b"hi", "END", req("GET", "/3"), "END"]),
    ("options-asterisk", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", [req("OPTIONS", "*"), "END"]),
    ("absolute-form", b"GET http://a.example:8080/p?q=1 HTTP/1.1\r\nHost: a.example:8080\r\n\r\n",
     [req("GET", "http://a.example:8080/p?q=1"), "END"]),
    ("tab-and-obs-text-in-value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\xe9\r\n\r\n",
     [req("GET", "/"), "END"]),
]


@pytest.mark.parametrize("step", [None, 1, 7], ids=["whole", "1-byte", "7-bytes"])
@table("data, expected", VALID_REQUESTS)
def test_valid_request(data, expected, step):
    assert summary(feed(RequestReader(), data, step).events) == expected


def test_request_fields_kept_in_order_latin1():
    reader = feed(RequestReader(), b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\nX-B: \xe9\r\n\r\n")
    assert reader.events[0].headers == [("Host", "a"), ("X-A", "1"), ("x-a", "2"), ("X-B", "\xe9")]


# RFC 9110 §9.3.6: after CONNECT the bytes that follow the head are tunnel data.
TUNNELS = [
    ("connect-early-data", b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n\x16\x03\x01hi",
     req("CONNECT", "a.example:443"), b"\x16\x03\x01hi"),
    ("connect-no-data", b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
     req("CONNECT", "a.example:443"), b""),
    ("connect-split", b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\nGET / HTTP/1.1\r\n",
     req("CONNECT", "a.example:443"), b"GET / HTTP/1.1\r\n"),
]


@table("data, head, tunnel", TUNNELS)
def test_tunnel_data_after_head(data, head, tunnel):
    reader = feed(RequestReader(), data)
    assert summary(reader.events) == [head, "END"]
    assert reader.tunnel_data == tunnel


# RFC 9110 §7.8: this proxy never switches protocols. llhttp stops at an Upgrade request's head
# (and would skip its body), so the request may have no body, ends the connection, and whatever
# follows it is never parsed: no pipelined or smuggled request can hide behind it.
UPGRADES = [
    ("pipelined-after", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                        b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("h2c", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\nxyz"),
]


@table("data", UPGRADES)
def test_upgrade_request_ends_the_connection_and_nothing_after_it_is_parsed(data):
    reader = feed(RequestReader(), data)
    reader.feed(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n")
    heads = [event for event in reader.events if isinstance(event, RequestHead)]
    assert [head.target for head in heads] == ["/"] and not heads[0].keep_alive
    assert reader.tunnel_data is None


def test_upgrade_request_with_a_body_is_400():
    with pytest.raises(ProxyError) as caught:
        RequestReader().feed(b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                             b"Content-Length: 30\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
    assert caught.value.status == 400


def test_no_tunnel_data_for_plain_request():
    assert feed(RequestReader(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").tunnel_data is None


# -- strict parsing: rejections ----------------------------------------------------------------------
# RFC 9112 §6.1 / §6.3: Content-Length with Transfer-Encoding, duplicate or invalid Content-Length
# and a Transfer-Encoding whose final coding is not chunked are framing the proxy cannot trust (400);
# a transfer coding it does not implement is 501 (RFC 9112 §6.1).
FRAMING_REJECTIONS = [
    ("cl-and-te", post("Content-Length: 3", "Transfer-Encoding: chunked"), 400),
    ("te-and-cl", post("Transfer-Encoding: chunked", "Content-Length: 3"), 400),
    ("duplicate-cl", post("Content-Length: 3", "Content-Length: 3", body=b"abc"), 400),
    ("cl-list", post("Content-Length: 3, 3", body=b"abc"), 400),
    ("cl-non-numeric", post("Content-Length: 3x", body=b"abc"), 400),
    ("cl-negative", post("Content-Length: -3", body=b"abc"), 400),
    ("cl-plus-sign", post("Content-Length: +3", body=b"abc"), 400),
    ("cl-empty", post("Content-Length: ", body=b"abc"), 400),
    ("te-gzip", post("Transfer-Encoding: gzip"), 501),
    ("te-gzip-chunked", post("Transfer-Encoding: gzip, chunked"), 501),
    ("te-chunked-gzip", post("Transfer-Encoding: chunked, gzip"), 400),
    ("te-two-fields", post("Transfer-Encoding: chunked", "Transfer-Encoding: chunked"), 400),
]

# RFC 9112 §5 (field syntax: no whitespace before the colon, token names), §5.2 (obs-fold rejected),
# §2.2 (CRLF line endings; bare CR, NUL and other controls in values are rejected; RFC 9110 §5.5).
FIELD_REJECTIONS = [
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    ("tab-before-colon", b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", 400),
    ("leading-space-first-field", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
    ("bare-lf-after-field", b"GET / HTTP/1.1\r\nHost: a\n\r\n", 400),
    ("bare-lf-everywhere", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    ("bare-cr-in-value", b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400),
    ("nul-in-value", b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n", 400),
    ("ctl-in-value", b"GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n", 400),
    ("del-in-value", b"GET / HTTP/1.1\r\nHost: a\x7fb\r\n\r\n", 400),
    ("paren-in-name", b"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", 400),
    ("at-in-name", b"GET / HTTP/1.1\r\nHo@st: a\r\n\r\n", 400),
    ("empty-name", b"GET / HTTP/1.1\r\n: a\r\n\r\n", 400),
    ("space-in-target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("lowercase-method", b"get / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
]

# RFC 9112 §2.3 / RFC 9110 §15.6.6: a major version other than 1 (or an unknown minor) is 505.
VERSION_REJECTIONS = [
    ("http-2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    ("http-3.1", b"GET / HTTP/3.1\r\nHost: a\r\n\r\n", 505),
    ("http-1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
    ("http-0.9", b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
]

# RFC 9112 §7.1: chunk-size is 1*HEXDIG and chunk-data is followed by CRLF.
CHUNK_REJECTIONS = [
    ("chunk-size-not-hex", post("Transfer-Encoding: chunked", body=b"zz\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-size-empty", post("Transfer-Encoding: chunked", body=b"\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-data-longer", post("Transfer-Encoding: chunked", body=b"3\r\nabcdef\r\n0\r\n\r\n"), 400),
    ("chunk-data-no-crlf", post("Transfer-Encoding: chunked", body=b"3\r\nabcX\r\n0\r\n\r\n"), 400),
]

REJECTIONS = FRAMING_REJECTIONS + FIELD_REJECTIONS + VERSION_REJECTIONS + CHUNK_REJECTIONS


@table("data, status", REJECTIONS)
def test_request_rejected(data, status):
    assert request_status(data) == status


# -- limits ----------------------------------------------------------------------------------------
# RFC 9110 §15.5.15 (414 URI Too Long); RFC 6585 §5 (431 Request Header Fields Too Large).
# A header line is counted as name + value + 4 (": " and CRLF).
SMALL = HeadLimits(request_line=64, header_line=100, header_bytes=1000, header_count=5)
LIMIT_CASES = [
    ("target-at-limit", b"GET /" + b"a" * 63 + b" HTTP/1.1\r\nHost: a\r\n\r\n", None, None),
    ("target-over-limit", b"GET /" + b"a" * 64 + b" HTTP/1.1\r\nHost: a\r\n\r\n", None, 414),
    ("target-over-limit-pieces", b"GET /" + b"a" * 64 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 5, 414),
    ("field-line-at-limit", b"GET / HTTP/1.1\r\nX: " + b"v" * 95 + b"\r\n\r\n", None, None),
    ("field-line-over-limit", b"GET / HTTP/1.1\r\nX: " + b"v" * 96 + b"\r\n\r\n", None, 431),
    ("field-line-over-limit-pieces", b"GET / HTTP/1.1\r\nX: " + b"v" * 96 + b"\r\n\r\n", 3, 431),
    ("field-count-at-limit", head_with(4, 1), None, None),
    ("field-count-over-limit", head_with(5, 1), None, 431),
    ("head-under-limit-pieces", head_with(4, 60), 3, None),
]


@table("data, step, status", LIMIT_CASES)
def test_head_limits(data, step, status):
    if status is None:
        assert summary(feed(RequestReader(SMALL), data, step).events)[-1] == "END"
    else:
        assert request_status(data, SMALL, step) == status


# RFC 6585 §5: the whole header section is bounded too, however the bytes arrive.
HEAD_BYTES = HeadLimits(header_bytes=4096, header_count=200)


@pytest.mark.parametrize("step", [1, 10, 1000])
def test_head_over_max_header_bytes_in_small_pieces_is_431(step):
    assert request_status(head_with(60, 100), HEAD_BYTES, step) == 431   # ~6.8 KB head


@pytest.mark.parametrize("step", [None, 1, 10, 1000], ids=["whole", "1", "10", "1000"])
def test_head_under_max_header_bytes_is_accepted(step):
    data = head_with(30, 100)                                             # ~3.4 KB head, limit 4 KB
    assert len(data) < HEAD_BYTES.header_bytes
    assert summary(feed(RequestReader(HEAD_BYTES), data, step).events)[-1] == "END"


def test_head_over_max_header_bytes_in_one_feed_is_431():
    assert request_status(head_with(60, 100), HEAD_BYTES) == 431


# -- responses -------------------------------------------------------------------------------------
def response_events(data: bytes, head_only: bool = False, step: int | None = None) -> ResponseReader:
    return feed(ResponseReader(head_only=head_only), data, step)


# RFC 9112 §6.3: how a response body ends. Rule 1: 1xx, 204, 304 (and responses to HEAD) have no
# body whatever their fields say; rule 4: chunked; rule 6: Content-Length; rule 8: close-delimited.
# RFC 9110 §15.2: a 1xx interim response comes before the final one on the same connection.
RESPONSES = [
    ("length", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", [resp(200, 2), b"hi", "END"]),
    ("chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
     [resp(200, chunked=True), b"abcde", "END"]),
    ("100-then-final", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
     [resp(100, 0), "END", resp(200, 2), b"hi", "END"]),
    ("103-then-final", b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
     b"HTTP/1.1 204 No Content\r\n\r\n", [resp(103, 0), "END", resp(204, 0), "END"]),
    ("204", b"HTTP/1.1 204 No Content\r\n\r\n", [resp(204, 0), "END"]),
    ("204-with-length", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", [resp(204, 0), "END"]),
    ("304-with-length", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\n",
     [resp(304, 0), "END"]),
    # One request, one response: bytes after it are dropped, never parsed as another response
    # (and the connection is not reused: see test_bytes_after_response_are_dropped).
    ("unsolicited-second-response", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 304 Not Modified\r\n\r\n",
     [resp(200, 1), b"a", "END"]),
]


@pytest.mark.parametrize("step", [None, 1, 5], ids=["whole", "1-byte", "5-bytes"])
@table("data, expected", RESPONSES)
def test_response(data, expected, step):
    reader = response_events(data, step=step)
    assert summary(reader.events) == expected
    assert reader.complete and reader.eof()


# RFC 9110 §9.3.2: a response to HEAD ends with its head. clean_end: the head ended exactly at the
# end of the bytes received (only then may the connection be reused).
HEAD_RESPONSES = [
    ("exact", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", None, resp(200, 0), True),
    ("exact-chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", None,
     resp(200, 0, chunked=True), True),
    # A bodiless response's persistence comes from its version and Connection (RFC 9112 §9.3),
    # not from llhttp, which does not know the request was HEAD.
    ("exact-no-length", b"HTTP/1.1 200 OK\r\n\r\n", None, resp(200, 0), True),
    ("body-follows", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", None, resp(200, 0), False),
    ("blank-lines-follow", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab\r\n\r\n", None,
     resp(200, 0), False),
    ("exact-1-byte-feeds", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 1, resp(200, 0), True),
]


@table("data, step, head, clean", HEAD_RESPONSES)
def test_response_to_head(data, step, head, clean):
    reader = response_events(data, head_only=True, step=step)
    assert summary(reader.events) == [head, "END"] and reader.complete
    assert reader.clean_end is clean


def test_response_to_head_after_100_continue():
    reader = response_events(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
                             head_only=True)
    assert summary(reader.events) == [resp(100, 0), "END", resp(200, 0), "END"]


# RFC 9112 §6.3 rule 8: without Content-Length or chunked, the body ends when the origin closes;
# rule 6 / §8: a Content-Length body cut short by the close is incomplete.
EOF_CASES = [
    ("close-delimited", b"HTTP/1.1 200 OK\r\n\r\nabc", True, [resp(200, until_close=True, keep_alive=False),
                                                               b"abc", "END"]),
    ("close-delimited-1.0", b"HTTP/1.0 200 OK\r\n\r\nabc", True,
     [resp(200, until_close=True, keep_alive=False), b"abc", "END"]),
    ("truncated-length", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", False, [resp(200, 10), b"abc"]),
    ("truncated-chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", False,
     [resp(200, chunked=True), b"ab"]),
    ("no-head-yet", b"HTTP/1.1 200 OK\r\nContent-Le", False, []),
    ("nothing", b"", False, []),
    # RFC 9112 §6.3 rule 4: a response whose final transfer coding is not chunked is close-delimited.
    ("te-gzip-close-delimited", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc", True,
     [resp(200, until_close=True, keep_alive=False), b"abc", "END"]),
]


@table("data, ended, expected", EOF_CASES)
def test_response_eof(data, ended, expected):
    reader = response_events(data) if data else ResponseReader()
    assert not reader.complete
    assert reader.eof() is ended
    assert reader.complete is ended
    assert summary(reader.events) == expected


# RFC 9112 §4 (status-line) and §6.3 rule 3: an origin's malformed message is a 502 for the client.
INVALID_RESPONSES = [
    ("bad-protocol", b"HTTTP/1.1 200 OK\r\n\r\n"),
    ("not-http", b"hello world\r\n\r\n"),
    ("status-four-digits", b"HTTP/1.1 2000 OK\r\n\r\n"),
    ("cl-and-te", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("duplicate-cl", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc"),
    ("bad-chunk-size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n"),
    ("nul-in-value", b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n"),
    ("field-line-too-long", b"HTTP/1.1 200 OK\r\nX: " + b"v" * 9000 + b"\r\n\r\n"),
]


@table("data", INVALID_RESPONSES)
def test_invalid_response_is_502(data):
    with pytest.raises(ProxyError) as caught:
        response_events(data)
    assert caught.value.status == 502


# RFC 9112 §7.1: a chunked body reassembles to the same bytes however the wire is split.
def chunked_wire(body: bytes, sizes: list[int]) -> bytes:
    out, start = [], 0
    for size in sizes:
        piece = body[start:start + size]
        if not piece:
            break
        out += [chunk_prefix(len(piece)), piece, b"\r\n"]
        start += len(piece)
    if start < len(body):
        out += [chunk_prefix(len(body) - start), body[start:], b"\r\n"]
    return b"".join(out) + LAST_CHUNK


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def body_of(reader) -> bytes:
    assert reader.events[-1] is END
    return b"".join(event for event in reader.events if isinstance(event, bytes))


def test_chunked_response_in_1_byte_feeds():
    body = bytes(range(256)) * 3
    reader = response_events(CHUNKED_HEAD + chunked_wire(body, [1, 17, 255, 256, 300]), step=1)
    assert body_of(reader) == body and reader.complete


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=600), sizes=st.lists(st.integers(1, 300), max_size=8),
       cuts=st.lists(st.integers(0, 2000), max_size=30))
def test_chunked_response_any_split(body, sizes, cuts):
    wire = CHUNKED_HEAD + chunked_wire(body, sizes)
    points = sorted({0, len(wire), *(cut % (len(wire) + 1) for cut in cuts)})
    reader = ResponseReader()
    for start, end in zip(points, points[1:]):
        reader.feed(wire[start:end])
    assert body_of(reader) == body and reader.complete


# -- serialisers -----------------------------------------------------------------------------------
# RFC 9112 §4 (status-line), §3 (request-line), §5 (field lines), §7.1 (chunk-size in hex).
SERIALISED = [
    ("request", lambda: request_head_bytes("GET", "/p?q", [("Host", "a"), ("X", "1")]),
     b"GET /p?q HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n"),
    ("request-no-fields", lambda: request_head_bytes("OPTIONS", "*", []), b"OPTIONS * HTTP/1.1\r\n\r\n"),
    ("response", lambda: response_head_bytes(404, [("Content-Length", "0")]),
     b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    ("response-unknown-status", lambda: response_head_bytes(599, []), b"HTTP/1.1 599 Unknown\r\n\r\n"),
    ("response-latin1", lambda: response_head_bytes(200, [("X", "\xe9")]), b"HTTP/1.1 200 OK\r\nX: \xe9\r\n\r\n"),
    ("chunk-prefix-0", lambda: chunk_prefix(0), b"0\r\n"),
    ("chunk-prefix-255", lambda: chunk_prefix(255), b"ff\r\n"),
    ("chunk-prefix-65536", lambda: chunk_prefix(65536), b"10000\r\n"),
    ("last-chunk", lambda: LAST_CHUNK, b"0\r\n\r\n"),
]


@table("make, expected", SERIALISED)
def test_serialise(make, expected):
    assert make() == expected


def test_serialised_response_head_parses_back():
    headers = [("Content-Length", "3"), ("ETag", '"v1"'), ("X-Multi", "a"), ("X-Multi", "b")]
    reader = response_events(response_head_bytes(200, headers) + b"abc")
    assert reader.events[0].headers == headers
    assert summary(reader.events) == [resp(200, 3), b"abc", "END"]


# RFC 9110 §5.3: several field lines of one name combine with ", " (names are case-insensitive).
HEADER_VALUES = [
    ("absent", [("A", "1")], "b", None),
    ("one", [("A", "1")], "a", "1"),
    ("combined", [("Cache-Control", "no-cache"), ("x", "y"), ("cache-control", "max-age=0")],
     "cache-control", "no-cache, max-age=0"),
    ("empty-value", [("A", "")], "a", ""),
]


@table("headers, name, expected", HEADER_VALUES)
def test_header_value(headers, name, expected):
    assert header_value(headers, name) == expected


def test_status_lines_are_well_formed():
    for status in (100, 200, 204, 301, 404, 502, 505):
        assert re.fullmatch(rb"HTTP/1\.1 \d{3} [A-Za-z -]+\r\n\r\n", response_head_bytes(status, []))


# (A lone CRLF after a response is skipped by llhttp like the empty lines RFC 9112 §2.2 lets a
# recipient ignore before a message; it cannot desync anything, so it is not counted as extra.)
@pytest.mark.parametrize("extra", [b"EXTRA", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"])
def test_bytes_after_response_are_dropped(extra):
    """RFC 9112 §6.3: the declared length ends the message; what follows is not ours to relay."""
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + extra)
    assert summary(reader.events)[1:] == [b"hello", "END"]
    assert reader.complete and not reader.clean_end


# RFC 9112 §7.1.1/§7.1.2: chunk extensions and trailers are never forwarded, and their size is
# bounded (a client must not make the proxy parse megabytes of them); trailers never join the head.
CHUNK_FRAMING_ABUSE = [
    ("huge-extension", [b"5;" + b"x" * 100_000 + b"\r\nhello\r\n", b"0\r\n\r\n"]),
    ("huge-trailer-one-feed", [b"5\r\nhello\r\n0\r\nX-T: " + b"y" * 20_000 + b"\r\n\r\n"]),
    ("many-trailers", [b"5\r\nhello\r\n0\r\n" + b"X-T: yyyyyyyyyy\r\n" * 1000 + b"\r\n"]),
]
CHUNKED_POST = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


@table("parts", CHUNK_FRAMING_ABUSE)
def test_oversized_chunk_framing_is_400(parts):
    reader = RequestReader()
    with pytest.raises(ProxyError) as caught:
        for part in [CHUNKED_POST, *parts]:
            reader.feed(part)
    assert caught.value.status == 400


def test_many_small_chunks_and_a_small_trailer_pass_and_trailers_stay_out_of_the_head():
    reader = RequestReader()
    reader.feed(CHUNKED_POST)
    reader.feed(b"5\r\nhello\r\n" * 2000)
    reader.feed(b"0\r\nHost: evil\r\n\r\n")
    head = reader.events[0]
    assert head.headers == [("Host", "a"), ("Transfer-Encoding", "chunked")]
    assert reader.events[-1] is END and sum(len(e) for e in reader.events[1:-1]) == 10_000
