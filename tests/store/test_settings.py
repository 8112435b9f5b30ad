"""The [cache] settings: defaults, checks naming their key, and the shipped config documenting them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import msgspec
import pytest

from cache.settings import CacheSettings

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_valid():
    settings = CacheSettings()
    assert settings.redis_url == "embedded" and settings.max_object_bytes == 8 << 20
    assert settings.chunk_bytes == 256 * 1024 and settings.l1_max_bytes == 64 << 20


@pytest.mark.parametrize("key, value, message", [
    ("redis_url", "http://x", "`redis_url`: must start with redis://, rediss://, unix://, redis+sentinel://, redis+cluster://"),
    ("redis_url", "redis+sentinel://127.0.0.1:26379", "`redis_url`: names no service"),
    ("redis_url", "redis+sentinel://h:99999/svc", "`redis_url`: address 'h:99999' has a bad port"),
    ("redis_url", "redis+sentinel://h/svc/x", "`redis_url`: database 'x' is not a number"),
    ("key_prefix", "a{b}", "`key_prefix`: must be"),
    ("socket_timeout", 0, "`socket_timeout`: must be > 0"),
    ("connect_timeout", -1, "`connect_timeout`: must be > 0"),
    ("breaker_threshold", 0, "`breaker_threshold`: must be > 0"),
    ("breaker_cooldown", 0, "`breaker_cooldown`: must be > 0"),
    ("max_object_bytes", 0, "`max_object_bytes`: must be > 0"),
    ("chunk_bytes", 100, "`chunk_bytes`: must be between"),
    ("ttl_margin", -1, "`ttl_margin`: must be >= 0"),
    ("l1_max_bytes", -1, "`l1_max_bytes`: must be >= 0"),
    ("l1_max_object_bytes", -1, "`l1_max_object_bytes`: must be >= 0"),
    ("l1_ttl", 0, "`l1_ttl`: must be > 0"),
    ("lock_ttl", 0, "`lock_ttl`: must be > 0"),
    ("lock_timeout", -1, "`lock_timeout`: must be >= 0"),
    ("embedded_maxmemory", 1000, "`embedded_maxmemory`: must be >= "),
])
def test_each_check_names_its_key(key, value, message):
    with pytest.raises(msgspec.ValidationError, match=re.escape(message)):
        msgspec.convert({key: value}, CacheSettings)


def test_unknown_keys_are_rejected():
    with pytest.raises(msgspec.ValidationError, match="unknown field `l2_max_bytes`"):
        msgspec.convert({"l2_max_bytes": 1}, CacheSettings)


def test_the_config_loader_reports_file_and_key(tmp_path):
    from prefork_proxy.config import ConfigError, load

    path = tmp_path / "bad.toml"
    path.write_text("[cache]\nl1_ttl = 0\n")
    with pytest.raises(ConfigError) as error:
        load(str(path))
    assert str(error.value) == f"{path}: cache.l1_ttl: must be > 0, got 0.0"


def test_the_shipped_config_documents_every_key_with_its_default():
    text = (REPO / "config" / "proxy.toml").read_text()
    section = text.split("[cache]", 1)[1].split("\n[", 1)[0]
    documented = "\n".join(re.sub(r"^# ", "", line) for line in section.splitlines()
                           if re.match(r"^#? ?[a-z_0-9]+ = ", line))
    values = tomllib.loads(documented)
    assert set(values) == set(CacheSettings.__struct_fields__)
    assert msgspec.convert(values, CacheSettings) == CacheSettings()
