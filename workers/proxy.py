"""What a proxy does to a message on its way through, sans-IO: routing and header rewriting.

Pure functions over `RequestHead` / `ResponseHead` and header lists; the connection handler calls
them and does the I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import formatdate

import httptools

from .errors import BadRequest, Forbidden, LoopDetected
from .http1 import RequestHead, ResponseHead

__all__ = ["Route", "route", "upstream_request_headers", "client_response_headers", "check_via",
           "http_date", "end_to_end"]

# RFC 9110 §7.6.1 hop-by-hop fields, plus Proxy-Connection (RFC 9112 Appendix C.2.2), Proxy-
# Authorization (consumed by this proxy) and the framing fields, which are re-generated.
_HOP_BY_HOP = frozenset((
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authorization", "content-length",
))


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes. kind: 'forward' | 'reverse' | 'connect' | 'asterisk'."""

    kind: str
    scheme: str
    host: str
    port: int
    target: str          # what is sent upstream: origin-form, or "*"
    authority: str       # host[:port] as the Host field carries it

    @property
    def key(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    @property
    def uri(self) -> str:
        """The effective request URI (RFC 9110 §7.1): the cache key's base."""
        return f"{self.scheme}://{self.authority}{self.target}"


def _authority(host: str, port: int, default: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default else f"{shown}:{port}"


def _split_authority(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host or int(port) > 65535:
        raise BadRequest(f"CONNECT target {text[:80]!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def route(head: RequestHead, origin: tuple[str, str, int] | None, forward: bool = True,
          server_names: frozenset[str] = frozenset()) -> Route:
    """RFC 9112 §3.2: the request-target form decides where a request goes.

    With `forward` off (reverse mode by default), an absolute-form target is accepted only for
    the origin's own host or `server_names`, and goes to the origin: never an open proxy."""
    target = head.target
    if head.method == "CONNECT":                               # §3.2.3 authority-form
        if not forward:
            raise Forbidden("this proxy does not open tunnels (it is a reverse proxy)")
        host, port = _split_authority(target)
        return Route("connect", "tcp", host, port, target, target)
    if target == "*":                                          # §3.2.4 asterisk-form
        if head.method != "OPTIONS":
            raise BadRequest("the asterisk-form target is only for OPTIONS")
        if origin is None:
            return Route("asterisk", "", "", 0, "*", "")
        scheme, host, port = origin
        return Route("reverse", scheme, host, port, "*", _authority(host, port, 443 if scheme == "https" else 80))
    if target.startswith("/"):                                 # §3.2.1 origin-form
        if origin is None:
            raise BadRequest("no origin is configured: send absolute-form (GET http://host/path) "
                             "to use this forward proxy")
        scheme, host, port = origin
        return Route("reverse", scheme, host, port, target,
                     _authority(host, port, 443 if scheme == "https" else 80))
    absolute = _absolute(target)                               # §3.2.2 absolute-form
    if forward:
        return absolute
    if origin is None or (absolute.host not in server_names and
                          (absolute.host, absolute.port) != (origin[1], origin[2])):
        raise Forbidden(f"this proxy does not forward to {absolute.host}")
    scheme, host, port = origin
    return Route("reverse", scheme, host, port, absolute.target,
                 _authority(host, port, 443 if scheme == "https" else 80))


def _absolute(target: str) -> Route:
    try:
        url = httptools.parse_url(target.encode("latin-1"))
    except httptools.HttpParserInvalidURLError:
        raise BadRequest(f"invalid request target {target[:80]!r}") from None
    scheme = (url.schema or b"").decode("latin-1").lower()
    if scheme != "http":
        raise BadRequest(f"unsupported scheme {scheme!r} in absolute-form target: use CONNECT for https")
    if url.userinfo or not url.host:
        raise BadRequest("absolute-form target needs a host and no userinfo")
    host = url.host.decode("latin-1").lower()
    port = 80 if url.port is None else url.port
    if not 0 < port < 65536:
        raise BadRequest(f"invalid port {port} in the request target")
    path = (url.path or b"/").decode("latin-1")
    if url.query is not None:
        path = f"{path}?{url.query.decode('latin-1')}"
    return Route("forward", "http", host, port, path, _authority(host, port, 80))


def check_via(value: str, pseudonym: str) -> None:
    """RFC 9110 §7.6.3: a request whose Via names us already passed through us: a loop."""
    for hop in value.split(","):
        parts = hop.split()
        if len(parts) >= 2 and parts[1] == pseudonym:
            raise LoopDetected(f"request already passed through {pseudonym} (Via)")


def _connection_tokens(headers: list[tuple[str, str]]) -> frozenset[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if len(name) == 10 and name.lower() == "connection":      # the length test is the cheap one
            tokens.update(token.strip().lower() for token in value.split(","))
    return frozenset(tokens)


def end_to_end(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """RFC 9110 §7.6.1: drop hop-by-hop fields and those the Connection field names."""
    dropped = _HOP_BY_HOP | _connection_tokens(headers)
    return [(n, v) for n, v in headers if n.lower() not in dropped]


# Fields a client could use to make a reverse-proxied origin believe something about the request
# that is not so (host, scheme, path); in reverse mode they are dropped, and the first two
# re-set by the proxy from what it knows.
_SPOOFABLE = frozenset(("x-forwarded-host", "x-forwarded-proto", "x-original-url", "x-rewrite-url"))


def upstream_request_headers(head: RequestHead, route: Route, client_ip: str, via: str) -> list[tuple[str, str]]:
    """The head fields sent to the origin (framing fields are added by the caller)."""
    headers = []
    forwarded_for = None
    reverse = route.kind == "reverse"
    for name, value in end_to_end(head.headers):
        lname = name.lower()
        if reverse and lname in _SPOOFABLE:
            continue
        if lname == "host" and route.kind == "forward":
            continue                      # RFC 9112 §3.2.2: replaced by the target's authority
        if lname == "x-forwarded-for":
            forwarded_for = value if forwarded_for is None else f"{forwarded_for}, {value}"
            continue
        if lname == "expect":
            continue                      # 100-continue is answered by this proxy
        if lname == "max-forwards" and head.method in ("OPTIONS", "TRACE"):
            value = str(max(int(value) - 1, 0)) if value.strip().isdigit() else value
        headers.append((name, value))
    if route.kind == "forward" or not any(n.lower() == "host" for n, _ in headers):
        headers.insert(0, ("Host", route.authority))
    headers.append(("X-Forwarded-For", f"{forwarded_for}, {client_ip}" if forwarded_for else client_ip))
    if reverse:
        host = next((v for n, v in head.headers if n.lower() == "host"), route.authority)
        headers += [("X-Forwarded-Host", host), ("X-Forwarded-Proto", "http")]
    headers.append(("Via", f"{head.version} {via}"))  # RFC 9110 §7.6.3: protocol as received
    return headers


def client_response_headers(response: ResponseHead, via: str) -> list[tuple[str, str]]:
    """The origin's response fields as sent to the client (framing fields added by the caller)."""
    headers = end_to_end(response.headers)
    if not any(name.lower() == "date" for name, _ in headers):
        headers.append(("Date", http_date()))   # RFC 9110 §6.6.1: a recipient with a clock adds Date
    headers.append(("Via", f"{response.version} {via}"))
    return headers


def connect_allowed(port: int, ports: list[int]) -> None:
    if port not in ports:
        raise Forbidden(f"CONNECT to port {port} is not allowed")


_date_cache = [0, ""]


def http_date() -> str:
    """The current IMF-fixdate (RFC 9110 §5.6.7), rebuilt once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[:] = [now, formatdate(now, usegmt=True)]
    return _date_cache[1]
