"""bench/files.py end to end on tiny numbers (about 10 s): calm and files phases alternate,
transfers run beside the probe, both sizes move both ways, the p99 ratio gets an interval
and a verdict, and the data folder is gone afterwards."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.bench.test_bench_smoke import bench_result


def _data_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("pchat-files-*"))


@pytest.mark.parametrize("service", ["off", "on"])
def test_files_bench_smoke(tmp_path: Path, service: str) -> None:
    before = _data_dirs()
    args = ["bench.files", "--order", "cf", "--rounds", "2", "--phase-seconds", "1.2"]
    args += ["--sizes-mb", "0.1,0.5", "--parallel", "1", "--out", str(tmp_path)]
    args += ["--file-service", service]
    result = bench_result(tmp_path, "*-files/result.json", args, 120)
    assert result["errors"] == [] and result["file_service"] == service
    assert set(result["transfers"]) == {
        "upload_0.1MB", "download_0.1MB", "upload_0.5MB", "download_0.5MB",
    }  # fmt: skip
    assert all(t["transfers"] >= 1 and t["total_mb_s"] > 0 for t in result["transfers"].values())
    for condition in ("calm", "with_files"):
        chat = result["chat"][condition]
        assert chat["phases"] == 2 and chat["posts"] > 0 and chat["p99_ms"] > 0
        assert len(result["samples_ms"][condition]) == 2
    low, high = result["p99_ratio_95"]
    assert 0 < low <= result["p99_ratio"] <= high
    assert result["verdict"] in ("met", "missed", "unresolved")
    assert _data_dirs() <= before  # the run's uploads do not stay in /tmp
