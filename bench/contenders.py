"""The servers under test and how each one is started in front of the origin.

A contender is a name, the program that must be installed, and a `start(workdir, port, origin_port,
cache)` function. `cache` is False for the no-store rows and True for the hit rows; a contender whose
one instance serves both (ours, Squid, Varnish cache by default) says so with `one_instance`, and the
run starts it once. Squid and Varnish are used only where installed; their configs are the plain
documented reverse-proxy setups, with their defaults otherwise.
"""

from __future__ import annotations

import functools
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bench import nginx
from bench.procs import Proc, spawn
from bench.source import REPO

Starter = Callable[[Path, int, int, bool], Proc]


@dataclass(frozen=True)
class Contender:
    name: str
    program: str            # must be on PATH, else the rows say "not installed" ("" = always there)
    start: Starter
    one_instance: bool      # one process serves the no-store and the hit rows

    def installed(self) -> bool:
        return not self.program or shutil.which(self.program) is not None


def _prepare(workdir: Path, mode: int = 0o755) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(mode)  # as root, these servers drop to an unprivileged user
    return workdir


def start_nginx(workdir: Path, port: int, origin_port: int, cache: bool) -> Proc:
    return nginx.start_proxy(workdir, port, origin_port, cache=cache)


def ours_toml(port: int, origin_port: int) -> str:
    return f"""[server]
bind = "127.0.0.1:{port}"
workers = 2
threads = 64

[upstream]
origin = "http://127.0.0.1:{origin_port}"

[cache]
redis_url = "embedded"

[admin]
bind = ""

[log]
access_log = ""
level = "warning"
"""


def start_ours(workdir: Path, port: int, origin_port: int, cache: bool, *, source: Path = REPO) -> Proc:
    """Run from `source`, the working tree or an exported commit (see bench.source)."""
    config = _prepare(workdir) / "proxy.toml"
    config.write_text(ours_toml(port, origin_port))
    argv = [sys.executable, "-m", "prefork_proxy", "-c", str(config)]
    return spawn("ours", argv, workdir / "output.log", port, stop_signal=signal.SIGTERM, cwd=source)


def squid_conf(workdir: Path, port: int, origin_port: int) -> str:
    return f"""http_port 127.0.0.1:{port} accel defaultsite=127.0.0.1:{origin_port} no-vhost
cache_peer 127.0.0.1 parent {origin_port} 0 no-query originserver name=origin
cache_peer_access origin allow all
http_access allow all
never_direct allow all
cache_mem 256 MB
access_log none
cache_log {workdir}/cache.log
pid_filename {workdir}/squid.pid
coredump_dir {workdir}
visible_hostname bench
shutdown_lifetime 1 seconds
"""


def start_squid(workdir: Path, port: int, origin_port: int, cache: bool) -> Proc:
    conf = _prepare(workdir, 0o777) / "squid.conf"
    conf.write_text(squid_conf(workdir, port, origin_port))
    argv = ["squid", "-N", "-f", str(conf)]
    return spawn("squid", argv, workdir / "output.log", port, stop_signal=signal.SIGTERM)


def start_varnish(workdir: Path, port: int, origin_port: int, cache: bool) -> Proc:
    state = _prepare(workdir) / "state"
    argv = ["varnishd", "-F", "-n", str(state), "-a", f"127.0.0.1:{port}",
            "-b", f"127.0.0.1:{origin_port}", "-s", "malloc,256m"]
    return spawn("varnish", argv, workdir / "output.log", port, stop_signal=signal.SIGTERM)


def with_source(contenders: tuple[Contender, ...], source: Path) -> tuple[Contender, ...]:
    """The same contenders, with ours run from another source tree."""
    ours = functools.partial(start_ours, source=source)
    return tuple(replace(c, start=ours) if c.start is start_ours else c for c in contenders)


CONTENDERS = (
    Contender("nginx", "nginx", start_nginx, one_instance=False),
    Contender("ours", "", start_ours, one_instance=True),
    Contender("squid", "squid", start_squid, one_instance=True),
    Contender("varnish", "varnishd", start_varnish, one_instance=True),
)
