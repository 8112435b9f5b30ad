"""python -m bench.soak: hold a mixed load on the proxy for a while and watch its workers' memory and fds.

    .venv/bin/python -m bench.soak                  # 10 minutes
    .venv/bin/python -m bench.soak --minutes 2 --clients 6 --interval 10

Not part of CI or `make test`. Everything runs on loopback and is stopped at the end (also on
Ctrl-C or SIGTERM): the proxy (2 workers, forward mode, the embedded cache), the test origin and a
TCP echo server (tests/support, threads in this process), and `--clients` client threads. Each
client loops over a fixed mix: keep-alive GETs of an uncacheable body, cache hits on a few hot
URLs, cache misses on fresh URLs (short-lived, so the cache stays bounded), 64 KiB uploads
(Content-Length and chunked) and CONNECT tunnels to the echo server, checking every answer. Where
`wrk` is installed it adds `--wrk-connections` keep-alive connections of cache hits for the whole
run (its failures count too; `--wrk-connections 0` turns it off).

Every `--interval` seconds it samples each worker, the master and the cache server with psutil (RSS,
open fds, threads) and prints a row. At the end it prints a verdict: after a warm-up (a quarter of
the run, at most a minute: L1 caches and upstream pools fill), a worker whose RSS grew by more than
`--rss-growth` (MiB), or whose fds grew by more than `--fd-growth`, or any failed request, is
GROWTH/FAILED. Exit status: 0 stable, 1 growth or failed requests, 2 the proxy could not start.
"""

from __future__ import annotations

import argparse
import itertools
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench import procs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))            # the test origin and echo server
from support.echo import EchoServer  # noqa: E402
from support.origin import Origin  # noqa: E402
from support.pattern import pattern_bytes  # noqa: E402
from support.rawhttp import RawClient, build, chunked  # noqa: E402

