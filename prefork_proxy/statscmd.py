"""`python -m prefork_proxy stats -c FILE [--json] [--watch [SECONDS]]`: /stats in a terminal.

It reads the admin address from the config file, fetches /stats and prints a summary and a worker
table (varnishstat's and uwsgitop's idea, as one screen). Exit status: 0, 1 when the admin
listener cannot be reached or is off, 2 for a config error.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time

from workers.settings import parse_address

from .config import ConfigError, load

__all__ = ["main", "render", "fetch"]

EXIT_UNREACHABLE = 1
EXIT_CONFIG = 2
_CLEAR = "\x1b[H\x1b[2J"
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prefork-proxy stats",
                                     description="Show a running proxy's /stats (from its [admin] listener).")
    parser.add_argument("-c", "--config", default="config/proxy.toml", help="the proxy's config file")
    parser.add_argument("--admin", metavar="HOST:PORT", help="ask this address instead of admin.bind")
    parser.add_argument("--json", action="store_true", help="print the /stats document as JSON")
    parser.add_argument("--watch", nargs="?", type=float, const=1.0, metavar="SECONDS",
                        help="refresh in place every SECONDS (default 1) until Ctrl-C")
    return parser


def fetch(address: str, path: str = "/stats", timeout: float = 5.0) -> bytes:
    host, port = parse_address(address)
    host = _WILDCARDS.get(host, host)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise OSError(f"{path}: HTTP {response.status}: {body[:200].decode('utf-8', 'replace').strip()}")
        return body
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    address = args.admin
    if address is None:
        try:
            address = load(args.config).admin.bind
        except ConfigError as error:
            print(f"prefork_proxy stats: {error}", file=sys.stderr)
            return EXIT_CONFIG
        if not address:
            print(f"prefork_proxy stats: {args.config}: admin.bind is \"\" (the admin listener is off)",
                  file=sys.stderr)
            return EXIT_UNREACHABLE
    try:
        if args.watch:
            return _watch(address, args.watch, args.json)
        try:
            body = fetch(address)
        except (OSError, http.client.HTTPException, ValueError) as error:
            print(f"prefork_proxy stats: cannot read http://{address}/stats: {error}", file=sys.stderr)
            return EXIT_UNREACHABLE
        print(_show(body, args.json))
    except BrokenPipeError:               # `... stats | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _show(body: bytes, as_json: bool) -> str:
    document = json.loads(body)
    return json.dumps(document, indent=2) if as_json else render(document)


def _watch(address: str, interval: float, as_json: bool) -> int:
    clear = _CLEAR if sys.stdout.isatty() else "\n"
    try:
        while True:
            try:
                text = _show(fetch(address), as_json)
            except (OSError, http.client.HTTPException, ValueError) as error:
                text = f"cannot read http://{address}/stats: {error} (retrying)"
            sys.stdout.write(f"{clear}{time.strftime('%H:%M:%S')}  every {interval:g}s, Ctrl-C to stop\n{text}\n")
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0


# -- rendering ---------------------------------------------------------------------------------
def render(doc: dict) -> str:
    """The document as a short summary and a worker table (plain text, 100 columns)."""
    master, totals, cache, rates = doc["master"], doc["totals"], doc["cache"], doc["rates"]
    reloads = master["reloads"]
    latency = totals["latency"]
    mean = latency["sum_seconds"] / latency["count"] if latency["count"] else 0.0
    health = doc["health"]
    lines = [
        f"prefork_proxy  master {master['pid']}  up {duration(master['uptime_seconds'])}  "
        f"generation {master['generation']}  health: {'ok' if health['ok'] else 'UNAVAILABLE'} ({health['reason']})",
        f"config    {master['config_path']}  sha256 {master['config_sha256'][:12]}  {_reloads(reloads)}",
        f"workers   {master['workers_running']} running / {master['workers_wanted']} wanted, "
        f"{master['respawns']} respawns{_backoff(master)}",
        f"requests  {totals['requests']:,} total, {rates['requests_per_second']:.1f}/s now, "
        f"{rates['requests_last_minute']:,} in the last minute, mean {mean * 1000:.1f} ms",
        f"clients   {totals['connections']:,} connections, {totals['active_connections']} active, "
        f"{totals['idle_connections']} idle, in {size(totals['bytes_in'])}, out {size(totals['bytes_out'])}",
        f"errors    upstream {totals['upstream_errors']:,}, upstream timeouts {totals['upstream_timeouts']:,}, "
        f"client {totals['client_errors']:,}",
        f"cache     {_cache(cache, totals, rates)}",
    ]
    redis = cache["redis"]
    if redis is not None:
        lines.append(f"redis     {_redis(redis)}")
    lines += ["", _table(doc["workers"])]
    return "\n".join(lines)


def _reloads(reloads: dict) -> str:
    if not reloads["count"]:
        return "no reload yet"
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(reloads["last_at"]))
    if reloads["last_ok"]:
        return f"{reloads['count']} reloads, last ok at {at}"
    return f"{reloads['count']} reloads, last FAILED at {at}: {reloads['last_error']}"


def _backoff(master: dict) -> str:
    wait = master["next_spawn_in_seconds"]
    return f", respawn back-off: next in {wait:.1f}s" if wait else ""


def _cache(cache: dict, totals: dict, rates: dict) -> str:
    if cache["backend"] == "off":
        return "off"
    counts = ", ".join(f"{name} {count:,}" for name, count in totals["cache"].items())
    return (f"{cache['backend']}  hit ratio {percent(totals['hit_ratio'])} "
            f"(last minute {percent(rates['hit_ratio_last_minute'])})  {counts}  "
            f"L1 {cache['l1_entries']:,} objects {size(cache['l1_bytes'])}")


def _redis(redis: dict) -> str:
    if not redis["reachable"]:
        return f"UNREACHABLE: {redis['error']}"
    parts = [f"up, ping {redis['ping_seconds'] * 1000:.2f} ms", f"{redis['keys']:,} keys"]
    if redis.get("used_memory_bytes") is not None:
        limit = size(redis["maxmemory_bytes"]) if redis.get("maxmemory_bytes") else "no limit"
        parts.append(f"memory {size(redis['used_memory_bytes'])} of {limit} ({redis.get('maxmemory_policy')})")
    if redis.get("evicted_keys") is not None:
        parts.append(f"{redis['evicted_keys']:,} evicted")
    if redis.get("version"):
        parts.append(f"redis {redis['version']}")
    return ", ".join(parts)


_COLUMNS = (("PID", 7), ("GEN", 4), ("STATE", 9), ("UPTIME", 7), ("CPU%", 6), ("RSS", 8), ("THR", 4),
            ("FDS", 5), ("REQUESTS", 10), ("CONNS", 8), ("ACT", 4), ("IDLE", 5), ("HIT%", 6), ("ERRORS", 7))


def _table(workers: list[dict]) -> str:
    rows = [[name for name, _ in _COLUMNS]]
    for worker in workers:
        process = worker["process"] or {}
        errors = worker["upstream_errors"] + worker["upstream_timeouts"] + worker["client_errors"]
        state = worker["state"] + ("*" if worker["retiring"] else "")
        rows.append([str(worker["pid"]), str(worker["generation"]), state,
                     duration(worker["uptime_seconds"]), _maybe(process.get("cpu_percent"), "{:.1f}"),
                     size(process["rss_bytes"]) if "rss_bytes" in process else "-",
                     _maybe(process.get("threads")), _maybe(process.get("open_fds")),
                     f"{worker['requests']:,}", f"{worker['connections']:,}",
                     str(worker["active_connections"]), str(worker["idle_connections"]),
                     percent(worker["hit_ratio"]), f"{errors:,}"])
    lines = [" ".join(cell.rjust(width) if i != 2 else cell.ljust(width)
                      for i, (cell, (_, width)) in enumerate(zip(row, _COLUMNS))) for row in rows]
    if any(worker["retiring"] for worker in workers):
        lines.append("* retiring (an older generation finishing its requests)")
    return "\n".join(lines)


def _maybe(value, template: str = "{}") -> str:
    return "-" if value is None else template.format(value)


def percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f}%"


def size(count: float | None) -> str:
    if count is None:
        return "-"
    if count < 1024:
        return f"{count:.0f} B"
    unit = "KiB"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        count /= 1024
        if count < 1024:
            break
    return f"{count:.1f} {unit}"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
