"""The shape of the tree, checked: no import cycle in the package (a lazy
import inside a function counts too), no file over 800 lines, and fronts
that know nothing of a particular backend. These read the sources of the
checkout, not the installed package."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pymodule" / "forkfarm"

MAX_LINES = 800
# Files allowed over MAX_LINES, each with its reason. Empty the entry when
# the file is split.
LONG_FILES: dict[str, str] = {}


def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that the module imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                # ``from . import x`` imports the submodule x when there is one,
                # else a name of the package itself.
                submodule = f"{target}.{alias.name}"
                if submodule in modules:
                    found.add(submodule)
                elif target in modules and submodule != "forkfarm._core":
                    found.add(target)
    found.discard(name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _package_graph() -> dict[str, set[str]]:
    modules = _module_names()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_the_package_has_no_import_cycle() -> None:
    cycles = _cycles(_package_graph())
    assert not cycles, "import cycles in the package (each group imports itself): " + "; ".join(
        " <-> ".join(group) for group in cycles
    )


def test_the_cycle_check_finds_a_cycle() -> None:
    # The check itself, on a graph with a cycle through a lazy import.
    graph = _package_graph()
    graph["forkfarm._start"] = graph["forkfarm._start"] | {"forkfarm.pool"}
    assert any("forkfarm._start" in group and "forkfarm.pool" in group for group in _cycles(graph))


def test_lazy_imports_count(tmp_path: Path) -> None:
    module = tmp_path / "_start.py"
    module.write_text("def later():\n    from . import pool\n")
    assert "forkfarm.pool" in _imports("forkfarm._start", module, _module_names())


def _sources() -> list[Path]:
    files = list((ROOT / "lib").glob("*.[ch]"))
    files += list((ROOT / "pymodule").glob("*.[ch]"))
    files += list(PACKAGE.rglob("*.py"))
    files += list(PACKAGE.rglob("*.pyi"))
    return files


def test_no_file_is_over_800_lines() -> None:
    long = {}
    for path in _sources():
        lines = len(path.read_text().splitlines())
        name = path.relative_to(ROOT).as_posix()
        if lines > MAX_LINES and name not in LONG_FILES:
            long[name] = lines
    assert not long, f"files over {MAX_LINES} lines (split them, or name them in LONG_FILES with why): {long}"


def test_the_named_long_files_are_still_long() -> None:
    # An exception that is no longer needed goes, so that the list stays true.
    for name in LONG_FILES:
        path = ROOT / name
        assert path.exists() and len(path.read_text().splitlines()) > MAX_LINES, (
            f"{name} is no longer over {MAX_LINES} lines: remove it from LONG_FILES"
        )


def test_the_fronts_name_no_backend() -> None:
    # Pool and Executor run on any core the backend gives them: neither
    # branches on MPI, and neither imports the other's names.
    graph = _package_graph()
    for front in ("forkfarm.pool", "forkfarm.executor"):
        tree = ast.parse(_module_names()[front].read_text())
        strings = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
        assert "mpi" not in strings, f"{front} has a branch for the MPI backend"
        assert "forkfarm.mpi" not in graph[front]
    assert "forkfarm.executor" not in graph["forkfarm.pool"]
    assert "forkfarm.pool" not in graph["forkfarm.executor"]


def test_errors_are_raised_by_the_core_not_caught_and_mapped() -> None:
    # pymodule/errors.c maps every runtime code to the final exception: no
    # module of the package catches _core.Error to map it again.
    for name, path in _module_names().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                assert "_core.Error" not in ast.unparse(node.type), f"{name} maps _core.Error itself"
