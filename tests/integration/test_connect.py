"""CONNECT: a byte tunnel to allowed ports only (`server.connect_ports`)."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import threading

from support.pattern import iter_pattern, pattern_sha256
from support.rawhttp import RawClient, build, exchange
from support.wait import free_port, require


def open_tunnel(proxy, port: int) -> tuple[RawClient, object]:
    client = RawClient(proxy.port)
    response = client.request(build("CONNECT", f"127.0.0.1:{port}"), method="CONNECT")
    return client, response


def test_tunnel_to_the_echo_server(make_proxy, echo_server):
    proxy = make_proxy({"server": {"connect_ports": [echo_server.port]}})
    client, response = open_tunnel(proxy, echo_server.port)
    with client:
        assert response.status == 200
        client.send(b"ping\n")
        assert client.reader.read_until(b"\n") == b"ping\n"
        size, received = 4_000_000, hashlib.sha256()

        def send_all() -> None:
            client.send_body(iter_pattern(size, 16_384))

        sender = threading.Thread(target=send_all, daemon=True)  # send and receive at once: no deadlock
        sender.start()
        assert client.reader.read_exact(size, received.update) == size
        sender.join(10)
        assert received.hexdigest() == pattern_sha256(size)
        client.sock.shutdown(socket.SHUT_WR)  # the echo server half-closes back, the tunnel closes
        assert client.closed_by_peer(5)
    assert echo_server.connections == 1


def test_connect_to_a_port_not_allowed_is_403(make_proxy, echo_server, origin):
    proxy = make_proxy({"server": {"connect_ports": [443]}})
    response, _ = exchange(proxy.port, build("CONNECT", f"127.0.0.1:{echo_server.port}"), method="CONNECT")
    assert response.status == 403
    assert (response.header("Content-Type") or "").startswith("text/plain")
    assert echo_server.connections == 0


def test_connect_to_a_closed_port_is_502(make_proxy):
    closed = free_port()
    proxy = make_proxy({"server": {"connect_ports": [closed]}})
    response, _ = exchange(proxy.port, build("CONNECT", f"127.0.0.1:{closed}"), method="CONNECT")
    assert response.status == 502


def test_curl_through_a_connect_tunnel(make_proxy, origin):
    require(shutil.which("curl") is not None, "curl is not installed (tools/sysdeps.sh installs it)")
    proxy = make_proxy({"server": {"connect_ports": [origin.port]}})
    result = subprocess.run(["curl", "-sS", "--max-time", "15", "-p", "-x", proxy.url, "--noproxy", "",
                             origin.url("/echo?case=tunnel")], capture_output=True, timeout=20,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert b'"target": "/echo?case=tunnel"' in result.stdout
    seen = origin.requests("/echo")
    assert len(seen) == 1 and not seen[0].has("Via"), "the request was proxied, not tunnelled"
