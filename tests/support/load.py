"""Background load for fault tests: N threads calling `_run(number)` until the `with` block ends."""

from __future__ import annotations

import threading

__all__ = ["BackgroundLoad"]


class BackgroundLoad:
    """Subclasses implement `_run(number)`, looping while `not self._stop.is_set()`."""

    def __init__(self, threads: int) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _run(self, number: int) -> None:
        raise NotImplementedError
