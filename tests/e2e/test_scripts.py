"""scripts/serve and scripts/setup on a copy of the tree: pip runs on the first start and
when pyproject.toml changes, never on every start, and serve installs no test extras.

The copy's Python is a stand-in that records what it was asked to run (a real install
needs the network and half a minute); the scripts themselves run for real in bash.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FAKE_PYTHON = """#!/bin/sh
# stands in for python3 (`-m venv DIR`) and for .venv/bin/python (`-m pip ...`)
echo "$*" >> "{log}"
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin"
  cp "$0" "$3/bin/python"
  printf '#!/bin/sh\\necho "pchat $*"\\n' > "$3/bin/pchat"
  chmod +x "$3/bin/pchat"
fi
"""


def tree(tmp_path: Path) -> tuple[Path, Path]:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("setup", "serve"):
        shutil.copy2(ROOT / "scripts" / name, repo / "scripts" / name)
    shutil.copy2(ROOT / "pyproject.toml", repo / "pyproject.toml")
    log = tmp_path / "python.log"
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON.format(log=log))
    fake.chmod(0o755)
    return repo, log


def serve(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(repo.parent / "python3")}
    return subprocess.run(
        ["bash", "scripts/serve", *args], cwd=repo, env=env, capture_output=True, text=True
    )


def pip_calls(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("-m pip")]


def test_serve_installs_once_and_only_what_serve_needs(tmp_path: Path) -> None:
    repo, log = tree(tmp_path)
    first = serve(repo, "--help")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "pchat serve --help"
    assert "-m venv .venv" in log.read_text()  # a fresh machine: the venv is made
    [install] = pip_calls(log)
    assert install.endswith("install -q --disable-pip-version-check -e .")  # no [dev,bench]
    assert "--upgrade" not in log.read_text()

    for _ in range(2):  # later starts: no pip at all, nothing printed by setup
        again = serve(repo, "--sip-port", "5060")
        assert again.returncode == 0 and again.stderr == ""
        assert again.stdout.strip() == "pchat serve --sip-port 5060"
    assert len(pip_calls(log)) == 1

    pyproject = repo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"msgspec>=0.18"', '"msgspec>=0.19"'))
    assert serve(repo).returncode == 0
    assert len(pip_calls(log)) == 2  # the dependencies changed: installed again
    assert serve(repo).returncode == 0
    assert len(pip_calls(log)) == 2


def test_a_test_install_covers_serve(tmp_path: Path) -> None:
    """After scripts/test's install (the dev and bench extras too), serve installs nothing."""
    repo, log = tree(tmp_path)
    assert serve(repo, "--help").returncode == 0
    digest = hashlib.sha256((repo / "pyproject.toml").read_bytes()).hexdigest()
    (repo / ".venv" / ".pchat-installed").write_text(f"{digest} test\n")
    before = len(pip_calls(log))
    assert serve(repo).returncode == 0
    assert len(pip_calls(log)) == before


def test_setup_refuses_an_unknown_kind(tmp_path: Path) -> None:
    repo, _ = tree(tmp_path)
    done = subprocess.run(["bash", "scripts/setup", "all"], cwd=repo, capture_output=True)
    assert done.returncode == 2 and b"usage: scripts/setup [serve|test]" in done.stderr
