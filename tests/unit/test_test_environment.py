"""The test suite ignores the caller's PCHAT_* environment (issue 11, point 10)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_no_caller_setting_is_in_the_environment() -> None:
    leaked = [k for k in os.environ if k.startswith("PCHAT_") and not k.startswith("PCHAT_TEST_")]
    assert leaked == []
    assert load_settings().domain == Settings().domain


def test_an_exported_domain_and_config_do_not_change_the_tests(tmp_path: Path) -> None:
    bad_config = tmp_path / "elsewhere.toml"
    bad_config.write_text('domain = "example.net"\n')
    env = dict(os.environ, PCHAT_DOMAIN="example.org", PCHAT_CONFIG=str(bad_config))
    target = f"{Path(__file__).relative_to(REPO)}::test_no_caller_setting_is_in_the_environment"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", target],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
