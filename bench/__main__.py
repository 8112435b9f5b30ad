"""python -m bench: run the side-by-side benchmark once and print, save the table.

Flags (each also an environment variable, so `make bench BENCH_DURATION=5` works):
  --duration S        seconds per wrk run (BENCH_DURATION, 10)
  --connections N     wrk keep-alive connections (BENCH_CONNECTIONS, 32)
  --threads N         wrk threads (BENCH_THREADS, 2)
  --only LIST         comma list of servers and/or scenarios, e.g. "ours,hit" (BENCH_ONLY, all)
  --start-timeout S   how long a server may take to answer its first GET (BENCH_START_TIMEOUT, 15)
  --ref REF           measure our code at this git ref instead of the working tree (BENCH_REF)
  --results DIR       where the .txt and .json go (bench/results)
  --keep-temp         keep the temporary directory (configs, server logs) for inspection
Exit status: 0 when the harness ran (rows may still carry errors), 2 when it could not run at all.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import nginx, procs, report, source, wrk
from bench.checks import CheckError, Scenario, check
from bench.contenders import CONTENDERS, Contender, with_source
from bench.procs import Proc, StartError
from bench.report import Result

HERE = Path(__file__).resolve().parent
KB = 1024
SCENARIOS = (
    Scenario("nostore-1k", "no-store 1k", "/1k", KB, cached=False),
    Scenario("nostore-100k", "no-store 100k", "/100k", 100 * KB, cached=False),
    Scenario("hit-1k", "hit 1k", "/c/1k", KB, cached=True),
    Scenario("hit-1k-varied", "hit 1k varied", "/c/1k", KB, cached=True, varied=True),
    Scenario("hit-100k", "hit 100k", "/c/100k", 100 * KB, cached=True),
)
GROUPS = {"nostore": [s for s in SCENARIOS if not s.cached], "hit": [s for s in SCENARIOS if s.cached]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=int(env("BENCH_DURATION", "10")))
    parser.add_argument("--connections", type=int, default=int(env("BENCH_CONNECTIONS", "32")))
    parser.add_argument("--threads", type=int, default=int(env("BENCH_THREADS", "2")))
    parser.add_argument("--only", default=env("BENCH_ONLY", ""))
    parser.add_argument("--start-timeout", type=float, default=float(env("BENCH_START_TIMEOUT", "15")))
    parser.add_argument("--ref", default=env("BENCH_REF", ""))
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--keep-temp", action="store_true")
    options = parser.parse_args(argv)
    options.contenders, options.scenarios = select(parser, options.only)
    return options


def select(parser: argparse.ArgumentParser, only: str) -> tuple[list[Contender], list[Scenario]]:
    """Split --only into servers and scenarios; an empty side means all of that side."""
    tokens = [t.strip() for t in only.split(",") if t.strip()]
    servers = {c.name: c for c in CONTENDERS}
    scenarios = {s.key: [s] for s in SCENARIOS} | GROUPS
    unknown = [t for t in tokens if t not in servers and t not in scenarios]
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; known: {', '.join([*servers, *scenarios])}")
    chosen_servers = [c for c in CONTENDERS if c.name in tokens] or list(CONTENDERS)
    chosen = {s.key for t in tokens if t in scenarios for s in scenarios[t]}
    return chosen_servers, [s for s in SCENARIOS if not chosen or s.key in chosen]


class Bench:
    """One run's state: the temporary directory, the processes it started, the instances by role."""

    def __init__(self, options: argparse.Namespace, tmp: Path) -> None:
        self.options, self.tmp = options, tmp
        self.settings = wrk.WrkSettings(options.duration, options.connections, options.threads)
        self.scripts = {varied: wrk.write_script(tmp / f"done-{varied}.lua", varied) for varied in (False, True)}
        self.started: list[Proc] = []
        self.warnings: list[str] = []     # cleanup problems, printed under the table
        self.started_at = time.strftime("%Y-%m-%d %H:%M:%S %z")
        self.load_before = os.getloadavg()[0]  # other work on the machine, before ours starts
        self.instances: dict[tuple[str, bool], Proc | StartError] = {}
        self.origin_port = 0
        self.ours = source.describe_worktree()

    def use_ref(self) -> None:
        """Measure our code at --ref: export it and point ours at the export."""
        self.ours = source.export(self.options.ref, self.tmp / "src")
        self.options.contenders = list(with_source(tuple(self.options.contenders), self.tmp / "src"))

    def start_origin(self) -> None:
        self.origin_port = procs.free_port()
        origin = self._track(nginx.start_origin(self.tmp / "origin", self.origin_port))
        procs.wait_ready(origin, "/1k", self.options.start_timeout)  # a StartError here ends the run

    def instance(self, contender: Contender, cached: bool) -> Proc:
        """The running server for this contender and row kind, started on first use."""
        key = (contender.name, True if contender.one_instance else cached)
        if key not in self.instances:
            self.instances[key] = self._start(contender, cached)
        found = self.instances[key]
        if isinstance(found, StartError):
            raise found
        return found

    def _start(self, contender: Contender, cached: bool) -> Proc | StartError:
        name = contender.name + ("-cache" if cached and not contender.one_instance else "")
        proc = self._track(contender.start(self.tmp / name, procs.free_port(), self.origin_port, cached))
        try:
            procs.wait_ready(proc, "/1k", self.options.start_timeout)
            return proc
        except StartError as error:
            self._stop(proc)  # a crash-looping server must not eat CPU during the other rows
            return error

    def _track(self, proc: Proc) -> Proc:
        self.started.append(proc)
        return proc

    def run_row(self, contender: Contender, scenario: Scenario) -> Result:
        result = Result(scenario, contender.name)
        if not contender.installed():
            result.skipped = f"not installed ({contender.program} not found)"
            return result
        try:
            proc = self.instance(contender, scenario.cached)
            result.notes = check(proc.port, scenario)
            url = f"http://{procs.LOOPBACK}:{proc.port}{scenario.path}"
            result.load, result.wrk_output = wrk.run(url, self.settings, self.scripts[scenario.varied])
        except (StartError, CheckError, wrk.WrkError) as error:
            result.error = str(error) + self._exited(result.server)
        return result

    def _exited(self, name: str) -> str:
        """For a row error: whether the server died meanwhile, with the end of its output."""
        for proc in self.started:
            code = proc.popen.poll()
            if proc.name.startswith(name) and code is not None:
                return f"; {proc.name} exited with code {code}: {procs.log_tail(proc.log)}"
        return ""

    def _stop(self, proc: Proc) -> None:
        if proc in self.started:
            self.started.remove(proc)
            leftovers = procs.stop(proc)
            if leftovers:
                self.warnings.append(f"{proc.name} left processes running after its stop signal "
                                     f"(killed them): {', '.join(leftovers)}")

    def close(self) -> None:
        for proc in reversed(list(self.started)):
            self._stop(proc)


