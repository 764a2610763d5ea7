"""`pchat admin` as an operator runs it: from another directory, in pipes, with files of
users, against a running `pchat serve`; and the README's "First steps" word for word."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

from client.client import PchatClient
from core.store.registry import make_store
from tests.e2e.test_serve import DOMAIN, serving

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without PCHAT_*, able to import this tree from any cwd."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PCHAT_")}
    env["PYTHONPATH"] = str(ROOT)
    return {**env, **extra}


async def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: bytes = b""
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env=env or clean_env(), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def admin(*args: str, data_dir: Path, cwd: Path | None = None) -> tuple[int, str, str]:
    cmd = (sys.executable, "-m", "shards.cli", "admin", *args, "--data-dir", str(data_dir))
    return await run(*cmd, cwd=cwd or data_dir.parent)


def one_line(err: str) -> str:
    """The stderr of an ordinary mistake: one line, no traceback."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def readme_first_steps() -> list[str]:
    """The shell commands of README.md's "First steps", continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## First steps", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)  # the words bash runs, comments off
            if words:
                commands.append(shlex.join(words))
    return commands


async def test_readme_first_steps_run_verbatim(tmp_path: Path) -> None:
    """Each command of the README, as written: only the ports are this test's (the README's
    8080 and 5041 may be taken on a test machine), and alice's password comes from the
    environment because there is no terminal to type it in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "pchat"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m shards.cli "$@"\n')
    shim.chmod(0o755)
    data = tmp_path / "data"
    commands = readme_first_steps()
    assert any("grant-admin" in c for c in commands) and any("PATCH" in c for c in commands)
    async with serving(data) as served:
        env = clean_env(
            PATH=f"{bin_dir}:{os.environ['PATH']}",
            PCHAT_DATA_DIR=str(data),
            PCHAT_PASSWORD="alice-pw",
        )
        outputs = []
        for command in commands:
            command = command.replace("localhost:8080", f"localhost:{served.http}")
            if command.startswith("pchat chat"):
                command += f" --port {served.sip}"
            code, out, err = await run(
                "bash", "-c", command, cwd=tmp_path, env=env, stdin=b"hello from the README\n"
            )
            assert code == 0, f"{command}: {err}"
            assert "Traceback" not in err
            outputs.append(out)
        patched = json.loads(outputs[-1])
        assert patched["name"] == "Lobby" and patched["topic"] == "Q4"
        assert [r["name"] for r in json.loads(outputs[-2])] == ["Lobby"]
        store = make_store(f"sqlite://{data / 'chat.db'}")
        await store.open()
        try:
            room = await store.get_room_by_name("Lobby")
            assert room is not None
            posts = await store.history_last(room.id, 10)
            assert [(p.author, p.text) for p in posts] == [
                (f"sip:alice@{DOMAIN}", "hello from the README")
            ]
        finally:
            await store.close()


async def http_patch(port: int, user: str, password: str, room: str, body: str) -> int:
    code, out, _ = await run(
        "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", f"{user}:{password}",
        "-X", "PATCH", f"localhost:{port}/api/rooms/{room}",
        "-H", "Content-Type: application/json", "-d", body, cwd=Path("/"),
    )  # fmt: skip
    assert code == 0
    return int(out)


