"""Settings of the data plane, as the config file's [server], [upstream], [limits] and [log] sections.

The types live here, in the layer that uses them; `prefork_proxy.config` composes them into the whole
file and validates it. Each type checks its own values once (`__post_init__`); msgspec rejects unknown
keys and wrong types and reports the path, so an error can always name the key.
"""

from __future__ import annotations

import ipaddress
import os

import msgspec

__all__ = ["Server", "Upstream", "Limits", "Log", "Access", "parse_address", "parse_origin", "parse_ports"]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    def _positive(self, *names: str, allow_zero: bool = False) -> None:
        for name in names:
            value = getattr(self, name)
            if value < 0 or (value == 0 and not allow_zero):
                raise ValueError(f"`{name}`: must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def parse_address(text: str) -> tuple[str, int]:
    """'127.0.0.1:8080', '[::1]:8080', 'localhost:80' -> (host, port); ValueError if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address {text!r} is not HOST:PORT (IPv6 as [::1]:PORT)")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"address {text!r}: unbalanced brackets")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"address {text!r}: write an IPv6 address in brackets, e.g. [::1]:8080")
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"address {text!r}: port {number} is out of range")
    return host, number


def parse_origin(text: str) -> tuple[str, str, int]:
    """'http://127.0.0.1:9000' -> ('http', '127.0.0.1', 9000); ValueError if not an http(s) origin."""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise ValueError(f"origin {text!r} must start with http:// or https://")
    rest = rest.rstrip("/")
    if not rest or "/" in rest or "?" in rest or "#" in rest:
        raise ValueError(f"origin {text!r} must be scheme://host[:port] with no path")
    default = 443 if scheme == "https" else 80
    if rest.endswith("]") or ":" not in rest.rpartition("]")[2]:
        host, port = rest, default
    else:
        host, port = parse_address(rest)
    return scheme, host.strip("[]"), port


class Server(_Section, frozen=True):
    bind: str | list[str] = "127.0.0.1:8080"
    workers: int = 0
    threads: int = 64
    max_connections: int = 4096
    backlog: int = 1024
    keepalive_timeout: float = 15.0
    graceful_timeout: float = 30.0
    max_requests: int = 0
    max_requests_jitter: int = 0
    pidfile: str = ""
    connect_ports: list[int] = msgspec.field(default_factory=lambda: [443])
    via_pseudonym: str = "prefork_proxy"
    heartbeat_timeout: float = 10.0
    request_deadline: float = 3600.0

    def __post_init__(self) -> None:
        if not self.binds:
            raise ValueError("`bind`: needs at least one address")
        for address in self.binds:
            try:
                parse_address(address)
            except ValueError as error:
                raise ValueError(f"`bind`: {error}") from None
        self._positive("workers", "max_requests", "max_requests_jitter", allow_zero=True)
        self._positive("threads", "max_connections", "backlog", "keepalive_timeout", "graceful_timeout",
                       "heartbeat_timeout", "request_deadline")
        if self.workers > 512 or self.threads > 4096:
            raise ValueError("`workers`: must be <= 512 (and `threads` <= 4096)")
        for port in self.connect_ports:
            if not 1 <= port <= 65535:
                raise ValueError(f"`connect_ports`: {port} is not a TCP port")
        if not self.via_pseudonym or any(c in self.via_pseudonym for c in " ,;\t\r\n"):
            raise ValueError("`via_pseudonym`: must be one token (no spaces or commas)")

    @property
    def binds(self) -> list[str]:
        return [self.bind] if isinstance(self.bind, str) else list(self.bind)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [parse_address(text) for text in self.binds]


class Upstream(_Section, frozen=True):
    origin: str = ""
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    pool_size: int = 32
    pool_idle_timeout: float = 30.0
    tunnel_idle_timeout: float = 300.0
    server_names: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        if self.origin:
            try:
                parse_origin(self.origin)
            except ValueError as error:
                raise ValueError(f"`origin`: {error}") from None
        self._positive("connect_timeout", "read_timeout", "pool_idle_timeout", "tunnel_idle_timeout")
        self._positive("pool_size", allow_zero=True)

    @property
    def origin_parts(self) -> tuple[str, str, int] | None:
        return parse_origin(self.origin) if self.origin else None


class Limits(_Section, frozen=True):
    max_request_line: int = 8192
    max_header_line: int = 8192
    max_header_bytes: int = 65536
    max_header_count: int = 100
    header_timeout: float = 10.0
    max_body_bytes: int = 1 << 30
    body_timeout: float = 30.0
    body_min_rate: int = 1024
    body_rate_grace: float = 10.0
    send_timeout: float = 60.0

    def __post_init__(self) -> None:
        self._positive("max_request_line", "max_header_line", "max_header_bytes",
                       "max_header_count", "header_timeout", "body_timeout", "send_timeout")
        self._positive("max_body_bytes", "body_min_rate", "body_rate_grace", allow_zero=True)
        if self.max_header_line > self.max_header_bytes:
            raise ValueError("`max_header_line`: must not exceed `max_header_bytes`")


class Log(_Section, frozen=True):
    access_log: str = "-"
    access_format: str = "combined"
    error_log: str = "-"
    level: str = "info"

    def __post_init__(self) -> None:
        if self.access_format not in ("combined", "json"):
            raise ValueError(f"`access_format`: must be 'combined' or 'json', got {self.access_format!r}")
        if self.level not in ("debug", "info", "warning", "error"):
            raise ValueError(f"`level`: must be debug, info, warning or error, got {self.level!r}")


def parse_ports(texts: list[str]) -> tuple[tuple[int, int], ...]:
    """["80", "443", "1025-65535"] -> ((80, 80), (443, 443), (1025, 65535)); ValueError if malformed."""
    ranges = []
    for text in texts:
        low, _, high = str(text).partition("-")
        if not low.strip().isdigit() or (high and not high.strip().isdigit()):
            raise ValueError(f"{text!r} is not a port or a port range like 1025-65535")
        first, last = int(low), int(high or low)
        if not 1 <= first <= last <= 65535:
            raise ValueError(f"{text!r} is not within 1-65535")
        ranges.append((first, last))
    return tuple(ranges)


class Access(_Section, frozen=True):
    """Who may use the proxy, and where forward-mode requests may go."""

    allow: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    deny: list[str] = msgspec.field(default_factory=list)
    auth_file: str = ""
    realm: str = "prefork_proxy"
    forward_proxy: str = "auto"
    ports: list[str] = msgspec.field(default_factory=lambda: ["80", "443", "1025-65535"])
    allow_destinations: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        for key in ("allow", "deny", "allow_destinations"):
            for entry in getattr(self, key):
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"`{key}`: {entry!r} is not an address or CIDR network") from None
        try:
            parse_ports(self.ports)
        except ValueError as error:
            raise ValueError(f"`ports`: {error}") from None
        if self.forward_proxy not in ("auto", "on", "off"):
            raise ValueError(f"`forward_proxy`: must be 'auto', 'on' or 'off', got {self.forward_proxy!r}")
        if self.auth_file and not os.path.isfile(self.auth_file):
            raise ValueError(f"`auth_file`: {self.auth_file!r} is not a readable file")
        if '"' in self.realm or "\\" in self.realm:
            raise ValueError("`realm`: must not contain quotes or backslashes")