def run_rows(bench: Bench, results: list[Result]) -> None:
    """Scenario-major: every server runs a scenario before the next one starts."""
    plan = [(s, c) for s in bench.options.scenarios for c in bench.options.contenders]
    for number, (scenario, contender) in enumerate(plan, 1):
        print(f"[{number}/{len(plan)}] {scenario.title} @ {contender.name} ...", end=" ", file=sys.stderr,
              flush=True)
        results.append(bench.run_row(contender, scenario))
        print(progress(results[-1]), file=sys.stderr, flush=True)


def progress(result: Result) -> str:
    if result.load is None:
        return (result.skipped or result.error)[:100]
    return f"{result.load.req_per_s:,.0f} req/s, p99 {result.load.p99_us / 1000:.2f} ms"


def version_of(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    first = (done.stderr or done.stdout).strip().splitlines()
    return first[0].split("Copyright")[0].strip() if first else "?"


def header(bench: Bench) -> list[str]:
    options = bench.options
    return [
        f"prefork_proxy bench, {bench.started_at}",
        f"machine: {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"load average {bench.load_before:.2f} before the run; "
        f"Python {platform.python_version()} ({sys.executable})",
        f"tools: {version_of(['nginx', '-v'])}; {version_of(['wrk', '-v'])}; ours: {bench.ours}",
        f"load: wrk -c{options.connections} -t{options.threads} -d{options.duration}s, keep-alive, "
        f"loopback; origin: nginx, 1 worker; proxies: 2 workers each",
        "NOISE: wrk, the proxies, the origin and any other work share this machine's cores; compare",
        "       rows within one run, never numbers from different runs or machines.",
        "MB/s = 10^6 bytes/s of responses read. ratio/nginx = this row's req/s / nginx's req/s in the",
        "       same scenario (ours/nginx on ours' rows).",
    ]


def finish(bench: Bench, results: list[Result]) -> None:
    lines = header(bench)
    text = report.render(lines, results) + "".join(f"WARNING: {w}\n" for w in bench.warnings)
    print(text, flush=True)
    options = bench.options
    meta = {"settings": {k: getattr(options, k) for k in ("duration", "connections", "threads", "only", "ref")},
            "ours": bench.ours,
            "load_average_before": bench.load_before, "warnings": bench.warnings}
    txt, js = report.save(options.results, text, report.to_json(lines, meta, results))
    print(f"saved {txt} and {js.name}")


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that stops every process


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    missing = [tool for tool in ("nginx", "wrk") if shutil.which(tool) is None]
    if missing:
        print(f"bench: missing {', '.join(missing)} (bash tools/sysdeps.sh bench)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    tmp = Path(tempfile.mkdtemp(prefix="prefork-bench-"))
    tmp.chmod(0o755)  # as root, the servers' workers run unprivileged and must reach their files
    bench, results = Bench(options, tmp), []
    try:
        if options.ref:
            bench.use_ref()
        bench.start_origin()
        run_rows(bench, results)
    except source.SourceError as error:
        print(f"bench: --ref {options.ref}: {error}", file=sys.stderr)
        return 2
    except StartError as error:
        print(f"bench: the origin {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping everything", file=sys.stderr)
        return 130
    finally:
        bench.close()
        if options.keep_temp:
            print(f"bench: kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    finish(bench, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
