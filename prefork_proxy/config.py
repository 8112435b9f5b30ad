"""The config file: TOML read with tomllib, validated strictly with msgspec.

Every section type is defined by the layer that uses it (`workers.settings`, `cache.settings`);
this module composes them, adds the control plane's own sections, applies command-line overrides and
turns any problem into one `ConfigError` line that names the file and the key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import tomllib
from dataclasses import dataclass

import msgspec

from cache.settings import CacheSettings
from workers.settings import Access, Limits, Log, Server, Upstream, parse_address

__all__ = ["Admin", "Config", "ConfigError", "Overrides", "load", "summary"]


class ConfigError(Exception):
    """A config file that cannot be used; str() is one line naming the file and the key."""

    def __init__(self, path: str, key: str, message: str) -> None:
        self.path, self.key, self.message = path, key, message
        super().__init__(f"{path}: {key}: {message}" if key else f"{path}: {message}")


class Admin(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    bind: str = "127.0.0.1:8081"
    allow: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])

    def __post_init__(self) -> None:
        try:
            if self.bind:
                parse_address(self.bind)
        except ValueError as error:
            raise ValueError(f"`bind`: {error}") from None
        for entry in self.allow:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"`allow`: {entry!r} is not an address or CIDR network") from None


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    server: Server = msgspec.field(default_factory=Server)
    upstream: Upstream = msgspec.field(default_factory=Upstream)
    limits: Limits = msgspec.field(default_factory=Limits)
    access: Access = msgspec.field(default_factory=Access)
    cache: CacheSettings = msgspec.field(default_factory=CacheSettings)
    admin: Admin = msgspec.field(default_factory=Admin)
    log: Log = msgspec.field(default_factory=Log)
    path: str = ""          # where it was read from (not a file key)
    digest: str = ""        # sha256 of the file's bytes (not a file key)


SECTIONS = tuple(name for name in Config.__struct_fields__ if name not in ("path", "digest"))


@dataclass(frozen=True)
class Overrides:
    """Command-line values that win over the file, on start and on every reload."""

    bind: tuple[str, ...] = ()
    workers: int | None = None


_AT = re.compile(r"\s*-\s*at `\$(?P<path>[^`]*)`\s*$")


def _key_of(error: msgspec.ValidationError) -> tuple[str, str]:
    """Split msgspec's 'Expected `int`, got `str` - at `$.server.workers`' into key and message."""
    text = str(error)
    match = _AT.search(text)
    key = match.group("path").lstrip(".").replace("[", ".").replace("]", "") if match else ""
    message = text[: match.start()] if match else text
    named = re.match(r"Object contains unknown field `([^`]+)`$", message)
    if named:
        message = "unknown key"
    else:  # a section's own check names its field first: "`bind`: ..."
        named = re.match(r"`([^`]+)`:?\s*", message)
        if named:
            message = message[named.end():]
    if named:
        key = f"{key}.{named.group(1)}" if key else named.group(1)
    return key, message[:1].lower() + message[1:]


def load(path: str, overrides: Overrides = Overrides()) -> Config:
    """Read, validate and return the config at `path`, or raise ConfigError."""
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as error:
        raise ConfigError(path, "", f"cannot read: {error.strerror or error}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(path, "", f"not valid TOML: {error}") from None
    for reserved in ("path", "digest"):
        if reserved in data:
            raise ConfigError(path, reserved, "unknown key")
    data = _apply(data, overrides)
    data["path"], data["digest"] = path, hashlib.sha256(raw).hexdigest()
    try:
        return msgspec.convert(data, Config)
    except msgspec.ValidationError as error:
        key, message = _key_of(error)
        raise ConfigError(path, key, message) from None


def _apply(data: dict, overrides: Overrides) -> dict:
    server = dict(data.get("server") or {}) if isinstance(data.get("server", {}), dict) else data["server"]
    if isinstance(server, dict):
        if overrides.bind:
            server["bind"] = list(overrides.bind)
        if overrides.workers is not None:
            server["workers"] = overrides.workers
        data = {**data, "server": server}
    return data


def summary(config: Config) -> str:
    """The effective configuration, one `section.key = value` per line (for --check)."""
    lines = [f"# {config.path} (sha256 {config.digest[:12]})"]
    for section in SECTIONS:
        value = getattr(config, section)
        for field in value.__struct_fields__:
            lines.append(f"{section}.{field} = {getattr(value, field)!r}")
    return "\n".join(lines)
