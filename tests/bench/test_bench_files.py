"""bench/files.py end to end on tiny numbers (about 10 s): transfers run beside the probe,
both sizes move both ways, and the chat round trip is measured in all three phases."""

from __future__ import annotations

from pathlib import Path

from tests.bench.test_bench_smoke import bench_result


def test_files_bench_smoke(tmp_path: Path) -> None:
    args = ["bench.files", "--seconds", "3", "--calm-seconds", "1"]
    args += ["--sizes-mb", "0.1,0.5", "--parallel", "1", "--out", str(tmp_path)]
    result = bench_result(tmp_path, "*-files/result.json", args, 120)
    assert result["errors"] == []
    assert set(result["transfers"]) == {
        "upload_0.1MB", "download_0.1MB", "upload_0.5MB", "download_0.5MB",
    }  # fmt: skip
    assert all(t["transfers"] >= 1 and t["total_mb_s"] > 0 for t in result["transfers"].values())
    for phase in ("calm_before", "with_files", "calm_after"):
        assert result["chat"][phase]["posts"] > 0 and result["chat"][phase]["p99_ms"] > 0
    assert result["p99_ratio_vs_before"] > 0 and result["p99_ratio_vs_after"] > 0
