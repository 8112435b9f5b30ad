"""workers.proxy: routing by request-target form and header rewriting, as tables (pure functions)."""

from __future__ import annotations

import re

import pytest

from workers.errors import ProxyError
from workers.http1 import RequestHead, ResponseHead
from workers.proxy import Route, check_via, client_response_headers, route, upstream_request_headers

VIA = "prefork_proxy"
FORWARD_ROUTE = Route("forward", "http", "a.example", 8080, "/p", "a.example:8080")
REVERSE_ROUTE = Route("reverse", "http", "origin.local", 9000, "/p", "origin.local:9000")


def table(names: str, rows: list):
    """parametrize over (id, *values) rows: the first item of each row names the case."""
    return pytest.mark.parametrize(names, [row[1:] for row in rows], ids=[row[0] for row in rows])


def request(method: str = "GET", target: str = "/", headers: list | None = None,
            version: str = "1.1") -> RequestHead:
    return RequestHead(method=method, target=target, version=version, headers=list(headers or []),
                       keep_alive=True, chunked=False, content_length=None)


def response(headers: list, version: str = "1.1") -> ResponseHead:
    return ResponseHead(status=200, version=version, headers=list(headers), keep_alive=True,
                        chunked=False, content_length=None)


def without(headers: list, *names: str) -> list:
    """The fields except those named (case-insensitive): to compare what the table cares about."""
    return [(n, v) for n, v in headers if n.lower() not in names]


# -- route -----------------------------------------------------------------------------------------
# RFC 9112 §3.2: origin-form (§3.2.1) needs a configured origin, absolute-form (§3.2.2) names its
# own, authority-form (§3.2.3) is for CONNECT only, asterisk-form (§3.2.4) for OPTIONS only.
HTTP_ORIGIN = ("http", "origin.local", 9000)


def forward(host: str, port: int, target: str, authority: str) -> Route:
    return Route("forward", "http", host, port, target, authority)


def reverse(origin: tuple[str, str, int], target: str, authority: str) -> Route:
    return Route("reverse", *origin, target, authority)


def connect(host: str, port: int, target: str) -> Route:
    return Route("connect", "tcp", host, port, target, target)


ROUTES = [
    ("origin-form", "GET", "/p?q=1", HTTP_ORIGIN, reverse(HTTP_ORIGIN, "/p?q=1", "origin.local:9000")),
    ("origin-form-default-port", "GET", "/", ("http", "o", 80), reverse(("http", "o", 80), "/", "o")),
    ("origin-form-https", "GET", "/", ("https", "o", 443), reverse(("https", "o", 443), "/", "o")),
    ("origin-form-ipv6-origin", "GET", "/", ("http", "::1", 90), reverse(("http", "::1", 90), "/", "[::1]:90")),
    ("absolute-form", "GET", "http://A.Example:8080/p?q=1", None,
     forward("a.example", 8080, "/p?q=1", "a.example:8080")),
    ("absolute-form-default-port", "GET", "http://a.example", None, forward("a.example", 80, "/", "a.example")),
    ("absolute-form-query-no-path", "GET", "http://a.example?x=1", None,
     forward("a.example", 80, "/?x=1", "a.example")),
    ("absolute-form-fragment-dropped", "GET", "http://a.example/p#f", None,
     forward("a.example", 80, "/p", "a.example")),
    ("absolute-form-ipv6", "GET", "http://[::1]:8080/x", None, forward("::1", 8080, "/x", "[::1]:8080")),
    ("authority-form", "CONNECT", "a.example:443", None, connect("a.example", 443, "a.example:443")),
    ("authority-form-ipv6", "CONNECT", "[::1]:443", None, connect("::1", 443, "[::1]:443")),
    ("asterisk-forward", "OPTIONS", "*", None, Route("asterisk", "", "", 0, "*", "")),
    ("asterisk-reverse", "OPTIONS", "*", HTTP_ORIGIN, reverse(HTTP_ORIGIN, "*", "origin.local:9000")),
]


@table("method, target, origin, expected", ROUTES)
def test_route(method, target, origin, expected):
    assert route(request(method, target), origin) == expected


def test_route_uri_and_key():
    got = route(request("GET", "http://a.example:8080/p?q"), None)
    assert got.uri == "http://a.example:8080/p?q"
    assert got.key == ("http", "a.example", 8080)


ROUTE_ERRORS = [
    ("origin-form-without-origin", "GET", "/p"),
    ("asterisk-not-options", "GET", "*"),
    ("https-absolute-form", "GET", "https://a.example/"),
    ("ftp-absolute-form", "GET", "ftp://a.example/"),
    ("userinfo", "GET", "http://user:pw@a.example/"),
    ("no-host", "GET", "http:///p"),
    ("not-a-uri", "GET", "a.example/p"),
    ("connect-no-port", "CONNECT", "a.example"),
    ("connect-empty-port", "CONNECT", "a.example:"),
    ("connect-port-not-numeric", "CONNECT", "a.example:https"),
    ("connect-port-too-big", "CONNECT", "a.example:65536"),
    ("connect-no-host", "CONNECT", ":443"),
]


