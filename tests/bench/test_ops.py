"""ops/ artefacts match the server: metric names exist, the example config loads (HS-16)."""

from __future__ import annotations

import configparser
import importlib.util
import json
import re
from pathlib import Path

import msgspec
import pytest
from prometheus_client import REGISTRY, generate_latest

import shards.metrics  # noqa: F401 - registers every pchat metric in the default registry
from core.config import Settings, load_settings

OPS = Path(__file__).resolve().parents[2] / "ops"
DASHBOARD = OPS / "grafana" / "pchat-dashboard.json"
RULES = OPS / "prometheus" / "pchat-alerts.yml"
SCRAPE = OPS / "prometheus" / "prometheus.yml"
EXAMPLE = OPS / "pchat.example.toml"
UNIT = OPS / "systemd" / "pchat.service"
_NAME = re.compile(r"\bpchat_[a-z0-9_]+")
# Sample names each metric type adds to its family in the text exposition format.
_SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}


def exported_names() -> set[str]:
    """Every sample name the server can expose, from the exposition's # TYPE lines."""
    names = set()
    for line in generate_latest(REGISTRY).decode().splitlines():
        if not line.startswith("# TYPE pchat_"):
            continue
        _, _, name, kind = line.split()
        if name.endswith("_created"):
            continue  # not exported in multiprocess mode, which the server runs in
        names.add(name)  # a counter's family name already ends in _total
        names.update(name + suffix for suffix in _SUFFIXES.get(kind, ()))
    return names


def _exprs_of_dashboard() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    variables = dashboard["templating"]["list"]
    exprs += [v["definition"] for v in variables if v.get("type") == "query"]
    return exprs


def test_the_metrics_module_exports_what_the_checks_expect() -> None:
    names = exported_names()
    assert "pchat_fanout_deliveries_total" in names
    assert "pchat_fanout_delivery_latency_seconds_bucket" in names
    assert "pchat_gateway_sessions" in names


def test_dashboard_uses_only_exported_metric_names() -> None:
    exprs = _exprs_of_dashboard()
    assert len(exprs) >= 20
    used = {name for expr in exprs for name in _NAME.findall(expr)}
    unknown = used - exported_names()
    assert not unknown, f"dashboard uses metrics shards/metrics.py does not define: {unknown}"
    for expr in exprs:
        assert _NAME.search(expr), f"a dashboard query reads no pchat metric: {expr}"


def test_dashboard_panels_are_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${DS_PROMETHEUS}"


def test_alert_rules_use_only_exported_metric_names() -> None:
    text = RULES.read_text()
    used = set(_NAME.findall(text))
    unknown = used - exported_names()
    assert not unknown, f"alert rules use metrics shards/metrics.py does not define: {unknown}"
    for needed in (
        "pchat_admission_rejected_total",  # 503 rate
        "pchat_fanout_delivery_latency_seconds_bucket",  # p99 latency
        "pchat_supervisor_worker_restarts_total",  # worker restarts
        "pchat_sip_slow_consumer_disconnects_total",  # slow consumers
        "pchat_compliance_backlog_age_seconds",  # compliance backlog
    ):
        assert needed in used, needed


def test_alert_rules_are_complete() -> None:
    """Every rule names an alert, an expression, a severity and a summary (a structural
    check without a YAML parser; with PyYAML installed the file is parsed as well)."""
    text = RULES.read_text()
    alerts = re.split(r"\n\s+- alert: ", text)[1:]
    assert len(alerts) >= 10
    for block in alerts:
        name = block.split("\n", 1)[0]
        assert "expr:" in block and "severity:" in block and "summary:" in block, name
    if importlib.util.find_spec("yaml") is not None:
        import yaml  # type: ignore[import-untyped]

        for path in (RULES, SCRAPE):
            assert yaml.safe_load(path.read_text())


def test_scrape_config_reads_the_rules_and_the_metrics_path() -> None:
    text = SCRAPE.read_text()
    assert "pchat-alerts.yml" in text and "metrics_path: /metrics" in text


def test_example_config_loads() -> None:
    settings = load_settings(str(EXAMPLE), env={})
    assert settings.domain == "example.com" and settings.workers >= 1
    assert settings.data_dir == "/var/lib/pchat"


def _keys(tree: dict[str, object], prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _keys(value, f"{prefix}{key}.")
        else:
            out.add(prefix + key)
    return out


def test_example_config_documents_every_setting() -> None:
    """A key added to core/config.py belongs in the annotated example too."""
    import tomllib

    written = _keys(tomllib.loads(EXAMPLE.read_text()))
    defaults = msgspec.to_builtins(Settings())
    missing = _keys(defaults) - written
    assert not missing, f"ops/pchat.example.toml lacks {sorted(missing)}"


def test_systemd_unit_runs_pchat_serve() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    assert "pchat serve --config" in service["ExecStart"]
    assert int(service["LimitNOFILE"]) >= 65536
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize("path", [DASHBOARD])
def test_json_artefacts_parse(path: Path) -> None:
    assert json.loads(path.read_text())
