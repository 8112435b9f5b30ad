"""The worker process: an event loop that accepts and parks connections, and handler threads.

# design: the main thread owns signals, the heartbeat, accepting and every *idle* connection. It
# polls the listeners and the parked connections (new ones, idle keep-alive ones, and slow ones
# whose request head is incomplete). A parked connection that becomes readable goes to one of
# `threads` handler threads, which serves requests for as long as they arrive promptly and then
# hands the connection back to be parked. So a thread is held only while a request is in
# progress: thousands of idle or slowloris connections cost sockets, not threads (gunicorn's
# gthread parks keep-alive connections the same way). New connections are accepted only while a
# handler thread is free and the worker is under `max_connections`; otherwise they stay in the
# kernel backlog for a sibling. DEVIATION from the architecture page (handlers blocking in
# accept()): one acceptor wakes once per connection instead of `threads` times, serves any number
# of listeners, stops accepting at once on TERM, and makes slow clients cheap. The heartbeat is
# written from this loop, so a wedged main thread stops it.
#
# Exit codes, read by the master: 0 = stopped as asked (or recycled), 3 = could not boot.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import random
import selectors
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass

from cache.settings import CacheSettings
from cache.store import connect as connect_store

from .accesslog import AccessLog
from .caching import CacheFront
from .connection import DISPATCH, PARK, ClientConnection, Context
from .scoreboard import Slot
from .settings import Access, Limits, Log, Server, Upstream
from .upstream import Pool
from .access import AccessPolicy, address_in, networks

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
    access: Access = Access()
    cache: CacheSettings | None = None   # None or redis_url "" = no cache
    cache_url: str = ""                  # the Redis URL to use (the embedded server's, if embedded)
    inherited_fds: tuple[int, ...] = ()  # the master's own descriptors, closed after fork


_LISTENER = object()
_WAKE = object()


class _Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.slot = spec.slot
        self.signals: list[int] = []
        self.stopping = False
        self.fast = False
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()     # connections for handler threads
        self.returned: queue.SimpleQueue = queue.SimpleQueue()  # connections to park again
        self.busy = 0                                           # handler threads serving
        self.busy_lock = threading.Lock()
        self.active: set[ClientConnection] = set()              # being served (for fast stop)
        self.parked: dict[ClientConnection, float] = {}         # -> deadline
        self.selector = selectors.DefaultSelector()
        self.accepting = False
        self.threads: list[threading.Thread] = []
        self.inline_row = spec.slot.row(spec.server.threads)   # the main thread's own row
        self.last_flush = time.monotonic()
        self._wake_r, self._wake_w = os.pipe()
        jitter = random.randint(0, spec.server.max_requests_jitter) if spec.server.max_requests else 0
        self.max_requests = spec.server.max_requests + jitter if spec.server.max_requests else 0
        up = spec.upstream
        self.ctx = Context(
            server=spec.server, limits=spec.limits, origin=up.origin_parts,
            pool=Pool(size=up.pool_size, idle_timeout=up.pool_idle_timeout,
                      connect_timeout=up.connect_timeout, read_timeout=up.read_timeout),
            access_log=AccessLog(spec.log.access_log, spec.log.access_format),
            tunnel_idle_timeout=up.tunnel_idle_timeout, send_timeout=spec.limits.send_timeout,
            forward_proxy=_forward_enabled(spec.access.forward_proxy, up.origin),
            server_names=frozenset(name.lower() for name in up.server_names))

    # -- boot ------------------------------------------------------------------------------
    def boot(self) -> None:
        _die_with_parent()
        for fd in self.spec.inherited_fds:      # the master's admin socket, wakeup pipe, ...
            try:
                os.close(fd)
            except OSError:
                pass
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        for sig in (signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)   # a signal wakes select()
        self.selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self.ctx.cache = self._cache_front()
        self.ctx.access = AccessPolicy.build(self.spec.access,
                                             [sock.getsockname()[:2] for sock in self.spec.listeners])
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

    def _cache_front(self) -> CacheFront | None:
        """Redis clients are made here, after fork, never inherited."""
        settings = self.spec.cache
        if settings is None or not self.spec.cache_url:
            return None
        store = connect_store(settings, self.spec.cache_url)
        allowed = networks(settings.purge_allow)
        return CacheFront(store, settings.policy(reverse=self.ctx.origin is not None),
                          self.spec.server.via_pseudonym, self.ctx.pool,
                          purge_allowed=lambda ip: address_in(ip, allowed))

    # -- main loop -------------------------------------------------------------------------
    def loop(self) -> None:
        next_chores = 0.0
        while not self.stopping:
            self._handle_signals()
            self._park_returned()
            self._gate_listeners()
            for key, _ in self.selector.select(_TICK):
                if key.data is _LISTENER:
                    self._accept(key.fileobj)
                elif key.data is _WAKE:
                    _drain(self._wake_r)
                else:
                    self._on_readable(key.data)
            now = time.monotonic()
            if now >= next_chores:          # once a tick, not once per wake-up: hits come fast
                next_chores = now + _TICK
                self._chores(now)

    def _chores(self, now: float) -> None:
        self.slot.beat()
        self._check_master()
        self._check_recycle()
        self._expire_parked(now)
        self.slot.set("idle_connections", len(self.parked))
        self._report_cache()
        if now - self.last_flush >= 1.0:
            self.ctx.access_log.flush()
            self.last_flush = now

    def _report_cache(self) -> None:
        cache = self.ctx.cache
        if cache is None:
            return
        l1 = cache.store.l1_stats()
        self.slot.set("l1_entries", l1["entries"])
        self.slot.set("l1_bytes", l1["bytes"])
        self.slot.set("redis_up", 1.0 if cache.store.available else 0.0)
        self.slot.set("redis_rtt", cache.store.latency_p50())

    def _gate_listeners(self) -> None:
        """Listen only while a handler thread is free and we are under max_connections."""
        room = self.busy < self.spec.server.threads and \
            len(self.parked) + self.busy < self.spec.server.max_connections
        if room == self.accepting or self.stopping:
            return
        for listener in self.spec.listeners:
            if room:
                self.selector.register(listener, selectors.EVENT_READ, _LISTENER)
            else:
                self.selector.unregister(listener)
        self.accepting = room

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, address = listener.accept()
        except (BlockingIOError, InterruptedError):
            return                    # a sibling worker took it
        except OSError as error:
            log.warning("accept failed: %s", error)
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = ClientConnection(sock, address[0], self.ctx)
        self._dispatch(conn)          # a new connection usually has its request on the way

    def _on_readable(self, conn: ClientConnection) -> None:
        """A parked connection has bytes: answer L1 hits here, hand anything else to a thread."""
        if self.ctx.cache is None:
            self._dispatch(conn)
            return
        outcome = conn.serve_inline(self.inline_row)
        if outcome == PARK:
            self.parked[conn] = conn.deadline
        elif outcome == DISPATCH:
            self._dispatch(conn)
        else:
            self._unpark_and_close(conn)

    def _dispatch(self, conn: ClientConnection) -> None:
        if self.parked.pop(conn, None) is not None:
            self.selector.unregister(conn.sock)
        with self.busy_lock:
            self.busy += 1
            self.active.add(conn)
        self.inbox.put(conn)

    def _park_returned(self) -> None:
        while True:
            try:
                conn = self.returned.get_nowait()
            except queue.Empty:
                return
            if self.stopping or self.ctx.stopping:
                conn.close()
                continue
            self.parked[conn] = conn.deadline
            self.selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _expire_parked(self, now: float) -> None:
        for conn, deadline in list(self.parked.items()):
            if now >= deadline:
                self._unpark_and_close(conn, conn.expired_response())

    def _unpark_and_close(self, conn: ClientConnection, last_words: bytes = b"") -> None:
        del self.parked[conn]
        self.selector.unregister(conn.sock)
        if last_words:
            try:
                conn.sock.send(last_words)       # the socket is non-blocking (ClientConnection)
            except OSError:
                pass
        conn.close()

    def _handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if signum == signal.SIGUSR1:
                self._reopen_logs()
            elif signum in (signal.SIGINT, signal.SIGQUIT):
                self.fast = self.stopping = True
            elif signum == signal.SIGTERM:
                self.stopping = True
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
            self.fast = self.stopping = True

    def _check_recycle(self) -> None:
        if self.max_requests and self.slot.totals()["requests"] >= self.max_requests:
            log.info("worker %d: served %d requests, recycling", os.getpid(), self.max_requests)
            self.stopping = True

    # -- handler threads -------------------------------------------------------------------
    def _handler(self, index: int) -> None:
        row = self.slot.row(index)
        while True:
            conn = self.inbox.get()
            if conn is None:
                return
            row.set_active(True)
            try:
                park = conn.run(row)
            except Exception:
                log.exception("connection from %s failed", conn.client_ip)
                park = False
            finally:
                row.set_active(False)
            if not park:
                conn.close()
            with self.busy_lock:
                self.busy -= 1
                self.active.discard(conn)
            if park:
                self.returned.put(conn)
            _poke(self._wake_w)

    # -- stopping --------------------------------------------------------------------------
    def drain(self) -> None:
        """Stop accepting; let in-flight requests finish (their responses say Connection: close).

        An idle keep-alive connection gets a short grace in which a request the client already
        sent is still served (with Connection: close) before the connection is closed: closing it
        at once would race with that request, which the client would see fail. DEVIATION from
        the architecture page's "closed at once", for zero failed requests across reloads.
        """
        self.slot.state = "draining"
        self.ctx.stopping = True
        for listener in self.spec.listeners:
            if self.accepting:
                self.selector.unregister(listener)
            listener.close()
        self.accepting = False
        now = time.monotonic()
        grace_end = now + (0.0 if self.fast else min(self.ctx.stop_grace, self.spec.server.graceful_timeout))
        deadline = now + (1.0 if self.fast else self.spec.server.graceful_timeout)
        while (self.busy or self.parked or not self.returned.empty()) and time.monotonic() < deadline:
            self.slot.beat()
            self._park_returned()                 # closes them: we are stopping
            if self.fast:
                self._shutdown_active()
            if time.monotonic() >= grace_end:
                for conn in list(self.parked):
                    self._unpark_and_close(conn)
            for key, _ in self.selector.select(0.05):
                if key.data is _WAKE:
                    _drain(self._wake_r)
                else:
                    self._dispatch(key.data)
        self.ctx.access_log.close()
        self.ctx.pool.close_all()
        if self.ctx.cache is not None:
            self.ctx.cache.store.close()
        self.slot.state = "stopped"

    def _shutdown_active(self) -> None:
        with self.busy_lock:
            conns = list(self.active)
        for conn in conns:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _forward_enabled(setting: str, origin: str) -> bool:
    """access.forward_proxy: "auto" = a forward proxy unless an origin is configured."""
    return setting == "on" or (setting == "auto" and not origin)


def _poke(fd: int) -> None:
    try:
        os.write(fd, b"x")
    except (BlockingIOError, OSError):
        pass          # the pipe is full: the main loop is already due to wake


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass


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
