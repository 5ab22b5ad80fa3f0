"""The package's layers stay layered: no import circle among its modules, the core never imports
the Dagster shell (`defs/`, `cli/`, `definitions`), the source stage (the tree) never imports
the stages fed from it (tables, trackers), and neither tracker imports the other. Read from
the source with `ast`, so it is fast and sees imports inside functions and under
`TYPE_CHECKING` too."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PKG = "align_track_pipeline"
# module prefix -> module prefixes it must never import
FORBIDDEN = {
    f"{PKG}.core": (f"{PKG}.defs", f"{PKG}.cli", f"{PKG}.definitions", "dagster"),
    f"{PKG}.core.source": (f"{PKG}.core.tables", f"{PKG}.core.trackers",
                           f"{PKG}.core.analysis"),
    # what both trackers share lives beside them (`core/trackers/times.py`)
    f"{PKG}.core.trackers.aim": (f"{PKG}.core.trackers.mlflow", "mlflow"),
    f"{PKG}.core.trackers.mlflow": (f"{PKG}.core.trackers.aim", "aim", "aimrocks"),
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every dotted name an import statement anywhere in the module names (absolute)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: None if is_package else -1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a name `from pkg import name` resolves to
    the module `pkg.name` when there is one, else to `pkg`)."""
    paths = {module_name(p, root): p for p in (root / PKG).rglob("*.py")}
    graph = {}
    for module, path in paths.items():
        deps = set()
        for name in imported(ast.parse(path.read_text()), module, path.name == "__init__.py"):
            while name and name not in paths:
                name = name.rpartition(".")[0]
            if name and name != module:
                deps.add(name)
        graph[module] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def upward(graph_with_externals: dict[str, set[str]]) -> list[str]:
    """`module -> import` pairs that break a FORBIDDEN rule."""
    broken = []
    for module, names in graph_with_externals.items():
        for layer, banned in FORBIDDEN.items():
            if module == layer or module.startswith(layer + "."):
                broken += [f"{module} -> {name}" for name in sorted(names)
                           if any(name == b or name.startswith(b + ".") for b in banned)]
    return sorted(broken)


def all_imports(root: Path = REPO) -> dict[str, set[str]]:
    """Module -> every name it imports, the package's and other libraries' alike."""
    return {module_name(p, root): imported(ast.parse(p.read_text()), module_name(p, root),
                                           p.name == "__init__.py")
            for p in (root / PKG).rglob("*.py")}


def test_the_package_has_no_import_circle():
    graph = import_graph()
    assert len(graph) > 80 and f"{PKG}.core.trackers.registry" in graph
    assert cycles(graph) == []


def test_no_layer_imports_a_layer_above_it():
    assert upward(all_imports()) == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / PKG / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_checks_see_a_circle_and_an_upward_import(tmp_path):
    """Circles through a lazy import, a TYPE_CHECKING import and a relative import are found;
    so are a core module importing the shell and the source stage importing the tables."""
    root = _package(tmp_path, {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/a.py": f"def f():\n    from {PKG}.core import b\n",
        "core/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n",
        "core/c.py": f"from {PKG}.core.a import f\nimport dagster\n",
        "core/source/__init__.py": "",
        "core/source/parse.py": f"from {PKG}.core.tables.schema import X\n",
        "core/tables/__init__.py": "",
        "core/tables/schema.py": f"from {PKG}.cli import main\n",
        "cli/__init__.py": "",
        "cli/main.py": "",
    })
    assert cycles(import_graph(root)) == [[f"{PKG}.core.a", f"{PKG}.core.b", f"{PKG}.core.c"]]
    assert upward(all_imports(root)) == [
        f"{PKG}.core.c -> dagster",
        f"{PKG}.core.source.parse -> {PKG}.core.tables.schema",
        f"{PKG}.core.source.parse -> {PKG}.core.tables.schema.X",
        f"{PKG}.core.tables.schema -> {PKG}.cli",
        f"{PKG}.core.tables.schema -> {PKG}.cli.main",
    ]


def test_the_package_makes_no_foreign_calls():
    """No module of the package imports ctypes or cffi: no call into a C library by address,
    no raw memory (the package's C work goes through its libraries' own bindings)."""
    foreign = {}
    for path in (REPO / PKG).rglob("*.py"):
        module = module_name(path, REPO)
        names = imported(ast.parse(path.read_text()), module, path.name == "__init__.py")
        found = {n for n in names if n.split(".")[0] in ("ctypes", "cffi", "_ctypes")}
        if found:
            foreign[module] = sorted(found)
    assert foreign == {}
