"""The admin listener: /healthz, routing and refusals, slow clients, the allow-list, reload rebinding.

Contract: /healthz is 200 while a worker is ready and 503 with the reason when none is; the master
answers admin requests from its own loop, so an idle, slow or hostile admin client never delays
it (5 s per connection, 32 connections at most); a client outside `[admin] allow` gets a 403; a
reload rebinds the admin listener only when its address changed, all or nothing with the proxy
listeners (an address in use fails the reload and keeps everything as it was).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time

from prefork_proxy.admin import DEADLINE, MAX_CLIENTS
from support.proxy import ProxyProcess, http_probe
from support.rawhttp import RawClient
from support.wait import free_port, port_refuses, wait_until

from .helpers import Admin, admin_config, run_cli, traffic


def test_healthz_is_200_with_ready_workers(ops_proxy):
    _, admin, _ = ops_proxy
    assert admin.healthz() == (200, "ok: 2 of 2 workers ready\n")
    status, headers, body = admin.get("/healthz", method="HEAD")
    assert (status, body, headers["content-length"]) == (200, b"", "25")


def test_healthz_is_503_with_the_reason_when_no_worker_is_ready(make_proxy, origin):
    # Stopped workers send no heartbeat; heartbeat_timeout is long, so the master does not replace them.
    proxy = make_proxy(admin_config(workers=2, server={"heartbeat_timeout": 120.0}))
    admin = Admin(proxy)
    pids = proxy.worker_pids()
    wait_until(lambda: admin.healthz()[1] == "ok: 2 of 2 workers ready\n", 10, "both workers ready")
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        status, reason = wait_until(lambda: (r := admin.healthz())[0] == 503 and r, 10, "/healthz 503")
        assert reason == "unavailable: no worker is ready: 2 silent (silent = no heartbeat for over 2s)\n"
        doc = admin.stats()
        assert doc["health"]["ok"] is False and "2 silent" in doc["health"]["reason"]
        assert all(w["heartbeat_age_seconds"] > 2 for w in doc["workers"])
        assert "prefork_proxy_up 0.0" in admin.metrics()
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    wait_until(lambda: admin.healthz()[0] == 200, 10, "/healthz 200 again")
    assert proxy.worker_pids() == pids, "the stopped workers were not replaced"
    traffic(proxy, origin, 1)


def test_routes_and_refusals(ops_proxy):
    _, admin, _ = ops_proxy
    status, headers, body = admin.get("/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert b"/stats" in body and "connect-src 'self'" in headers["content-security-policy"]
    assert admin.get("/stats?anything=1")[0] == 200
    assert admin.get("/nope")[0] == 404
    status, headers, _ = admin.get("/stats", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    for status, _, _ in (admin.get("/stats"), admin.get("/")):
        assert status == 200
    with RawClient(admin.address[1]) as client:
        response = client.request(b"GET /stats HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
        assert response.status == 431
    with RawClient(admin.address[1]) as client:
        assert client.request(b"NOT HTTP AT ALL\r\n\r\n", method="GET").status == 400


def test_idle_and_slow_clients_never_delay_the_master(ops_proxy):
    proxy, admin, origin = ops_proxy
    idle = [socket.create_connection(admin.address, timeout=10) for _ in range(5)]
    slow = socket.create_connection(admin.address, timeout=10)
    try:
        slow.sendall(b"GET /stats HTTP/1.1\r\nHo")        # half a request head, then nothing
        for _ in range(5):
            started = time.monotonic()
            assert admin.healthz()[0] == 200
            assert time.monotonic() - started < 0.5
        traffic(proxy, origin, 2)
        wait_until(lambda: all(_closed(sock) for sock in [*idle, slow]), DEADLINE + 3,
                   f"the admin listener to drop silent clients after {DEADLINE}s")
    finally:
        for sock in [*idle, slow]:
            sock.close()


def test_connections_over_the_cap_are_dropped_and_the_cap_recovers(ops_proxy):
    _, admin, _ = ops_proxy
    held = [socket.create_connection(admin.address, timeout=10) for _ in range(MAX_CLIENTS)]
    try:
        extra = socket.create_connection(admin.address, timeout=10)
        try:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert wait_until(lambda: _closed(extra, 0.2), 3, "the extra connection dropped")
        finally:
            extra.close()
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: admin.healthz()[0] == 200, DEADLINE + 3, "the admin listener answers again")


def test_clients_outside_the_allow_list_get_403(make_proxy, origin):
    proxy = make_proxy(admin_config(workers=1, admin={"allow": ["10.0.0.0/8", "::1/128"]}))
    admin = Admin(proxy)
    for path in ("/stats", "/metrics", "/healthz", "/"):
        status, _, body = admin.get(path)
        assert (status, body) == (403, b"127.0.0.1 is not in admin.allow\n")
    traffic(proxy, origin, 1)
    proxy.reload({"admin": {"allow": ["127.0.0.1/32"]}})        # same address: only the list changes
    wait_until(lambda: admin.get("/healthz")[0] == 200, 10, "the new allow-list")


def test_a_bad_allow_entry_is_a_config_error(tmp_path):
    proxy = ProxyProcess(tmp_path, {"admin": {"bind": "127.0.0.1:1", "allow": ["127.0.0.0/8", "localhost"]}})
    result = run_cli("-c", str(proxy.config_path), "--check")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"prefork_proxy: {proxy.config_path}: admin.allow: "
                                     "'localhost' is not an address or CIDR network")


def test_reload_rebinds_the_admin_listener_all_or_nothing(make_proxy, origin):
    proxy = make_proxy(admin_config(workers=1))
    admin = Admin(proxy)
    first = admin.address[1]
    second = free_port()
    proxy.reload({"admin": {"bind": f"127.0.0.1:{second}"}})
    wait_until(lambda: _stats_at(admin, second)["master"]["generation"] == 2, 10,
               "the admin listener on its new address")
    assert port_refuses(first), "the old admin address still listens"

    busy = socket.create_server(("127.0.0.1", 0))
    new_proxy_port = free_port()
    try:
        proxy.reload({"server": {"bind": f"127.0.0.1:{new_proxy_port}"},
                      "admin": {"bind": "127.0.0.1:%d" % busy.getsockname()[1]}})
        doc = wait_until(lambda: (d := _stats_at(admin, second)) and d["master"]["reloads"]["count"] == 2 and d,
                         10, "the failed reload reported")
    finally:
        busy.close()
    reloads = doc["master"]["reloads"]
    assert reloads["last_ok"] is False and "admin.bind: cannot listen on" in reloads["last_error"]
    assert doc["master"]["generation"] == 2
    assert port_refuses(new_proxy_port), "a listener of the failed reload was left open"
    assert http_probe("127.0.0.1", proxy.port)
    metrics = admin.get("/metrics", port=second)[2].decode()
    assert "prefork_proxy_config_last_reload_successful 0.0" in metrics

    proxy.reload({"server": {"bind": f"127.0.0.1:{proxy.port}"}, "admin": {"bind": ""}})
    wait_until(lambda: port_refuses(second), 10, "the admin listener switched off")
    assert http_probe("127.0.0.1", proxy.port)


def _stats_at(admin: Admin, port: int) -> dict:
    status, _, body = admin.get("/stats", port=port)
    assert status == 200, body
    return json.loads(body)


def _closed(sock: socket.socket, wait: float = 0.05) -> bool:
    sock.settimeout(wait)
    try:
        return sock.recv(65536) == b""
    except socket.timeout:
        return False
    except OSError:
        return True
