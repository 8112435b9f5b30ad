"""A threaded TCP echo server on 127.0.0.1: the far end of CONNECT tunnels."""

from __future__ import annotations

import socket

from .tcpserver import ThreadedServer

__all__ = ["EchoServer"]


class EchoServer(ThreadedServer):
    name = "echo"

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host, backlog=64)
        self.bytes_echoed = 0

    def _serve(self, sock: socket.socket, number: int) -> None:
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
            self._forget(sock)
            sock.close()
