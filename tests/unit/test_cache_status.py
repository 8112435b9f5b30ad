"""cache.cache_status: the RFC 9211 Cache-Status member in RFC 8941 syntax."""

from __future__ import annotations

import pytest

from cache.cache_status import cache_status


@pytest.mark.parametrize("name, parameters, expected", [
    pytest.param("proxy", {"hit": True, "ttl": 30}, "proxy; hit; ttl=30", id="RFC 9211 §2.1 hit with ttl"),
    pytest.param("proxy", {"fwd": "uri-miss", "fwd_status": 200, "stored": True, "ttl": 60},
                 "proxy; fwd=uri-miss; fwd-status=200; ttl=60; stored", id="RFC 9211 §2.2-2.6 miss then stored"),
    pytest.param("proxy", {"fwd": "stale", "fwd_status": 304, "collapsed": True},
                 "proxy; fwd=stale; fwd-status=304; collapsed", id="RFC 9211 §2.7 collapsed"),
    pytest.param("proxy", {"fwd": "bypass", "detail": "no-store"}, 'proxy; fwd=bypass; detail="no-store"',
                 id="RFC 9211 §2.8 detail as a string"),
    pytest.param("proxy", {"hit": True, "ttl": -12}, "proxy; hit; ttl=-12", id="RFC 9211 §2.4 negative ttl"),
    pytest.param("proxy", {"ttl": 10**20}, "proxy; ttl=999999999999999", id="RFC 8941 §3.3.1 15 digits at most"),
    pytest.param("my proxy", {"hit": True}, '"my proxy"; hit', id="RFC 8941 §3.3.3 a non-token name is a string"),
    pytest.param("prefork_proxy", {}, "prefork_proxy", id="RFC 8941 §3.3.4 a token name"),
    pytest.param("p", {"detail": 'a"b\\c\x01é'}, r'p; detail="a\"b\\c"',
                 id="RFC 8941 §3.3.3 escaped, printable ASCII only"),
])
def test_cache_status(name, parameters, expected):
    assert cache_status(name, **parameters) == expected


def test_unknown_forward_reason_is_an_error():
    with pytest.raises(ValueError, match="fwd"):
        cache_status("proxy", fwd="nope")
