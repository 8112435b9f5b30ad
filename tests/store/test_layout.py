"""The Redis layout: key names under one Cluster hash tag, the record format and its checks."""

from __future__ import annotations

import hashlib
import re

import msgspec
import pytest

from cache.layout import Keys, Meta, decode_names, decode_record, encode_names, encode_record, tag_of

META = Meta(status=200, headers=[("a", "b")], request_time=1.0, response_time=2.0, ttl=60.0,
            body_length=3, body_id="id", chunks=0)


def test_every_key_of_an_object_shares_one_hash_tag():
    keys = Keys("pp", "http://example.test/x?y")
    names = [keys.index, keys.lock, keys.meta("v"), keys.chunk("b", 0)]
    tags = {re.search(r"\{([^}]*)\}", name).group(1) for name in names}   # what Redis Cluster hashes
    assert tags == {keys.tag} and len(keys.tag) == 40


@pytest.mark.parametrize("key", ["http://example.test/x", "http://example.test/" + "x" * 600, "http://é.test/\udcff"],
                         ids=["short: memoised", "long: hashed each time", "surrogate-escaped"])
def test_a_tag_is_the_sha1_of_the_primary_key(key):
    expected = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()
    assert tag_of(key) == expected == tag_of(key) == Keys("pp", key).tag


def test_a_record_round_trips():
    record = decode_record(encode_record(META, b"abc"))
    assert record.meta == META and record.inline == b"abc"


def test_records_of_another_version_or_inconsistent_are_rejected():
    assert decode_record(msgspec.msgpack.encode((2, META, b"abc"))) is None
    assert decode_record(encode_record(META, b"abcd")) is None          # length mismatch
    assert decode_record(encode_record(META, None)) is None             # no body at all
    chunked = msgspec.structs.replace(META, chunks=1, body_id="")
    assert decode_record(encode_record(chunked, None)) is None          # chunks without a body id
    assert decode_record(b"\xc1") is None


def test_vary_names_round_trip():
    assert decode_names(encode_names(("accept", "accept-encoding"))) == ("accept", "accept-encoding")
    assert decode_names(b"\xc1") is None
