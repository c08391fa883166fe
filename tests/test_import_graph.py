"""No import circle among ``fastxai_jax`` modules (issue 17).

Reads every module's imports with ``ast``, builds the graph of
``fastxai_jax.*`` modules and reports every elementary cycle: first with the
top-level imports only (those that run at import time), then also with the
imports deferred into functions, which hide a circle rather than remove it
(issue 17's ``fex.py`` <-> ``fex_train.py`` is one).
"""

from __future__ import annotations

import ast
import pathlib

import fastxai_jax

PACKAGE_DIR = pathlib.Path(fastxai_jax.__file__).parent
PACKAGE = "fastxai_jax"


def module_names(root: pathlib.Path = PACKAGE_DIR) -> dict[str, pathlib.Path]:
    """``{"fastxai_jax.a.b": path}`` for every ``.py`` file of the package."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = (PACKAGE, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imports(tree: ast.Module, deferred: bool) -> list[ast.Import | ast.ImportFrom]:
    """Imports run at import time (module body, ``if``/``try`` blocks), plus
    those inside functions and classes when ``deferred``."""
    if deferred:
        return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    found, stack = [], list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If | ast.Try | ast.With):
            for field in ("body", "orelse", "finalbody", "handlers"):
                stack.extend(getattr(node, field, []))
        elif isinstance(node, ast.ExceptHandler):
            stack.extend(node.body)
    return found


def _is_type_checking(tree: ast.Module) -> set[int]:
    """Line numbers of imports under ``if TYPE_CHECKING:`` (never executed)."""
    lines = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines |= {
                n.lineno for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)
            }
    return lines


def import_graph(names: dict[str, pathlib.Path], deferred: bool = False) -> dict[str, set[str]]:
    """``{module: {package modules it imports}}`` (at top level unless ``deferred``).

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a
    module, else ``pkg`` (parent packages that Python also runs are not
    edges, as in pylint's cyclic-import); relative imports are resolved.
    """
    graph = {}
    for name, path in names.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = _is_type_checking(tree)
        is_package = path.name == "__init__.py"
        edges = set()
        for node in _imports(tree, deferred):
            if node.lineno in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in names else base
                    for alias in node.names
                ]
            for target in targets:
                # The longest package module that the dotted name starts with.
                parts = target.split(".")
                while parts and ".".join(parts) not in names:
                    parts.pop()
                if parts and ".".join(parts) != name:
                    edges.add(".".join(parts))
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle, each once, rotated to start at its smallest name."""
    found = set()

    def walk(start, node, path, on_path):
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                found.add(tuple(path))
            elif nxt > start and nxt not in on_path:
                on_path.add(nxt)
                walk(start, nxt, [*path, nxt], on_path)
                on_path.discard(nxt)

    for start in sorted(graph):
        walk(start, start, [start], {start})
    return [list(c) for c in sorted(found, key=lambda c: (len(c), c))]


def test_cycle_finder_on_a_known_graph():
    graph = {"a": {"b"}, "b": {"c", "a"}, "c": {"a"}, "d": {"d2"}, "d2": set()}
    assert cycles(graph) == [["a", "b"], ["a", "b", "c"]]


def test_import_graph_resolves_relative_and_from_imports(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from fastxai_jax.sub import mod\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "mod.py").write_text(
        "from . import other\nimport fastxai_jax.top\n"
        "def f():\n    from fastxai_jax import late\n"
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fastxai_jax import late\n"
    )
    (pkg / "sub" / "other.py").write_text("from ..top import thing\n")
    (pkg / "top.py").write_text("")
    (pkg / "late.py").write_text("")
    graph = import_graph(module_names(pkg))
    assert graph["fastxai_jax"] == {"fastxai_jax.sub.mod"}
    assert graph["fastxai_jax.sub.mod"] == {"fastxai_jax.sub.other", "fastxai_jax.top"}
    assert graph["fastxai_jax.sub.other"] == {"fastxai_jax.top"}
    deferred = import_graph(module_names(pkg), deferred=True)
    assert deferred["fastxai_jax.sub.mod"] == {
        "fastxai_jax.sub.other",
        "fastxai_jax.top",
        "fastxai_jax.late",
    }


def _report(found: list[list[str]]) -> str:
    return "import circles:\n" + "\n".join(" -> ".join([*c, c[0]]) for c in found)


def test_no_import_circles():
    graph = import_graph(module_names())
    assert len(graph) > 30  # the walk saw the package
    found = cycles(graph)
    assert not found, _report(found)


def test_no_import_circles_through_deferred_imports():
    found = cycles(import_graph(module_names(), deferred=True))
    assert not found, _report(found)


def test_only_the_cli_imports_the_cli():
    # The CLI is argument parsing over the library: no library module reaches into it,
    # not even through an import deferred into a function.
    graph = import_graph(module_names(), deferred=True)
    cli = f"{PACKAGE}.cli"
    reaching = {
        module: sorted(t for t in targets if t == cli or t.startswith(cli + "."))
        for module, targets in graph.items()
        if not (module == cli or module.startswith(cli + "."))
    }
    reaching = {module: targets for module, targets in reaching.items() if targets}
    assert len(graph) > 30 and any(m.startswith(cli + ".") for m in graph)
    assert not reaching, f"library modules importing {cli}: {reaching}"
