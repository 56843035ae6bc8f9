"""Check that tapegrad's modules import only downward, and in no circle but the one allowed.

    python tests/import_layers.py            # check the package; exit 1 on a violation
    python tests/import_layers.py --report   # also print floors, arrows and circles

The layers are declared in ``LAYERS``, lowest first: a module may import modules of its own
layer or of a lower one, never of a higher one. Within that, the module graph must have no
circle, with one exception written down in ``tapegrad/_core/__init__.py``: ``Tensor``'s
operator methods call the op modules, which build ``Tensor``s. ``ALLOWED_CYCLE_EDGES`` names
exactly those imports; they are left out before the search for circles, so any *other* import
that closes a loop is still caught.

Every import counts: at the top of a file, inside a function (a lazy import is still a
dependency), and under ``TYPE_CHECKING``. Only imports of tapegrad's own modules are read.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

PACKAGE = "tapegrad"

# Lowest first. A name matches a module and everything under it ("tapegrad._core" matches
# "tapegrad._core._tape"), except the package's own name, which matches only its __init__.
# That __init__ and the public faces stand on top.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("tapegrad._arrays",),
    ("tapegrad._tree",),
    ("tapegrad._core",),
    ("tapegrad._replay",),
    (
        "tapegrad.backend",  # public, but it computes its own value from _arrays
        "tapegrad.random",
        "tapegrad.optim",
        "tapegrad.nn",
        "tapegrad.debug",
        "tapegrad.testing",
        "tapegrad._checkpoint",
        "tapegrad._datasets",
    ),
    ("tapegrad.torchlike",),
    (
        "tapegrad",
        "tapegrad.tree",
        "tapegrad.checkpoint",
        "tapegrad.datasets",
    ),
)

# The one circle by design: the import at the bottom of _core/_tensor.py, by which
# Tensor's operators reach the op modules that build Tensors.
ALLOWED_CYCLE_EDGES: frozenset[tuple[str, str]] = frozenset(
    ("tapegrad._core._tensor", f"tapegrad._core.{ops}")
    for ops in ("_math", "_reduce", "_shape", "_linalg")
)

Graph = dict[str, set[str]]


def module_name(path: Path, root: Path) -> str:
    """The dotted name of the module in ``path``, for a package rooted at ``root``."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(importer: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a relative ``from`` import's base."""
    if level == 0:
        return target or ""
    base = importer.split(".")
    # A package's own __init__ resolves "." to itself; a module resolves it to its parent.
    base = base[: len(base) - level + (1 if is_package else 0)]
    return ".".join([*base, target] if target else base)


def imports_of(path: Path, name: str, modules: Iterable[str]) -> set[str]:
    """The package's own modules that the module in ``path`` imports, anywhere in the file."""
    known = set(modules)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, is_package, node.level, node.module)
            # `from . import _tree` names a module; `from ._tape import Tape` names a value
            # of the module `base`.
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
    return {module for module in found if module in known and module != name}


def import_graph(root: Path) -> Graph:
    """Each module of the package at ``root`` mapped to the package modules it imports."""
    paths = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    return {name: imports_of(path, name, paths) for name, path in paths.items()}


def layer_of(module: str, layers: Sequence[Sequence[str]]) -> int | None:
    """The index of the layer whose longest matching name covers ``module``."""
    best: tuple[int, int] | None = None
    for index, names in enumerate(layers):
        for prefix in names:
            # The package's own __init__ covers only itself, not every module under it.
            if module == prefix or (prefix != PACKAGE and module.startswith(prefix + ".")):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), index)
    return None if best is None else best[1]


def circles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def floors(graph: Mapping[str, Iterable[str]]) -> int:
    """How many import floors the graph has: the longest chain of imports, circles folded."""
    members = {module: frozenset([module]) for module in graph}
    for component in circles(graph):
        for module in component:
            members[module] = frozenset(component)
    height: dict[frozenset[str], int] = {}

    def floor(group: frozenset[str]) -> int:
        if group not in height:
            height[group] = 0  # a guard; the condensed graph has no circle
            below = {members[t] for m in group for t in graph[m]} - {group}
            height[group] = 1 + max((floor(b) for b in below), default=0)
        return height[group]

    return max((floor(group) for group in set(members.values())), default=0)


def violations(
    graph: Mapping[str, Iterable[str]],
    layers: Sequence[Sequence[str]] = LAYERS,
    allowed: frozenset[tuple[str, str]] = ALLOWED_CYCLE_EDGES,
) -> list[str]:
    """Every import that runs up the layers, every unplaced module, and every circle."""
    problems: list[str] = []
    for module in sorted(graph):
        own = layer_of(module, layers)
        if own is None:
            problems.append(f"{module}: in no layer; add it to LAYERS in {__file__}")
            continue
        for target in sorted(graph[module]):
            other = layer_of(target, layers)
            if other is not None and other > own:
                problems.append(
                    f"{module} (layer {own + 1}) imports {target} (layer {other + 1}): "
                    "imports must run down the layers"
                )
    pruned = {m: {t for t in ts if (m, t) not in allowed} for m, ts in graph.items()}
    for component in circles(pruned):
        problems.append("import circle among: " + ", ".join(component))
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Check the package next to this file's folder; print what is wrong."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).parents[1] / PACKAGE)
    parser.add_argument("--report", action="store_true", help="print the graph's figures")
    args = parser.parse_args(argv)
    graph = import_graph(args.root)
    if args.report:
        arrows = sum(len(targets) for targets in graph.values())
        print(f"modules {len(graph)}, arrows {arrows}, floors {floors(graph)}")
        for component in circles(graph):
            print(f"circle of {len(component)}: {' '.join(component)}")
    problems = violations(graph)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"import layers: {len(graph)} modules, all imports run down, no circle")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
