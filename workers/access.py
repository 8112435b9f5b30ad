"""Address lists: CIDR networks parsed once, membership checked per request."""

from __future__ import annotations

import ipaddress

__all__ = ["networks", "address_in"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(texts: list[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(text, strict=False) for text in texts)


def address_in(address: str, allowed: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped             # ::ffff:127.0.0.1 is 127.0.0.1
    return any(ip in network for network in allowed)
