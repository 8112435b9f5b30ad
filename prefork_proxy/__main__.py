"""Command line: `python -m prefork_proxy [-c FILE] [--check] [--bind HOST:PORT] [--workers N]`."""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__, logs
from .config import ConfigError, Overrides, load, summary
from .master import HaltError, Master

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prefork-proxy", description=(
        "A caching HTTP/1.1 proxy: a pre-fork master and threaded workers. "
        "Signals to the master: HUP reload, TERM graceful stop, INT/QUIT fast stop, "
        "TTIN/TTOU one worker more/less, USR1 reopen logs."))
    parser.add_argument("-c", "--config", default="config/proxy.toml", help="config file (TOML)")
    parser.add_argument("--check", action="store_true",
                        help="validate the config, print the effective settings and exit (0 ok, 2 bad)")
    parser.add_argument("--bind", action="append", default=[], metavar="HOST:PORT",
                        help="listen here instead of server.bind (repeatable)")
    parser.add_argument("--workers", type=int, metavar="N", help="override server.workers")
    parser.add_argument("--version", action="version", version=f"prefork_proxy {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["stats"]:
        from .statscmd import main as stats_main
        return stats_main(argv[1:])
    if argv[:1] == ["passwd"]:
        return _passwd(argv[1:])
    args = _parser().parse_args(argv)
    overrides = Overrides(bind=tuple(args.bind), workers=args.workers)
    try:
        config = load(args.config, overrides)
    except ConfigError as error:
        print(f"prefork_proxy: {error}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check:
        print(summary(config))
        print(f"prefork_proxy: the configuration file {args.config} syntax is ok")
        return 0
    logs.configure(config.log)
    try:
        return Master(config, overrides).run()
    except HaltError as error:
        logging.getLogger("prefork_proxy.master").critical("%s", error)
        return 3
    except OSError as error:
        logging.getLogger("prefork_proxy.master").critical("%s", error)
        return 1


def _passwd(argv: list[str]) -> int:
    """`passwd USER`: read a password (twice) and print the `[access] auth_file` line for it."""
    import getpass

    from workers.auth import hash_password
    parser = argparse.ArgumentParser(prog="prefork-proxy passwd",
                                     description="print a USER:HASH line for [access] auth_file")
    parser.add_argument("user")
    args = parser.parse_args(argv)
    if ":" in args.user:
        print("prefork_proxy: a user name cannot contain ':'", file=sys.stderr)
        return EXIT_CONFIG
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if sys.stdin.isatty() and getpass.getpass("again: ") != password:
        print("prefork_proxy: the passwords differ", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.user}:{hash_password(password)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
