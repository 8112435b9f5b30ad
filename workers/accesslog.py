"""Access log (one line per request, buffered) and a log-file handler that reopens on USR1.

Lines are formatted by the handler thread and appended to a buffer under a short lock; the
worker's main loop flushes the buffer about once a second and on exit. `reopen()` after a
logrotate-style rename makes the next flush create and write the new file.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass

__all__ = ["AccessLog", "Record", "ReopeningFileHandler"]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(slots=True)
class Record:
    """What one request did, filled in as it goes."""

    client: str
    started: float = 0.0               # wall clock, for the log's timestamp
    method: str = "-"
    target: str = "-"
    version: str = "1.1"
    status: int = 0
    bytes_sent: int = 0
    referer: str = "-"
    user_agent: str = "-"
    duration: float = 0.0
    upstream_status: int = 0
    upstream_time: float = 0.0
    cache: str = "-"


def _clf_time(epoch: float) -> str:
    t = time.gmtime(epoch)
    return f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"


def _q(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def combined(r: Record) -> str:
    """NCSA combined format, then duration, upstream status and time, cache status."""
    upstream = str(r.upstream_status) if r.upstream_status else "-"
    return (f'{r.client} - - [{_clf_time(r.started)}] "{_q(r.method)} {_q(r.target)} HTTP/{r.version}" '
            f'{r.status} {r.bytes_sent} "{_q(r.referer)}" "{_q(r.user_agent)}" '
            f'rt={r.duration:.6f} us={upstream} ut={r.upstream_time:.6f} cs={r.cache}\n')


def json_line(r: Record) -> str:
    return json.dumps({
        "time": r.started, "client": r.client, "method": r.method, "target": r.target,
        "version": r.version, "status": r.status, "bytes_sent": r.bytes_sent, "referer": r.referer,
        "user_agent": r.user_agent, "duration": round(r.duration, 6),
        "upstream_status": r.upstream_status or None, "upstream_time": round(r.upstream_time, 6),
        "cache": r.cache,
    }, separators=(",", ":")) + "\n"


class AccessLog:
    """Buffered access log. path "-" = stdout, "" = off."""

    def __init__(self, path: str, fmt: str = "combined", max_buffer: int = 512) -> None:
        self.path = path
        self.enabled = bool(path)
        self._format = json_line if fmt == "json" else combined
        self._buffer: list[str] = []
        self._max = max_buffer
        self._lock = threading.Lock()
        self._file = None
        self._reopen = True

    def log(self, record: Record) -> None:
        if not self.enabled:
            return
        line = self._format(record)
        with self._lock:
            self._buffer.append(line)
            full = len(self._buffer) >= self._max
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._buffer = self._buffer, []
            if not lines:
                return
            try:
                self._target().write("".join(lines))
                self._file.flush()
            except OSError as error:
                logging.getLogger("prefork_proxy.access").error("access log %s: %s", self.path, error)

    def reopen(self) -> None:
        """Reopen the file at the next flush (USR1, after logrotate renamed it)."""
        with self._lock:
            self._reopen = True

    def close(self) -> None:
        self.flush()
        if self._file is not None and self._file is not sys.stdout:
            self._file.close()

    def _target(self):
        if self._reopen or self._file is None:
            self._reopen = False
            if self._file is not None and self._file is not sys.stdout:
                self._file.close()
            self._file = sys.stdout if self.path == "-" else open(self.path, "a", encoding="utf-8")
        return self._file


class ReopeningFileHandler(logging.StreamHandler):
    """A logging handler on a file path ("-" = stderr) that `reopen()`s on USR1."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(sys.stderr if path == "-" else self._open())

    def _open(self):
        return open(os.path.abspath(self.path), "a", encoding="utf-8")

    def reopen(self) -> None:
        if self.path == "-":
            return
        self.acquire()
        try:
            old, self.stream = self.stream, self._open()
            old.close()
        finally:
            self.release()
