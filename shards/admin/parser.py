"""The `pchat admin` command line: objects, operations and their flags."""

from __future__ import annotations

import argparse

TRUE_WORDS = ("on", "true", "yes", "1")
FALSE_WORDS = ("off", "false", "no", "0")


def parse_bool(value: str) -> bool | None:
    """on/true/yes/1 and off/false/no/0, any case; None for anything else."""
    word = value.strip().lower()
    return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None


def _password_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--password", help="visible in `ps`: prefer --password-file or the prompt")
    p.add_argument("--password-file", help="read the password from the first line of FILE")


def _bool(value: str) -> bool:
    found = parse_bool(value)
    if found is None:
        raise argparse.ArgumentTypeError("use on or off")
    return found


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Adds `admin OBJECT OP`; every leaf takes the common flags (--config, --data-dir…)."""
    admin = sub.add_parser("admin", help="manage users, categories, rooms and messages")
    objects = admin.add_subparsers(dest="object", required=True)

    def leaf(
        group: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
    ) -> argparse.ArgumentParser:
        return group.add_parser(name, parents=[common], help=text, description=text)

    user = objects.add_parser("user", help="users and their persistent-chat policy")
    uops = user.add_subparsers(dest="op", required=True)
    p = leaf(uops, "add", "add a user (persistent chat enabled unless --disabled)")
    p.add_argument("uri")
    _password_flags(p)
    p.add_argument("--name", default="", help="display name")
    p.add_argument("--disabled", action="store_true", help="leave persistent chat off")
    p.add_argument("--admin", action="store_true", help="a pchat administrator")
    p = leaf(uops, "passwd", "set a new password")
    p.add_argument("uri")
    _password_flags(p)
    for op in ("enable", "disable"):
        p = leaf(
            uops, op, f"{op} persistent chat for the user (a running server applies it at once)"
        )
        p.add_argument("uri")
    p = leaf(uops, "delete", "delete a user (a running server signs them out at once)")
    p.add_argument("uri")
    for op, text in (
        ("grant-admin", "make the user a pchat administrator (manages every room and category)"),
        ("revoke-admin", "take the administrator role from the user"),
    ):
        p = leaf(uops, op, text)
        p.add_argument("uri")
    p = leaf(uops, "import", "add many users from a CSV or JSON Lines file (docs/admin.md)")
    p.add_argument("file", help="the file: .csv is CSV, anything else JSON Lines")
    p.add_argument("--format", choices=["csv", "jsonl"], help="override the file name's")
    p.add_argument(
        "--replace", action="store_true", help="replace users that exist (default: keep them)"
    )
    leaf(uops, "list", "list users")

    cat = objects.add_parser("category", help="room categories (the ethical wall)")
    cops = cat.add_subparsers(dest="op", required=True)
    for op, text in (("add", "add a category"), ("set", "change a category")):
        p = leaf(cops, op, text)
        p.add_argument("name", help="the category's name" + (" or id" if op == "set" else ""))
        if op == "set":
            p.add_argument("--rename", help="new name")
        p.add_argument("--description")
        p.add_argument("--creators", nargs="*", help="who may create rooms in it")
        p.add_argument("--members", nargs="*", help="who is allowed in it (none listed: everyone)")
        p.add_argument(
            "--denied", nargs="*", help="who is never allowed in it (wins over --members)"
        )
        p.add_argument("--invitations", type=_bool, help="on|off")
        p.add_argument("--file-upload", type=_bool, help="on|off")
        p.add_argument("--history", type=_bool, help="on|off (off: posts are delivered, not kept)")
    p = leaf(cops, "delete", "delete a category that has no rooms")
    p.add_argument("name")
    leaf(cops, "list", "list categories")

    room = objects.add_parser("room", help="rooms, their roles and messages")
    rops = room.add_subparsers(dest="op", required=True)
    for op, text in (("add", "add a room; prints its URI"), ("set", "change a room")):
        p = leaf(rops, op, text)
        p.add_argument("name", help="the room's name" + (", id or URI" if op == "set" else ""))
        p.add_argument("--category", required=op == "add", help="category name or id")
        if op == "set":
            p.add_argument("--rename", help="new name")
        p.add_argument("--privacy", choices=["open", "closed", "secret"])
        p.add_argument("--type", choices=["normal", "auditorium"])
        p.add_argument("--invitations", choices=["inherit", "off"])
        p.add_argument("--files", choices=["inherit", "off"], help="the room's upload switch")
        p.add_argument("--description")
        p.add_argument("--topic")
        for role in ("members", "managers", "presenters"):
            p.add_argument(
                f"--{role}", nargs="*", help=f"replace the {role} (users or domain:NAME)"
            )
            if op == "set":
                p.add_argument(f"--add-{role}", nargs="*", default=[])
                p.add_argument(f"--remove-{role}", nargs="*", default=[])
    for op, text in (
        ("disable", "disable a room: everyone in it is removed at once, its history kept"),
        ("enable", "enable a disabled room"),
        ("delete", "delete a room with its history"),
        ("show", "show a room's settings and roles"),
    ):
        p = leaf(rops, op, text)
        p.add_argument("name")
    leaf(rops, "list", "list rooms")

    init = leaf(objects, "init", "create the chat store for --domain (pchat serve also does)")
    init.set_defaults(op="")
    p = leaf(objects, "backup", "copy the SQLite chat store to a new file (the server may run)")
    p.add_argument("path", help="the backup file to write (must not exist)")
    p.set_defaults(op="")
    p = leaf(objects, "restore", "replace the chat store with a backup (the server stopped)")
    p.add_argument("path", help="a file written by pchat admin backup")
    p.add_argument("--replace", action="store_true", help="replace a chat store that exists")
    p.set_defaults(op="")

    comp = objects.add_parser("compliance", help="the compliance service")
    compops = comp.add_subparsers(dest="op", required=True)
    leaf(compops, "status", "backlog, the batch being retried, the last archive run")
    leaf(compops, "run-now", "ask the running service to archive what is pending now")

    msg = objects.add_parser("message", help="posts")
    mops = msg.add_subparsers(dest="op", required=True)
    p = leaf(mops, "remove", "remove one post from a room's history")
    p.add_argument("room")
    p.add_argument("msgid", type=int)
    return admin
