"""`pchat`'s parser loads no metrics: the supervisor sets PROMETHEUS_MULTIPROC_DIR first,
and a metric module imported before that counts in memory, never in /metrics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_building_the_parser_imports_no_metrics() -> None:
    code = (
        "import sys; import shards.cli; shards.cli.build_parser(); "
        "print('shards.metrics' in sys.modules, 'prometheus_client' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["False", "False"]
