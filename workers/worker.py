"""The worker process: an accept loop on the inherited listeners, feeding handler threads.

# design: the main thread owns signals, the heartbeat and accepting; `threads` handler threads
# each serve one connection at a time. The main thread accepts only while a handler is free (a
# semaphore), so a busy worker leaves new connections in the kernel backlog for its siblings, and
# one poll() covers every listener (several bind addresses). DEVIATION from the architecture page
# (handlers blocking in accept() themselves): one acceptor per process wakes once per connection
# instead of `threads` times, serves any number of listeners, and stops accepting at once on
# TERM. The heartbeat is written from this loop, so a wedged main thread stops it.
#
# Exit codes, read by the master: 0 = stopped as asked (or recycled), 3 = could not boot.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import random
import select
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass

from .accesslog import AccessLog
from .connection import ClientConnection, Context
from .scoreboard import Slot
from .settings import Limits, Log, Server, Upstream
from .upstream import Pool

__all__ = ["WorkerSpec", "run", "EXIT_OK", "EXIT_BOOT_ERROR"]

EXIT_OK = 0
EXIT_BOOT_ERROR = 3
_TICK = 0.25                  # the main loop wakes at least this often (heartbeat, checks)
_PR_SET_PDEATHSIG = 1

log = logging.getLogger("prefork_proxy.worker")


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, handed over by the master at fork time."""

    server: Server
    upstream: Upstream
    limits: Limits
    log: Log
    listeners: tuple[socket.socket, ...]
    slot: Slot
    master_pid: int
    generation: int
    cache_factory: object = None    # callable returning the cache front (built after fork), or None


class _Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.slot = spec.slot
        self.signals: list[int] = []
        self.stopping = threading.Event()
        self.fast = False
        self.free = threading.Semaphore(spec.server.threads)
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.connections: dict[int, ClientConnection] = {}
        self.conn_lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        jitter = random.randint(0, spec.server.max_requests_jitter) if spec.server.max_requests else 0
        self.max_requests = spec.server.max_requests + jitter if spec.server.max_requests else 0
        up = spec.upstream
        self.ctx = Context(
            server=spec.server, limits=spec.limits, origin=up.origin_parts,
            pool=Pool(size=up.pool_size, idle_timeout=up.pool_idle_timeout,
                      connect_timeout=up.connect_timeout, read_timeout=up.read_timeout),
            access_log=AccessLog(spec.log.access_log, spec.log.access_format))

    # -- boot ------------------------------------------------------------------------------
    def boot(self) -> None:
        _die_with_parent()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        for sig in (signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        for listener in self.spec.listeners:
            listener.setblocking(False)
        for index in range(self.spec.server.threads):
            thread = threading.Thread(target=self._handler, args=(index,), daemon=True,
                                      name=f"handler-{index}")
            thread.start()
            self.threads.append(thread)
        self.slot.set("pid", os.getpid())
        self.slot.set("booted_at", time.time())
        self.slot.beat()
        self.slot.state = "ready"

    def _on_signal(self, signum: int, frame) -> None:
        self.signals.append(signum)   # handled by the main loop, never here

    # -- main loop -------------------------------------------------------------------------
    def loop(self) -> None:
        poller = select.poll()
        by_fd = {sock.fileno(): sock for sock in self.spec.listeners}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        last_flush = time.monotonic()
        while not self.stopping.is_set():
            self.slot.beat()
            self._handle_signals()
            self._check_master()
            self._check_recycle()
            if time.monotonic() - last_flush >= 1.0:
                self.ctx.access_log.flush()
                last_flush = time.monotonic()
            if self.stopping.is_set() or not self.free.acquire(timeout=_TICK):
                continue
            if not self._accept_one(poller, by_fd):
                self.free.release()

    def _accept_one(self, poller: select.poll, by_fd: dict[int, socket.socket]) -> bool:
        """Wait up to a tick for a connection and hand it to a free handler."""
        try:
            ready = poller.poll(_TICK * 1000)
        except InterruptedError:
            return False
        for fd, _ in ready:
            try:
                sock, address = by_fd[fd].accept()
            except (BlockingIOError, InterruptedError):
                continue          # a sibling worker took it
            except OSError as error:
                log.warning("accept failed: %s", error)
                continue
            self.inbox.put((sock, address))
            return True
        return False

    def _handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if signum == signal.SIGUSR1:
                self._reopen_logs()
            elif signum in (signal.SIGINT, signal.SIGQUIT):
                self.fast = True
                self.stopping.set()
            elif signum == signal.SIGTERM:
                self.stopping.set()
            # SIGHUP: the master reloads by replacing workers; nothing to do here

    def _reopen_logs(self) -> None:
        self.ctx.access_log.reopen()
        for handler in logging.getLogger().handlers:
            reopen = getattr(handler, "reopen", None)
            if reopen is not None:
                reopen()

    def _check_master(self) -> None:
        if os.getppid() != self.spec.master_pid:
            log.warning("worker %d: master is gone, stopping", os.getpid())
            self.fast = True
            self.stopping.set()

    def _check_recycle(self) -> None:
        if self.max_requests and self.slot.totals()["requests"] >= self.max_requests:
            log.info("worker %d: served %d requests, recycling", os.getpid(), self.max_requests)
            self.stopping.set()

    # -- handler threads -------------------------------------------------------------------
    def _handler(self, index: int) -> None:
        row = self.slot.row(index)
        while True:
            sock, address = self.inbox.get()
            if sock is None:
                return
            row.set_active(True)
            row.add("connections")
            try:
                self._serve(sock, address, row)
            except Exception:
                log.exception("connection from %s failed", address)
            finally:
                row.set_active(False)
                self.free.release()

    def _serve(self, sock: socket.socket, address, row) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = ClientConnection(sock, address[0], self.ctx, row)
        key = id(conn)
        with self.conn_lock:
            self.connections[key] = conn
        try:
            conn.serve()
        finally:
            with self.conn_lock:
                del self.connections[key]

    # -- stopping --------------------------------------------------------------------------
    def drain(self) -> None:
        """Stop accepting, close idle keep-alive connections, wait for in-flight ones."""
        self.slot.state = "draining"
        self.ctx.stopping = True
        for listener in self.spec.listeners:
            listener.close()
        deadline = time.monotonic() + (1.0 if self.fast else self.spec.server.graceful_timeout)
        while time.monotonic() < deadline:
            self.slot.beat()
            busy = self._close_connections(everything=self.fast)
            if not busy:
                break
            time.sleep(0.05)
        self.ctx.access_log.close()
        self.ctx.pool.close_all()
        self.slot.state = "stopped"

    def _close_connections(self, everything: bool) -> int:
        """Shut idle connections (all, if `everything`); return how many are still open."""
        with self.conn_lock:
            conns = list(self.connections.values())
        for conn in conns:
            if everything or conn.idle:
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        return len(conns)


def _die_with_parent() -> None:
    """Linux: get SIGQUIT (fast stop) when the master dies; the ppid check backs this up."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGQUIT)
    except (OSError, AttributeError):
        pass


def run(spec: WorkerSpec) -> None:
    """The worker process's body (the target of multiprocessing's Process). Never returns."""
    worker = _Worker(spec)
    try:
        worker.boot()
    except Exception:
        log.exception("worker %d failed to boot", os.getpid())
        sys.stdout.flush()
        os._exit(EXIT_BOOT_ERROR)
    try:
        worker.loop()
        worker.drain()
    except Exception:
        log.exception("worker %d crashed", os.getpid())
        logging.shutdown()
        os._exit(1)
    logging.shutdown()
    sys.stdout.flush()
    os._exit(EXIT_OK)
