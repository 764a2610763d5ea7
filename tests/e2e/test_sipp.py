"""A real SIP client against a live worker: SIPp runs tests/e2e/sipp/signin_info.xml.

The scenario signs in with digest authentication (INVITE -> 401 -> ACK -> INVITE with
credentials -> 200 -> ACK), sends cmd:getserverinfo in an INFO, checks the server's INFO
carrying rpl:getservinfo, answers it and ends the dialog with BYE (XCCOS.md §1, §6).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from shards.worker.runner import RunningWorker
from shards.worker.session import Session

SCENARIO = Path(__file__).parent / "sipp" / "signin_info.xml"
SIPP_TIMEOUT_S = 30.0

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (SIPp, sip-tester) not on PATH"),
]


def _sample(name: str, labels: dict[str, str]) -> float:
    """A metric's current value in this process (0 before the label child first exists)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _counters() -> dict[str, float]:
    requests = "pchat_sip_requests_total"
    return {
        "INVITE": _sample(requests, {"method": "INVITE"}),
        "ACK": _sample(requests, {"method": "ACK"}),
        "INFO": _sample(requests, {"method": "INFO"}),
        "BYE": _sample(requests, {"method": "BYE"}),
        "401": _sample("pchat_sip_errors_total", {"status": "401"}),
        "getserverinfo": _sample(
            "pchat_xccos_command_latency_seconds_count", {"command": "cmd:getserverinfo"}
        ),
    }


def _report(folder: Path, stdout: bytes, stderr: bytes) -> str:
    """sipp's output and trace files, for the failure message."""
    parts = [f"--- sipp stdout ---\n{stdout.decode(errors='replace')[-4000:]}"]
    parts.append(f"--- sipp stderr ---\n{stderr.decode(errors='replace')[-4000:]}")
    for path in sorted(folder.iterdir()):
        if path.is_file():
            parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-20000:]}")
    return "\n".join(parts)


async def run_sipp(port: int, folder: Path) -> tuple[int, str]:
    """Runs the scenario once against 127.0.0.1:port; (exit code, everything sipp wrote)."""
    sipp = shutil.which("sipp")
    assert sipp is not None
    args = [
        f"127.0.0.1:{port}",
        "-sf", str(SCENARIO),
        "-t", "t1",  # TCP, one socket for the whole run
        "-i", "127.0.0.1",  # local address for Via/Contact; -p left out: a random free port
        "-m", "1",
        "-s", "alice",
        "-au", "alice@example.com",
        "-ap", "secret-pw",
        # The digest uri is the Request-URI (RFC 3261 §22.4); sipp's default is ip:port.
        "-auth_uri", "pchat@example.com",
        "-nostdin",
        "-timeout", "20s",
        "-timeout_error",
        "-trace_err", "-error_file", str(folder / "errors.log"),
        "-trace_msg", "-message_file", str(folder / "messages.log"),
        "-trace_screen", "-screen_file", str(folder / "screen.log"),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sipp,
        *args,
        cwd=folder,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), SIPP_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        stdout, stderr = await proc.communicate()
        return -1, "sipp did not finish in time\n" + _report(folder, stdout, stderr)
    assert proc.returncode is not None
    return proc.returncode, _report(folder, stdout, stderr)


async def test_sipp_signin_getserverinfo_bye(
    server: RunningWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = server.gateway
    seen: list[Session] = []
    add_session = gateway.add_session

    def recording_add_session(session: Session) -> None:
        seen.append(session)
        add_session(session)

    monkeypatch.setattr(gateway, "add_session", recording_add_session)
    before = _counters()
    folder = tmp_path / "sipp"
    folder.mkdir()

    code, report = await run_sipp(server.sip_port, folder)
    print(report)  # shown by pytest when the test fails
    assert code == 0, f"sipp exited with {code}\n{report}"

    # sipp answered the first challenge (MD5: it knows no SHA-256), with the full address.
    trace = (folder / "messages.log").read_text(errors="replace")
    answers = [line for line in trace.splitlines() if line.startswith("Authorization:")]
    assert len(answers) == 1, report
    assert "algorithm=MD5" in answers[0], report
    assert 'username="alice@example.com"' in answers[0], report
    assert 'uri="sip:pchat@example.com"' in answers[0], report

    # The server side saw it all: one session for alice, ended by the BYE.
    assert [s.user for s in seen] == ["sip:alice@example.com"]
    assert seen[0].closed
    assert gateway.sessions == {}
    after = _counters()
    delta = {key: after[key] - before[key] for key in before}
    assert delta == {
        "INVITE": 2,  # unauthenticated, then with credentials
        "ACK": 2,  # of the 401, of the 200
        "INFO": 1,
        "BYE": 1,
        "401": 1,
        "getserverinfo": 1,
    }, report