async def test_grant_and_revoke_admin_reach_the_http_api(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with serving(data) as served:
        for args in (
            ("user", "add", f"carol@{DOMAIN}", "--password", "carol-pw"),
            ("category", "add", "General"),
            ("room", "add", "Lobby", "--category", "General"),
        ):
            assert (await admin(*args, data_dir=data))[0] == 0
        patch = ("carol@example.com", "carol-pw", "Lobby", '{"topic": "x"}')
        assert await http_patch(served.http, *patch) == 403  # not a manager, not an admin
        code, out, err = await admin("user", "grant-admin", f"carol@{DOMAIN}", data_dir=data)
        assert code == 0 and "now an administrator" in out, err
        assert await http_patch(served.http, *patch) == 200
        listing = (await admin("user", "list", data_dir=data))[1]
        assert f"sip:carol@{DOMAIN}\t\tenabled admin" in listing
        code, out, _ = await admin("user", "revoke-admin", f"carol@{DOMAIN}", data_dir=data)
        assert code == 0 and "no longer an administrator" in out
        assert await http_patch(served.http, *patch) == 403
        code, _, err = await admin("user", "grant-admin", f"ghost@{DOMAIN}", data_dir=data)
        assert code == 2 and "pchat admin user add" in one_line(err)


async def test_import_thousands_of_users_in_one_process_and_they_sign_in(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    users = tmp_path / "users.jsonl"
    with users.open("w") as f:
        for n in range(2000):
            f.write(json.dumps({"address": f"u{n:04d}@{DOMAIN}", "password": f"pw-{n}"}) + "\n")
        f.write("\n")  # a blank last line is no user
    people = tmp_path / "people.csv"
    people.write_text(
        f'address,password,name,enabled,admin\r\ndora@{DOMAIN},dora-pw,"Dora, D.",on,yes\r\n'
        f"eve@{DOMAIN},eve-pw,Eve,off,no\r\n"
    )
    async with serving(data) as served:
        code, out, err = await admin("user", "import", str(users), data_dir=data)
        assert code == 0, err
        assert "2000 of 2000 users written" in out
        code, out, err = await admin("user", "import", str(people), data_dir=data)
        assert code == 0 and "2 of 2 users written" in out, err
        # again: the users exist and are kept, unless --replace
        code, out, _ = await admin("user", "import", str(people), data_dir=data)
        assert code == 0 and "0 of 2 users written, 2 existing kept" in out
        listing = (await admin("user", "list", data_dir=data))[1].splitlines()
        assert len(listing) == 2002
        assert f"sip:dora@{DOMAIN}\tDora, D.\tenabled admin" in listing
        assert f"sip:eve@{DOMAIN}\tEve\tdisabled" in listing

        client = await PchatClient.connect("127.0.0.1", served.sip, f"u1999@{DOMAIN}", "pw-1999")
        await client.sign_in()
        await client.close()
        dora = await PchatClient.connect("127.0.0.1", served.sip, f"dora@{DOMAIN}", "dora-pw")
        await dora.sign_in()
        await dora.close()


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("u.jsonl", '{"address": "a@example.com", "password": "p"}\n{"address": "b@x"\n',
         "line 2: not JSON"),
        ("u.jsonl", '{"address": "a@example.com", "password": "p", "admn": true}\n',
         "line 1: unknown field 'admn'"),
        ("u.jsonl", '{"address": "a@example.com", "ha1": {"MD5:a@example.com": "zz"}}\n',
         "line 1: ha1 'MD5:a@example.com' must be 32 hex digits"),
        ("u.csv", "address,password\na@example.com,p\nb@example.com\n",
         "line 3: 1 cells, the header has 2"),
        ("u.csv", "address,password,enabled\na@example.com,p,maybe\n",
         "line 2: enabled must be on or off"),
        ("u.csv", "address,password\nnot-an-address,p\n", "line 2: "),
        ("u.jsonl", '{"address": "a@example.com", "password": "' + "x" * 9000 + '"}\n',
         "line 1: longer than 8192 characters"),
    ],
)  # fmt: skip
async def test_import_names_the_bad_line_and_imports_nothing(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    data = tmp_path / "data"
    assert (await admin("init", data_dir=data))[0] == 0
    path = tmp_path / name
    path.write_text(text)
    code, _, err = await admin("user", "import", str(path), data_dir=data)
    line = one_line(err)
    assert code == 2 and expected in line and "nothing was imported" in line, line
    assert (await admin("user", "list", data_dir=data))[1] == ""


async def test_import_of_stored_hashes_keeps_them(tmp_path: Path) -> None:
    """ha1 hashes (from another store of the same domain) are stored as given."""
    from core.sip.digest import user_ha1s

    data = tmp_path / "data"
    assert (await admin("init", data_dir=data))[0] == 0
    hashes = user_ha1s(f"sip:fay@{DOMAIN}", DOMAIN, "fay-pw")
    path = tmp_path / "hashes.jsonl"
    path.write_text(json.dumps({"address": f"fay@{DOMAIN}", "ha1": hashes}) + "\n")
    assert (await admin("user", "import", str(path), data_dir=data))[0] == 0
    store = make_store(f"sqlite://{data / 'chat.db'}")
    await store.open()
    try:
        user = await store.get_user(f"sip:fay@{DOMAIN}")
        assert user is not None and user.ha1 == hashes and user.enabled
    finally:
        await store.close()


async def test_user_list_into_a_closed_pipe_has_no_traceback(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert (await admin("init", data_dir=data))[0] == 0
    users = tmp_path / "users.jsonl"
    users.write_text(
        "".join(
            json.dumps({"address": f"u{n}@{DOMAIN}", "password": "p"}) + "\n" for n in range(3000)
        )
    )
    assert (await admin("user", "import", str(users), data_dir=data))[0] == 0
    cmd = shlex.join([sys.executable, "-m", "shards.cli", "admin", "user", "list"])
    code, out, err = await run(
        "bash", "-c", f"{cmd} --data-dir {shlex.quote(str(data))} | head -1; "
        'echo "status ${PIPESTATUS[0]}" >&2', cwd=ROOT,
    )  # fmt: skip
    assert code == 0
    assert out.startswith("sip:u") and len(out.splitlines()) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert err.strip() == "status 141"  # what a command stopped by SIGPIPE exits with


# -- which store (issue 11 point 5)


async def test_admin_from_another_directory_creates_no_store(tmp_path: Path) -> None:
    """./data is relative to the current directory: elsewhere there is none, and admin says
    so instead of making an empty one there."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cmd = (sys.executable, "-m", "shards.cli", "admin", "user", "add", "a@example.com")
    code, _, err = await run(*cmd, "--password", "pw", cwd=elsewhere)
    line = one_line(err)
    assert code == 2
    assert f"no chat store at {elsewhere / 'data' / 'chat.db'}" in line
    assert "pchat admin init" in line
    assert list(elsewhere.iterdir()) == []  # nothing was created


async def test_serve_and_admin_read_the_same_config_file(tmp_path: Path) -> None:
    """No flags at all: serve and admin both take ./pchat.toml, and admin from another
    directory takes the same file through PCHAT_CONFIG."""
    from tests.e2e.cluster import free_port, wait_http_healthy

    home, elsewhere = tmp_path / "srv", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    sip, http = free_port(), free_port()
    config = home / "pchat.toml"
    config.write_text(
        f'domain = "example.org"\ndata_dir = "{home / "data"}"\n'
        f'[sip]\nhost = "127.0.0.1"\nport = {sip}\n[http]\nhost = "127.0.0.1"\nport = {http}\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shards.cli", "serve", cwd=home, env=clean_env(),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_http_healthy(http)
        cmd = (sys.executable, "-m", "shards.cli", "admin", "user", "add")
        code, _, err = await run(*cmd, "ann@example.org", "--password", "ann-pw", cwd=home)
        assert code == 0, err
        env = clean_env(PCHAT_CONFIG=str(config))
        code, _, err = await run(
            *cmd, "ben@example.org", "--password", "ben-pw", cwd=elsewhere, env=env
        )  # noqa: E501
        assert code == 0, err
        assert list(elsewhere.iterdir()) == []
        for user, password in (("ann", "ann-pw"), ("ben", "ben-pw")):
            client = await PchatClient.connect(
                "127.0.0.1", sip, f"{user}@example.org", password, domain="example.org"
            )
            await client.sign_in()  # the hashes were made for the server's realm
            await client.close()
    finally:
        proc.terminate()
        _, err_bytes = await asyncio.wait_for(proc.communicate(), 15)
    assert ", config pchat.toml" in err_bytes.decode()  # the start line names the file


async def test_another_domain_is_refused_by_admin_and_serve(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert (await admin("init", data_dir=data))[0] == 0  # example.com, the default
    code, _, err = await admin(
        "user", "add", "x@example.org", "--password", "pw", "--domain", "example.org",
        data_dir=data,
    )  # fmt: skip
    line = one_line(err)
    assert code == 2 and "belongs to domain example.com, not example.org" in line
    assert "--domain example.com" in line
    code, _, err = await run(
        sys.executable, "-m", "shards.cli", "serve", "--data-dir", str(data),
        "--domain", "example.org", "--sip-port", "0", "--http-port", "0", cwd=tmp_path,
    )  # fmt: skip
    assert code == 2
    assert "belongs to domain example.com, not example.org" in err.strip().splitlines()[-1]
    assert "Traceback" not in err
    assert not (data / "redis.sock").exists()  # refused before anything started


async def test_compliance_status_and_run_now_see_the_running_service(tmp_path: Path) -> None:
    """The server runs with --compliance; `pchat admin` is given no such flag and still
    reports the service, and run-now reaches it."""
    data = tmp_path / "data"
    async with serving(data, "--compliance"):
        assert (await admin("user", "add", f"a@{DOMAIN}", "--password", "pw", data_dir=data))[
            0
        ] == 0
        for _ in range(20):  # the service takes its lease within a second of starting
            code, out, err = await admin("compliance", "status", data_dir=data)
            if "running (lease held" in out:
                break
            await asyncio.sleep(0.1)
        assert code == 0, err
        assert out.splitlines()[0].startswith("compliance service: running (lease held by")
        code, out, err = await admin("compliance", "run-now", data_dir=data)
        assert code == 0 and "run requested; the compliance service (process" in out, err
        for _ in range(20):  # the service takes the request at its next look (0.5 s)
            out = (await admin("compliance", "status", data_dir=data))[1]
            if "a run is requested" not in out:
                break
        assert "a run is requested" not in out
    code, out, _ = await admin("compliance", "status", data_dir=data)
    assert code == 0 and out.splitlines()[0].startswith("compliance service: unknown (Redis")


async def test_a_store_older_than_its_domain_record_is_claimed_by_serve_not_admin(
    tmp_path: Path,
) -> None:
    """An upgraded store has no domain yet: admin, perhaps run without --domain, must not
    record the wrong one; the first serve (or init) records the server's."""
    import sqlite3

    data = tmp_path / "data"
    assert (await admin("init", "--domain", "example.org", data_dir=data))[0] == 0
    with sqlite3.connect(data / "chat.db") as conn:  # as a schema-1 store: no domain
        conn.execute("DELETE FROM store_info")
    code, _, err = await admin("user", "add", "a@example.org", "--password", "p", data_dir=data)
    assert code == 0, err  # example.com (the default) was not recorded by this
    # serve and init open the store the same way (open_store(create=True)): init records it
    code, _, err = await admin("init", "--domain", "example.org", data_dir=data)
    assert code == 0, err
    code, _, err = await admin("user", "add", "b@example.com", "--password", "p", data_dir=data)
    assert code == 2 and "belongs to domain example.org, not example.com" in one_line(err)


async def test_a_password_need_not_be_on_the_command_line(tmp_path: Path) -> None:
    """`ps` shows arguments: --password-file keeps the password out of them; without either
    and without a terminal to ask on, one line says what to give."""
    data = tmp_path / "data"
    assert (await admin("init", data_dir=data))[0] == 0
    secret = tmp_path / "pw"
    secret.write_text("from-the-file\n")
    code, _, err = await admin(
        "user", "add", f"gil@{DOMAIN}", "--password-file", str(secret), data_dir=data
    )
    assert code == 0, err
    code, _, err = await admin("user", "passwd", f"gil@{DOMAIN}", data_dir=data)
    assert code == 2 and "give --password-file FILE" in one_line(err)
    code, _, err = await admin(
        "user", "passwd", f"gil@{DOMAIN}", "--password-file", str(tmp_path / "none"),
        data_dir=data,
    )  # fmt: skip
    assert code == 2 and "cannot read --password-file" in one_line(err)
    from core.sip.digest import user_ha1s

    store = make_store(f"sqlite://{data / 'chat.db'}")
    await store.open()
    try:
        user = await store.get_user(f"sip:gil@{DOMAIN}")
        assert user is not None and user.ha1 == user_ha1s(user.uri, DOMAIN, "from-the-file")
    finally:
        await store.close()
    assert "from-the-file" not in (data / "audit.log").read_text()
