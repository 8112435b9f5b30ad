"""The error log: levels, and a logrotate-style reopen on USR1 in the master and the workers."""

from __future__ import annotations

import os
import signal

from support.rawhttp import build, exchange
from support.wait import free_port, wait_until


def test_error_log_is_reopened_on_usr1_by_master_and_workers(make_proxy, tmp_path):
    error_log = tmp_path / "error.log"
    proxy = make_proxy({"log": {"error_log": str(error_log), "level": "info"}, "server": {"workers": 2}})
    wait_until(lambda: error_log.exists() and "spawned" in error_log.read_text(), 10, "the master's first lines")
    rotated = error_log.with_name("error.log.1")
    os.rename(error_log, rotated)
    proxy.signal(signal.SIGUSR1)
    wait_until(error_log.exists, 10, "the master to create a new error log")

    proxy.signal(signal.SIGTTIN)              # the master logs it
    refused = free_port()                     # nothing listens there: the worker logs the 502
    for _ in range(2):                        # (either worker may answer; both reopened)
        response, _ = exchange(proxy.port, build("GET", f"http://127.0.0.1:{refused}/x"))
        assert response.status == 502

    def both_wrote_anew() -> bool:
        text = error_log.read_text()
        return "TTIN" in text and "-> 502" in text
    wait_until(both_wrote_anew, 10, "master and worker lines in the new file")
    assert "TTIN" not in rotated.read_text() and "-> 502" not in rotated.read_text()


def test_level_filters_the_error_log(make_proxy, tmp_path):
    error_log = tmp_path / "error.log"
    proxy = make_proxy({"log": {"error_log": str(error_log), "level": "warning"}})
    response, _ = exchange(proxy.port, build("GET", f"http://127.0.0.1:{free_port()}/x"))
    assert response.status == 502            # logged at info: below the level
    proxy.signal(signal.SIGTTIN)             # info too
    proxy.wait_workers(2)
    assert proxy.stop() == 0
    text = error_log.read_text() if error_log.exists() else ""
    assert "-> 502" not in text and "TTIN" not in text and "spawned" not in text