@table("method, target", ROUTE_ERRORS)
def test_route_rejects(method, target):
    with pytest.raises(ProxyError) as caught:
        route(request(method, target), None)
    assert caught.value.status == 400


# -- upstream request headers ----------------------------------------------------------------------
# RFC 9110 §7.6.1: hop-by-hop fields and the fields the Connection field names are not forwarded;
# RFC 9112 §3.2.2: in forward mode Host is replaced by the target's authority; RFC 9110 §7.6.2:
# Max-Forwards is decremented on OPTIONS/TRACE; RFC 9110 §10.1.1: Expect is answered by the proxy.
# Via (RFC 9110 §7.6.3), X-Forwarded-For and (reverse mode) X-Forwarded-Host/-Proto are checked
# separately below, so they are left out here.
UPSTREAM = [
    ("end-to-end-kept-in-order", "GET", [("Host", "h"), ("Accept", "*/*"), ("X-A", "1"), ("x-a", "2")],
     REVERSE_ROUTE, [("Host", "h"), ("Accept", "*/*"), ("X-A", "1"), ("x-a", "2")]),
    ("hop-by-hop-dropped", "GET", [("Host", "h"), ("Connection", "keep-alive"), ("Keep-Alive", "5"),
                                   ("Proxy-Connection", "keep-alive"), ("TE", "trailers"),
                                   ("Trailer", "X"), ("Upgrade", "h2c"), ("Proxy-Authorization", "B x"),
                                   ("Transfer-Encoding", "chunked"), ("Content-Length", "3"),
                                   ("Accept", "a")],
     REVERSE_ROUTE, [("Host", "h"), ("Accept", "a")]),
    ("connection-named-fields-dropped", "GET",
     [("Host", "h"), ("Connection", "close, X-Secret"), ("Connection", " x-other "), ("X-Secret", "s"),
      ("x-other", "o"), ("X-Kept", "k")],
     REVERSE_ROUTE, [("Host", "h"), ("X-Kept", "k")]),
    ("forward-host-replaced", "GET", [("Accept", "a"), ("HOST", "wrong")], FORWARD_ROUTE,
     [("Host", "a.example:8080"), ("Accept", "a")]),
    ("reverse-host-kept", "GET", [("Host", "client.name")], REVERSE_ROUTE, [("Host", "client.name")]),
    ("reverse-host-added-when-missing", "GET", [("Accept", "a")], REVERSE_ROUTE,
     [("Host", "origin.local:9000"), ("Accept", "a")]),
    ("expect-dropped", "POST", [("Host", "h"), ("Expect", "100-continue")], REVERSE_ROUTE, [("Host", "h")]),
    ("max-forwards-options", "OPTIONS", [("Host", "h"), ("Max-Forwards", "5")], REVERSE_ROUTE,
     [("Host", "h"), ("Max-Forwards", "4")]),
    ("max-forwards-trace", "TRACE", [("Host", "h"), ("Max-Forwards", "1")], REVERSE_ROUTE,
     [("Host", "h"), ("Max-Forwards", "0")]),
    ("max-forwards-zero-stays", "OPTIONS", [("Host", "h"), ("Max-Forwards", "0")], REVERSE_ROUTE,
     [("Host", "h"), ("Max-Forwards", "0")]),
    ("max-forwards-not-numeric", "OPTIONS", [("Host", "h"), ("Max-Forwards", "x")], REVERSE_ROUTE,
     [("Host", "h"), ("Max-Forwards", "x")]),
    ("max-forwards-get-untouched", "GET", [("Host", "h"), ("Max-Forwards", "5")], REVERSE_ROUTE,
     [("Host", "h"), ("Max-Forwards", "5")]),
]


