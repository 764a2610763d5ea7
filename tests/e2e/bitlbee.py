"""Real SIPE for the e2e tests: bitlbee (libpurple backend) headless, driven over IRC on loopback.

SIPE logs every SIP message it sends and receives (the shim in sipe_shim.c turns libpurple
debug on); `Bitlbee.sip()` reads that trace back so tests assert on what went over the wire.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.cluster import free_port

SHIM_SOURCE = Path(__file__).with_name("sipe_shim.c")
LIBSIPE = Path("/usr/lib/purple-2/libsipe.so")
LIBXML_HEADERS = Path("/usr/include/libxml2")
WAIT_S = 20.0  # one step of SIPE on loopback takes well under a second; CI machines are slow
IRC_LINES_KEPT = 5000  # a test run produces a few hundred; the bound keeps a runaway small
_SIP_BLOCK = re.compile(r"MESSAGE START (>{10}|<{10}) SIP\(\w+\)[^\n]*\n(.*?)\nMESSAGE END ", re.S)


def require_sipe() -> None:
    """Skips the calling test when bitlbee, SIPE or the shim's build tools are missing."""
    missing = [
        name
        for name, ok in (
            ("bitlbee", shutil.which("bitlbee") or Path("/usr/sbin/bitlbee").exists()),
            (str(LIBSIPE), LIBSIPE.exists()),
            ("gcc", shutil.which("gcc")),
            ("libxml2-dev", (LIBXML_HEADERS / "libxml" / "parser.h").exists()),
        )
        if not ok
    ]
    if missing:
        pytest.skip(f"SIPE interop needs {', '.join(missing)} (scripts/setup installs them)")


