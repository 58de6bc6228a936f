"""The package's shape: folders follow the pipeline, imports point one way, no cycles, no private names
borrowed across modules, and the CLI answers --help without torch or Ray."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "windtunnel"

# Lower layers never import higher ones (spec -> trial -> train -> results -> plot -> transfer -> run).
LAYERS = [
    {"errors", "typecheck", "fileio", "formatting", "lazy"},
    {"run_folder"},
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


def _classes_inside_functions(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found += [f"{path.relative_to(ROOT)}:{inner.lineno} {inner.name} (in {node.name})"
                      for inner in ast.walk(node) if isinstance(inner, ast.ClassDef)]
    return found


def test_no_class_is_defined_inside_a_function():
    # a class built per call hides state (a shared mutable set), cannot be pickled by Ray by reference,
    # and is invisible to a reader scanning the module's top level
    found = [hit for path in sorted(PKG.rglob("*.py")) for hit in _classes_inside_functions(path)]
    assert found == [], "\n".join(found)


def test_public_api_is_small_and_every_name_has_a_docstring_example():
    import warnings

    import windtunnel as wt
    names = [n for n in wt.__all__ if n != "__version__"]
    assert 10 <= len(names) <= 16, names
    for name in names:
        doc = getattr(wt, name).__doc__ or ""
        assert ">>>" in doc or "Example" in doc, f"windtunnel.{name} has no docstring example"
    with warnings.catch_warnings(record=True) as caught:  # a former public name still resolves, with a warning
        warnings.simplefilter("always")
        assert wt.load_run.__name__ == "load_run"
    assert any("windtunnel.analysis.runs" in str(w.message) for w in caught)


# --- one owner for the run folder's names (issue 22) --------------------------------------------------
# Files owned by the other branches of issue 22's round (training loop; sweep engine), which still
# name run-folder files in quotes: emptied at merge, when they take the names from windtunnel.run_folder.
NAME_LITERALS_ALLOWED: set[str] = set()  # emptied when the loop and engine branches landed


def _owned_names() -> tuple[set[str], set[str]]:
    """(file names, folder names) that windtunnel.run_folder defines: the names nobody else may spell."""
    import windtunnel.run_folder as rf
    values = [getattr(rf, n) for n in rf.__all__ if n.endswith(("_FILE", "_DIR", "_DB", "_CSV", "_JSON", "_PARQUET",
                                                               "_MARKER"))]
    return {v for v in values if "." in v}, {v for v in values if "." not in v}


def _docstring_ids(tree: ast.AST) -> set[int]:
    """Module, class and function docstrings and attribute docstrings: prose may name the files."""
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        for stmt in body if isinstance(body, list) else []:  # a lambda's body is one expression
            value = stmt.value if isinstance(stmt, ast.Expr) else None
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                out.add(id(value))
    return out


def _name_literals(source: str, label: str, files: set[str], folders: set[str]) -> list[str]:
    tree = ast.parse(source)
    docs = _docstring_ids(tree)
    file_re = re.compile(r"(?<![\w.-])(" + "|".join(re.escape(f) for f in sorted(files)) + r")(?![\w.-])")
    # a folder name counts only as a path: `x / "trials"`, "trials/*", os.path.join(..., "trials")
    path_operands = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            path_operands |= {id(node.left), id(node.right)}
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join":
            path_operands |= {id(a) for a in node.args}
    hits = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in docs:
            continue
        text = node.value
        if re.search(r"\s", text):  # prose (help text, a message) may name a file, as a docstring may
            continue
        found = file_re.search(text)
        head, _, rest = text.partition("/")
        if found or (text in folders and id(node) in path_operands) or (head in folders and rest):
            hits.append(f"{label}:{node.lineno}: {text!r}")
    return hits


def test_no_run_folder_names_outside_run_folder():
    files, folders = _owned_names()
    assert {"summary.json", "results.csv", "metrics.csv", "config.yaml", "trial.json", "spec.yaml", "study.db",
            "provenance.json", "sweep.lock", "meta.json"} <= files and {"trials", "checkpoints"} <= folders
    hits = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "windtunnel/run_folder.py" or rel in NAME_LITERALS_ALLOWED:
            continue
        hits += _name_literals(path.read_text(encoding="utf-8"), rel, files, folders)
    assert not hits, ("run-folder file names spelled outside windtunnel/run_folder.py (take the constant or "
                      "path helper from there):\n" + "\n".join(hits))


def test_the_name_rule_sees_literals():
    files, folders = _owned_names()
    source = ('"""Docstrings may say summary.json."""\nimport os\n'
              'a = run / "summary.json"\nb = os.path.join(run, "trials")\nc = "trials/*/config.yaml"\n'
              'd = f"{run / \'results.csv\'}"\ne = "trials"  # a word, not a path\n'
              'f = f"{run}: no results.csv here"  # prose\n')
    hits = _name_literals(source, "probe.py", files, folders)
    assert sorted(h.split(":")[1] for h in hits) == ["3", "4", "5", "6"], hits


@pytest.mark.parametrize("rel", sorted(NAME_LITERALS_ALLOWED))
def test_the_allow_list_holds_only_files_that_still_need_it(rel):
    """At merge, a file that takes its names from run_folder must leave NAME_LITERALS_ALLOWED (this fails)."""
    files, folders = _owned_names()
    path = ROOT / rel
    assert path.is_file(), f"{rel}: gone; remove it from NAME_LITERALS_ALLOWED"
    assert _name_literals(path.read_text(encoding="utf-8"), rel, files, folders), (
        f"{rel}: spells no run-folder name any more; remove it from NAME_LITERALS_ALLOWED")
