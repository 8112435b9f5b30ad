"""Access control: forward mode is never an open proxy (issue 5, "Access control").

Each refused request is checked three ways: the status (and its challenge where there is one), the
connection (kept unless the framing is in doubt), and the origin: a refused request never reaches
it. Destination checks run before any connect, so the internal addresses below are never contacted.
"""

from __future__ import annotations

import base64
import time

import pytest

from support.rawhttp import RawClient, build
from support.wait import free_port, wait_until
from workers.auth import hash_password

from .helpers import cache_config, cache_params, get, mark, one_exchange, reached, stored_keys

SHORT = 0.1       # how long to look for bytes or a close that should not come


def refused(port: int, origin, request: bytes, status: int, token: str, method: str | None = None):
    """Send `request`; assert `status` and that the origin saw nothing carrying `token`."""
    outcome = one_exchange(port, request, method=method, close_wait=SHORT)
    assert outcome.response is not None, "the proxy closed without an answer"
    assert outcome.response.status == status, (outcome.response.status, outcome.response.body[:200])
    assert outcome.after == b"", f"bytes after the response: {outcome.after[:200]!r}"
    says_close = "close" in outcome.response.tokens("Connection")
    assert outcome.closed == says_close, f"Connection: close said {says_close}, closed {outcome.closed}"
    assert reached(origin, token) == [], "a refused request reached the origin"
    return outcome


# -- clients: allow and deny lists ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def shut_out(module_make_proxy):
    """A proxy and an admin listener whose allow-lists exclude 127.0.0.1."""
    return module_make_proxy({"access": {"allow": ["10.0.0.0/8"]},
                              "admin": {"bind": f"127.0.0.1:{free_port()}", "allow": ["10.0.0.0/8"]}},
                             name="shut-out")


@pytest.fixture(scope="module")
def denied(module_make_proxy):
    """A proxy that allows loopback but denies 127.0.0.1 by name."""
    return module_make_proxy({"access": {"deny": ["127.0.0.1/32"]}}, name="denied")


@pytest.mark.parametrize("which", ["shut_out", "denied"])
@pytest.mark.parametrize("method", ["GET", "CONNECT"])
def test_client_not_allowed_is_403(request, module_origin, which, method):
    proxy = request.getfixturevalue(which)
    token = mark(f"client-{which}")
    target = module_origin.url(f"/echo?m={token}") if method == "GET" else f"127.0.0.1:{module_origin.port}"
    before = module_origin.connections
    refused(proxy.port, module_origin, build(method, target), 403, token, method=method)
    assert module_origin.connections == before, "the proxy connected to the origin for a denied client"


def test_denied_client_body_is_not_read(denied, module_origin):
    """The client check comes before the body: a 403 at once, then close (the body is unread)."""
    token = mark("denied-body")
    with RawClient(denied.port, timeout=5) as client:
        started = time.monotonic()
        response = client.request(build("POST", module_origin.url(f"/echo?m={token}"),
                                        [("Content-Length", "1000000")]))
        assert time.monotonic() - started < 1.0, "the 403 waited for the body"
        assert response.status == 403
        assert "close" in response.tokens("Connection") and client.closed_by_peer(2)
    assert reached(module_origin, token) == []


def test_admin_listener_refuses_clients_outside_its_allow_list(shut_out):
    admin_port = int(shut_out.config["admin"]["bind"].rsplit(":", 1)[1])
    wait_until(lambda: _connects(admin_port), 5, "the admin listener")
    for path in ("/stats", "/metrics", "/"):
        outcome = one_exchange(admin_port, build("GET", path, host="127.0.0.1"), close_wait=1.0)
        assert outcome.response.status == 403, (path, outcome.response.body[:200])
        assert b"workers" not in outcome.response.body and b"pid" not in outcome.response.body


def _connects(port: int) -> bool:
    try:
        RawClient(port, timeout=1).close()
        return True
    except OSError:
        return False


# -- Basic proxy authentication ---------------------------------------------------------------------------
def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def authed(module_make_proxy, tmp_path_factory):
    path = tmp_path_factory.mktemp("auth") / "users"
    path.write_text(f"# proxy users\nalice:{hash_password('s3cret', iterations=1000)}\n")
    return module_make_proxy({"access": {"auth_file": str(path), "realm": "hostile"}}, name="authed")


