"""Reverse proxying: origin-form requests go to `upstream.origin`; one listener serves both forms."""

from __future__ import annotations

from support.origin import Origin
from support.pattern import iter_pattern, pattern_sha256
from support.rawhttp import build, exchange


def test_origin_form_goes_to_the_configured_origin(make_proxy, origin, http):
    proxy = make_proxy({"upstream": {"origin": origin.base}})
    response = http.get(f"{proxy.url}/echo?case=reverse", headers={"X-Client": "1"}, timeout=10)
    assert response.status_code == 200
    seen = origin.requests("/echo")[-1]
    assert (seen.method, seen.target) == ("GET", "/echo?case=reverse")
    assert seen.header("X-Client") == "1"
    assert seen.header("Via").endswith("1.1 prefork_proxy")
    assert seen.header("X-Forwarded-For") == "127.0.0.1"
    assert "prefork_proxy" in response.headers["Via"]


def test_reverse_post_streams_the_body(make_proxy, origin, http):
    proxy = make_proxy({"upstream": {"origin": origin.base}})
    response = http.post(f"{proxy.url}/echo", data=iter_pattern(4_000_000, 50_000), timeout=20)
    assert response.status_code == 200
    assert (response.json()["body_length"], response.json()["body_sha256"]) == (4_000_000, pattern_sha256(4_000_000))


def test_reverse_download(make_proxy, origin, http):
    proxy = make_proxy({"upstream": {"origin": f"{origin.base}/"}})  # a trailing slash is allowed
    response = http.get(f"{proxy.url}/bytes?n=3000000&chunked=1", timeout=20)
    assert response.status_code == 200 and len(response.content) == 3_000_000


def test_absolute_form_for_another_host_is_refused_in_reverse_mode(make_proxy, origin):
    """A reverse proxy is never an open proxy: absolute-form targets elsewhere get 403."""
    with Origin() as other:
        proxy = make_proxy({"upstream": {"origin": origin.base}})
        response, _ = exchange(proxy.port, build("GET", other.url("/echo?case=both-forms")))
        assert response.status == 403
        assert not other.requests()
    assert not origin.requests("/echo")


def test_absolute_form_for_the_origin_goes_to_the_origin(make_proxy, origin):
    proxy = make_proxy({"upstream": {"origin": origin.base}})
    response, _ = exchange(proxy.port, build("GET", origin.url("/echo?case=own-host")))
    assert response.status == 200
    assert [r.target for r in origin.requests("/echo")] == ["/echo?case=own-host"]


def test_absolute_form_is_forwarded_in_reverse_mode_when_forward_proxy_is_on(make_proxy, origin):
    with Origin() as other:
        proxy = make_proxy({"upstream": {"origin": origin.base}, "access": {
            "forward_proxy": "on", "allow_destinations": ["127.0.0.0/8"]}})
        response, _ = exchange(proxy.port, build("GET", other.url("/echo?case=both-forms")))
        assert response.status == 200
        assert [r.target for r in other.requests()] == ["/echo?case=both-forms"]
    assert not origin.requests("/echo")


def test_origin_form_without_an_origin_is_400(make_proxy, origin):
    proxy = make_proxy()
    response, _ = exchange(proxy.port, build("GET", "/echo?case=no-origin", host=origin.authority()))
    assert response.status == 400
    assert (response.header("Content-Type") or "").startswith("text/plain")
    assert not origin.requests()
