"""The lifecycle both test servers share: a loopback listener, an accept thread, a thread per
connection, and a stop() that wakes and joins them all within a deadline."""

from __future__ import annotations

import socket
import threading
import time

__all__ = ["ThreadedServer"]


class ThreadedServer:
    """Subclasses implement `_serve(sock, number)`; `connections` counts accepted connections."""

    name = "server"

    def __init__(self, host: str = "127.0.0.1", backlog: int = 64) -> None:
        self.listener = socket.create_server((host, 0), backlog=backlog)
        self.host, self.port = host, self.listener.getsockname()[1]
        self.connections = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                          name=f"{self.name}-{self.port}")

    def start(self):
        self._acceptor.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        for close in (lambda: self.listener.shutdown(socket.SHUT_RDWR), self.listener.close):
            try:  # shutdown first: it wakes the thread blocked in accept(), close alone does not
                close()
            except OSError:
                pass
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for thread in [self._acceptor, *self._threads]:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                # scripted servers write a head and a body separately: without this, Nagle holds
                # the body until the proxy's delayed ACK (~40 ms per keep-alive response)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                number = self.connections
                self._sockets.add(sock)
            thread = threading.Thread(target=self._serve, args=(sock, number), daemon=True,
                                      name=f"{self.name}-{self.port}-conn{number}")
            self._threads.append(thread)
            thread.start()

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def _serve(self, sock: socket.socket, number: int) -> None:
        raise NotImplementedError
