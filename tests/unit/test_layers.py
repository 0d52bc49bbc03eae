"""The import graph keeps the layers: `jobqueue/` (contract, engine, SDK) <- `manager/`, `consumer/`.

Every module of `jobqueue/`, `manager/` and `consumer/` is parsed with `ast` (nothing is imported):
module-level and function-level imports, `import x` and `from x import y`, relative imports,
`if TYPE_CHECKING:` blocks, and `importlib.import_module("...")` / `__import__("...")` with a literal.
It fails on
- an import of `manager` or `consumer` from `jobqueue/`, except inside the body of a CLI command
  that starts that process (`PROCESS_COMMANDS`: by module and function name, not by file);
- an import of `consumer` from `manager`, or of `manager` from `consumer`;
- an import of the CLI (the composition root) from anywhere but the CLI;
- Redis, the SDK or the CLI imported by the engine (its I/O is local disk and the object store);
- `kubernetes_asyncio` imported outside the modules that talk to the Kubernetes API.
Run with `-s` to see the package graph.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("jobqueue", "manager", "consumer")
PROCESSES = ("manager", "consumer")

# (module, function) -> the process packages its body may import: the commands that start a process.
PROCESS_COMMANDS = {
    ("jobqueue.cli.main", "up"): {"manager"},
    ("jobqueue.cli.main", "manager"): {"manager"},
    ("jobqueue.cli.main", "consumer"): {"consumer"},
    ("jobqueue.cli.demo", "run_demo"): {"manager"},  # the body of `jobqueue demo`: starts the manager
    ("jobqueue.cli.gc", "gc"): {"manager"},  # `jobqueue gc`: one pass of the manager's garbage collector
}
ENGINE_MUST_NOT_IMPORT = ("redis", "arq", "jobqueue.redis", "jobqueue.jobstore", "jobqueue.submit_store",
                          "jobqueue.index_store", "jobqueue.client",
                          "jobqueue.handles", "jobqueue.cli")
KUBERNETES_CLIENTS = {"manager.backends.kubernetes", "manager.backends.kube_cache", "manager.leader"}


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    scope: str  # enclosing function/class qualname, "" at module level
    target: str  # imported module (for `from x import y`: x, or x.y when y is a module)
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, package: str, known: set[str]) -> None:
        self.module, self.package, self.known = module, package, known
        self.scope: list[str] = []
        self.edges: list[Edge] = []

    def _add(self, target: str, node: ast.stmt | ast.expr) -> None:
        self.edges.append(Edge(self.module, ".".join(self.scope), target, node.lineno))

    def _scoped(self, node: ast.AST, name: str) -> None:
        self.scope.append(name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scoped(node, node.name)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._scoped(node, node.name)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scoped(node, node.name)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")
            anchor = parts[: len(parts) - (node.level - 1)]
            base = ".".join([*anchor, *([node.module] if node.module else [])])
        for alias in node.names:
            sub = f"{base}.{alias.name}" if base else alias.name
            self._add(sub if sub in self.known or not node.module else base, node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        dynamic = (isinstance(func, ast.Name) and func.id == "__import__") or (
            isinstance(func, ast.Attribute) and func.attr == "import_module")
        if dynamic and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            self._add(node.args[0].value, node)
        self.generic_visit(node)


def edges_of(source: str, module: str, package: bool = False, known: set[str] | None = None) -> list[Edge]:
    pkg = module if package else module.rpartition(".")[0]
    visitor = _Imports(module, pkg, known or set())
    visitor.visit(ast.parse(source))
    return visitor.edges


def repo_edges() -> list[Edge]:
    files = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
    known = {module_name(p) for p in files}
    out: list[Edge] = []
    for path in files:
        out += edges_of(path.read_text(), module_name(path), is_package(path), known)
    return out


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _top(name: str) -> str:
    return name.partition(".")[0]


def violations(edges: list[Edge]) -> list[str]:
    found = []
    for e in edges:
        src, dst = _top(e.source), _top(e.target)
        where = f"{e.source}:{e.line}" + (f" (in {e.scope})" if e.scope else "")
        if src == "jobqueue" and dst in PROCESSES and dst not in PROCESS_COMMANDS.get((e.source, e.scope), set()):
            found.append(f"{where} imports {e.target}: only a CLI command that starts the {dst} may")
        if src in PROCESSES and dst in PROCESSES and src != dst:
            found.append(f"{where} imports {e.target}: {src} and {dst} never import each other")
        if _under(e.target, "jobqueue.cli") and not _under(e.source, "jobqueue.cli"):
            found.append(f"{where} imports {e.target}: the CLI is the composition root; nothing imports it")
        if _under(e.source, "jobqueue.engine") and any(_under(e.target, m) for m in ENGINE_MUST_NOT_IMPORT):
            found.append(f"{where} imports {e.target}: the engine does no Redis and knows no SDK or CLI")
        if dst == "kubernetes_asyncio" and e.source not in KUBERNETES_CLIENTS:
            found.append(f"{where} imports {e.target}: only {sorted(KUBERNETES_CLIENTS)} talk to Kubernetes")
    return found


def package_of(module: str, packages: set[str]) -> str:
    while module not in packages and "." in module:
        module = module.rpartition(".")[0]
    return module


def graph_summary(edges: list[Edge]) -> str:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("__init__.py")]
    packages = {module_name(p) for p in files}
    graph: dict[str, Counter[str]] = defaultdict(Counter)
    for e in edges:
        if _top(e.target) in PACKAGES:
            src, dst = package_of(e.source, packages), package_of(e.target, packages)
            if src != dst:
                graph[src][dst] += 1
    lines = ["package -> packages it imports (import statements)"]
    for src in sorted(graph):
        lines.append(f"  {src:<18} -> " + ", ".join(f"{d} ({n})" for d, n in sorted(graph[src].items())))
    allowed = [e for e in edges if _top(e.source) == "jobqueue" and _top(e.target) in PROCESSES]
    lines.append("process imports from jobqueue/ (allowed: the CLI's process commands)")
    lines += [f"  {e.source}.{e.scope} -> {e.target}" for e in allowed]
    return "\n".join(lines)


def test_the_import_graph_keeps_the_layers():
    edges = repo_edges()
    print("\n" + graph_summary(edges))
    assert len({e.source for e in edges}) > 60  # every module was walked
    assert violations(edges) == []


def test_every_process_command_of_the_allow_list_exists_and_imports_its_process():
    """A stale entry (a renamed or moved command) would keep allowing an import nobody reviewed."""
    used = {(e.source, e.scope) for e in repo_edges() if _top(e.source) == "jobqueue" and _top(e.target) in PROCESSES}
    assert used == set(PROCESS_COMMANDS)


@pytest.mark.parametrize(("module", "source", "problem"), [
    ("jobqueue.client", "from consumer.worker import serve", "only a CLI command"),
    ("jobqueue.client", "def f():\n    import consumer.job", "only a CLI command"),
    ("jobqueue.cli.main", "def status():\n    from manager.reconcile import STATE_FIELDS", "only a CLI command"),
    ("jobqueue.cli.main", "def up():\n    from consumer.worker import serve", "only a CLI command"),  # wrong process
    ("jobqueue.cli.main", "from manager.runner import run_manager", "only a CLI command"),  # module level
    ("jobqueue.cli.main", "def up():\n    def inner():\n        import manager.runner", "only a CLI command"),
    ("jobqueue.cli.demo", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from manager import x",
     "only a CLI command"),
    ("jobqueue.sync", "import importlib\nimportlib.import_module('manager.gc')", "only a CLI command"),
    ("manager.gc", "from consumer import worker", "never import each other"),
    ("consumer.job", "def f():\n    from manager.reaper import Reaper", "never import each other"),
    ("manager.backends.local", "from ...consumer.resources import x", "never import each other"),
    ("consumer.worker", "from jobqueue.cli.console import fail_cleanly", "composition root"),
    ("jobqueue.engine.execute", "from ..jobstore import JobStore", "the engine does no Redis"),
    ("jobqueue.engine.sources", "import redis.asyncio", "the engine does no Redis"),
    ("manager.reconcile", "from kubernetes_asyncio import client", "talk to Kubernetes"),
])
def test_a_forbidden_import_is_found(module, source, problem):
    found = violations(edges_of(source, module))
    assert len(found) == 1 and problem in found[0], found


@pytest.mark.parametrize(("module", "source"), [
    ("jobqueue.cli.main", "def up():\n    from manager.runner import run_manager"),
    ("jobqueue.cli.main", "def consumer():\n    from consumer.worker import run_consumer"),
    ("jobqueue.cli.gc", "def gc():\n    from manager.gc import GarbageCollector"),
    ("manager.runner", "from .backends.local import LocalBackend\nfrom jobqueue.engine import resources"),
    ("consumer.worker", "from jobqueue.engine.execute import PreparedQuery"),
    ("jobqueue.cli.status", "from ..keys import Keys"),
])
def test_an_allowed_import_passes(module, source):
    assert violations(edges_of(source, module)) == []


def test_relative_imports_resolve_against_the_package():
    assert [e.target for e in edges_of("from ..engine import execute", "jobqueue.cli.main")] == ["jobqueue.engine"]
    assert [e.target for e in edges_of("from . import job", "consumer", package=True)] == ["consumer.job"]
    known = {"manager.backends.local"}
    assert [e.target for e in edges_of("from .backends import local", "manager.runner", known=known)] == [
        "manager.backends.local"]


def test_the_manager_and_consumers_do_not_load_the_sdk():
    """`connect_redis` lives in `jobqueue.redis`: starting either process does not import `jobqueue.client`."""
    code = ("import sys, manager.runner, manager.reconcile, consumer.worker; "
            "print(sorted(m for m in ('jobqueue.client', 'jobqueue.handles') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
