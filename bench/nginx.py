"""nginx for the bench: the origin, the plain reverse proxy and the caching proxy.

All three are one template (`nginx_conf`) filled with a role's `http` extras and `server` body, so
the shared tuning (keep-alive, temp paths, logging) is written once. Tuning that differs from the
nginx defaults, for every role: `keepalive_requests 100000` on the client side and upstream (nginx
closes a keep-alive connection after 1000 requests by default, our proxy does not), access_log off.
"""

from __future__ import annotations

import signal
from pathlib import Path

from bench.procs import Proc, spawn

BODY_SIZES = {"1k": 1024, "100k": 100 * 1024}
NO_STORE = "no-store"
CACHEABLE = "public, max-age=3600"
CACHE_STATUS_HEADER = "X-Cache-Status"


def nginx_conf(prefix: Path, *, port: int, workers: int, server: str, http_extra: str = "") -> str:
    temp = "\n    ".join(f"{kind}_temp_path {prefix}/{kind}_temp;"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 100000;
    types {{ }}
    default_type application/octet-stream;
    {temp}
    {http_extra}
    server {{
        listen 127.0.0.1:{port};
        {server}
    }}
}}
"""


def origin_server(root: Path) -> str:
    """/1k, /100k with no-store; the same files under /c/ as cacheable for an hour."""
    return f"""root {root};
        location / {{ add_header Cache-Control "{NO_STORE}" always; }}
        location /c/ {{ alias {root}/; add_header Cache-Control "{CACHEABLE}" always; }}"""


def upstream_block(origin_port: int) -> str:
    return f"""upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 32; keepalive_requests 100000; }}"""


def proxy_server(cache_zone: str = "") -> str:
    cache = (f"proxy_cache {cache_zone};\n            "
             f"add_header {CACHE_STATUS_HEADER} $upstream_cache_status always;") if cache_zone else ""
    return f"""location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
            {cache}
        }}"""


def cache_path(prefix: Path, zone: str) -> str:
    """A cache zone; validity comes from the origin's Cache-Control (no proxy_cache_valid)."""
    return (f"proxy_cache_path {prefix}/cache levels=1:2 keys_zone={zone}:10m max_size=256m "
            f"inactive=60m use_temp_path=off;")


def write_bodies(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, size in BODY_SIZES.items():
        pattern = bytes(range(32, 127))
        (root / name).write_bytes((pattern * (size // len(pattern) + 1))[:size])
        (root / name).chmod(0o644)


def start(name: str, prefix: Path, conf: str, port: int) -> Proc:
    prefix.mkdir(parents=True, exist_ok=True)
    prefix.chmod(0o755)  # when run as root, nginx workers run as an unprivileged user
    (prefix / "nginx.conf").write_text(conf)
    argv = ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr"]
    return spawn(name, argv, prefix / "output.log", port, stop_signal=signal.SIGTERM)


def start_origin(prefix: Path, port: int) -> Proc:
    write_bodies(prefix / "www")
    conf = nginx_conf(prefix, port=port, workers=1, server=origin_server(prefix / "www"))
    return start("origin", prefix, conf, port)


def start_proxy(prefix: Path, port: int, origin_port: int, *, cache: bool) -> Proc:
    zone = "bench" if cache else ""
    extra = upstream_block(origin_port) + ("\n    " + cache_path(prefix, zone) if cache else "")
    conf = nginx_conf(prefix, port=port, workers=2, server=proxy_server(zone), http_extra=extra)
    return start("nginx+cache" if cache else "nginx", prefix, conf, port)