BAD_CREDENTIALS = {
    "missing": None,
    "wrong-password": _basic("alice", "guess"),
    "unknown-user": _basic("mallory", "s3cret"),
    "other-scheme": "Bearer czNjcmV0",
    "not-base64": "Basic !!!not-base64!!!",
    "no-colon": "Basic " + base64.b64encode(b"alices3cret").decode(),
}


@pytest.mark.parametrize("case", list(BAD_CREDENTIALS))
def test_proxy_auth_refused_is_407_with_a_challenge(authed, module_origin, case):
    token = mark(f"auth-{case}")
    value = BAD_CREDENTIALS[case]
    headers = [] if value is None else [("Proxy-Authorization", value)]
    outcome = refused(authed.port, module_origin, build("GET", module_origin.url(f"/echo?m={token}"), headers),
                      407, token)
    challenge = outcome.response.header("Proxy-Authenticate") or ""
    assert challenge.startswith("Basic ") and 'realm="hostile"' in challenge, challenge


def test_proxy_auth_connect_without_credentials_opens_no_tunnel(authed, echo_server):
    outcome = one_exchange(authed.port, build("CONNECT", f"127.0.0.1:{echo_server.port}"),
                           method="CONNECT", close_wait=SHORT)
    assert outcome.response.status == 407 and outcome.response.has("Proxy-Authenticate")
    assert echo_server.connections == 0


def test_proxy_auth_accepted_and_never_forwarded(authed, module_origin):
    """The browser's flow: a 407 on a kept connection, then the same request with credentials."""
    token = mark("auth-ok")
    with RawClient(authed.port) as client:
        challenged = client.request(build("GET", module_origin.url(f"/echo?m={token}-challenge")))
        assert challenged.status == 407 and "close" not in challenged.tokens("Connection")
        for attempt in range(2):           # the second one takes the remembered-credential path
            response = client.request(build("GET", module_origin.url(f"/echo?m={token}&n={attempt}"),
                                            [("Proxy-Authorization", _basic("alice", "s3cret"))]))
            assert response.status == 200, response.body[:200]
    seen = reached(module_origin, token)
    assert len(seen) == 2
    for received in seen:
        assert not received.has("Proxy-Authorization"), received.raw_head


def test_cached_response_is_never_served_without_proxy_auth(make_proxy, origin, own_redis, tmp_path):
    """A hit (L1 or Redis) is still behind the authentication check."""
    users = tmp_path / "users"
    users.write_text(f"alice:{hash_password('s3cret', iterations=1000)}\n")
    config = cache_config(own_redis.url, "hostile-auth")
    config["access"] = {"auth_file": str(users)}
    proxy = make_proxy(config)
    origin.route("/private-but-cacheable", lambda ex: ex.respond(200, b"cached for alice",
                                                                 headers=[("Cache-Control", "max-age=60")]))
    url, alice = origin.url("/private-but-cacheable"), [("Proxy-Authorization", _basic("alice", "s3cret"))]
    wait_until(lambda: cache_params(get(proxy.port, url, alice)).get("hit"), 5, "the response cached")
    for headers in ([], [("Proxy-Authorization", _basic("alice", "guess"))]):
        outcome = one_exchange(proxy.port, build("GET", url, headers), close_wait=SHORT)
        assert outcome.response.status == 407 and b"cached for alice" not in outcome.response.body
    assert len(origin.requests("/private-but-cacheable")) == 1


# -- destination ports ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def safe_ports(module_make_proxy):
    return module_make_proxy({"access": {"ports": ["80", "443"]}}, name="safe-ports")


def test_forward_to_a_port_outside_access_ports_is_403(safe_ports, module_origin):
    token = mark("port")
    before = module_origin.connections
    refused(safe_ports.port, module_origin, build("GET", module_origin.url(f"/echo?m={token}")), 403, token)
    assert module_origin.connections == before


def test_connect_to_a_port_outside_connect_ports_is_403(safe_ports, echo_server):
    outcome = one_exchange(safe_ports.port, build("CONNECT", f"127.0.0.1:{echo_server.port}"),
                           method="CONNECT", close_wait=SHORT)
    assert outcome.response.status == 403
    assert echo_server.connections == 0


