"""Fixtures shared by the whole suite: origin and echo servers, proxy processes, output dirs.

Every process or thread a fixture starts is stopped at teardown, and a proxy's whole process tree
is checked to be gone (a test that leaves a process behind errors at teardown).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
for path in (str(TESTS), str(TESTS.parent)):  # `support` and the project packages, however pytest runs
    if path not in sys.path:
        sys.path.insert(0, path)

from support.echo import EchoServer  # noqa: E402
from support.origin import Origin  # noqa: E402
from support.proxy import REPO, ProxyProcess  # noqa: E402


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


def _failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "report_call", None)
    return report is None or report.failed


@pytest.fixture
def origin():
    """A started scriptable origin on 127.0.0.1 (tests/support/origin.py)."""
    server = Origin().start()
    yield server
    server.stop()


@pytest.fixture
def echo_server():
    server = EchoServer().start()
    yield server
    server.stop()


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    """test-output/<test id>/ in the repository (kept after the run, git-ignored)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid).strip("_")[:150]
    path = REPO / "test-output" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


class _Proxies:
    """The proxies one fixture started; close() stops them all and reports leftover processes."""

    def __init__(self, workdir: Path) -> None:
        self.workdir, self.started = workdir, []

    def __call__(self, config: dict | None = None, *, args: tuple[str, ...] = (),
                 expect_workers: int | None = None, start: bool = True, name: str | None = None) -> ProxyProcess:
        proxy = ProxyProcess(self.workdir, config, args=args, expect_workers=expect_workers,
                             name=name or f"proxy{len(self.started)}")
        self.started.append(proxy)
        if start:
            proxy.start()
        return proxy

    def close(self, failed: bool) -> None:
        problems = []
        for proxy in self.started:
            proxy.stop()
            left = proxy.leftovers()
            if left:
                problems.append(f"{proxy.name}: processes left behind: {proxy.kill_leftovers()}")
            if failed or left:
                tail = "\n".join(proxy.stderr_text().splitlines()[-80:])
                print(f"--- {proxy.name} stderr (last 80 lines) ---\n{tail}")
        assert not problems, "; ".join(problems)


@pytest.fixture
def make_proxy(tmp_path: Path, request: pytest.FixtureRequest):
    """Factory: make_proxy(config_sections, args=(), expect_workers=None, start=True) -> ProxyProcess.

    `config_sections` is merged over ProxyProcess.default_config() (1 worker, cache and admin off,
    access log in tmp_path). All proxies are stopped at teardown, and no process may be left.
    """
    proxies = _Proxies(tmp_path)
    yield proxies
    proxies.close(_failed(request))


@pytest.fixture(scope="module")
def module_make_proxy(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """make_proxy for a proxy shared by a module's read-only tests (state-changing tests use make_proxy)."""
    proxies = _Proxies(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    yield proxies
    proxies.close(failed=request.session.testsfailed > 0)


@pytest.fixture(scope="module")
def module_origin():
    server = Origin().start()
    yield server
    server.stop()


@pytest.fixture
def proxy(make_proxy, origin):
    """A started forward proxy with one worker (the origin fixture runs too)."""
    return make_proxy()


@pytest.fixture
def http():
    """A requests session that ignores the environment's proxy settings."""
    import requests

    session = requests.Session()
    session.trust_env = False
    yield session
    session.close()
