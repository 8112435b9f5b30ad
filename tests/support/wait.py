"""Waiting for conditions, never for fixed times."""

from __future__ import annotations

import os
import socket
import time
from typing import Callable, TypeVar

import pytest

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, message: str = "",
               interval: float = 0.02) -> T:
    """Poll `condition` until it returns a truthy value and return that value.

    An exception raised by the condition counts as "not yet" (and is shown if time runs out).
    Raises AssertionError naming `message` and the last value after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = condition()
        except Exception as error:  # noqa: BLE001 - "not yet", reported below
            value, last = None, error
        else:
            last = value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or condition!r}"
                                 f" (last: {last!r})")
        time.sleep(interval)


def wait_stable(read: Callable[[], T], quiet: float, timeout: float, message: str = "") -> T:
    """Wait until `read()` returns the same value for `quiet` seconds; return it."""
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.02)
        current = read()
        if current != value:
            value, since = current, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return value
    raise AssertionError(f"timed out after {timeout}s waiting for {message or read!r} to settle"
                         f" (last: {value!r})")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_refuses(port: int, host: str = "127.0.0.1") -> bool:
    """True when a TCP connect to host:port is refused (nothing listening)."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(available: bool, reason: str) -> None:
    """A missing dependency: skip locally with the reason, fail in CI (CI=true)."""
    if available:
        return
    if in_ci():
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)
