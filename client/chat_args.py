"""`pchat chat` on the command line: its options, the password (never needed in `ps`), TLS,
and an exit without a traceback on Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import ssl
import sys

from client.chat import run_chat
from client.pool import PoolAddresses, parse_addresses
from client.session import PchatClient
from core.config import Settings

PASSWORD_ENV = "PCHAT_PASSWORD"


def add_arguments(chat: argparse.ArgumentParser) -> None:
    chat.add_argument("--user", required=True, help="your SIP address, e.g. alice@example.com")
    chat.add_argument(
        "--password",
        help=f"visible in `ps`: prefer --password-file, ${PASSWORD_ENV} or the prompt",
    )
    chat.add_argument("--password-file", help="read the password from the first line of FILE")
    chat.add_argument(
        "--host",
        default="127.0.0.1",
        help="the server, or a pool: host[:port],host[:port],... (tried in turn on reconnect)",
    )
    chat.add_argument("--port", type=int, default=5041, help="SIP port (TLS: usually 5061)")
    chat.add_argument("--tls", action="store_true", help="SIP over TLS, checking the certificate")
    chat.add_argument("--tls-ca", help="trust this PEM CA/certificate file (implies --tls)")
    chat.add_argument("--room", help="join this room (name or ma-chan:// URI) at once")


class ChatUsageError(Exception):
    pass


def password_of(args: argparse.Namespace) -> str:
    """--password, then --password-file, then $PCHAT_PASSWORD, then a prompt on a terminal."""
    if args.password:
        return str(args.password)
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as f:
                return f.readline().rstrip("\r\n")
        except OSError as exc:
            raise ChatUsageError(f"cannot read --password-file: {exc}") from exc
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise ChatUsageError(f"no password: give --password-file or set {PASSWORD_ENV}")
    try:
        return getpass.getpass(f"password for {args.user}: ")
    except EOFError as exc:
        raise ChatUsageError("no password given") from exc


def tls_of(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not (args.tls or args.tls_ca):
        return None
    try:
        return ssl.create_default_context(cafile=args.tls_ca)
    except (OSError, ssl.SSLError) as exc:
        raise ChatUsageError(f"cannot use --tls-ca {args.tls_ca}: {exc}") from exc


def main(settings: Settings, args: argparse.Namespace) -> int:
    """The `pchat chat` subcommand: 0 at /quit or end of input, 1 refused, 2 usage, 130 ^C."""
    try:
        password, tls = password_of(args), tls_of(args)
    except ChatUsageError as exc:
        print(f"pchat chat: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

    try:
        pool = PoolAddresses(parse_addresses(args.host, args.port))
    except ValueError as exc:
        print(f"pchat chat: --host: {exc}", file=sys.stderr)
        return 2

    async def connect() -> PchatClient:
        return await pool.signed_in(args.user, password, domain=settings.domain, tls=tls)

    try:
        return asyncio.run(run_chat(connect, args.room))
    except KeyboardInterrupt:
        print("\n* interrupted", file=sys.stderr, flush=True)
        return 130
