"""A threaded TCP echo server on 127.0.0.1: the far end of CONNECT tunnels."""

from __future__ import annotations

import socket
import threading
import time

__all__ = ["EchoServer"]


class EchoServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.listener = socket.create_server((host, 0), backlog=64)
        self.host, self.port = host, self.listener.getsockname()[1]
        self.connections = 0
        self.bytes_echoed = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True, name=f"echo-{self.port}")

    def start(self) -> "EchoServer":
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

    def __enter__(self) -> "EchoServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._sockets.add(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(30.0)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    sock.shutdown(socket.SHUT_WR)  # half-close back, as the client did
                    return
                sock.sendall(data)
                with self._lock:
                    self.bytes_echoed += len(data)
        except OSError:
            return
        finally:
            with self._lock:
                self._sockets.discard(sock)
            sock.close()
