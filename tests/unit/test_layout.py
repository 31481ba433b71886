"""The package's shape: stages import only earlier stages (and core), no import circles, and the
size limits a reader can hold in their head."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "esrank"
# the pipeline's order: a stage may import itself and the stages before it
STAGES = ("core", "engine", "models", "catalogue", "features", "ubi", "judgments", "learn",
          "deploy", "ranking", "evaluation", "personal", "monitoring", "app", "loop", "serve",
          "cli")
# the size limits: lines of a module, and of a function or class from its `def`/`class` line
# (decorators excluded) to its last
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_CLASS_LINES = 500, 60, 300
MAX_DOOR_LINES = 25  # a CLI command's or a route's body: parse, call one use case, answer
DOORS = {"command", "get", "post", "put", "delete", "route"}  # click and Flask decorators


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


MODULES = _modules()


def _imports(name: str, tree: ast.Module) -> set[str]:
    """The esrank modules `name` imports, anywhere in it (function-level imports count)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("esrank"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("esrank")}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, tree) for name, tree in MODULES.items()}


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "core"  # esrank/__init__ holds the version only


def test_every_module_belongs_to_a_stage():
    assert {_stage(m) for m in MODULES} <= set(STAGES)


def test_no_stage_imports_a_later_stage():
    wrong = [f"{m} imports {d}" for m, deps in GRAPH.items() for d in deps
             if STAGES.index(_stage(d)) > STAGES.index(_stage(m))]
    assert wrong == []


def _cycle_from(start: str) -> list[str] | None:
    stack, path = [(start, iter(sorted(GRAPH[start])))], [start]
    seen = {start}
    while stack:
        node, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            path.pop()
        elif child == start:
            return [*path, start]
        elif child not in seen:
            seen.add(child)
            stack.append((child, iter(sorted(GRAPH[child]))))
            path.append(child)
    return None


def test_no_import_circles():
    circles = [c for c in map(_cycle_from, sorted(GRAPH)) if c]
    assert circles == []


def test_the_layout_checks_can_fail(monkeypatch):
    """A circle and a backwards import planted in the graph are found."""
    monkeypatch.setitem(GRAPH, "esrank.core.errors", {"esrank.ranking.search"})
    monkeypatch.setitem(GRAPH, "esrank.ranking.search", {"esrank.core.errors"})
    assert _cycle_from("esrank.core.errors") == ["esrank.core.errors", "esrank.ranking.search",
                                                 "esrank.core.errors"]
    with pytest.raises(AssertionError):
        test_no_stage_imports_a_later_stage()


def _module_lines(module: str) -> int:
    path = PACKAGE.parent.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return len(path.read_text().splitlines())


def _too_long(module: str, tree: ast.Module) -> list[str]:
    """The functions (methods and nested ones too) and classes of `module` over their limit."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            limit = MAX_FUNCTION_LINES
        elif isinstance(node, ast.ClassDef):
            limit = MAX_CLASS_LINES
        else:
            continue
        length = node.end_lineno - node.lineno + 1  # lineno is the def line, not a decorator's
        if length > limit:
            found.append(f"{module}:{node.lineno} {node.name} is {length} lines (limit {limit})")
    return found


def test_no_module_is_over_the_limit():
    long = [f"{m} is {n} lines" for m in MODULES
            if (n := _module_lines(m)) > MAX_MODULE_LINES]
    assert long == []


def test_no_function_or_class_is_over_the_limit():
    long = [found for m, tree in MODULES.items()
            for found in _too_long(m, tree)]
    assert long == []


def test_the_size_checks_can_fail():
    """A 61-line function and a 301-line class are found; 60 and 300 lines pass."""
    def lines(n: int, indent: str) -> str:
        return "".join(f"{indent}x{i} = {i}\n" for i in range(n))

    source = ("@decorator\ndef fits():\n" + lines(59, "    ")
              + "def too_long():\n" + lines(60, "    ")
              + "class Fits:\n" + lines(299, "    ")
              + "class TooLong:\n" + lines(300, "    "))
    assert _too_long("esrank.planted", ast.parse(source)) == [
        f"esrank.planted:{2 + 60} too_long is 61 lines (limit {MAX_FUNCTION_LINES})",
        f"esrank.planted:{2 + 60 + 61 + 300} TooLong is 301 lines (limit {MAX_CLASS_LINES})"]


def _long_doors(module: str, tree: ast.Module) -> list[str]:
    """The click commands and Flask routes of `module` longer than MAX_DOOR_LINES (def to
    end)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef):
            continue
        door = any(isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute)
                   and d.func.attr in DOORS for d in node.decorator_list)
        if door and (length := node.end_lineno - node.lineno + 1) > MAX_DOOR_LINES:
            found.append(f"{module}:{node.lineno} {node.name} is {length} lines")
    return found


def test_every_command_and_route_is_a_thin_door():
    long = [found for m, tree in MODULES.items() for found in _long_doors(m, tree)]
    assert long == []


def test_the_door_check_can_fail():
    body = "".join(f"    x{i} = {i}\n" for i in range(25))
    source = (f"@bp.post('/x')\ndef route():\n{body}\n"
              "@click.command('c')\ndef command():\n    pass\n")
    assert _long_doors("esrank.planted", ast.parse(source)) == [
        "esrank.planted:2 route is 26 lines"]


def test_the_package_map_in_the_docs_matches_the_code():
    """docs/concepts.md opens with the package map: one line per stage package or top-level
    module, each of them there, none that is gone."""
    doc = (PACKAGE.parent / "docs" / "concepts.md").read_text()
    tree = doc.split("```")[1]
    mapped = {line.split()[0].rstrip("/") for line in tree.splitlines()
              if line.startswith("  ") and not line.startswith("   ")}
    actual = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    actual |= {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    assert mapped == actual


def test_test_module_names_are_unique():
    """The test folders have no __init__.py, so two test modules with one basename stop a
    whole-suite run at collection ("import file mismatch")."""
    names = [p.name for p in (PACKAGE.parent / "tests").rglob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
