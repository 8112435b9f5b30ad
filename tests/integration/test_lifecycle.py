"""The master's process model, from outside: signals, respawn, reload, liveness, stop.

Every test starts its own proxy (these tests change its state) and waits for conditions with
bounded timeouts. Contract: a killed worker is replaced within ~1 s; a SIGKILLed master's workers
exit within 2 s; HUP is transactional (a broken file keeps the old config and workers; a new bind
address is opened before old ones close); TERM lets in-flight requests finish; TTIN/TTOU change
the worker count by one; USR1 reopens the logs.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest

from support.proxy import http_probe, is_gone
from support.rawhttp import RawClient, build, exchange
from support.wait import free_port, port_refuses, wait_until

REPLACE_TIMEOUT = 1.5      # "a killed worker is replaced within ~1 s", with a margin for a busy CI box
ORPHAN_TIMEOUT = 2.0       # workers of a SIGKILLed master are gone within 2 s
RELOAD_TIMEOUT = 10.0


def ok(proxy, origin, case: str, port: int | None = None) -> object:
    response, _ = exchange(port or proxy.port, build("GET", origin.url(f"/echo?case={case}")))
    assert response.status == 200, f"{case}: {response.status} {response.body[:200]!r}"
    return response


def via_of(response) -> str:
    return (response.header("Via") or "").split(",")[-1].strip()


class InFlight(threading.Thread):
    """One request sent on its own connection and read in a thread: .response or .error afterwards."""

    def __init__(self, port: int, request: bytes, timeout: float = 30.0) -> None:
        super().__init__(daemon=True)
        self.port, self.request, self.timeout = port, request, timeout
        self.response, self.error = None, None
        self.start()

    def run(self) -> None:
        try:
            with RawClient(self.port, timeout=self.timeout) as client:
                self.response = client.request(self.request)
        except Exception as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def result(self, timeout: float):
        self.join(timeout)
        assert not self.is_alive(), f"the request did not finish within {timeout}s"
        return self.response


# -- respawn ------------------------------------------------------------------------------------------
def test_killed_worker_is_replaced_within_a_second(make_proxy, origin):
    proxy = make_proxy({"server": {"workers": 2}})
    before = proxy.worker_pids()
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    started = time.monotonic()
    after = proxy.wait_workers(2, timeout=REPLACE_TIMEOUT, exclude={victim})
    elapsed = time.monotonic() - started
    assert before[1] in after, "the surviving worker was replaced too"
    assert elapsed < REPLACE_TIMEOUT
    for number in range(4):
        ok(proxy, origin, f"after-kill-{number}")


def test_repeated_worker_deaths_do_not_stop_the_master(make_proxy, origin):
    proxy = make_proxy({"server": {"workers": 1}})
    for _ in range(3):
        (victim,) = proxy.worker_pids()
        os.kill(victim, signal.SIGKILL)
        proxy.wait_workers(1, timeout=10, exclude={victim})  # backoff may slow it; it must not stop
    assert proxy.alive()
    ok(proxy, origin, "after-flapping")


# -- reload -------------------------------------------------------------------------------------------
def test_hup_changes_the_worker_count(make_proxy, origin):
    proxy = make_proxy({"server": {"workers": 1}})
    proxy.reload({"server": {"workers": 2}})
    proxy.wait_workers(2, timeout=RELOAD_TIMEOUT)
    ok(proxy, origin, "two-workers")
    proxy.reload({"server": {"workers": 1}})
    proxy.wait_workers(1, timeout=RELOAD_TIMEOUT)
    ok(proxy, origin, "one-worker")
    assert proxy.alive()


def test_hup_applies_new_settings(make_proxy, origin):
    proxy = make_proxy({"server": {"via_pseudonym": "generation-one"}})
    assert via_of(ok(proxy, origin, "gen1")) == "1.1 generation-one"
    proxy.reload({"server": {"via_pseudonym": "generation-two"}})
    wait_until(lambda: via_of(ok(proxy, origin, "gen2")) == "1.1 generation-two", RELOAD_TIMEOUT,
               "responses from the new generation")
    proxy.wait_workers(1, timeout=RELOAD_TIMEOUT)  # the old generation is retired


def test_reload_drops_no_request(make_proxy, origin):
    proxy = make_proxy({"server": {"workers": 2, "via_pseudonym": "before-reload"}})
    failures, seen, stop = [], set(), threading.Event()

    def hammer() -> None:
        number = 0
        while not stop.is_set():
            number += 1
            try:
                response, _ = exchange(proxy.port, build("GET", origin.url(f"/echo?case=hammer&i={number}")),
                                       close_wait=0, timeout=5)
                if response.status != 200:
                    failures.append(response.status)
                seen.add(via_of(response))
            except Exception as error:  # noqa: BLE001 - counted as a dropped request
                failures.append(repr(error))

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    try:
        wait_until(lambda: seen, 5, "a first answer")
        proxy.reload({"server": {"via_pseudonym": "after-reload"}})
        wait_until(lambda: "1.1 after-reload" in seen, RELOAD_TIMEOUT, "the new generation answering")
        proxy.wait_workers(2, timeout=RELOAD_TIMEOUT)
    finally:
        stop.set()
        thread.join(10)
    assert failures == [], f"requests failed during the reload: {failures[:5]}"


@pytest.mark.parametrize("case", ["bad-toml", "wrong-type", "unknown-key"])
def test_hup_with_a_broken_file_keeps_the_old_config_and_workers(make_proxy, origin, case):
    proxy = make_proxy({"server": {"workers": 2, "via_pseudonym": "old-config"}})
    workers = proxy.worker_pids()
    text = {"bad-toml": "[server\nworkers = 2\n",  # the rest of each file is the running config
            "wrong-type": _toml(proxy, {"server": {"workers": "three"}}),
            "unknown-key": _toml(proxy, {"server": {"wrokers": 3}})}[case]
    log_before = len(proxy.stderr_text())
    proxy.reload(text=text)
    error = f"{proxy.config_path}: "  # a ConfigError line: "FILE: KEY: message" or "FILE: not valid TOML..."
    wait_until(lambda: error in proxy.stderr_text()[log_before:], 5,
               "the failed reload to be logged as FILE: KEY: message")
    logged = proxy.stderr_text()[log_before:]
    if case != "bad-toml":
        assert f"{error}server.w" in logged, f"the reload error does not name the key: {logged!r}"
    assert proxy.alive()
    assert via_of(ok(proxy, origin, f"broken-{case}")) == "1.1 old-config"
    assert proxy.worker_pids() == workers, "a failed reload replaced the workers"
    # the master still reloads a good file afterwards (proxy.config is still the good one)
    proxy.reload({"server": {"via_pseudonym": "new-config"}})
    wait_until(lambda: via_of(ok(proxy, origin, "fixed")) == "1.1 new-config", RELOAD_TIMEOUT,
               "the fixed file to take effect")


def _toml(proxy, changes: dict) -> str:
    from support.proxy import dump_toml, merge
    return dump_toml(merge(proxy.config, changes))


def test_hup_with_a_new_bind_address(make_proxy, origin):
    """The new address is opened before the old one closes: at every moment one of them answers."""
    proxy = make_proxy()
    old, new = proxy.port, free_port()
    samples, stop = [], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            samples.append((http_probe("127.0.0.1", old, timeout=1), http_probe("127.0.0.1", new, timeout=1)))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        proxy.reload({"server": {"bind": f"127.0.0.1:{new}"}})
        wait_until(lambda: http_probe("127.0.0.1", new), RELOAD_TIMEOUT, f"the new port {new} to answer")
        ok(proxy, origin, "new-port", port=new)
        wait_until(lambda: port_refuses(old), RELOAD_TIMEOUT, f"the old port {old} to be closed")
    finally:
        stop.set()
        watcher.join(5)
    ok(proxy, origin, "new-port-again", port=new)
    gaps = [index for index, (old_ok, new_ok) in enumerate(samples) if not old_ok and not new_ok]
    assert samples and not gaps, f"neither address answered at {len(gaps)} of {len(samples)} samples"


def test_hup_keeps_an_unchanged_listener_and_adds_one(make_proxy, origin):
    proxy = make_proxy()
    kept, added = proxy.port, free_port()
    proxy.reload({"server": {"bind": [f"127.0.0.1:{kept}", f"127.0.0.1:{added}"]}})
    wait_until(lambda: http_probe("127.0.0.1", added), RELOAD_TIMEOUT, f"the added port {added} to answer")
    ok(proxy, origin, "kept-port", port=kept)
    ok(proxy, origin, "added-port", port=added)


def test_hup_to_an_address_in_use_keeps_serving(make_proxy, origin):
    proxy = make_proxy({"server": {"workers": 2}})
    workers = proxy.worker_pids()
    log_before = len(proxy.stderr_text())
    proxy.reload({"server": {"bind": f"127.0.0.1:{origin.port}"}})  # the origin listens there
    wait_until(lambda: str(origin.port) in proxy.stderr_text()[log_before:], 5,
               "the failed bind to be logged with the address")
    assert proxy.alive()
    ok(proxy, origin, "bind-in-use")
    assert proxy.worker_pids() == workers, "a failed reload replaced the workers"


# -- stop ---------------------------------------------------------------------------------------------
def test_term_lets_an_in_flight_request_finish_then_exits_0(make_proxy, origin):
    proxy = make_proxy({"server": {"graceful_timeout": 10.0}})
    slow = InFlight(proxy.port, build("GET", origin.url("/echo?case=slow&delay=2")))
    wait_until(lambda: origin.requests("/echo"), 5, "the origin to receive the slow request")
    proxy.signal(signal.SIGTERM)
    response = slow.result(15)
    assert slow.error is None, slow.error
    assert response.status == 200 and response.json()["target"] == "/echo?case=slow&delay=2"
    assert proxy.wait_exit(12) == 0
    assert port_refuses(proxy.port)


def test_term_when_idle_exits_0_quickly(make_proxy, origin):
    proxy = make_proxy({"server": {"workers": 2}})
    ok(proxy, origin, "before-term")
    started = time.monotonic()
    proxy.signal(signal.SIGTERM)
    assert proxy.wait_exit(5) == 0
    assert time.monotonic() - started < 5
    assert not proxy.leftovers(timeout=2)


def test_term_closes_idle_keep_alive_connections(make_proxy, origin):
    proxy = make_proxy({"server": {"keepalive_timeout": 60.0}})
    with RawClient(proxy.port) as client:
        assert client.request(build("GET", origin.url("/echo?case=idle-ka"))).status == 200
        proxy.signal(signal.SIGTERM)
        assert client.closed_by_peer(5), "an idle keep-alive connection kept the worker alive"
    assert proxy.wait_exit(5) == 0


def test_graceful_timeout_bounds_the_stop(make_proxy, origin):
    proxy = make_proxy({"server": {"graceful_timeout": 1.0}})
    hung = InFlight(proxy.port, build("GET", origin.url("/hang?case=term")))
    wait_until(lambda: origin.requests("/hang"), 5, "the origin to receive the hanging request")
    started = time.monotonic()
    proxy.signal(signal.SIGTERM)
    assert proxy.wait_exit(6) is not None, "the master outlived graceful_timeout by 5 s"
    assert time.monotonic() - started < 6
    assert not proxy.leftovers(timeout=2)
    hung.result(5)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGQUIT], ids=["INT", "QUIT"])
def test_fast_stop(make_proxy, origin, signum):
    proxy = make_proxy({"server": {"workers": 2, "graceful_timeout": 30.0}})
    hung = InFlight(proxy.port, build("GET", origin.url("/hang?case=fast")))
    wait_until(lambda: origin.requests("/hang"), 5, "the origin to receive the hanging request")
    started = time.monotonic()
    proxy.signal(signum)
    assert proxy.wait_exit(5) is not None, "a fast stop waited for the in-flight request"
    assert time.monotonic() - started < 5
    assert not proxy.leftovers(timeout=2)
    hung.result(5)
    assert hung.error is not None or hung.response.status >= 500, "a cut request cannot have succeeded"


def test_workers_exit_when_the_master_is_killed(make_proxy, origin):
    proxy = make_proxy({"server": {"workers": 2}})
    workers = [psutil.Process(pid) for pid in proxy.worker_pids()]
    os.kill(proxy.master_pid, signal.SIGKILL)
    proxy.wait_exit(5)
    started = time.monotonic()
    wait_until(lambda: all(is_gone(worker) for worker in workers), ORPHAN_TIMEOUT,
               "the orphaned workers to exit")
    assert time.monotonic() - started <= ORPHAN_TIMEOUT
    wait_until(lambda: port_refuses(proxy.port), 2, "nothing to serve on the port")


# -- worker count ---------------------------------------------------------------------------------------
def test_ttin_and_ttou(make_proxy, origin):
    proxy = make_proxy({"server": {"workers": 1}})
    proxy.signal(signal.SIGTTIN)
    proxy.wait_workers(2, timeout=5)
    proxy.signal(signal.SIGTTIN)
    three = proxy.wait_workers(3, timeout=5)
    proxy.signal(signal.SIGTTOU)
    two = proxy.wait_workers(2, timeout=10)
    assert set(two) < set(three), "TTOU must retire one worker, not replace them"
    ok(proxy, origin, "after-ttou")


# -- recycling, pidfile, logs -----------------------------------------------------------------------------
def test_max_requests_recycles_the_worker_without_failing_a_request(make_proxy, origin):
    proxy = make_proxy({"server": {"workers": 1, "max_requests": 3, "max_requests_jitter": 0}})
    (first,) = proxy.worker_pids()
    for number in range(8):
        response, _ = exchange(proxy.port, build("GET", origin.url(f"/echo?case=recycle&i={number}"),
                                                 [("Connection", "close")]))
        assert response.status == 200
    proxy.wait_workers(1, timeout=5, exclude={first})


def test_pidfile_holds_the_master_pid(make_proxy, tmp_path):
    pidfile = tmp_path / "proxy.pid"
    proxy = make_proxy({"server": {"pidfile": str(pidfile)}})
    assert pidfile.read_text().strip() == str(proxy.master_pid)


def test_usr1_reopens_the_access_log(make_proxy, origin):
    """logrotate-style: rename, USR1, and new lines go to a new file (created now or at the next
    flush); no line is lost or written twice around the switch."""
    proxy = make_proxy()
    ok(proxy, origin, "before-rotate")
    wait_until(lambda: "case=before-rotate" in proxy.access_log.read_text(), 5, "the first line to be flushed")
    rotated = proxy.access_log.with_name(proxy.access_log.name + ".1")
    os.rename(proxy.access_log, rotated)
    proxy.signal(signal.SIGUSR1)
    sent = []

    def new_file_has_our_lines() -> bool:
        sent.append(f"case=after-rotate-{len(sent)}&")
        ok(proxy, origin, sent[-1])
        return proxy.access_log.exists() and "case=after-rotate" in proxy.access_log.read_text()

    wait_until(new_file_has_our_lines, 10, "lines after USR1 to reach a new file", interval=0.2)
    assert proxy.stop() == 0
    old_text, new_text = rotated.read_text(), proxy.access_log.read_text()
    assert "case=before-rotate" in old_text and "case=before-rotate" not in new_text
    for marker in sent:
        assert (old_text + new_text).count(marker) == 1, f"{marker} logged {(old_text + new_text).count(marker)} times"
    assert sent[-1] in new_text


# -- liveness ---------------------------------------------------------------------------------------------
def test_a_stuck_worker_is_killed_and_replaced(make_proxy, origin):
    proxy = make_proxy({"server": {"workers": 1, "heartbeat_timeout": 1.0}})
    (stuck,) = proxy.worker_pids()
    process = psutil.Process(stuck)
    process.suspend()  # SIGSTOP: its heartbeat stops; only SIGKILL can end a stopped process
    try:
        proxy.wait_workers(1, timeout=8, exclude={stuck})
    finally:
        if not is_gone(process):
            process.resume()
    ok(proxy, origin, "after-stuck")


def test_a_request_past_the_deadline_gets_its_worker_replaced(make_proxy, origin):
    proxy = make_proxy({"server": {"workers": 1, "request_deadline": 1.5},
                        "upstream": {"read_timeout": 60.0}})
    (worker,) = proxy.worker_pids()
    hung = InFlight(proxy.port, build("GET", origin.url("/hang?case=deadline")))
    wait_until(lambda: origin.requests("/hang"), 5, "the origin to receive the hanging request")
    proxy.wait_workers(1, timeout=1.5 + 6, exclude={worker})
    hung.result(5)
    assert hung.error is not None or hung.response.status >= 500, "the killed request cannot have succeeded"
    ok(proxy, origin, "after-deadline")
