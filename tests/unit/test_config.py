"""prefork_proxy.config: strict loading, one-line errors naming the file and the key, overrides.

Table-driven: (file text, expected values) for good files, (file text, key, message part) for bad.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from prefork_proxy.config import Config, ConfigError, Overrides, load, summary

REPO = Path(__file__).resolve().parents[2]

GOOD = [
    ("empty file: all defaults", "", {
        "server.bind": "127.0.0.1:8080", "server.workers": 0, "server.threads": 64,
        "server.connect_ports": [443], "server.via_pseudonym": "prefork_proxy",
        "upstream.origin": "", "limits.max_body_bytes": 1 << 30, "cache.redis_url": "embedded",
        "admin.bind": "127.0.0.1:8081", "log.access_format": "combined"}),
    ("one address", '[server]\nbind = "0.0.0.0:3128"\n', {"server.addresses": [("0.0.0.0", 3128)]}),
    ("IPv6 in brackets", '[server]\nbind = "[::1]:8080"\n', {"server.addresses": [("::1", 8080)]}),
    ("a list of addresses", '[server]\nbind = ["127.0.0.1:1", "[::1]:2", "localhost:3"]\n',
     {"server.binds": ["127.0.0.1:1", "[::1]:2", "localhost:3"],
      "server.addresses": [("127.0.0.1", 1), ("::1", 2), ("localhost", 3)]}),
    ("an int where a float is expected", "[server]\nkeepalive_timeout = 3\n", {"server.keepalive_timeout": 3.0}),
    ("reverse mode", '[upstream]\norigin = "http://127.0.0.1:9000"\n',
     {"upstream.origin_parts": ("http", "127.0.0.1", 9000)}),
    ("origin with default port", '[upstream]\norigin = "https://example.test/"\n',
     {"upstream.origin_parts": ("https", "example.test", 443)}),
    ("IPv6 origin", '[upstream]\norigin = "http://[::1]:9000"\n', {"upstream.origin_parts": ("http", "::1", 9000)}),
    ("cache off, admin off", '[cache]\nredis_url = ""\n[admin]\nbind = ""\n',
     {"cache.redis_url": "", "admin.bind": ""}),
    ("a Redis URL", '[cache]\nredis_url = "redis://10.0.0.5:6379/2"\n', {"cache.redis_url": "redis://10.0.0.5:6379/2"}),
    ("json access log", '[log]\naccess_format = "json"\nlevel = "debug"\n',
     {"log.access_format": "json", "log.level": "debug"}),
    ("no body limit", "[limits]\nmax_body_bytes = 0\n", {"limits.max_body_bytes": 0}),
    ("connect ports", "[server]\nconnect_ports = [443, 8443]\n", {"server.connect_ports": [443, 8443]}),
]

BAD = [
    ("wrong type", '[server]\nworkers = "2"\n', "server.workers", "expected `int`, got `str`"),
    ("wrong type: bool for int", "[server]\nworkers = true\n", "server.workers", "expected `int`"),
    ("wrong type: str for float", '[upstream]\nread_timeout = "30s"\n', "upstream.read_timeout", "expected `float`"),
    ("wrong type in a list", '[server]\nconnect_ports = ["https"]\n', "server.connect_ports.0", "expected `int`"),
    ("a section that is not a table", "server = 1\n", "server", "expected `object`"),
    ("unknown key", "[server]\nwrokers = 2\n", "server.wrokers", "unknown key"),
    ("unknown section", "[bogus]\nx = 1\n", "bogus", "unknown key"),
    ("reserved top-level key", 'path = "/etc"\n', "path", "unknown key"),
    ("bad address: no port", '[server]\nbind = "localhost"\n', "server.bind", "not HOST:PORT"),
    ("bad address: port out of range", '[server]\nbind = "127.0.0.1:70000"\n', "server.bind", "out of range"),
    ("bad address: IPv6 without brackets", '[server]\nbind = "::1:8080"\n', "server.bind", "brackets"),
    ("bad address: unbalanced brackets", '[server]\nbind = "[::1:8080"\n', "server.bind", "brackets"),
    ("bad address in a list", '[server]\nbind = ["127.0.0.1:1", "nope"]\n', "server.bind", "'nope'"),
    ("empty bind list", "[server]\nbind = []\n", "server.bind", "at least one"),
    ("bad admin address", '[admin]\nbind = "admin"\n', "admin.bind", "not HOST:PORT"),
    ("zero threads", "[server]\nthreads = 0\n", "server.threads", "must be > 0"),
    ("negative workers", "[server]\nworkers = -1\n", "server.workers", "must be >= 0"),
    ("too many workers", "[server]\nworkers = 100000\n", "server.workers", "<= 512"),
    ("connect port out of range", "[server]\nconnect_ports = [0]\n", "server.connect_ports", "not a TCP port"),
    ("pseudonym with a space", '[server]\nvia_pseudonym = "my proxy"\n', "server.via_pseudonym", "one token"),
    ("origin not http", '[upstream]\norigin = "ftp://x"\n', "upstream.origin", "http://"),
    ("origin with a path", '[upstream]\norigin = "http://x/app"\n', "upstream.origin", "no path"),
    ("zero read timeout", "[upstream]\nread_timeout = 0\n", "upstream.read_timeout", "must be > 0"),
    ("header line over header bytes", "[limits]\nmax_header_line = 100000\n", "limits.max_header_line", "must not exceed"),
    ("bad redis url", '[cache]\nredis_url = "http://x"\n', "cache.redis_url", "redis://"),
    ("bad log level", '[log]\nlevel = "loud"\n', "log.level", "debug, info"),
    ("bad access format", '[log]\naccess_format = "xml"\n', "log.access_format", "'combined' or 'json'"),
]


def write(tmp_path: Path, text: str, name: str = "proxy.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def value_at(config: Config, dotted: str):
    section, attribute = dotted.split(".", 1)
    return getattr(getattr(config, section), attribute)


@pytest.mark.parametrize("text, expected", [case[1:] for case in GOOD], ids=[case[0] for case in GOOD])
def test_good_files(tmp_path, text, expected):
    config = load(write(tmp_path, text))
    for dotted, value in expected.items():
        assert value_at(config, dotted) == value, dotted


@pytest.mark.parametrize("text, key, part", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_files_name_the_file_and_the_key(tmp_path, text, key, part):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    error = caught.value
    assert (error.path, error.key) == (path, key)
    assert str(error).startswith(f"{path}: {key}: "), str(error)
    assert part in error.message, error.message
    assert "\n" not in str(error), "a config error is one line"


def test_the_shipped_config_loads():
    config = load(str(REPO / "config" / "proxy.toml"))
    assert config.server.binds == ["127.0.0.1:8080"] and config.server.workers == 2
    assert config.cache.redis_url == "embedded"


@pytest.mark.parametrize("text", ["[server\nworkers = 1\n", "a = = 1\n", 'x = "unterminated\n'],
                         ids=["unclosed table", "double equals", "unterminated string"])
def test_bad_toml(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.key == ""
    assert str(caught.value).startswith(f"{path}: not valid TOML")
    assert "line" in str(caught.value)


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nvia_pseudonym = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(str(path))


def test_missing_file(tmp_path):
    path = str(tmp_path / "absent.toml")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value).startswith(f"{path}: cannot read")


OVERRIDES = [
    ("bind wins over the file", '[server]\nbind = "127.0.0.1:1"\nworkers = 2\n',
     Overrides(bind=("127.0.0.1:9999",)), {"server.binds": ["127.0.0.1:9999"], "server.workers": 2}),
    ("several binds", '[server]\nbind = ["127.0.0.1:1", "127.0.0.1:2"]\n',
     Overrides(bind=("[::1]:5", "127.0.0.1:6")), {"server.addresses": [("::1", 5), ("127.0.0.1", 6)]}),
    ("workers wins over the file", "[server]\nworkers = 2\n", Overrides(workers=7), {"server.workers": 7}),
    ("workers 0 is an override too", "[server]\nworkers = 2\n", Overrides(workers=0), {"server.workers": 0}),
    ("overrides without a [server] section", '[log]\nlevel = "error"\n', Overrides(bind=("127.0.0.1:5",), workers=3),
     {"server.binds": ["127.0.0.1:5"], "server.workers": 3, "log.level": "error"}),
    ("no overrides", "[server]\nworkers = 4\n", Overrides(), {"server.workers": 4}),
]


@pytest.mark.parametrize("text, overrides, expected", [case[1:] for case in OVERRIDES], ids=[case[0] for case in OVERRIDES])
def test_overrides_win(tmp_path, text, overrides, expected):
    config = load(write(tmp_path, text), overrides)
    for dotted, value in expected.items():
        assert value_at(config, dotted) == value, dotted


@pytest.mark.parametrize("overrides, key", [(Overrides(workers=-1), "server.workers"),
                                            (Overrides(bind=("nonsense",)), "server.bind")])
def test_bad_overrides_are_named_like_file_keys(tmp_path, overrides, key):
    path = write(tmp_path, "")
    with pytest.raises(ConfigError) as caught:
        load(path, overrides)
    assert str(caught.value).startswith(f"{path}: {key}: ")


def test_an_override_does_not_hide_an_error_in_the_file(tmp_path):
    path = write(tmp_path, '[server]\nworkers = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load(path, Overrides(bind=("127.0.0.1:5",)))
    assert caught.value.key == "server.workers"


def test_path_and_digest_are_recorded(tmp_path):
    text = '[server]\nworkers = 1\n'
    path = write(tmp_path, text)
    config = load(path)
    assert config.path == path
    assert config.digest == hashlib.sha256(text.encode()).hexdigest()
    assert load(write(tmp_path, text + "# a comment\n", "other.toml")).digest != config.digest


def test_config_is_frozen(tmp_path):
    config = load(write(tmp_path, ""))
    with pytest.raises(AttributeError):
        config.server.workers = 3  # type: ignore[misc]


def test_summary_lists_every_key_once(tmp_path):
    config = load(write(tmp_path, '[server]\nworkers = 3\nbind = ["127.0.0.1:1", "[::1]:2"]\n'))
    lines = summary(config).splitlines()
    assert lines[0].startswith(f"# {config.path}")
    keys = [line.split(" = ", 1)[0] for line in lines[1:]]
    assert len(keys) == len(set(keys))
    expected = {f"{section}.{name}" for section in ("server", "upstream", "limits", "access", "cache",
                                                    "admin", "log")
                for name in getattr(config, section).__struct_fields__}
    assert set(keys) == expected
    assert "server.workers = 3" in lines
    assert "server.bind = ['127.0.0.1:1', '[::1]:2']" in lines
