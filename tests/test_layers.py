"""The packages' allowed import directions (issue 27, docs/architecture.md "Layers"): a module may import its own
layer and the layers below it, never a higher one; and no module imports another module's private (`_name`) symbol.
Every import counts, those inside functions too (annotation-only imports under `if TYPE_CHECKING:` do not)."""

from __future__ import annotations

import ast

from helpers.config import ROOT
from test_import_cycles import import_graph, module_name

# Bottom to top. A module's layer is its longest matching prefix. The toy world (scenes, detector, subject, sampling
# control) is plain numpy/PIL below the models (the toy base's builder, models/toy_arch.py, reads its vocabulary);
# the toy studies (measure, study, export, masks, VAE pretraining) and the doctor's run-config reader and loss probe
# (they compose and train as a run does) use the run wiring, so they sit above run/; the doctor's checks sit below it
# (train.py runs the cheap ones before any model loads).
LAYERS: list[tuple[str, ...]] = [
    ("sdft", "sdft.config", "sdft.errors", "sdft.atomic", "sdft.memory", "sdft.redact", "sdft.images_grid"),
    ("sdft.toy.world", "sdft.toy.detector", "sdft.toy.subject", "sdft.toy.control"),
    ("sdft.models",),
    ("sdft.families",),
    ("sdft.adapters", "sdft.embeddings"),
    ("sdft.generation",),
    ("sdft.data",),
    ("sdft.prep",),
    ("sdft.training",),
    ("sdft.evaluation",),
    ("sdft.callbacks",),
    ("sdft.run",),
    ("sdft.toy", "sdft.prep.doctor.run_config", "sdft.prep.doctor.loss_probe"),
    ("sdft.ui",),
    ("sdft.cli",),
]


def layer_of(module: str) -> int:
    best, level = "", None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and len(prefix) > len(best) and (prefix != "sdft" or module.count(".") <= 1):
                best, level = prefix, i
    assert level is not None, f"{module} is in no layer: add its package to LAYERS"
    return level


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{src} ({LAYERS[layer_of(src)][0]}) imports {dst} ({LAYERS[layer_of(dst)][0]})"
        for src, targets in graph.items()
        for dst in targets
        if layer_of(dst) > layer_of(src)
    )


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)


def test_no_module_imports_a_higher_layer():
    assert upward_imports(import_graph()) == []


def test_the_layer_check_sees_an_upward_import():
    graph = {"sdft.models.loading": {"sdft.run.train"}, "sdft.run.train": {"sdft.models.loading"}}
    assert upward_imports(graph) == ["sdft.models.loading (sdft.models) imports sdft.run.train (sdft.run)"]
    assert layer_of("sdft.toy.world") < layer_of("sdft.models.toy_arch") < layer_of("sdft.toy.measure")
    assert layer_of("sdft.config") == 0 and layer_of("sdft.cli.data") == len(LAYERS) - 1


def private_imports() -> list[str]:
    """`from sdft.x import _name` anywhere in sdft/ (a module's private names are its own)."""
    found = []
    for path in (ROOT / "sdft").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sdft"):
                found += [
                    f"{module_name(path)} imports {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    return sorted(found)


def test_no_module_imports_a_private_name():
    assert private_imports() == []


def _only_moved_command_mains(path) -> bool:
    """True when every `if __name__ == "__main__":` block of the module (if any) only stops with the command that
    replaced it (sdft.errors.command_moved: a moved command fails loudly instead of exiting silently)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            calls = [n for n in node.body if not isinstance(n, ast.ImportFrom)]
            if not (
                len(calls) == 1
                and isinstance(calls[0], ast.Expr)
                and ast.unparse(calls[0].value.func) == "command_moved"
            ):
                return False
    return True


def test_argparse_lives_only_in_the_command_line_package():
    """Every command line is in sdft/cli/ (issue 27): library modules take values, not argv (no argparse, no
    `if __name__ == "__main__":` entry point)."""
    mains = sorted(
        module_name(path)
        for path in (ROOT / "sdft").rglob("*.py")
        if path.relative_to(ROOT / "sdft").parts[0] != "cli" and not _only_moved_command_mains(path)
    )
    assert mains == []
    outside = sorted(
        module_name(path)
        for path in (ROOT / "sdft").rglob("*.py")
        if "cli" not in path.relative_to(ROOT / "sdft").parts[:1]
        and any(
            isinstance(n, (ast.Import, ast.ImportFrom))
            and "argparse" in ([a.name for a in n.names] if isinstance(n, ast.Import) else [n.module])
            for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        )
    )
    assert outside == []