# -- destination policy (the shipped default: no allow_destinations) -------------------------------------
@pytest.fixture(scope="module")
def guarded(module_make_proxy, module_echo):
    """Forward proxy with the default destination policy; CONNECT allowed to the echo server's port
    (so the refusal below comes from the destination policy, not from connect_ports)."""
    return module_make_proxy({"access": {"allow_destinations": []},
                              "server": {"connect_ports": [443, module_echo.port]}}, name="guarded")


@pytest.fixture(scope="module")
def module_echo():
    from support.echo import EchoServer
    server = EchoServer().start()
    yield server
    server.stop()


INTERNAL = ["127.0.0.1", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001", "017700000001", "127.1",
            "127.000.000.001", "[::1]", "[0:0:0:0:0:0:0:1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "localhost",
            "169.254.169.254", "0.0.0.0", "0", "[::]", "10.1.2.3", "192.168.0.1", "172.16.0.1", "[fe80::1]"]


@pytest.mark.parametrize("host", INTERNAL)
def test_internal_destination_is_refused_before_connecting(guarded, module_origin, host):
    token = mark("dest")
    before = module_origin.connections
    outcome = refused(guarded.port, module_origin,
                      build("GET", f"http://{host}:{module_origin.port}/echo?m={token}"), 403, token)
    assert b"internal address" in outcome.response.body, outcome.response.body
    assert module_origin.connections == before


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0x7f.0.0.1"])
def test_connect_to_an_internal_destination_is_refused(guarded, module_echo, host):
    before = module_echo.connections
    outcome = one_exchange(guarded.port, build("CONNECT", f"{host}:{module_echo.port}"),
                           method="CONNECT", close_wait=SHORT)
    assert outcome.response.status == 403, outcome.response.body
    assert module_echo.connections == before


# -- loops, TRACE, Max-Forwards ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def looped(module_make_proxy):
    """The harness default (loopback destinations allowed): only loop detection stands in the way.
    CONNECT is allowed to the proxy's own port, so that is refused as a loop too."""
    proxy = module_make_proxy(start=False, name="looped")
    proxy.config["server"]["connect_ports"] = [443, proxy.port]
    proxy.write_config(proxy.config)
    return proxy.start()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "2130706433"])
def test_own_listen_address_as_target_is_a_loop(looped, host):
    started = time.monotonic()
    outcome = one_exchange(looped.port, build("GET", f"http://{host}:{looped.port}/again"), close_wait=SHORT)
    assert outcome.response.status == 508, outcome.response.body
    assert time.monotonic() - started < 2.0
    assert sum(1 for line in looped.access_lines() if "/again" in line) <= 1, "the proxy called itself"


def test_connect_to_own_listen_address_is_a_loop(looped):
    outcome = one_exchange(looped.port, build("CONNECT", f"127.0.0.1:{looped.port}"), method="CONNECT",
                           close_wait=SHORT)
    assert outcome.response.status == 508, outcome.response.body


VIAS = {
    "alone": [("Via", "1.1 prefork_proxy")],
    "in-a-list": [("Via", "1.0 squid, 1.1 prefork_proxy, 1.1 varnish")],
    "second-field-line": [("Via", "1.1 edge"), ("Via", "HTTP/1.1 prefork_proxy")],
    "with-comment": [("Via", "1.1 prefork_proxy (hello)")],
}


@pytest.mark.parametrize("case", list(VIAS))
def test_our_via_pseudonym_is_a_loop(looped, module_origin, case):
    token = mark(f"via-{case}")
    refused(looped.port, module_origin, build("GET", module_origin.url(f"/echo?m={token}"), VIAS[case]), 508, token)


def test_loop_with_a_body_answers_and_closes(looped, module_origin):
    """A request refused before its body was read must close: the unread body is never parsed."""
    token = mark("via-body")
    body = build("GET", module_origin.url(f"/echo?m={token}-smuggled"))
    outcome = one_exchange(looped.port, build("POST", module_origin.url(f"/echo?m={token}"),
                                              [("Via", "1.1 prefork_proxy")], body=body), close_wait=2.0)
    assert outcome.response.status == 508
    assert "close" in outcome.response.tokens("Connection") and outcome.closed, \
        f"kept open with the body unread; then got {outcome.after[:80]!r}"
    assert outcome.after == b""
    assert reached(module_origin, token) == []


