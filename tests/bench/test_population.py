"""The bench population of a running server: a random password kept in a private file,
and a cleanup that removes the bench users, rooms and category (issue 11 point 9)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from client.client import PchatClient
from client.errors import SipError
from tests.e2e.test_admin import admin, clean_env, run
from tests.e2e.test_serve import DOMAIN, serving

ROOT = Path(__file__).resolve().parents[2]


async def bench(*args: str) -> tuple[int, str, str]:
    return await run(sys.executable, "-m", "bench.load", *args, cwd=ROOT, env=clean_env())


async def signs_in(port: int, user: str, password: str) -> bool:
    client = await PchatClient.connect("127.0.0.1", port, f"{user}@{DOMAIN}", password)
    try:
        await client.sign_in()
        return True
    except SipError:
        return False
    finally:
        await client.close()


async def test_bench_users_get_a_random_password_and_cleanup_removes_them(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    secret = tmp_path / "bench-password"
    store = f"sqlite://{data / 'chat.db'}"
    async with serving(data) as served:
        assert (await admin("user", "add", f"keeper@{DOMAIN}", "--password", "k", data_dir=data))[
            0
        ] == 0
        populate = ("--profile", "smoke", "--populate-only", "--populate", store)
        code, out, err = await bench(*populate, "--password-file", str(secret))
        assert code == 0, err
        assert "4 users, 2 rooms" in out and str(secret) in out
        assert secret.stat().st_mode & 0o777 == 0o600
        password = secret.read_text().strip()
        assert len(password) >= 24 and password != "bench-pw"
        assert await signs_in(served.sip, "bu000000", password)
        assert not await signs_in(served.sip, "bu000001", "bench-pw")

        other = tmp_path / "other-password"
        assert (await bench(*populate, "--password-file", str(other)))[0] == 0
        assert other.read_text().strip() != password  # each population makes its own
        assert (await bench(*populate, "--password-file", str(secret)))[0] == 0
        assert secret.read_text().strip() == password  # populating again keeps the file's
        assert await signs_in(served.sip, "bu000003", password)

        code, out, err = await bench("--cleanup", store, "--password-file", str(secret))
        assert code == 0, err
        assert "removed 4 bench users and 2 bench rooms" in out
        assert not secret.exists()
        await asyncio.sleep(0.2)
        assert not await signs_in(served.sip, "bu000000", password)
        users = (await admin("user", "list", data_dir=data))[1]
        assert users.splitlines() == [f"sip:keeper@{DOMAIN}\t\tenabled"]
        assert (await admin("room", "list", data_dir=data))[1] == ""
        assert (await admin("category", "list", data_dir=data))[1] == ""
        assert await signs_in(served.sip, "keeper", "k")


async def test_a_run_against_a_server_needs_the_population_password(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here"
    code, _, err = await bench(
        "--profile", "smoke", "--target", "127.0.0.1:1", "--password-file", str(missing)
    )  # fmt: skip
    assert code != 0 and f"no bench password in {missing}" in err and "Traceback" not in err


@pytest.mark.parametrize("flag", [["--cleanup", "sqlite:///nonexistent/dir/chat.db"]])
async def test_cleanup_of_a_store_that_does_not_exist_creates_none(
    tmp_path: Path, flag: list[str]
) -> None:
    code, _, err = await bench(*flag)
    assert code != 0 and not os.path.exists("/nonexistent/dir")
