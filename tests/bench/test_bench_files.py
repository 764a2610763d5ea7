"""bench/files.py end to end on tiny numbers (about 10 s): transfers run beside the probe,
both sizes move both ways, and the chat round trip is measured in all three phases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.bench.test_bench_smoke import REPO, _env


def test_files_bench_smoke(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "bench.files", "--seconds", "3", "--calm-seconds", "1"]
    args += ["--sizes-mb", "0.1,0.5", "--parallel", "1", "--out", str(tmp_path)]
    done = subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    [result_file] = tmp_path.glob("*-files/result.json")
    result = json.loads(result_file.read_text())
    assert result["errors"] == []
    assert set(result["transfers"]) == {
        "upload_0.1MB", "download_0.1MB", "upload_0.5MB", "download_0.5MB",
    }  # fmt: skip
    assert all(t["transfers"] >= 1 and t["total_mb_s"] > 0 for t in result["transfers"].values())
    for phase in ("calm_before", "with_files", "calm_after"):
        assert result["chat"][phase]["posts"] > 0 and result["chat"][phase]["p99_ms"] > 0
    assert result["p99_ratio_vs_before"] > 0 and result["p99_ratio_vs_after"] > 0
