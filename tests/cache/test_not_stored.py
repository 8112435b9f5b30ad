"""What must not be stored or shared (RFC 9111 §3, §3.5, §5.2.2), each refusal saying why in
Cache-Status `detail` (RFC 9211 §2.8); bodies that do not arrive whole or are too large."""

from __future__ import annotations

import pytest

from support.pattern import pattern_bytes, pattern_sha256
from support.rawhttp import RawClient, build

from .helpers import MiB, get, is_hit, params

REFUSED = [
    # (case, response fields, request fields, Cache-Status detail)
    ("no-store", [("Cache-Control", "no-store")], [], "no-store"),
    ("private", [("Cache-Control", "private, max-age=60")], [], "private"),
    ("set-cookie", [("Cache-Control", "max-age=60"), ("Set-Cookie", "id=alice")], [], "set-cookie"),
    ("authorization", [("Cache-Control", "max-age=60")], [("Authorization", "Basic YWxpY2U6eA==")],
     "authorization"),
    ("request-no-store", [("Cache-Control", "max-age=60")], [("Cache-Control", "no-store")],
     "request-no-store"),
]


@pytest.mark.parametrize(("case", "fields", "request_fields", "detail"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_responses_are_not_stored_and_say_why(cache_proxy, site, case, fields, request_fields,
                                                      detail):
    path = f"/refused-{case}"
    site.resource(path, body=f"{case}\n".encode(), headers=fields)
    url = site.url(path)
    responses = [get(cache_proxy.port, url, request_fields) for _ in range(3)]
    assert [(r.status, r.body) for r in responses] == [(200, f"{case}\n".encode())] * 3
    for response in responses:
        status = params(response)
        assert not status.get("hit") and not status.get("stored"), status
        assert status.get("fwd") and status.get("fwd-status") == "200", status
        assert status.get("detail") == detail, response.header("Cache-Status")
    assert site.count(path) == 3


def test_a_response_to_one_user_is_not_served_to_another(cache_proxy, site):
    # RFC 9111 §3.5: with Authorization, only public / s-maxage / must-revalidate make it shareable.
    site.resource("/account", body=lambda r: f"account of {r.header('Authorization')}".encode(),
                  headers=[("Cache-Control", "max-age=60")])
    url = site.url("/account")
    alice = get(cache_proxy.port, url, [("Authorization", "Bearer alice")])
    bob = get(cache_proxy.port, url, [("Authorization", "Bearer bob")])
    assert alice.body == b"account of Bearer alice"
    assert bob.body == b"account of Bearer bob" and not is_hit(bob)
    assert [r.header("Authorization") for r in site.seen("/account")] == ["Bearer alice", "Bearer bob"]


def test_an_authorized_response_marked_public_is_shared(cache_proxy, site):
    site.resource("/logo", body=b"logo", headers=[("Cache-Control", "public, max-age=60")])
    url = site.url("/logo")
    get(cache_proxy.port, url, [("Authorization", "Bearer alice")])
    bob = get(cache_proxy.port, url, [("Authorization", "Bearer bob")])
    assert (bob.body, is_hit(bob)) == (b"logo", True)
    assert site.count("/logo") == 1


def test_fields_named_by_qualified_private_or_no_cache_are_not_reused(cache_proxy, site):
    # RFC 9111 §5.2.2.7 / §5.2.2.4: a shared cache may store the response but not these fields.
    site.resource("/qualified", body=b"page", headers=[
        ("Cache-Control", 'max-age=60, private="X-Secret", no-cache="X-Token"'),
        ("X-Secret", "alice's"), ("X-Token", "t0k3n"), ("X-Public", "yes")])
    url = site.url("/qualified")
    first = get(cache_proxy.port, url)
    assert first.header("X-Secret") == "alice's"      # the response that was fetched keeps them
    hit = get(cache_proxy.port, url)
    assert is_hit(hit) and hit.body == b"page" and hit.header("X-Public") == "yes"
    assert (hit.header("X-Secret"), hit.header("X-Token")) == (None, None), hit.headers
    assert site.count("/qualified") == 1


def test_a_truncated_origin_body_is_not_stored(cache_proxy, site):
    body = pattern_bytes(100_000)
    page = site.resource("/truncated", body=body, headers=[("Cache-Control", "max-age=60")],
                         mode="truncate", truncate_at=50_000)
    url = site.url("/truncated")
    with RawClient(cache_proxy.port) as client:
        response = client.request(build("GET", url))
        assert response.status == 200 and response.header("Content-Length") == "100000"
        assert not response.complete and response.body_length == 50_000
        assert client.closed_by_peer(5.0)
    page.mode = "ok"                                   # the origin recovers: nothing may be stored
    again = get(cache_proxy.port, url)
    assert (again.body == body, is_hit(again)) == (True, False)
    assert site.count("/truncated") == 2
    assert is_hit(get(cache_proxy.port, url))          # the whole body was stored
    assert site.count("/truncated") == 2


def test_a_body_above_max_object_bytes_passes_through_unstored(cache_proxy, site):
    size = MiB + MiB // 2                              # the shared proxy's max_object_bytes is 1 MiB
    site.resource("/large", body=pattern_bytes(size), headers=[("Cache-Control", "max-age=60")])
    url = site.url("/large")
    for _ in range(2):
        response = get(cache_proxy.port, url)
        assert (response.status, response.body_length, response.sha256) == (200, size, pattern_sha256(size))
        assert not is_hit(response)
    assert site.count("/large") == 2


def test_cache_status_does_not_claim_stored_for_a_known_oversized_body(cache_proxy, site):
    # RFC 9211 §2.6 `stored`: the Content-Length already says the body exceeds max_object_bytes.
    size = 2 * MiB
    site.resource("/large-status", body=pattern_bytes(size), headers=[("Cache-Control", "max-age=60")])
    response = get(cache_proxy.port, site.url("/large-status"))
    assert response.body_length == size
    assert not params(response).get("stored"), response.header("Cache-Status")
