"""Sampling a process's resident memory while a test runs (psutil, in a thread)."""

from __future__ import annotations

import threading

import psutil


class RssSampler:
    """`with RssSampler(pid) as rss: ...` then rss.peak, rss.baseline, rss.growth (bytes)."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"rss-{pid}")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
                self.samples += 1
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def describe(self) -> str:
        mib = 1 << 20
        return (f"RSS baseline {self.baseline / mib:.1f} MiB, peak {self.peak / mib:.1f} MiB, "
                f"growth {self.growth / mib:.1f} MiB over {self.samples} samples")
