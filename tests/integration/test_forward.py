"""Forward proxying (absolute-form targets): real clients (requests, curl -x) and exact bytes.

What the origin receives is checked field by field: origin-form target, Host from the target,
Via and X-Forwarded-For appended, hop-by-hop fields gone (RFC 9110 §7.6.1), Max-Forwards honoured
(RFC 9110 §7.6.2), loops refused (RFC 9110 §7.6.3).
"""

from __future__ import annotations

import shutil
import subprocess
from urllib.parse import urlencode

import pytest

from support.pattern import iter_pattern, pattern_bytes, pattern_sha256
from support.rawhttp import build, exchange
from support.wait import require

HOP_BY_HOP = ["Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade", "Proxy-Authorization"]


@pytest.fixture(scope="module")
def fwd(module_make_proxy, module_origin):
    return module_make_proxy(name="forward")


@pytest.fixture
def origin(module_origin):  # this module's tests share one origin; each uses its own paths
    return module_origin


def via_entries(value: str | None) -> list[str]:
    return [entry.strip() for entry in (value or "").split(",") if entry.strip()]


# -- requests ------------------------------------------------------------------------------------------
def test_get_with_requests(fwd, origin, http):
    response = http.get(origin.url("/echo?case=get"), proxies=fwd.proxies, timeout=10)
    assert response.status_code == 200
    seen = origin.requests("/echo")[-1]
    assert (seen.method, seen.target, seen.version) == ("GET", "/echo?case=get", "HTTP/1.1")
    assert seen.header("Host") == origin.authority()
    assert via_entries(seen.header("Via"))[-1] == "1.1 prefork_proxy"
    assert "1.1 prefork_proxy" in via_entries(response.headers.get("Via"))
    assert response.json()["target"] == "/echo?case=get"


def test_post_with_requests(fwd, origin, http):
    body = pattern_bytes(300_000)
    response = http.post(origin.url("/echo?case=post"), data=body, proxies=fwd.proxies, timeout=10)
    assert response.status_code == 200
    echoed = response.json()
    assert echoed["method"] == "POST"
    assert (echoed["body_length"], echoed["body_sha256"]) == (300_000, pattern_sha256(300_000))


def test_head_with_requests(fwd, origin, http):
    response = http.head(origin.url("/bytes?n=12345&case=head"), proxies=fwd.proxies, timeout=10)
    assert response.status_code == 200
    assert response.headers.get("Content-Length") in ("12345", None)
    assert response.content == b""
    assert origin.requests("/bytes", method="HEAD")


def test_chunked_upload_with_requests(fwd, origin, http):
    # a generator body makes requests send Transfer-Encoding: chunked
    response = http.put(origin.url("/echo?case=chunked-upload"), data=iter_pattern(2_000_000, 30_000),
                        proxies=fwd.proxies, timeout=20)
    assert response.status_code == 200
    echoed = response.json()
    assert (echoed["body_length"], echoed["body_sha256"]) == (2_000_000, pattern_sha256(2_000_000))


@pytest.mark.parametrize("query", ["n=5000000", "n=5000000&chunked=1", "n=5000000&close=1"],
                         ids=["length", "chunked", "close-delimited"])
def test_download_with_requests(fwd, origin, http, query):
    response = http.get(origin.url(f"/bytes?{query}"), proxies=fwd.proxies, timeout=20)
    assert response.status_code == 200
    assert len(response.content) == 5_000_000
    assert response.content == pattern_bytes(5_000_000)


def test_session_keeps_working_across_many_requests(fwd, origin, http):
    for number in range(20):
        response = http.get(origin.url(f"/echo?case=session&i={number}"), proxies=fwd.proxies, timeout=10)
        assert response.status_code == 200 and response.json()["target"].endswith(f"i={number}")


