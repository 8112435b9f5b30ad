"""prefork_proxy.master's pure helpers: back-off, liveness verdicts, all-or-nothing listeners.

`now` is always passed in; the only real resources are loopback sockets on ephemeral ports.
"""

from __future__ import annotations

import errno
import socket
from types import SimpleNamespace

import pytest

from prefork_proxy import master
from prefork_proxy.config import Config
from prefork_proxy.master import WorkerHandle, backoff, open_listeners, stuck_reason
from workers.scoreboard import Slot
from workers.settings import Server


def table(names: str, rows: list):
    """parametrize over (id, *values) rows: the first item of each row names the case."""
    return pytest.mark.parametrize(names, [row[1:] for row in rows], ids=[row[0] for row in rows])


# -- backoff ---------------------------------------------------------------------------------------
# No delay for the first early death, then 0.5 s doubling, capped at 30 s.
BACKOFF = [(0, 0.0), (1, 0.0), (2, 0.5), (3, 1.0), (4, 2.0), (5, 4.0), (7, 16.0), (8, 30.0),
           (9, 30.0), (200, 30.0)]


@pytest.mark.parametrize("early_deaths, delay", BACKOFF)
def test_backoff(early_deaths, delay):
    assert backoff(early_deaths) == delay


# -- stuck_reason ----------------------------------------------------------------------------------
HEARTBEAT_TIMEOUT = 10.0
DEADLINE = 60.0
SPAWNED = 1000.0


@pytest.fixture
def make_handle():
    slots: list[Slot] = []

    def make(heartbeat: float = 0.0, busy: tuple[float, ...] = (), retire_deadline: float = 0.0):
        slot = Slot(threads=max(len(busy), 2))
        slots.append(slot)
        slot.set("heartbeat", heartbeat)
        for index, since in enumerate(busy):
            slot.row(index).begin(since)
        return WorkerHandle(process=SimpleNamespace(pid=4242), slot=slot, generation=1,
                            spawned_at=SPAWNED, retire_deadline=retire_deadline)

    yield make
    for slot in slots:
        slot.close()


# (handle fields, now, expected reason prefix; "" = healthy). Checks in order: retirement overdue,
# heartbeat (falling back to the spawn time before the first beat), oldest request in progress.
STUCK = [
    ("fresh-no-beat-yet", {}, SPAWNED + 5, ""),
    ("no-beat-past-timeout", {}, SPAWNED + 10.5, "missed its heartbeat for 10.5s"),
    ("recent-beat", {"heartbeat": 1095.0}, 1100.0, ""),
    ("beat-at-timeout", {"heartbeat": 1090.0}, 1100.0, ""),
    ("stale-beat", {"heartbeat": 1080.0}, 1100.0, "missed its heartbeat for 20.0s"),
    ("idle-threads", {"heartbeat": 1099.0, "busy": (0.0, 0.0)}, 1100.0, ""),
    ("request-within-deadline", {"heartbeat": 1099.0, "busy": (0.0, 1050.0)}, 1100.0, ""),
    ("request-over-deadline", {"heartbeat": 1099.0, "busy": (1090.0, 1020.0, 0.0)}, 1100.0,
     "has a request running for 80.0s"),
    ("retiring-in-time", {"heartbeat": 1099.0, "retire_deadline": 1200.0}, 1100.0, ""),
    ("retirement-overdue", {"heartbeat": 1099.0, "retire_deadline": 1099.5}, 1100.0, "did not stop in time"),
    ("retirement-wins-over-heartbeat", {"retire_deadline": 1050.0}, 1100.0, "did not stop in time"),
    ("heartbeat-wins-over-request", {"heartbeat": 1000.0, "busy": (900.0,)}, 1100.0, "missed its heartbeat"),
]


@table("fields, now, reason", STUCK)
def test_stuck_reason(make_handle, fields, now, reason):
    got = stuck_reason(make_handle(**fields), now, HEARTBEAT_TIMEOUT, DEADLINE)
    assert got.startswith(reason) and bool(got) == bool(reason)


# -- open_listeners --------------------------------------------------------------------------------
def config(*binds: str) -> Config:
    return Config(server=Server(bind=list(binds), backlog=16), path="test.toml")


@pytest.fixture
def sockets():
    """Every socket a test makes or that open_listeners binds; closed at teardown."""
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


@pytest.fixture
def bound(monkeypatch, sockets):
    """The sockets master._bind opened, in order (also registered for teardown)."""
    opened: list[socket.socket] = []
    real = master._bind

    def spy(host, port, backlog):
        sock = real(host, port, backlog)
        opened.append(sock)
        sockets.append(sock)
        return sock

    monkeypatch.setattr(master, "_bind", spy)
    return opened


def listening(sockets: list, host: str = "127.0.0.1") -> tuple[socket.socket, str]:
    """A listening socket on an ephemeral port and its 'host:port' text."""
    sock = socket.socket()
    sockets.append(sock)
    sock.bind((host, 0))
    sock.listen(1)
    return sock, f"{host}:{sock.getsockname()[1]}"


def is_listening(sock: socket.socket) -> bool:
    return sock.fileno() != -1 and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1


def test_opens_every_address(bound):
    got = open_listeners(config("127.0.0.1:0", "127.0.0.2:0"), {})
    assert list(got.items()) == list(zip(["127.0.0.1:0", "127.0.0.2:0"], bound))
    assert all(is_listening(sock) for sock in bound)


def test_reuses_existing_socket(bound, sockets):
    old, text = listening(sockets)
    stray, stray_text = listening(sockets)
    got = open_listeners(config(text, "127.0.0.1:0"), {text: old, stray_text: stray})
    assert got[text] is old and got["127.0.0.1:0"] is bound[0]
    assert len(bound) == 1 and set(got) == {text, "127.0.0.1:0"}   # addresses not in the config go
    assert is_listening(stray)                                      # ... but closing them is reload's job


def test_address_in_use_closes_what_it_opened(bound, sockets):
    _, busy = listening(sockets)
    with pytest.raises(OSError) as caught:
        open_listeners(config("127.0.0.1:0", busy), {})
    assert caught.value.errno == errno.EADDRINUSE
    assert "test.toml" in str(caught.value) and busy in str(caught.value)
    assert len(bound) == 1 and bound[0].fileno() == -1


def test_address_in_use_leaves_existing_untouched(bound, sockets):
    old, text = listening(sockets)
    _, busy = listening(sockets)
    existing = {text: old}
    with pytest.raises(OSError):
        open_listeners(config(text, "127.0.0.1:0", busy), existing)
    assert existing == {text: old} and is_listening(old)
    assert len(bound) == 1 and bound[0].fileno() == -1
