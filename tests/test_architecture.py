"""The package's shape: folders follow the pipeline, imports point one way, no cycles, no private names
borrowed across modules, and the CLI answers --help without torch or Ray."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "windtunnel"

# Lower layers never import higher ones (spec -> trial -> train -> results -> plot -> transfer -> run).
LAYERS = [
    {"errors", "typecheck", "fileio", "formatting", "lazy"},
    {"config", "schema", "config_keys"},
    {"model"},
    {"data"},
    {"provenance"},
    {"training"},
    {"analysis"},
    {"sweep"},
    {"fullrun"},
    {"eval"},
    {"cli", "__main__", "__init__"},
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names, line) for every import in the file, lazy ones and TYPE_CHECKING included."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("windtunnel"):
                names = [a.name for a in node.names]
                # `from . import x` / `from .pkg import mod` import modules, not names
                for name in names:
                    sub = f"{target}.{name}"
                    if _exists(sub):
                        out.append((sub, [], node.lineno))
                    else:
                        out.append((target, [name], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("windtunnel")]
    return out


def _exists(module: str) -> bool:
    rel = Path(*module.split("."))
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in PKG.rglob("*.py"):
        me = _module_name(path)
        graph[me] = {t for t, _, _ in _imports(path) if t != me and t != "windtunnel"}
    return graph


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: its folder {top!r} has no layer in tests/test_architecture.py LAYERS")


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt in graph and not state.get(nxt):
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_imports_point_down_the_pipeline():
    graph = _graph()
    up = [f"{a} -> {b}" for a, targets in graph.items() for b in targets
          if b.count(".") and a.count(".") and _layer(b) > _layer(a)]
    assert not up, "imports that climb back up the pipeline:\n" + "\n".join(sorted(up))


def test_no_private_names_across_modules():
    borrowed = []
    for path in PKG.rglob("*.py"):
        for target, names, line in _imports(path):
            borrowed += [f"{path.relative_to(ROOT)}:{line} imports {target}.{n}" for n in names
                         if n.startswith("_") and not n.startswith("__")]
    assert not borrowed, "\n".join(borrowed)


def test_no_classes_defined_inside_functions_in_sweep():
    """A class made per call cannot be pickled by name, tested or read on its own: sweep/ keeps its
    engine pieces (Tune callback, searcher) at module level."""
    nested = []
    for path in (PKG / "sweep").rglob("*.py"):
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                nested += [f"{path.relative_to(ROOT)}:{c.lineno} class {c.name} in {fn.name}()"
                           for c in ast.walk(fn) if isinstance(c, ast.ClassDef)]
    assert not nested, "\n".join(nested)


def test_layers_cover_every_folder():
    for path in PKG.rglob("*.py"):
        _layer(_module_name(path))


@pytest.mark.parametrize("module", ["windtunnel.cli", "windtunnel.analysis.runs", "windtunnel.sweep.spec",
                                    "windtunnel.model.accounting", "windtunnel.sweep.points",
                                    "windtunnel.sweep.plan", "windtunnel.sweep.trial_list", "windtunnel.config"])
def test_light_modules_import_without_torch_or_ray(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'ray', 'optuna') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", f"{module} pulls in {out.stdout.strip()}"
