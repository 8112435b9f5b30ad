"""The master: binds the listeners, forks the workers and keeps the wanted set of them alive.

# design: single-threaded (it must never fork while another thread exists). Signal handlers do
# nothing; `signal.set_wakeup_fd` writes the signal number into a pipe, and the loop waits on that
# pipe and the workers' sentinels with `multiprocessing.connection.wait`. Each turn of the loop:
# dispatch signals to `handle_<name>`, reap dead workers, kill stuck ones (heartbeat, request
# deadline, retirement overdue), then spawn or retire until the actual set matches the wanted one
# (gunicorn's arbiter, reconciled). A reload is a transaction, like nginx: the new file is parsed,
# validated and its listeners opened before anything changes; on any error the old config and
# workers stay. Workers are started with the explicit fork context and inherit the listeners.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field

from cache.embedded import EmbeddedError, EmbeddedServer
from cache.embedded import start as start_embedded
from workers.scoreboard import Slot
from workers.worker import EXIT_BOOT_ERROR, WorkerSpec
from workers.worker import run as worker_main

from . import logs
from .admin import AdminServer
from .config import Config, ConfigError, Overrides, load
from .stats import Stats

__all__ = ["Master", "HaltError"]

log = logging.getLogger("prefork_proxy.master")

_FORK = multiprocessing.get_context("fork")
_SIGNALS = {
    signal.SIGHUP: "hup", signal.SIGTERM: "term", signal.SIGINT: "int", signal.SIGQUIT: "quit",
    signal.SIGTTIN: "ttin", signal.SIGTTOU: "ttou", signal.SIGUSR1: "usr1", signal.SIGCHLD: "chld",
}
_EARLY_DEATH = 10.0        # a worker dying younger than this counts toward the flapping back-off
_MAX_BACKOFF = 30.0
_KILL_MARGIN = 5.0         # after graceful_timeout, a retiring worker gets this long before KILL


class HaltError(Exception):
    """The master cannot go on (the first generation could not boot, a listener failed)."""


@dataclass
class WorkerHandle:
    process: multiprocessing.process.BaseProcess
    slot: Slot
    generation: int
    spawned_at: float
    retire_deadline: float = 0.0        # set when retiring: KILL after this
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class ReloadStatus:
    count: int = 0
    ok: bool = True
    at: float = 0.0
    error: str = ""


@dataclass
class Master:
    config: Config
    overrides: Overrides = field(default_factory=Overrides)
    workers: dict[int, WorkerHandle] = field(default_factory=dict)
    listeners: dict[str, socket.socket] = field(default_factory=dict)
    generation: int = 1
    wanted: int = 1
    stopping: str = ""                  # "", "graceful" or "fast"
    stop_deadline: float = 0.0
    started_at: float = field(default_factory=time.time)
    reloads: ReloadStatus = field(default_factory=ReloadStatus)
    respawns: int = 0
    booted_once: bool = False
    _deaths: deque = field(default_factory=deque)   # monotonic times of recent early deaths
    _next_spawn: float = 0.0
    _wakeup: tuple[int, int] = (-1, -1)
    retired_totals: dict[str, float] = field(default_factory=dict)
    embedded: EmbeddedServer | None = None   # the private cache server for redis_url = "embedded"
    cache_url: str = ""                      # what workers connect to ("" = no cache)
    stats: Stats = field(default_factory=Stats)
    admin: AdminServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def run(self) -> int:
        raise_fd_limit()
        self.listeners = open_listeners(self.config, {})
        self.admin = AdminServer.start(self, self.config.admin, self.config.path)
        self.wanted = workers_wanted(self.config)
        self.cache_url = self.cache_url_for(self.config)
        self._install_signals()
        self._write_pidfile()
        log.info("master %d: listening on %s, %d workers x %d threads, %s", os.getpid(),
                 ", ".join(self.listeners), self.wanted, self.config.server.threads,
                 f"reverse proxy for {self.config.upstream.origin}" if self.config.upstream.origin
                 else "forward proxy")
        try:
            while not (self.stopping and not self.workers):
                self.check_embedded()
                self.reap_workers()
                self.kill_stuck_workers()
                self.manage_workers()
                self._wait()
            return 0
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        for handle in self.workers.values():
            _signal(handle.pid, signal.SIGKILL)
        for sock in self.listeners.values():
            sock.close()
        if self.embedded is not None:
            self.embedded.stop()
        if self.admin is not None:
            self.admin.close()
        if self.config.server.pidfile:
            try:
                os.unlink(self.config.server.pidfile)
            except OSError:
                pass
        log.info("master %d: stopped", os.getpid())

    def _install_signals(self) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._wakeup = (read_fd, write_fd)
        for sig in _SIGNALS:
            signal.signal(sig, _ignore)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def _write_pidfile(self) -> None:
        if self.config.server.pidfile:
            with open(self.config.server.pidfile, "w") as file:
                file.write(f"{os.getpid()}\n")

    # -- waiting and signals -------------------------------------------------------------------
    def _wait(self) -> None:
        sentinels = [handle.process.sentinel for handle in self.workers.values()]
        try:
            multiprocessing.connection.wait([self._wakeup[0], *sentinels, *self.admin.fds()],
                                            timeout=self.admin.timeout(0.5))
        except InterruptedError:
            pass
        self.admin.service()
        self.stats.tick(self)           # once a second: psutil and the counters' history
        for signum in self._drain_wakeup():
            name = _SIGNALS.get(signum)
            if name:
                getattr(self, f"handle_{name}")()

    def _drain_wakeup(self) -> list[int]:
        try:
            return list(os.read(self._wakeup[0], 1024))
        except BlockingIOError:
            return []

    def handle_hup(self) -> None:
        log.info("master: reloading %s", self.config.path)
        self.reload()

    def handle_term(self) -> None:
        self.stop(graceful=True)

    def handle_int(self) -> None:
        self.stop(graceful=False)

    handle_quit = handle_int

    def handle_ttin(self) -> None:
        self.wanted += 1
        log.info("master: TTIN, now %d workers wanted", self.wanted)

    def handle_ttou(self) -> None:
        self.wanted = max(1, self.wanted - 1)
        log.info("master: TTOU, now %d workers wanted", self.wanted)

    def handle_usr1(self) -> None:
        logs.reopen()
        for handle in self.workers.values():
            _signal(handle.pid, signal.SIGUSR1)

    def handle_chld(self) -> None:
        pass  # the sentinels already woke us; reap_workers() does the work

    # -- stop and reload ---------------------------------------------------------------------
    def stop(self, graceful: bool) -> None:
        if self.stopping == "fast" or (self.stopping and graceful):
            return
        self.stopping = "graceful" if graceful else "fast"
        grace = self.config.server.graceful_timeout if graceful else 1.0
        self.stop_deadline = time.monotonic() + grace + (_KILL_MARGIN if graceful else 1.0)
        log.info("master: %s stop of %d workers", self.stopping, len(self.workers))
        for sock in self.listeners.values():
            sock.close()
        self.listeners = {}
        for handle in self.workers.values():
            _signal(handle.pid, signal.SIGTERM if graceful else signal.SIGQUIT)
            handle.retire_deadline = self.stop_deadline

    def reload(self) -> bool:
        """Transactional reload; on any error the running config and workers stay untouched."""
        admin = None
        try:
            new = load(self.config.path, self.overrides)
            admin = self.admin.prepare(new.admin, new.path)    # binds only if admin.bind changed
            listeners = open_listeners(new, self.listeners)
        except (ConfigError, OSError) as error:
            if admin is not None:
                admin.abort()
            self._reload_failed(str(error))
            return False
        for address, sock in self.listeners.items():
            if listeners.get(address) is not sock:
                sock.close()        # old workers keep their own copies until they retire
        self.admin.commit(admin)
        self.config, self.listeners = new, listeners
        self.cache_url = self.cache_url_for(new)
        self.wanted = workers_wanted(new)
        self.generation += 1
        logs.configure(new.log)
        self.reloads = ReloadStatus(self.reloads.count + 1, True, time.time(), "")
        log.info("master: reloaded %s (generation %d, %d workers, listening on %s)", new.path,
                 self.generation, self.wanted, ", ".join(listeners))
        return True

    def _reload_failed(self, reason: str) -> None:
        self.reloads = ReloadStatus(self.reloads.count + 1, False, time.time(), reason)
        log.error("master: reload failed, keeping the running config: %s", reason)

    # -- reconciliation ---------------------------------------------------------------------
    def reap_workers(self) -> None:
        for pid, handle in list(self.workers.items()):
            code = handle.process.exitcode
            if code is None:
                continue
            handle.process.join(0)
            del self.workers[pid]
            self._fold_totals(handle)
            self._note_exit(handle, code)

    def _note_exit(self, handle: WorkerHandle, code: int) -> None:
        asked = bool(handle.retire_deadline) or self.stopping
        if code == EXIT_BOOT_ERROR and not self.booted_once:
            raise HaltError(f"worker {handle.pid} could not boot (see the log above); giving up")
        if asked and not handle.killed:
            log.info("worker %d exited (code %s)", handle.pid, code)
            return
        log.warning("worker %d died (code %s)%s", handle.pid, code, ", replacing it" if not self.stopping else "")
        self.respawns += 1
        now = time.monotonic()
        if now - handle.spawned_at < _EARLY_DEATH:
            self._deaths.append(now)
        delay = backoff(len(self._deaths))
        self._next_spawn = now + delay
        if delay:
            log.warning("master: %d early worker deaths, next spawn in %.1fs", len(self._deaths), delay)

    def _fold_totals(self, handle: WorkerHandle) -> None:
        for name, value in handle.slot.totals().items():
            if name != "active":
                self.retired_totals[name] = self.retired_totals.get(name, 0.0) + value
        handle.slot.close()

    def kill_stuck_workers(self) -> None:
        now = time.monotonic()
        server = self.config.server
        for handle in self.workers.values():
            reason = stuck_reason(handle, now, server.heartbeat_timeout, server.request_deadline)
            if reason and not handle.killed:
                log.error("worker %d %s: killing it", handle.pid, reason)
                handle.killed = True
                _signal(handle.pid, signal.SIGKILL)

    def manage_workers(self) -> None:
        if self.stopping:
            return
        self._forget_old_deaths()
        current = [h for h in self.workers.values() if h.generation == self.generation and not h.retire_deadline]
        if any(h.slot.state == "ready" for h in current):
            self.booted_once = True
        while len(current) < self.wanted and time.monotonic() >= self._next_spawn:
            current.append(self.spawn_worker())
        for handle in sorted(current, key=lambda h: h.spawned_at)[: max(0, len(current) - self.wanted)]:
            self.retire_worker(handle)
        self._retire_old_generations(current)

    def _retire_old_generations(self, current: list[WorkerHandle]) -> None:
        old = [h for h in self.workers.values() if h.generation < self.generation and not h.retire_deadline]
        if not old:
            return
        ready = sum(1 for h in current if h.slot.state == "ready")
        newest = max((h.spawned_at for h in current), default=0.0)
        if ready >= min(self.wanted, len(current)) or time.monotonic() - newest > self.config.server.heartbeat_timeout:
            for handle in old:
                self.retire_worker(handle)

    def _forget_old_deaths(self) -> None:
        now = time.monotonic()
        while self._deaths and now - self._deaths[0] > 60.0:
            self._deaths.popleft()
        alive_long = any(now - h.spawned_at > _EARLY_DEATH for h in self.workers.values())
        if alive_long and self._deaths and now - self._deaths[-1] > _EARLY_DEATH:
            self._deaths.clear()

    def spawn_worker(self) -> WorkerHandle:
        config = self.config
        slot = Slot(config.server.threads + 1)   # a row per handler thread, one for the main thread
        slot.set("generation", self.generation)
        spec = WorkerSpec(server=config.server, upstream=config.upstream, limits=config.limits,
                          log=config.log, listeners=tuple(self.listeners.values()), slot=slot,
                          master_pid=os.getpid(), generation=self.generation,
                          access=config.access, cache=config.cache, cache_url=self.cache_url,
                          inherited_fds=(*self._wakeup, *(self.admin.private_fds() if self.admin else ())))
        process = _FORK.Process(target=worker_main, args=(spec,), name="prefork_proxy-worker")
        process.start()
        handle = WorkerHandle(process, slot, self.generation, time.monotonic())
        self.workers[process.pid] = handle
        log.info("worker %d spawned (generation %d)", process.pid, self.generation)
        return handle

    # -- the embedded cache server --------------------------------------------------------------
    def cache_url_for(self, config: Config) -> str:
        """The URL workers use: the embedded server's (started on first need), or the configured
        one. If the embedded server cannot start, the proxy runs uncached rather than not at all."""
        url = config.cache.redis_url
        if url != "embedded":
            if self.embedded is not None:      # no longer needed: old workers just lose their cache
                self.embedded.stop()
                self.embedded = None
            return url
        if self.embedded is None:
            try:
                self.embedded = start_embedded(config.cache.embedded_maxmemory)
            except EmbeddedError as error:
                log.error("cache: the embedded cache server did not start, serving uncached: %s", error)
                return ""
            log.info("%s", self.embedded.describe())
        return self.embedded.url

    def check_embedded(self) -> None:
        """Supervise the embedded server: restart it on the same address if it died."""
        if self.embedded is None or self.embedded.poll() is None or self.stopping:
            return
        log.warning("cache: the embedded cache server exited (%s); restarting it", self.embedded.poll())
        try:
            self.embedded.restart()
        except EmbeddedError as error:
            log.error("cache: restarting the embedded cache server failed: %s", error)

    def retire_worker(self, handle: WorkerHandle) -> None:
        handle.retire_deadline = time.monotonic() + self.config.server.graceful_timeout + _KILL_MARGIN
        _signal(handle.pid, signal.SIGTERM)


def stuck_reason(handle: WorkerHandle, now: float, heartbeat_timeout: float, deadline: float) -> str:
    """Why a worker should be killed now, or '' (liveness: heartbeat, request deadline, retirement)."""
    if handle.retire_deadline and now > handle.retire_deadline:
        return "did not stop in time"
    beat = handle.slot.get("heartbeat") or handle.spawned_at
    if now - beat > heartbeat_timeout:
        return f"missed its heartbeat for {now - beat:.1f}s"
    oldest = min((t for t in handle.slot.busy_since() if t), default=0.0)
    if oldest and now - oldest > deadline:
        return f"has a request running for {now - oldest:.1f}s (request_deadline {deadline:g}s)"
    return ""


def backoff(early_deaths: int) -> float:
    """Respawn delay after repeated early deaths: none for the first, then 0.5 s doubling to 30 s."""
    if early_deaths < 2:
        return 0.0
    return min(0.5 * 2 ** (early_deaths - 2), _MAX_BACKOFF)


def raise_fd_limit(ceiling: int = 65536) -> None:
    """Parked connections cost a file descriptor each: lift the soft limit toward the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard if hard != resource.RLIM_INFINITY else ceiling, ceiling)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def workers_wanted(config: Config) -> int:
    return config.server.workers or os.cpu_count() or 1


def open_listeners(config: Config, existing: dict[str, socket.socket]) -> dict[str, socket.socket]:
    """Bound listening sockets for the config's addresses, reusing `existing` ones; all or nothing."""
    opened: dict[str, socket.socket] = {}
    result: dict[str, socket.socket] = {}
    try:
        for text, (host, port) in zip(config.server.binds, config.server.addresses):
            sock = existing.get(text)
            if sock is None:
                sock = opened[text] = _bind(host, port, config.server.backlog)
            result[text] = sock
    except OSError as error:
        for sock in opened.values():
            sock.close()
        raise OSError(error.errno, f"{config.path}: server.bind: cannot listen on {text}: "
                                   f"{error.strerror or error}") from None
    return result


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _ignore(signum: int, frame) -> None:
    """Installed so that set_wakeup_fd reports the signal; the loop does the work."""
