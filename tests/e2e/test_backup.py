"""`pchat admin backup` while a server writes, `pchat admin restore` into a fresh data dir,
and a server on the restored store that serves the same history (issue 11 point 11)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from client.client import PchatClient
from tests.e2e.test_admin import admin, one_line
from tests.e2e.test_serve import DOMAIN, serving


async def test_backup_of_a_live_store_restores_into_a_new_data_dir_and_serves_history(
    tmp_path: Path,
) -> None:
    old, new, dump = tmp_path / "old", tmp_path / "new", tmp_path / "chat-backup.db"
    async with serving(old) as served:
        for args in (
            ("user", "add", f"alice@{DOMAIN}", "--password", "alice-pw"),
            ("category", "add", "General"),
            ("room", "add", "Lobby", "--category", "General", "--privacy", "open"),
        ):
            assert (await admin(*args, data_dir=old))[0] == 0
        alice = await PchatClient.connect("127.0.0.1", served.sip, f"alice@{DOMAIN}", "alice-pw")
        await alice.sign_in()
        room = (await alice.search("Lobby"))[0]["uri"]
        await alice.join(room)
        for n in range(30):
            await alice.post(room, f"post {n}")
        # the backup runs while the server keeps taking posts
        writer = asyncio.create_task(alice.post(room, "during the backup"))
        code, out, err = await admin("backup", str(dump), data_dir=old)
        await writer
        assert code == 0 and f"backed up to {dump}" in out, err
        await alice.close()
        code, _, err = await admin("restore", str(dump), "--replace", data_dir=old)
        assert code == 2 and "in use by another pchat serve" in one_line(err)  # serving
        code, _, err = await admin("backup", str(dump), data_dir=old)
        assert code == 2 and "exists; back up to a new file" in one_line(err)
    assert dump.stat().st_mode & 0o777 == 0o600  # it holds the HA1 hashes
    integrity = sqlite3.connect(dump).execute("PRAGMA integrity_check").fetchone()
    assert integrity == ("ok",)

    code, out, err = await admin("restore", str(dump), data_dir=new)
    assert code == 0 and "restored from" in out, err
    code, _, err = await admin("restore", str(dump), data_dir=new)
    assert code == 2 and "--replace replaces it" in one_line(err)
    async with serving(new) as served:
        alice = await PchatClient.connect("127.0.0.1", served.sip, f"alice@{DOMAIN}", "alice-pw")
        await alice.sign_in()  # the users came along
        await alice.join(room)
        texts = [m.text for m in await alice.history(room, query='<last cnt="50"/>')]
        assert texts[:30] == [f"post {n}" for n in range(30)]
        assert len(texts) in (30, 31)  # the post made during the backup, if it was in time
        await alice.post(room, "after the restore")
        await alice.close()
    audit = (new / "audit.log").read_text()
    assert '"action": "restore"' in audit


async def test_restore_refuses_what_is_not_a_backup_of_this_domain(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert (await admin("init", data_dir=data))[0] == 0
    dump = tmp_path / "backup.db"
    assert (await admin("backup", str(dump), data_dir=data))[0] == 0
    code, _, err = await admin(
        "restore", str(dump), "--domain", "example.org", data_dir=tmp_path / "other"
    )
    assert code == 2 and "a store of domain example.com, not example.org" in one_line(err)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    code, _, err = await admin("restore", str(junk), data_dir=tmp_path / "other")
    assert code == 2 and "is not a pchat chat store backup" in one_line(err)
    code, _, err = await admin("restore", str(tmp_path / "nothing"), data_dir=tmp_path / "x")
    assert code == 2 and "no backup file" in one_line(err)
    assert not (tmp_path / "other").exists() and not (tmp_path / "x").exists()


async def test_postgres_stores_are_refused_with_the_tools_to_use(tmp_path: Path) -> None:
    store = ("--store", "postgresql://nobody@127.0.0.1:1/none")
    for verb in ("backup", "restore"):
        code, _, err = await admin(verb, str(tmp_path / "f"), *store, data_dir=tmp_path)
        line = one_line(err)
        assert code == 2 and "pg_dump" in line and "pg_restore" in line
