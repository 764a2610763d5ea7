"""`pchat chat` tells the truth (issue 11, point 3 and the chat parts of point 6), driven in a
pseudo-terminal against a real worker."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import msgspec

from shards.worker.runner import RunningWorker, run_worker
from tests.conftest import (
    DOMAIN,
    PASSWORD,
    add_room,
    add_user,
    make_settings,
    signed_in,
    test_certificate,
)
from tests.integration.chat_terminal import Terminal, chat_env


async def test_prompted_password_commands_confirmation_and_ctrl_c(server: RunningWorker) -> None:
    lobby = await add_room(server.store, "Lobby")
    bob = await signed_in(server, "bob")
    await bob.join(lobby)
    await bob.post(lobby, "an earlier word about cats")
    term = Terminal(server.sip_port, "--room", "Lobby", env=chat_env())
    try:
        await term.expect(f"password for alice@{DOMAIN}: ")  # asked, not on the command line
        term.type(PASSWORD)
        await term.expect(f"* connected as alice@{DOMAIN}")
        await term.expect("bob@example.com: an earlier word about cats")
        stamp = r"#\d+ \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \[Lobby\] bob@example.com: an earlier"
        assert re.search(stamp, term.seen), term.seen  # message id, date and time zone
        term.type("/shout hello")
        await term.expect("error: unknown command /shout")
        term.type("hello from the terminal")
        await term.expect("you: hello from the terminal  (sent)")
        post = await bob.next_post(10)
        assert post.text == "hello from the terminal"  # the /shout line never reached the room
        assert [m.text for m in await bob.history(lobby)] == [
            "an earlier word about cats",
            "hello from the terminal",
        ]
        assert f"#{post.msgid} " in term.seen  # the confirmation shows the stored message id
        term.type("/who")
        who = await term.expect("online in Lobby (2): ")
        who += await term.expect("\n")
        assert "alice@example.com" in who and "bob@example.com" in who, who
        term.type("/search cats")
        found = await term.expect("bob@example.com: an earlier word about cats")
        assert re.search(r"#\d+ \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC bob@", found), found
        term.interrupt()
        assert await term.exit_code() == 130
        assert "Traceback" not in term.seen
    finally:
        term.close()
        await bob.close()


async def test_password_file_and_end_of_input(server: RunningWorker, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shards.cli", "chat", "--user", f"alice@{DOMAIN}",
        "--port", str(server.sip_port), "--domain", DOMAIN, "--password-file", str(secret),
        stdin=subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=chat_env(),
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 15)  # `< /dev/null` does not hang
    assert proc.returncode == 0, out
    assert b"* connected as alice@example.com" in out and b"Traceback" not in out


async def test_no_password_and_no_terminal_is_a_clear_error(server: RunningWorker) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shards.cli", "chat", "--user", f"alice@{DOMAIN}",
        "--port", str(server.sip_port), "--domain", DOMAIN,
        stdin=subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=chat_env(),
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 2
    assert out.decode().strip() == (
        "pchat chat: no password: give --password-file or set PCHAT_PASSWORD"
    )


async def test_a_disabled_user_is_told_plainly_and_unsent_lines_reported(
    server: RunningWorker,
) -> None:
    await add_room(server.store, "Lobby")
    term = Terminal(server.sip_port, "--room", "Lobby", env=chat_env(PCHAT_PASSWORD=PASSWORD))
    try:
        await term.expect("* joined Lobby")
        record = await server.store.get_user(f"sip:alice@{DOMAIN}")
        assert record is not None
        record.enabled = False
        await server.store.put_user(record)
        await server.store.bump_revision()  # what `pchat admin user disable` does
        await term.expect("* the server ended the session (signed out)")
        await term.expect("persistent chat is not enabled")
        assert await term.exit_code() == 1
        assert "481" not in term.seen and "Traceback" not in term.seen
    finally:
        term.close()


async def test_tls_checks_the_certificate(tmp_path: Path, redis_url: str) -> None:
    cert, key = test_certificate(tmp_path)
    base = make_settings(tmp_path, redis_url)
    sip = msgspec.structs.replace(base.sip, tls_port=0, tls_cert=str(cert), tls_key=str(key))
    async with run_worker(msgspec.structs.replace(base, sip=sip)) as worker:
        await add_user(worker.store, "alice")
        env = chat_env(PCHAT_PASSWORD=PASSWORD)
        port = worker.sip_tls_port
        untrusted = Terminal(port, "--tls", "--host", "localhost", env=env)
        try:  # a certificate nobody vouches for is refused, not silently accepted
            await untrusted.expect("* cannot sign in: ")
            await untrusted.expect("CERTIFICATE_VERIFY_FAILED")
            assert await untrusted.exit_code() == 1
        finally:
            untrusted.close()
        term = Terminal(port, "--tls-ca", str(cert), "--host", "localhost", env=env)
        try:
            await term.expect("* connected as alice@example.com")
            term.type("/quit")
            assert await term.exit_code() == 0
        finally:
            term.close()
