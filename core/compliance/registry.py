"""Compliance adapters by name: the built-in ones, then the installed entry points."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

from core.compliance.adapters import Adapter, AdapterOptions, JsonLinesAdapter
from core.compliance.xml_adapter import XmlAdapter

ENTRY_POINT_GROUP = "pchat.compliance_adapters"


def builtin_adapters() -> dict[str, Callable[[AdapterOptions], Adapter]]:
    return {"xml": XmlAdapter, "jsonl": JsonLinesAdapter}


def load_adapters(names: list[str], options: AdapterOptions) -> list[Adapter]:
    """Built-in adapters by name, else entry points; an unknown name is an error at start."""
    known: dict[str, Callable[[AdapterOptions], Adapter]] = dict(builtin_adapters())
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        known.setdefault(ep.name, ep.load())
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"unknown compliance adapters {missing}; known: {sorted(known)}")
    return [known[n](options) for n in names]
