"""CONNECT tunnels (RFC 9110 §9.3.6): a two-way byte copy between the client and a TCP peer.

One handler thread polls both sockets and copies whatever is readable to the other side; a
half-close (EOF from one side) is passed on with shutdown(SHUT_WR) and the tunnel ends when both
directions are closed, when it stays idle past its timeout, or when the worker stops.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Callable

__all__ = ["pump"]

_CHUNK = 65536


def pump(client: socket.socket, upstream: socket.socket, early: bytes, idle_timeout: float,
         stopping: Callable[[], bool]) -> int:
    """Copy bytes both ways until both sides are done; return the bytes sent to the client."""
    client.settimeout(idle_timeout)
    upstream.settimeout(idle_timeout)
    if early:
        upstream.sendall(early)
    peers = {client.fileno(): (client, upstream), upstream.fileno(): (upstream, client)}
    poller = select.poll()
    for fd in peers:
        poller.register(fd, select.POLLIN)
    to_client, last = 0, time.monotonic()
    while peers and not stopping():
        events = poller.poll(1000)
        if not events:
            if time.monotonic() - last > idle_timeout:
                break
            continue
        last = time.monotonic()
        for fd, _ in events:
            source, sink = peers[fd]
            moved = _copy(source, sink)
            if moved < 0:
                poller.unregister(fd)
                del peers[fd]
            elif sink is client:
                to_client += moved
    return to_client


def _copy(source: socket.socket, sink: socket.socket) -> int:
    """Move one read's worth; -1 when the source is finished (EOF passed on as a half-close)."""
    try:
        data = source.recv(_CHUNK)
    except OSError:
        data = b""
    try:
        if data:
            sink.sendall(data)
            return len(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    return -1
