"""Access control: who may use the proxy, and where forward-mode requests may go.

# design: everything is parsed once per worker into an `AccessPolicy`; the per-request checks are
# set and range lookups. The destination check runs on the address actually connected to (after
# DNS, inside `upstream.open_connection`), so there is no DNS-rebinding gap, and odd IPv4 spellings
# (decimal, octal, hex) are already normalised by the resolver by then.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

from .auth import BasicAuth, load_credentials
from .errors import Forbidden, LoopDetected, ProxyAuthRequired
from .settings import Access, parse_ports

__all__ = ["AccessPolicy", "networks", "address_in", "local_addresses"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(texts: list[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(text, strict=False) for text in texts)


def _ip(address: str):
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped             # ::ffff:127.0.0.1 is 127.0.0.1
    return ip


def address_in(address: str, allowed: tuple[Network, ...]) -> bool:
    try:
        ip = _ip(address)
    except ValueError:
        return False
    return any(ip in network for network in allowed)


def local_addresses() -> frozenset[str]:
    """This host's interface addresses (the proxy's own addresses)."""
    import psutil
    found = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                found.add(str(_ip(entry.address)))
    return frozenset(found)


@dataclass(frozen=True)
class AccessPolicy:
    allow: tuple[Network, ...]
    deny: tuple[Network, ...]
    ports: tuple[tuple[int, int], ...]
    destinations: tuple[Network, ...]          # private/loopback destinations allowed anyway
    listeners: frozenset[tuple[str, int]]      # our own (ip, port)s; "0.0.0.0"/"::" = any local ip
    own_ips: frozenset[str] = field(default_factory=frozenset)
    auth: BasicAuth | None = None

    @classmethod
    def build(cls, settings: Access, listeners: list[tuple[str, int]]) -> AccessPolicy:
        auth = None
        if settings.auth_file:
            auth = BasicAuth(load_credentials(settings.auth_file), settings.realm)
        return cls(networks(settings.allow), networks(settings.deny), parse_ports(settings.ports),
                   networks(settings.allow_destinations),
                   frozenset((str(_ip(host)), port) for host, port in listeners),
                   local_addresses(), auth)

    def check_client(self, address: str) -> None:
        """Client allow/deny lists, checked before anything beyond the request head is read."""
        if address_in(address, self.deny) or not address_in(address, self.allow):
            raise Forbidden(f"client {address} is not allowed to use this proxy")

    def check_auth(self, header: str | None) -> None:
        if self.auth is not None and not self.auth.check(header):
            raise ProxyAuthRequired("proxy authentication required",
                                    headers=[("Proxy-Authenticate", self.auth.challenge)])

    def check_port(self, port: int) -> None:
        """Squid's Safe_ports: forward-mode requests only to these destination ports."""
        if not any(low <= port <= high for low, high in self.ports):
            raise Forbidden(f"port {port} is not an allowed destination port")

    def check_destination(self, address: str, port: int) -> None:
        """Refuse the proxy's own listeners (a loop) and internal addresses unless allow-listed."""
        ip = _ip(address)
        text = str(ip)
        for host, listen_port in self.listeners:
            if port == listen_port and (host == text or (_ip(host).is_unspecified and
                                                         (text in self.own_ips or ip.is_loopback))):
                raise LoopDetected(f"{text}:{port} is this proxy")
        if any(ip in network for network in self.destinations):
            return
        # not is_global: also shared address space (100.64/10), documentation and benchmark nets
        if (not ip.is_global or ip.is_loopback or ip.is_private or ip.is_link_local
                or ip.is_unspecified or ip.is_multicast or ip.is_reserved or text in self.own_ips):
            raise Forbidden(f"destination {text} is an internal address")
