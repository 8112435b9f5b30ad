"""Error-log setup for the master (inherited by the workers it forks)."""

from __future__ import annotations

import logging

from workers.accesslog import ReopeningFileHandler
from workers.settings import Log

__all__ = ["configure", "reopen"]

_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"


def configure(settings: Log) -> None:
    """Route every logger to `error_log` at `level`; replaces handlers from an earlier call."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if isinstance(handler, ReopeningFileHandler) and handler.path != "-":
            handler.close()
    handler = ReopeningFileHandler(settings.error_log)
    handler.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(handler)
    root.setLevel(settings.level.upper())


def reopen() -> None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ReopeningFileHandler):
            handler.reopen()
