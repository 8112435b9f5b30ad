"""One wrk run, read through a Lua `done()` hook that prints the summary as one JSON line.

The hook defines no per-request function, so wrk's hot path is untouched; the `varied` script adds
one that numbers each request in a header (`X-Bench-Request: N`), so no two requests are
byte-identical (caches key on the URL, so hits stay hits). wrk counts a response with
status >= 400 as a status error; the row's check has already verified a 200 before the run.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

MARK = "BENCH-RESULT "
DONE_LUA = """done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('%s{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d}\\n',
    "MARK", summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
""".replace('"MARK"', json.dumps(MARK))
ERROR_KINDS = ("status", "connect", "read", "write", "timeout")


class WrkError(Exception):
    """wrk failed or printed no result line."""


@dataclass(frozen=True)
class Load:
    requests: int
    duration_us: int
    bytes: int
    errors: dict[str, int]
    p50_us: int
    p99_us: int
    max_us: int

    @property
    def req_per_s(self) -> float:
        return self.requests / (self.duration_us / 1e6)

    @property
    def mb_per_s(self) -> float:
        return self.bytes / (self.duration_us / 1e6) / 1e6

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass(frozen=True)
class WrkSettings:
    duration: int = 10
    connections: int = 32
    threads: int = 2


VARY_LUA = """local counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, {["X-Bench-Request"] = tostring(counter)})
end
"""


def write_script(path: Path, varied: bool = False) -> Path:
    path.write_text(DONE_LUA + (VARY_LUA if varied else ""))
    return path


def run(url: str, settings: WrkSettings, script: Path) -> tuple[Load, str]:
    """Run wrk against url; return the parsed load and wrk's own output."""
    argv = ["wrk", f"-c{settings.connections}", f"-t{settings.threads}", f"-d{settings.duration}s",
            "--latency", "--timeout", "5s", "-s", str(script), url]
    limit = settings.duration + 30
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        try:
            out, err = child.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            raise WrkError(f"wrk did not finish within {limit}s") from None
        finally:
            if child.poll() is None:  # timeout, Ctrl-C or SIGTERM: never leave wrk running
                child.kill()
                child.wait()
    if child.returncode != 0:
        raise WrkError(f"wrk exit code {child.returncode}: {(err or out).strip()[-300:]}")
    return parse(out), out


def parse(output: str) -> Load:
    for line in output.splitlines():
        if line.startswith(MARK):
            data = json.loads(line[len(MARK):])
            errors = {kind: data.pop(kind) for kind in ERROR_KINDS}
            return Load(errors=errors, **data)
    raise WrkError(f"no result line in wrk output: {output.strip()[-300:]}")
