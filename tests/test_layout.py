"""The house's layout holds: folders in the order the data flows and no import back up that order, no import
cycle in `mammo`, MLflow imported only in its own rooms, thin entry points, a module map that lists them all."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "mammo"
MLFLOW_ROOMS = ("mammo.tracking", "mammo.registry", "mammo.serve")  # folders: any module in them may
MLFLOW_DOORS = {"mammo.core.compat"}  # the private-API door imports MLflow's alias validators, lazily
ENTRY_POINT_MAX_LINES = 80


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {imported for imported in _imports(path) if imported in modules and imported != name}
            for name, path in modules.items()}  # fmt: skip


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        state[node], _ = 2, path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_walk_finds_a_cycle_when_there_is_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def _indented(block: str) -> list[str]:
    return [line.split()[0] for line in block.splitlines() if line.startswith("    ") and line.strip()]


def _folder_order() -> list[str]:
    """The folders as mammo/__init__.py lists them, top (imports the most) to bottom (imports nothing of ours)."""
    import mammo

    return [name.rstrip("/") for name in _indented(mammo.__doc__.split("Folders")[1].split("Modules")[0])]


def _folder(module: str) -> str:
    """`mammo.train.training` -> train; the root package `mammo` -> "" (below every folder)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _upward_imports(graph: dict[str, set[str]], order: list[str]) -> list[str]:
    """Every import from a module to one in a folder listed above the importer's own."""
    rank = {folder: index for index, folder in enumerate(order)} | {"": len(order)}
    return sorted(f"{source} imports {target}" for source, targets in graph.items() for target in targets
                  if rank[_folder(target)] < rank[_folder(source)])  # fmt: skip


def test_the_order_check_finds_an_import_back_up() -> None:
    order = ["search", "train", "core"]
    fine = {"mammo.search.study": {"mammo.train.training", "mammo.core.errors"}, "mammo.core.errors": {"mammo"}}
    assert _upward_imports(fine, order) == []
    back_up = {**fine, "mammo.core.errors": {"mammo.train.training"}}
    assert _upward_imports(back_up, order) == ["mammo.core.errors imports mammo.train.training"]


def test_every_folder_is_in_the_order_and_no_import_runs_back_up() -> None:
    order = _folder_order()
    folders = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()}
    assert sorted(order) == sorted(folders), "mammo/__init__.py's folder list and the package's folders differ"
    assert order.index("train") < order.index("model") < order.index("data") < order.index("core") == len(order) - 1
    assert _upward_imports(_graph(), order) == []


def test_no_import_cycle_in_the_package() -> None:
    graph = _graph()
    assert {"mammo.core.precision", "mammo.model.variants", "mammo.model.pipeline"} <= set(graph)
    assert _cycle(graph) is None, " → ".join(_cycle(graph) or [])


def test_mlflow_is_imported_only_in_tracking_registry_and_serve() -> None:
    importers = {name for name, path in ((_module_name(p), p) for p in PACKAGE.rglob("*.py"))
                 if any(module == "mlflow" or module.startswith("mlflow.") for module in _imports(path))}  # fmt: skip
    assert {name for name in importers if not name.startswith(MLFLOW_ROOMS)} - MLFLOW_DOORS == set()
    assert {"mammo.tracking", "mammo.registry.versions", "mammo.serve.serving"} <= importers
    entry_importers = [p.name for p in (REPO_ROOT / "entrypoints").glob("*.py") if any(
        m == "mlflow" or m.startswith("mlflow.") for m in _imports(p))]  # fmt: skip
    assert entry_importers == []


def test_entry_points_only_parse_and_report() -> None:
    sizes = {path.name: len(path.read_text().splitlines()) for path in (REPO_ROOT / "entrypoints").glob("*.py")}
    assert {
        name: lines for name, lines in sizes.items() if lines > ENTRY_POINT_MAX_LINES and name != "__init__.py"
    } == {}
    entry_modules = {f"entrypoints.{path.stem}" for path in (REPO_ROOT / "entrypoints").glob("*.py")} - {
        "entrypoints.__init__"
    }
    for path in (REPO_ROOT / "entrypoints").glob("*.py"):
        assert not entry_modules & _imports(path), f"{path.name} imports another entry point"


def test_the_module_map_lists_every_module() -> None:
    """mammo/__init__.py's docstring has one line per module (STYLE.md), none missing, none stale."""
    import mammo

    listed = set(_indented(mammo.__doc__.split("Modules (one line each):")[1]))
    modules = {path.relative_to(PACKAGE).with_suffix("").as_posix() for path in PACKAGE.rglob("*.py")}
    assert listed == {name for name in modules if not name.endswith("__init__")} | {"tracking/__init__"}
