"""The `pchat` command: serve, admin, chat."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from core.config import ConfigError, Settings, find_config_file, load_settings
from core.errors import StoreError
from shards.logs import setup_logging

DESCRIPTION = """\
pchat: a persistent, topic-based group chat server speaking XCCOS over SIP.

Configuration comes from a TOML file (--config, else PCHAT_CONFIG, else
/etc/pchat/pchat.toml, else ./pchat.toml), then PCHAT_*
environment variables (PCHAT_DOMAIN, PCHAT_SIP__PORT: a double underscore nests),
then flags; later ones win. With no Redis URL and no store URL, pchat keeps
everything in --data-dir: a SQLite chat store and a private redis-server.
"""


PROCESS_NAMES = {"serve": "supervisor"}  # the "process" of each log line; else the command


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        help="TOML settings file (default: $PCHAT_CONFIG, else /etc/pchat/pchat.toml, else"
        " ./pchat.toml, the first that exists)",
    )
    p.add_argument("--data-dir", help="data directory (default ./data)")
    p.add_argument("--domain", help="SIP domain and digest realm (default example.com)")
    p.add_argument(
        "--store",
        help="chat store URL: sqlite:///path.db or postgresql://… (default: SQLite in data dir)",
    )
    p.add_argument(
        "--redis-url", help="Redis URL (default: an embedded redis-server in the data dir)"
    )
    p.add_argument(
        "--redis-cluster",
        action="store_true",
        default=None,
        help="--redis-url is a node of a Redis Cluster (sharded pub/sub)",
    )
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    p.add_argument("--log-format", choices=["text", "json"], help="log lines (default text)")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pchat")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    from shards import admin

    parser = argparse.ArgumentParser(
        prog="pchat", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"pchat {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server (supervisor + workers)")
    _common(serve)
    serve.add_argument("--sip-host", help="SIP listen address (default 0.0.0.0: all)")
    serve.add_argument("--sip-port", type=int, help="SIP over TCP port (default 5041)")
    serve.add_argument("--http-host", help="HTTP listen address (default 0.0.0.0: all)")
    serve.add_argument(
        "--http-port", type=int, help="HTTP port for /healthz, /metrics (default 8080)"
    )
    serve.add_argument("--workers", type=int, help="worker processes (default 1; 0: one per CPU)")
    serve.add_argument(
        "--access-log",
        action="store_true",
        default=None,
        help="log every HTTP request (method, path, status, bytes, time, peer, user)",
    )
    serve.add_argument(
        "--compliance",
        action="store_true",
        default=None,
        help="record activity for compliance and run the compliance service",
    )
    common = argparse.ArgumentParser(add_help=False)
    _common(common)
    admin.add_parser(sub, common)
    chat = sub.add_parser("chat", help="a terminal chat client")
    _common(chat)
    from client.chat_args import add_arguments

    add_arguments(chat)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        "data_dir": args.data_dir,
        "domain": args.domain,
        "store": args.store,
        "redis_url": args.redis_url,
        "redis_cluster": args.redis_cluster,
        "log_level": args.log_level,
        "log.format": args.log_format,
        "sip.host": getattr(args, "sip_host", None),
        "sip.port": getattr(args, "sip_port", None),
        "http.host": getattr(args, "http_host", None),
        "http.port": getattr(args, "http_port", None),
        "workers": getattr(args, "workers", None),
        "compliance.enabled": getattr(args, "compliance", None),
        "log.access": getattr(args, "access_log", None),
    }
    return load_settings(config_file(args), overrides=overrides)


def config_file(args: argparse.Namespace) -> str | None:
    """The one resolution of the config file, for serve, admin and chat alike."""
    return find_config_file(args.config, os.environ)


def main(argv: list[str] | None = None) -> int:
    try:
        code = _run(argv)
        sys.stdout.flush()  # here, so a closed pipe is caught below and not at exit
        return code
    except BrokenPipeError:
        # `pchat admin user list | head`: the reader has all it wanted. Nothing more may be
        # written (the interpreter's last flush would fail again), and the status is the
        # one a command killed by SIGPIPE has.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _run(argv: list[str] | None) -> int:
    # Everything pchat creates (stores, archives, pid files, the redis socket) is for this
    # user only: chat.db holds digest HA1 hashes, one of which is enough to sign in.
    os.umask(0o077)
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ConfigError as exc:
        print(f"pchat: {exc}", file=sys.stderr)
        return 2
    setup_logging(
        settings.log_level, PROCESS_NAMES.get(args.command, args.command), settings.log.format
    )
    if args.command == "serve":
        from shards.supervisor import Supervisor

        try:
            return Supervisor(settings, config_file(args)).run()
        except StoreError as exc:  # docs/rooms.md: a store that cannot be opened exits 2
            print(f"pchat: {exc}", file=sys.stderr)
            return 2
        except RuntimeError as exc:
            print(f"pchat: {exc}", file=sys.stderr)
            return 1
    if args.command == "admin":
        from shards import admin

        try:
            asyncio.run(admin.run(settings, args, print))
        except admin.AdminError as exc:
            print(f"pchat admin: {exc}", file=sys.stderr)
            return 2
        return 0
    from client.chat_args import main as chat_main

    return chat_main(settings, args)


if __name__ == "__main__":
    sys.exit(main())