MiB = 1 << 20
UPLOAD = pattern_bytes(64 * 1024)
HOT = [f"/hot-{n}" for n in range(8)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to hold the load (10)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples (10)")
    parser.add_argument("--clients", type=int, default=6, help="client threads (6)")
    parser.add_argument("--wrk-connections", type=int, default=4, help="wrk hit connections, 0 = no wrk (4)")
    parser.add_argument("--rss-growth", type=float, default=24.0, help="MiB of worker RSS growth allowed (24)")
    parser.add_argument("--fd-growth", type=int, default=16, help="open fds a worker may gain (16)")
    return parser.parse_args(argv)


# -- the servers ----------------------------------------------------------------------------------------
def start_origin() -> tuple[Origin, EchoServer]:
    origin = Origin().start()
    for path in HOT:
        origin.route(path, lambda ex: ex.respond(200, b"hot " * 256, headers=[("Cache-Control", "max-age=3600")]))
    origin.route("/miss", lambda ex: ex.respond(200, b"miss " * 400, headers=[("Cache-Control", "max-age=2")]))
    return origin, EchoServer().start()


def proxy_toml(port: int, echo_port: int) -> str:
    return f"""[server]
bind = "127.0.0.1:{port}"
workers = 2
threads = 64
connect_ports = [{echo_port}]

[access]
allow_destinations = ["127.0.0.0/8"]

[cache]
redis_url = "embedded"
l1_max_bytes = 8388608
ttl_margin = 5.0
embedded_maxmemory = 67108864

[admin]
bind = ""

[log]
access_log = ""
level = "warning"
"""


def start_proxy(workdir: Path, echo_port: int) -> procs.Proc:
    port = procs.free_port()
    config = workdir / "soak.toml"
    config.write_text(proxy_toml(port, echo_port))
    proc = procs.spawn("ours", [sys.executable, "-m", "prefork_proxy", "-c", str(config)],
                       workdir / "proxy.log", port, cwd=REPO)
    _wait_answering(proc)
    return proc


def _wait_answering(proc: procs.Proc, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise procs.StartError(f"exited with {proc.popen.returncode}: {procs.log_tail(proc.log)}")
        try:
            with RawClient(proc.port, timeout=2) as client:
                if client.request(b"OPTIONS * HTTP/1.1\r\nHost: soak\r\n\r\n").status == 200 and len(workers(proc)) == 2:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise procs.StartError(f"not ready after {timeout:g}s: {procs.log_tail(proc.log)}")


# -- the load -------------------------------------------------------------------------------------------
@dataclass
class Tally:
    done: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, problem: str | None) -> None:
        with self.lock:
            if problem is None:
                self.done[kind] += 1
                return
            self.failed[kind] += 1
            if len(self.examples) < 10:
                self.examples.append(f"{kind}: {problem}")


class Client(threading.Thread):
    """One client: a keep-alive connection for GETs and uploads, fresh ones for tunnels."""

    _misses = itertools.count()

    def __init__(self, proxy_port: int, origin: Origin, echo_port: int, tally: Tally, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.origin, self.echo_port, self.tally, self.stop = proxy_port, origin, echo_port, tally, stop
        self.conn: RawClient | None = None

    def run(self) -> None:
        steps = [self.keepalive_get, self.hit, self.keepalive_get, self.miss, self.upload, self.tunnel, self.hit]
        for step in itertools.cycle(steps):
            if self.stop.is_set():
                break
            try:
                problem = step()
            except Exception as error:  # noqa: BLE001 - a failed request is what a soak counts
                problem = f"{error.__class__.__name__}: {error}"
            if problem is not None and self.conn is not None:
                self.conn.close()
                self.conn = None
            self.tally.add(step.__name__, problem)
        if self.conn is not None:
            self.conn.close()

    def _request(self, data: bytes, expect: bytes | None = None, method: str = "GET") -> str | None:
        if self.conn is None:
            self.conn = RawClient(self.port, timeout=10)
        response = self.conn.request(data, method)
        if response.status != 200 or not response.complete:
            return f"status {response.status}, complete {response.complete}"
        if expect is not None and response.body != expect:
            return f"wrong body ({len(response.body)} bytes)"
        if "close" in response.tokens("Connection"):
            self.conn.close()
            self.conn = None
        return None

    def keepalive_get(self) -> str | None:
        return self._request(build("GET", self.origin.url("/bytes?n=4096")))

    def hit(self) -> str | None:
        path = HOT[next(self._misses) % len(HOT)]
        return self._request(build("GET", self.origin.url(path)), expect=b"hot " * 256)

    def miss(self) -> str | None:
        return self._request(build("GET", self.origin.url(f"/miss?k={next(self._misses)}")), expect=b"miss " * 400)

    def upload(self) -> str | None:
        if next(self._misses) % 2:
            return self._request(build("POST", self.origin.url("/echo"), body=UPLOAD), method="POST")
        head = build("POST", self.origin.url("/echo"), [("Transfer-Encoding", "chunked")])
        body = b"".join(chunked([UPLOAD[:30000], UPLOAD[30000:]]))
        return self._request(head + body, method="POST")

    def tunnel(self) -> str | None:
        with RawClient(self.port, timeout=10) as client:
            answer = client.request(build("CONNECT", f"127.0.0.1:{self.echo_port}"), "CONNECT")
            if answer.status != 200:
                return f"CONNECT status {answer.status}"
            client.send(UPLOAD[:4096])
            echoed = b""
            while len(echoed) < 4096:
                piece = client.sock.recv(65536)
                if not piece:
                    return f"tunnel closed after {len(echoed)} bytes"
                echoed += piece
            return None if echoed == UPLOAD[:4096] else "tunnel echoed other bytes"


def start_wrk(options: argparse.Namespace, proc: procs.Proc, origin: Origin, workdir: Path) -> subprocess.Popen | None:
    """wrk sending absolute-form GETs for a hot URL (a forward-proxy request) for the whole run."""
    if options.wrk_connections <= 0 or shutil.which("wrk") is None:
        return None
    script = workdir / "hot.lua"
    script.write_text(f'wrk.path = "{origin.url(HOT[0])}"\n')
    seconds = max(1, int(options.minutes * 60))
    return subprocess.Popen(["wrk", "-t", "1", "-c", str(options.wrk_connections), "-d", f"{seconds}s",
                             "-s", str(script), f"http://127.0.0.1:{proc.port}/"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wrk_result(wrk: subprocess.Popen | None) -> tuple[str, list[str]]:
    """(a one-line summary, problems) from wrk's output; stops it if it is still running."""
    if wrk is None:
        return "wrk: not run", []
    try:
        output, _ = wrk.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        wrk.kill()
        output, _ = wrk.communicate()
    total = re.search(r"(\d+) requests in ([\d.]+\w+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    problems = [f"wrk: {non_2xx.group(0)}"] if non_2xx else []
    problems += [f"wrk socket errors: {errors.group(1)}"] if errors else []
    line = f"wrk (cache hits): {total.group(1)} requests in {total.group(2)}" if total else f"wrk: {output[-300:]!r}"
    return line, problems


# -- sampling -------------------------------------------------------------------------------------------
def workers(proc: procs.Proc) -> list[psutil.Process]:
    """The master's children running its own command line (not the embedded redis-server)."""
    try:
        master = psutil.Process(proc.popen.pid)
        line = master.cmdline()
        return sorted((c for c in master.children() if c.cmdline() == line), key=lambda c: c.pid)
    except psutil.Error:
        return []


def others(proc: procs.Proc) -> list[tuple[str, psutil.Process]]:
    try:
        master = psutil.Process(proc.popen.pid)
        rest = [c for c in master.children(recursive=True) if c.pid not in {w.pid for w in workers(proc)}]
    except psutil.Error:
        return []
    return [("master", master)] + [(child.name()[:12], child) for child in rest if "redis" in child.name()]


def measure(process: psutil.Process) -> tuple[float, int, int] | None:
    try:
        with process.oneshot():
            return process.memory_info().rss / MiB, process.num_fds(), process.num_threads()
    except psutil.Error:
        return None


@dataclass
class Sample:
    elapsed: float
    workers: dict[int, tuple[float, int, int]]
    others: dict[str, tuple[float, int, int]]
    done: int
    failed: int


def take(proc: procs.Proc, started: float, tally: Tally) -> Sample:
    with tally.lock:
        done, failed = sum(tally.done.values()), sum(tally.failed.values())
    return Sample(time.monotonic() - started,
                  {w.pid: m for w in workers(proc) if (m := measure(w)) is not None},
                  {name: m for name, p in others(proc) if (m := measure(p)) is not None}, done, failed)


def row(sample: Sample, previous: Sample | None) -> str:
    rate = (sample.done - previous.done) / (sample.elapsed - previous.elapsed) if previous else 0.0
    cells = [f"{sample.elapsed:7.0f}s", f"{sample.done:8d}", f"{rate:7.0f}/s", f"{sample.failed:5d}"]
    cells += [f"{pid}: {rss:6.1f} MiB {fds:4d} fd {threads:3d} thr" for pid, (rss, fds, threads) in sample.workers.items()]
    cells += [f"{name}: {rss:5.1f} MiB {fds:3d} fd" for name, (rss, fds, _) in sample.others.items()]
    return " | ".join(cells)


# -- the verdict ----------------------------------------------------------------------------------------
def verdict(samples: list[Sample], warmup: float, options: argparse.Namespace, tally: Tally) -> list[str]:
    """Problems found (empty: stable)."""
    problems = []
    if tally.failed:
        problems.append(f"FAILED requests: {dict(tally.failed)}; e.g. {tally.examples[:3]}")
    base = next((s for s in samples if s.elapsed >= warmup), samples[0])
    last = samples[-1]
    for pid, (rss, fds, _) in last.workers.items():
        if pid not in base.workers:
            problems.append(f"worker {pid} was not there after the warm-up (a worker was replaced)")
            continue
        rss0, fds0, _ = base.workers[pid]
        if rss - rss0 > options.rss_growth:
            problems.append(f"GROWTH: worker {pid} RSS {rss0:.1f} -> {rss:.1f} MiB")
        if fds - fds0 > options.fd_growth:
            problems.append(f"GROWTH: worker {pid} fds {fds0} -> {fds}")
    return problems


def summary(samples: list[Sample], warmup: float) -> str:
    base = next((s for s in samples if s.elapsed >= warmup), samples[0])
    last = samples[-1]
    parts = []
    for pid, (rss, fds, _) in last.workers.items():
        if pid in base.workers:
            rss0, fds0, _ = base.workers[pid]
            trend = slope([(s.elapsed, s.workers[pid][0]) for s in samples if s.elapsed >= base.elapsed
                           and pid in s.workers])
            parts.append(f"worker {pid}: RSS {rss0:.1f} -> {rss:.1f} MiB ({rss - rss0:+.1f}, "
                         f"trend {trend * 60:+.2f} MiB/min), fds {fds0} -> {fds}")
    return f"from {base.elapsed:.0f}s (after warm-up) to {last.elapsed:.0f}s: " + "; ".join(parts)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) points, in MiB per second (0 for fewer than 2 points)."""
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0


# -- main -----------------------------------------------------------------------------------------------
def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that stops everything


def soak(options: argparse.Namespace, proc: procs.Proc, origin: Origin, echo: EchoServer, workdir: Path) -> int:
    tally, stop = Tally(), threading.Event()
    clients = [Client(proc.port, origin, echo.port, tally, stop) for _ in range(options.clients)]
    for client in clients:
        client.start()
    wrk = start_wrk(options, proc, origin, workdir)
    duration, warmup = options.minutes * 60, min(60.0, options.minutes * 15)
    started, samples = time.monotonic(), []
    print(f"soak: {options.minutes:g} min, {options.clients} clients, sample every {options.interval:g}s, "
          f"warm-up {warmup:.0f}s; proxy on 127.0.0.1:{proc.port}", flush=True)
    print("   time | requests |    rate | fails | per worker: RSS, fds, threads | master, cache server"
          "   (requests: the python clients; wrk's total comes at the end)", flush=True)
    try:
        while True:
            samples.append(take(proc, started, tally))
            print(row(samples[-1], samples[-2] if len(samples) > 1 else None), flush=True)
            if samples[-1].elapsed >= duration or proc.popen.poll() is not None:
                break
            time.sleep(min(options.interval, max(0.0, duration - samples[-1].elapsed)))
    finally:
        stop.set()
        for client in clients:
            client.join(15)
        wrk_line, wrk_problems = wrk_result(wrk)
    print(f"python clients: {dict(tally.done)}; failed: {dict(tally.failed) or 0}")
    print(wrk_line)
    print(summary(samples, warmup))
    problems = verdict(samples, warmup, options, tally) + wrk_problems
    if proc.popen.poll() is not None:
        problems.append(f"the proxy exited with {proc.popen.returncode}")
    print("verdict: " + ("stable: no RSS or fd growth, no failed request" if not problems else "; ".join(problems)))
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="prefork-soak-"))
    origin, echo = start_origin()
    proc = None
    try:
        proc = start_proxy(workdir, echo.port)
        return soak(options, proc, origin, echo, workdir)
    except procs.StartError as error:
        print(f"soak: the proxy {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nsoak: interrupted; stopping everything", file=sys.stderr)
        return 130
    finally:
        if proc is not None:
            left = procs.stop(proc)
            if left:
                print(f"soak: processes left behind by the proxy (killed): {', '.join(left)}", file=sys.stderr)
        origin.stop()
        echo.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