def build_shim(out_dir: Path) -> Path:
    """Compiles sipe_shim.c into a shared object for LD_PRELOAD."""
    target = out_dir / "sipe_shim.so"
    cmd = ["gcc", "-shared", "-fPIC", "-O2", f"-I{LIBXML_HEADERS}", "-o", str(target)]
    done = subprocess.run(
        [*cmd, str(SHIM_SOURCE), "-ldl"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"building the SIPE shim failed:\n{done.stderr}"
    return target


def private_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate it signed (localhost, 127.0.0.1): the CA's
    directory (for SIPE_TEST_CA_DIR), the server's chain and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl (to make a test CA) is not on PATH")
    ca_dir = folder / "ca"
    ca_dir.mkdir()
    ca, ca_key = ca_dir / "ca.pem", folder / "ca.key"
    cert, key, csr, ext = (folder / n for n in ("server.pem", "server.key", "server.csr", "ext"))
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=pchat test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-keyout", str(ca_key), "-out", str(ca)],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(csr)],
        ["x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(cert)],
    ]  # fmt: skip
    for step in steps:
        subprocess.run(["openssl", *step], check=True, capture_output=True, timeout=60)
    chain = folder / "chain.pem"
    chain.write_text(cert.read_text() + ca.read_text())
    return ca_dir, chain, key


@dataclass(frozen=True)
class SipTrace:
    """One SIP message as SIPE logged it: sent (True) or received, and its text."""

    sent: bool
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()


class Bitlbee:
    """A forking bitlbee on a free loopback port, with its own config dir and home."""

    def __init__(self, home: Path, shim: Path, *, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.log = home / "bitlbee.log"
        self._shim = shim
        self._env = env or {}
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = self.home / "config"
        config.mkdir(parents=True, exist_ok=True)
        conf = self.home / "bitlbee.conf"
        conf.write_text(
            "[settings]\nRunMode = ForkDaemon\nAuthMode = Open\n"
            f"DaemonInterface = 127.0.0.1\nDaemonPort = {self.port}\nConfigDir = {config}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PCHAT_")}
        env.update(HOME=str(self.home), LD_PRELOAD=str(self._shim), BITLBEE_DEBUG="1")
        env.update(self._env)
        binary = shutil.which("bitlbee") or "/usr/sbin/bitlbee"
        with self.log.open("wb") as log:
            self._proc = subprocess.Popen(
                [binary, "-F", "-n", "-v", "-i", "127.0.0.1", "-p", str(self.port),
                 "-c", str(conf), "-d", str(config)],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip

    def stop(self) -> None:
        """Ends bitlbee and the per-connection children it forked (its own process group)."""
        if self._proc is None or self._proc.poll() is not None:
            return
        os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    def text(self) -> str:
        return self.log.read_bytes().decode("utf-8", "replace") if self.log.exists() else ""

    def sip(self) -> list[SipTrace]:
        """Every SIP message SIPE logged so far, in order."""
        return [
            SipTrace(m.group(1).startswith(">"), m.group(2).replace("\r", ""))
            for m in _SIP_BLOCK.finditer(self.text())
        ]

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.text().splitlines()[-lines:])


class Irc:
    """A tiny IRC client: one line at a time, PINGs answered, every line kept for `expect`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self.lines: list[str] = []
        self._cursor = 0  # lines before it were consumed by an earlier expect
        self._arrived = asyncio.Event()
        self._pump = asyncio.ensure_future(self._read())
        self.bitlbee: Bitlbee | None = None

    @classmethod
    async def connect(cls, bitlbee: Bitlbee, nick: str) -> Irc:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", bitlbee.port)
                break
            except OSError:
                if loop.time() > deadline:
                    pytest.fail(f"bitlbee did not listen within {WAIT_S:g} s\n{bitlbee.tail()}")
                await asyncio.sleep(0.1)
        irc = cls(reader, writer)
        irc.bitlbee = bitlbee
        irc.send(f"NICK {nick}")
        irc.send(f"USER {nick} 0 * :{nick}")
        await irc.expect(rf"^:\S+ 001 {nick} ", "the IRC welcome")
        return irc

    def _keep(self, line: str) -> None:
        if len(self.lines) < IRC_LINES_KEPT:
            self.lines.append(line)

    def send(self, line: str) -> None:
        self._keep(f">> {line}")
        self._writer.write(line.encode() + b"\r\n")

    def root(self, command: str) -> None:
        """A command to bitlbee's control channel."""
        self.send(f"PRIVMSG &bitlbee :{command}")

    async def _read(self) -> None:
        while raw := await self._reader.readline():
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("PING "):
                self._writer.write(b"PONG " + line[5:].encode() + b"\r\n")
            self._keep(line)
            self._arrived.set()
        self._keep("** connection closed")
        self._arrived.set()

    async def expect(self, pattern: str, what: str, timeout: float = WAIT_S) -> re.Match[str]:
        """The first line after the previous match that matches; fails with both traces."""
        regex = re.compile(pattern)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            while self._cursor < len(self.lines):
                line = self.lines[self._cursor]
                self._cursor += 1
                if not line.startswith(">> ") and (found := regex.search(line)):
                    return found
            self._arrived.clear()
            left = deadline - loop.time()
            if left <= 0 or not await _wait(self._arrived, left):
                pytest.fail(f"no {what} within {timeout:g} s (/{pattern}/)\n{self.traces()}")

    async def expect_sipe(self, pattern: str, what: str, timeout: float = WAIT_S) -> None:
        """Waits until SIPE's own log matches (for steps it does not show on IRC)."""
        assert self.bitlbee is not None
        regex = re.compile(pattern)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not regex.search(self.bitlbee.text()):
            if loop.time() > deadline:
                pytest.fail(f"no {what} within {timeout:g} s (/{pattern}/)\n{self.traces()}")
            await asyncio.sleep(0.1)

    def seen_since(self, mark: int) -> list[str]:
        return self.lines[mark:]

    def mark(self) -> int:
        return self._cursor

    def traces(self) -> str:
        irc = "\n".join(self.lines[-40:])
        sipe = self.bitlbee.tail() if self.bitlbee else ""
        return f"--- IRC (last 40 lines) ---\n{irc}\n--- SIPE/bitlbee log tail ---\n{sipe}"

    async def close(self) -> None:
        self._pump.cancel()
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), timeout)
        return True
    except TimeoutError:
        return False
