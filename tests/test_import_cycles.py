"""No import circles between sdft's modules (issue 19): every `import` counts, those inside functions too, except
imports under `if TYPE_CHECKING:` (annotations only, never run)."""

from __future__ import annotations

import ast

from helpers.config import ROOT


def module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """The sdft modules a module's code imports (relative imports resolved)."""
    found: set[str] = set()
    todo = list(ast.iter_child_nodes(tree))
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo += node.orelse
            continue
        todo += ast.iter_child_nodes(node)
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return (found & modules) - {name}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in (ROOT / "sdft").rglob("*.py")}
    modules = set(files)
    return {
        name: imported(ast.parse(p.read_text(encoding="utf-8")), name, p.name == "__init__.py", modules)
        for name, p in files.items()
    }


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_circle_finder_sees_a_circle_through_a_function_level_import():
    code = {
        "sdft.a": "import sdft.b\n",
        "sdft.b": "def f():\n    from sdft import a\n",
        "sdft.c": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sdft.a\n",
    }
    graph = {n: imported(ast.parse(src), n, False, set(code) | {"sdft"}) for n, src in code.items()}
    assert graph == {"sdft.a": {"sdft.b"}, "sdft.b": {"sdft.a"}, "sdft.c": set()}
    assert circles(graph) == [["sdft.a", "sdft.b"]]


def test_no_import_circles_in_sdft():
    graph = import_graph()
    assert {"sdft.run.train", "sdft.data.folders", "sdft.data.kohya_toml"} <= set(graph)
    assert "sdft.data.concepts" in graph["sdft.data.kohya_toml"]  # the shared kohya naming, not folders.py
    assert circles(graph) == [], "modules that import each other (move what they share into a module of its own)"