@table("method, fields, target, expected", UPSTREAM)
def test_upstream_request_headers(method, fields, target, expected):
    got = upstream_request_headers(request(method, headers=fields), target, "10.0.0.9", VIA)
    assert without(got, "via", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto") == expected


# In reverse mode a client must not be able to tell the origin another host, scheme or path.
SPOOFED = [("X-Forwarded-Host", "evil.test"), ("X-Forwarded-Proto", "https"),
           ("X-Original-URL", "/admin"), ("X-Rewrite-URL", "/admin")]


def test_reverse_mode_overwrites_spoofable_fields():
    got = upstream_request_headers(request(headers=[("Host", "site.test"), *SPOOFED]),
                                   REVERSE_ROUTE, "10.0.0.9", VIA)
    names = [n.lower() for n, _ in got]
    assert "x-original-url" not in names and "x-rewrite-url" not in names
    assert [v for n, v in got if n.lower() == "x-forwarded-host"] == ["site.test"]
    assert [v for n, v in got if n.lower() == "x-forwarded-proto"] == ["http"]


def test_forward_mode_passes_the_fields_through():
    got = upstream_request_headers(request(headers=[("Host", "h"), *SPOOFED]), FORWARD_ROUTE,
                                   "10.0.0.9", VIA)
    assert [(n, v) for n, v in got if (n, v) in SPOOFED] == SPOOFED


FORWARDED_FOR = [
    ("none", [], "10.0.0.9"),
    ("one", [("X-Forwarded-For", "1.1.1.1")], "1.1.1.1, 10.0.0.9"),
    ("two-fields", [("X-Forwarded-For", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2, 3.3.3.3")],
     "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9"),
]


@table("fields, expected", FORWARDED_FOR)
def test_x_forwarded_for_appends_client(fields, expected):
    got = upstream_request_headers(request(headers=[("Host", "h"), *fields]), REVERSE_ROUTE, "10.0.0.9", VIA)
    assert [v for n, v in got if n.lower() == "x-forwarded-for"] == [expected]


# RFC 9110 §7.6.3: each proxy appends its own Via entry with the protocol version it received.
VIA_ADDED = [
    ("http11", "1.1", [], ["1.1 prefork_proxy"]),
    ("http10", "1.0", [], ["1.0 prefork_proxy"]),
    ("after-existing", "1.1", [("Via", "1.1 edge")], ["1.1 edge", "1.1 prefork_proxy"]),
]


@table("version, fields, expected", VIA_ADDED)
def test_via_on_request_and_response(version, fields, expected):
    up = upstream_request_headers(request(headers=[("Host", "h"), *fields], version=version), REVERSE_ROUTE,
                                  "10.0.0.9", VIA)
    down = client_response_headers(response(fields, version=version), VIA)
    assert [v for n, v in up if n.lower() == "via"] == expected
    assert [v for n, v in down if n.lower() == "via"] == expected


# -- client response headers -----------------------------------------------------------------------
# RFC 9110 §7.6.1 (hop-by-hop removal, Connection-named fields), §6.6.1 (a recipient with a clock
# adds Date when the origin did not send one; an origin's Date is kept as is).
DATE = "Tue, 15 Nov 1994 08:12:31 GMT"
RESPONSE_FIELDS = [
    ("kept", [("Date", DATE), ("ETag", '"v"'), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
     [("Date", DATE), ("ETag", '"v"'), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]),
    ("hop-by-hop-dropped", [("Date", DATE), ("Connection", "keep-alive"), ("Keep-Alive", "timeout=5"),
                            ("Transfer-Encoding", "chunked"), ("Content-Length", "9"), ("Upgrade", "x"),
                            ("Trailer", "X"), ("Proxy-Connection", "close")],
     [("Date", DATE)]),
    ("connection-named-dropped", [("date", DATE), ("Connection", "X-Hop"), ("X-Hop", "1"), ("X-End", "2")],
     [("date", DATE), ("X-End", "2")]),
]


@table("fields, expected", RESPONSE_FIELDS)
def test_client_response_headers(fields, expected):
    assert without(client_response_headers(response(fields), VIA), "via") == expected


IMF_FIXDATE = re.compile(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct"
                         r"|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT")


def test_date_added_when_missing():
    got = client_response_headers(response([("ETag", '"v"')]), VIA)
    dates = [v for n, v in got if n == "Date"]
    assert len(dates) == 1 and IMF_FIXDATE.fullmatch(dates[0])   # RFC 9110 §5.6.7


def test_input_headers_not_mutated():
    fields = [("Connection", "X-Hop"), ("X-Hop", "1")]
    head = request(headers=[("Host", "h"), *fields])
    upstream_request_headers(head, REVERSE_ROUTE, "10.0.0.9", VIA)
    client_response_headers(response(fields), VIA)
    assert head.headers == [("Host", "h"), *fields]


# -- loop detection --------------------------------------------------------------------------------
# RFC 9110 §7.6.3: a Via entry naming this proxy's pseudonym means the request came round again (508).
VIA_CHECKS = [
    ("no-via", [], None),
    ("other-proxy", [("Via", "1.1 edge")], None),
    ("ours", [("Via", "1.1 prefork_proxy")], 508),
    ("ours-with-protocol-name", [("via", "HTTP/1.1 prefork_proxy")], 508),
    ("ours-in-list", [("Via", "1.0 edge, 1.1 prefork_proxy (comment)")], 508),
    ("ours-in-second-field", [("Via", "1.1 edge"), ("VIA", "1.1  prefork_proxy")], 508),
    ("prefix-is-not-ours", [("Via", "1.1 prefork_proxy2")], None),
    ("as-comment-is-not-ours", [("Via", "1.1 edge (prefork_proxy)")], None),
    ("in-other-field", [("X-Via", "1.1 prefork_proxy")], None),
]


def check_via_fields(fields: list, pseudonym: str) -> None:
    """As the connection calls it: once per Via field line."""
    for name, value in fields:
        if name.lower() == "via":
            check_via(value, pseudonym)


@table("fields, status", VIA_CHECKS)
def test_check_via(fields, status):
    if status is None:
        check_via_fields(fields, VIA)
        return
    with pytest.raises(ProxyError) as caught:
        check_via_fields(fields, VIA)
    assert caught.value.status == status
