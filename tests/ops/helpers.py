"""Helpers of the operations tests: a proxy with its admin listener on, and admin requests.

`admin_config()` is a config fragment with `[admin] bind` on a free loopback port; `Admin(proxy)`
reads that address back and fetches /stats, /metrics, /healthz and / with a bounded timeout.
`traffic()` sends requests through the proxy, one connection each, and checks every answer.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys

from support.proxy import REPO, ProxyProcess
from support.rawhttp import build, exchange
from support.wait import free_port, wait_stable, wait_until

ADMIN_TIMEOUT = 5.0


def admin_config(workers: int = 2, **sections: dict) -> dict:
    config = {"server": {"workers": workers, "threads": 4},
              "admin": {"bind": f"127.0.0.1:{free_port()}"}}
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


class Admin:
    """The admin listener of a ProxyProcess (address from its current config)."""

    def __init__(self, proxy: ProxyProcess) -> None:
        self.proxy = proxy

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.proxy.config["admin"]["bind"].rpartition(":")
        return host, int(port)

    @property
    def url(self) -> str:
        return "http://%s:%d" % self.address

    def get(self, path: str, method: str = "GET", port: int | None = None) -> tuple[int, dict, bytes]:
        host, default = self.address
        conn = http.client.HTTPConnection(host, port or default, timeout=ADMIN_TIMEOUT)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def stats(self) -> dict:
        status, headers, body = self.get("/stats")
        assert status == 200, body
        assert headers["content-type"] == "application/json"
        return json.loads(body)

    def metrics(self) -> str:
        status, headers, body = self.get("/metrics")
        assert status == 200, body
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        return body.decode()

    def healthz(self) -> tuple[int, str]:
        status, _, body = self.get("/healthz")
        return status, body.decode()

    def requests_total(self) -> int:
        return self.stats()["totals"]["requests"]

    def settled_requests(self) -> int:
        """The request total once nothing is in flight (a counter moves just after its response)."""
        return wait_stable(self.requests_total, quiet=0.3, timeout=10, message="the request total")

    def wait_requests(self, expected: int) -> int:
        wait_until(lambda: self.requests_total() >= expected, 10, f"{expected} requests counted")
        return self.settled_requests()


def traffic(proxy: ProxyProcess, origin, count: int, path: str = "/echo") -> None:
    for index in range(count):
        response, _ = exchange(proxy.port, build("GET", origin.url(f"{path}?n={index}")))
        assert response.status == 200, response.body[:200]


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prefork_proxy", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
