"""Process faults (issue 5, "Faults survived, nothing lost"): a worker SIGKILLed mid-request, a
worker killed while it stores a large response, TERM under load, the master SIGKILLed, and ten
HUP reloads while `wrk` runs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time

import psutil

from support.proxy import is_gone
from support.rawhttp import PeerClosed, RawClient, build
from support.wait import require, wait_until

from .helpers import MiB, cache_config, cache_params, connect_to_worker, get, mark, reached, scripted, stored_keys

REPLACED_WITHIN = 1.0


class InFlight(threading.Thread):
    """One request on its own connection, read in a thread: .response or .error afterwards."""

    def __init__(self, port: int, request: bytes, client: RawClient | None = None) -> None:
        super().__init__(daemon=True)
        self.port, self.request, self.client = port, request, client
        self.response, self.error = None, None
        self.start()

    def run(self) -> None:
        try:
            client = self.client or RawClient(self.port, timeout=15)
            with client:
                self.response = client.request(self.request)
        except Exception as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def result(self, timeout: float = 15.0):
        self.join(timeout)
        assert not self.is_alive(), f"the request did not finish within {timeout}s"
        return self.response


def test_worker_killed_mid_request_is_replaced_and_the_others_finish(make_proxy, origin):
    proxy = make_proxy({"server": {"workers": 2}})
    token = mark("killed")
    pinned = connect_to_worker(proxy)
    victim, survivor = sorted(pinned)
    flights = {pid: InFlight(proxy.port, build("GET", origin.url(f"/echo?delay=1.0&m={token}-{pid}")), client)
               for pid, client in pinned.items()}
    wait_until(lambda: len(reached(origin, token)) == 2, 5, "both requests at the origin")
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    workers = proxy.wait_workers(2, timeout=5, exclude={victim})
    replaced = time.monotonic() - killed
    assert survivor in workers, "the other worker was replaced too"
    response = flights[survivor].result()
    assert (response.status, response.complete) == (200, True), flights[survivor].error
    flights[victim].result()
    assert flights[victim].response is None and isinstance(flights[victim].error, (PeerClosed, OSError))
    assert replaced < REPLACED_WITHIN, f"replaced after {replaced:.2f}s"
    assert get(proxy.port, origin.url(f"/echo?m={token}-after")).status == 200


def test_worker_killed_while_storing_leaves_nothing_visible(make_proxy, origin, own_redis):
    prefix = "hostile-storing"
    proxy = make_proxy(cache_config(own_redis.url, prefix))
    admin = own_redis.client()
    size, calls, release = 2 * MiB, [], threading.Event()
    cacheable = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: %d\r\n\r\n" % size

    def big(ex) -> None:
        calls.append(ex.request)
        if len(calls) == 1:
            scripted(cacheable, b"s" * (size // 2))(ex)        # half the body, then a stall
            while not release.is_set() and not ex.origin.stopping:
                release.wait(0.05)
            ex.close()
        else:
            scripted(cacheable, b"s" * size)(ex)

    origin.route("/big", big)
    url = origin.url("/big")
    reader = InFlight(proxy.port, build("GET", url))
    wait_until(lambda: stored_keys(admin, prefix, url, "body"), 5, "body chunks in Redis")
    (worker,) = proxy.worker_pids()
    os.kill(worker, signal.SIGKILL)
    release.set()
    partial = reader.result()
    assert partial is None or not partial.complete, "the client got a whole body from a killed worker"
    proxy.wait_workers(1, timeout=5, exclude={worker})
    assert stored_keys(admin, prefix, url) == [], "metadata of a half-stored body is visible"
    for key in stored_keys(admin, prefix, url, "body"):
        assert admin.ttl(key) > 0, f"{key!r} never expires"
    response = get(proxy.port, url, timeout=10)
    assert (response.status, response.complete, response.body_length) == (200, True, size)
    assert not cache_params(response).get("hit")
    assert len(calls) == 2


def test_term_under_load_fails_no_in_flight_request(make_proxy, origin):
    proxy = make_proxy({"server": {"workers": 2, "graceful_timeout": 5.0}})
    token = mark("term")
    flights = [InFlight(proxy.port, build("GET", origin.url(f"/echo?delay=1.0&m={token}-{n}"))) for n in range(8)]
    wait_until(lambda: len(reached(origin, token)) == len(flights), 5, "every request at the origin")
    proxy.signal(signal.SIGTERM)
    for flight in flights:
        response = flight.result()
        assert flight.error is None, repr(flight.error)
        assert (response.status, response.complete) == (200, True)
    assert proxy.wait_exit(10) == 0


def test_master_killed_takes_the_workers_down_within_2s(make_proxy, origin):
    proxy = make_proxy({"server": {"workers": 2}})
    workers = [psutil.Process(pid) for pid in proxy.worker_pids()]
    os.kill(proxy.master_pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: all(is_gone(worker) for worker in workers), 2.0, "the workers to exit")
    assert time.monotonic() - killed < 2.0
    proxy.process.wait(5)


# -- ten reloads under wrk -------------------------------------------------------------------------------
def _wrk_failures(output: str) -> dict[str, int]:
    """The failure counters wrk prints (it prints a line only when its counters are not zero)."""
    found = {"requests": int(re.search(r"(\d+) requests in", output).group(1))}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    found["non-2xx"] = int(non_2xx.group(1)) if non_2xx else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    for name, value in zip(("connect", "read", "write", "timeout"), errors.groups() if errors else (0,) * 4):
        found[name] = int(value)
    return found


def test_ten_reloads_during_a_wrk_run_fail_no_request(make_proxy, origin):
    require(shutil.which("wrk") is not None, "wrk is not installed (make sysdeps)")
    origin.route("/fast", scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    proxy = make_proxy({"server": {"workers": 2, "threads": 32, "graceful_timeout": 5.0},
                        "upstream": {"origin": origin.base}})
    wrk = subprocess.Popen(["wrk", "-t", "2", "-c", "16", "-d", "8s", f"{proxy.url}/fast"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: len(origin.requests("/fast")) > 100, 5, "wrk's requests flowing")
        for generation in range(10):
            name = f"generation-{generation}"
            proxy.reload({"server": {"via_pseudonym": name}})
            wait_until(lambda: name in (get(proxy.port, "/fast").header("Via") or ""), 5, f"{name} answering")
        assert wrk.poll() is None, "wrk ended before the ten reloads were done"
        output, _ = wrk.communicate(timeout=20)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    counts = _wrk_failures(output)
    assert counts["requests"] > 1000, output
    failed = {name: count for name, count in counts.items() if name != "requests" and count}
    assert not failed, f"failed requests during ten reloads: {failed}\n{output}"