def test_trace_is_405(looped, module_origin):
    token = mark("trace")
    outcome = refused(looped.port, module_origin, build("TRACE", module_origin.url(f"/echo?m={token}"),
                                                        [("Cookie", "secret=1")]), 405, token)
    assert b"secret" not in outcome.response.body


def test_options_with_max_forwards_zero_is_answered_by_the_proxy(looped, module_origin):
    token = mark("maxfwd")
    outcome = refused(looped.port, module_origin, build("OPTIONS", module_origin.url(f"/echo?m={token}"),
                                                        [("Max-Forwards", "0")]), 200, token)
    assert "GET" in (outcome.response.header("Allow") or "")


# -- reverse mode ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reverse(module_make_proxy, module_origin, module_echo):
    """Reverse mode (forward_proxy "auto" = off); CONNECT ports include the echo server's, so only
    the mode can refuse a tunnel to it."""
    return module_make_proxy({"upstream": {"origin": module_origin.base},
                              "server": {"connect_ports": [443, module_echo.port]}}, name="reverse")


SPOOFED = [("X-Forwarded-Host", "evil.example"), ("X-Forwarded-Proto", "https"),
           ("X-Original-URL", "/admin"), ("X-Rewrite-URL", "/admin"),
           ("x-forwarded-host", "evil2.example"), ("X-FORWARDED-PROTO", "wss")]


def test_reverse_mode_drops_or_overwrites_spoofable_fields(reverse, module_origin):
    token = mark("spoof")
    outcome = one_exchange(reverse.port, build("GET", f"/echo?m={token}", SPOOFED, host="shop.example"),
                           close_wait=SHORT)
    assert outcome.response.status == 200
    (seen,) = reached(module_origin, token)
    fields = [(name.lower(), value) for name, value in seen.headers]
    assert [v for n, v in fields if n == "x-forwarded-host"] == ["shop.example"], seen.raw_head
    assert [v for n, v in fields if n == "x-forwarded-proto"] == ["http"], seen.raw_head
    assert not seen.has("X-Original-URL") and not seen.has("X-Rewrite-URL"), seen.raw_head
    assert seen.path == "/echo"


@pytest.mark.parametrize("target", ["http://example.com/echo?m={token}", "http://127.0.0.1:{other}/echo?m={token}",
                                    "http://localhost:{port}/echo?m={token}"])
def test_reverse_mode_refuses_absolute_form_for_another_host(reverse, module_origin, target):
    token = mark("reverse-abs")
    url = target.format(token=token, other=free_port(), port=module_origin.port)
    before = module_origin.connections
    refused(reverse.port, module_origin, build("GET", url), 403, token)
    assert module_origin.connections == before


def test_reverse_mode_refuses_connect(reverse, module_echo):
    """A reverse proxy is not a forward proxy: no tunnels to other hosts either."""
    before = module_echo.connections
    outcome = one_exchange(reverse.port, build("CONNECT", f"127.0.0.1:{module_echo.port}"), method="CONNECT",
                           close_wait=SHORT)
    assert outcome.response.status in (403, 405), f"{outcome.response.status}: a tunnel through a reverse proxy"
    assert module_echo.connections == before


# -- PURGE -----------------------------------------------------------------------------------------------
def test_purge_from_a_network_not_allowed_is_403_and_purges_nothing(make_proxy, origin, own_redis):
    proxy = make_proxy(cache_config(own_redis.url, "hostile-purge", purge_allow=["10.0.0.0/8"]))
    origin.route("/purge-me", lambda ex: ex.respond(200, b"keep me", headers=[("Cache-Control", "max-age=60")]))
    url = origin.url("/purge-me")
    assert get(proxy.port, url).status == 200
    wait_until(lambda: cache_params(get(proxy.port, url)).get("hit"), 5, "the response to be cached")
    outcome = one_exchange(proxy.port, build("PURGE", url), close_wait=SHORT)
    assert outcome.response.status == 403, outcome.response.body
    assert origin.requests(method="PURGE") == []
    assert stored_keys(own_redis.client(), "hostile-purge", url), "the entry is gone"
    assert cache_params(get(proxy.port, url)).get("hit"), "the entry was purged"
    assert len(origin.requests("/purge-me")) == 1