# -- curl -x ------------------------------------------------------------------------------------------
def curl(fwd, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    require(shutil.which("curl") is not None, "curl is not installed (tools/sysdeps.sh installs it)")
    command = ["curl", "-sS", "--max-time", "15", "-x", fwd.url, "--noproxy", "", *args]
    return subprocess.run(command, capture_output=True, timeout=timeout, env={"PATH": "/usr/bin:/bin"})


def test_curl_get(fwd, origin):
    result = curl(fwd, "-D", "-", origin.url("/echo?case=curl-get"))
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b'"target": "/echo?case=curl-get"' in body
    assert b"prefork_proxy" in head  # Via on the response


def test_curl_post(fwd, origin, tmp_path):
    upload = tmp_path / "upload.bin"
    upload.write_bytes(pattern_bytes(1_000_000))
    result = curl(fwd, "--data-binary", f"@{upload}", origin.url("/echo?case=curl-post"))
    assert result.returncode == 0, result.stderr
    assert f'"body_sha256": "{pattern_sha256(1_000_000)}"'.encode() in result.stdout
    assert origin.requests("/echo", method="POST")


def test_curl_head(fwd, origin):
    result = curl(fwd, "-I", origin.url("/bytes?n=777&case=curl-head"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"HTTP/1.1 200")
    assert b"\r\ncontent-length: 777\r\n" in result.stdout.lower()


def test_curl_chunked_upload(fwd, origin, tmp_path):
    upload = tmp_path / "upload.bin"
    upload.write_bytes(pattern_bytes(3_000_000))
    result = curl(fwd, "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{upload}",
                  origin.url("/echo?case=curl-chunked"))
    assert result.returncode == 0, result.stderr
    assert f'"body_sha256": "{pattern_sha256(3_000_000)}"'.encode() in result.stdout


# -- header handling (exact bytes) --------------------------------------------------------------------
def test_target_becomes_origin_form_and_host_comes_from_it(fwd, origin):
    # RFC 9112 §3.2.2: a proxy replaces a received Host with the target's authority
    response, _ = exchange(fwd.port, build("GET", origin.url("/echo?case=host"), [("Host", "wrong.example")]))
    assert response.status == 200
    seen = origin.requests("/echo")[-1]
    assert seen.target == "/echo?case=host"
    assert [value for name, value in seen.headers if name.lower() == "host"] == [origin.authority()]


def test_hop_by_hop_request_fields_are_removed(fwd, origin):
    request = build("GET", origin.url("/echo?case=hop-request"), [
        ("Connection", "keep-alive, X-Custom, Upgrade"), ("X-Custom", "private"), ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"), ("TE", "trailers"), ("Trailer", "X-Checksum"),
        ("Upgrade", "example/1"), ("Proxy-Authorization", "Basic dXNlcjpwYXNz"), ("X-End-To-End", "kept")])
    response, _ = exchange(fwd.port, request)
    assert response.status == 200
    seen = origin.requests("/echo")[-1]
    for name in HOP_BY_HOP + ["X-Custom"]:
        assert not seen.has(name), f"{name} was forwarded: {seen.header(name)!r}"
    connection = (seen.header("Connection") or "").lower()
    assert "x-custom" not in connection and "upgrade" not in connection
    assert seen.header("X-End-To-End") == "kept"


def test_hop_by_hop_response_fields_are_removed(fwd, origin):
    fields = [("Connection", "X-Resp"), ("X-Resp", "private"), ("Keep-Alive", "timeout=9"),
              ("Proxy-Connection", "keep-alive"), ("Upgrade", "example/1"), ("Trailer", "X-Checksum"),
              ("X-End-To-End", "kept")]
    query = urlencode([("case", "hop-response")] + [("h", f"{name}:{value}") for name, value in fields])
    response, _ = exchange(fwd.port, build("GET", origin.url(f"/echo?{query}")))
    assert response.status == 200
    for name in ["Keep-Alive", "Proxy-Connection", "Upgrade", "Trailer", "X-Resp"]:
        assert not response.has(name), f"{name} reached the client: {response.header(name)!r}"
    assert "x-resp" not in response.tokens("Connection")
    assert response.header("X-End-To-End") == "kept"
    assert via_entries(response.header("Via"))[-1] == "1.1 prefork_proxy"


def test_via_and_x_forwarded_for_are_appended(fwd, origin):
    request = build("GET", origin.url("/echo?case=append"), [("Via", "1.0 edge-a"), ("X-Forwarded-For", "10.1.2.3")])
    response, _ = exchange(fwd.port, request)
    assert response.status == 200
    seen = origin.requests("/echo")[-1]
    assert via_entries(seen.header("Via")) == ["1.0 edge-a", "1.1 prefork_proxy"]
    assert [part.strip() for part in seen.header("X-Forwarded-For").split(",")] == ["10.1.2.3", "127.0.0.1"]


def test_x_forwarded_for_is_added(fwd, origin):
    exchange(fwd.port, build("GET", origin.url("/echo?case=xff")))
    assert origin.requests("/echo")[-1].header("X-Forwarded-For") == "127.0.0.1"


@pytest.mark.parametrize("via", ["1.1 prefork_proxy", "1.0 edge-a, 1.1 prefork_proxy (comment)", "HTTP/1.1 prefork_proxy"])
def test_loop_is_refused(fwd, origin, via):
    path = f"/echo?case=loop-{len(via)}"
    response, _ = exchange(fwd.port, build("GET", origin.url(path), [("Via", via)]))
    assert 400 <= response.status < 600
    assert (response.header("Content-Type") or "").startswith("text/plain")
    assert not [r for r in origin.requests("/echo") if r.target == path], "the looping request reached the origin"


def test_options_star_is_answered_by_the_proxy(fwd, origin):
    before = len(origin.requests())
    response, _ = exchange(fwd.port, build("OPTIONS", "*", host="127.0.0.1"))
    assert response.status == 200
    assert len(origin.requests()) == before


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE"])
def test_max_forwards_zero_is_answered_by_the_proxy(fwd, origin, method):
    path = f"/echo?case=mf0-{method}"
    response, _ = exchange(fwd.port, build(method, origin.url(path), [("Max-Forwards", "0")]))
    assert response.status < 500 and response.status != 404
    if method == "OPTIONS":
        assert response.status == 200
    assert not [r for r in origin.requests() if r.target == path]


def test_max_forwards_is_decremented(fwd, origin):
    response, _ = exchange(fwd.port, build("OPTIONS", origin.url("/echo?case=mf1"), [("Max-Forwards", "1")]))
    assert response.status == 200
    assert origin.requests("/echo", method="OPTIONS")[-1].header("Max-Forwards") == "0"


def test_max_forwards_is_ignored_for_get(fwd, origin):
    response, _ = exchange(fwd.port, build("GET", origin.url("/echo?case=mf-get"), [("Max-Forwards", "0")]))
    assert response.status == 200  # RFC 9110 §7.6.2: only OPTIONS and TRACE


def test_custom_via_pseudonym(make_proxy, origin):
    proxy = make_proxy({"server": {"via_pseudonym": "edge-7"}})
    response, _ = exchange(proxy.port, build("GET", origin.url("/echo?case=pseudonym"), [("Via", "1.1 prefork_proxy")]))
    assert response.status == 200  # another proxy's name is not a loop
    assert via_entries(response.header("Via"))[-1] == "1.1 edge-7"
    assert via_entries(origin.requests("/echo")[-1].header("Via")) == ["1.1 prefork_proxy", "1.1 edge-7"]
    looped, _ = exchange(proxy.port, build("GET", origin.url("/echo?case=pseudonym-loop"), [("Via", "1.1 edge-7")]))
    assert looped.status >= 400
    assert not [r for r in origin.requests() if r.target == "/echo?case=pseudonym-loop"]
